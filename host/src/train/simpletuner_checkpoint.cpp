// SimpleTuner's checkpoints read and mapped onto st (train/simpletuner_checkpoint.h).
#include "train/simpletuner_checkpoint.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "train/torch_save_reader.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kLog = "host.checkpoint";
constexpr const char* kLoraFile = "pytorch_lora_weights.safetensors";

[[noreturn]] void refuse(const fs::path& dir, const std::string& what) {
    fail(kLog, "resume", "{} (written by SimpleTuner): {}; {}", dir.string(), what, init_lora_way_out(dir));
}

int64_t integer_key(const nlohmann::json& j, const char* key, int64_t fallback, const fs::path& file) {
    if (!j.contains(key)) return fallback;
    const auto& v = j.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
        fail(kLog, "resume", "{}: '{}' is {}, expected a non-negative integer", file.string(), key, v.dump());
    return v.get<int64_t>();
}

std::optional<int64_t> step_of(const c10::IValue& v) {
    if (v.isInt()) return v.toInt();
    // adamw_bf16 counts its step in a Python float (state["step"] = 0.0, += 1): whole numbers.
    if (v.isDouble()) return static_cast<int64_t>(v.toDouble());
    if (v.isTensor() && v.toTensor().numel() == 1) return static_cast<int64_t>(v.toTensor().item<double>());
    return std::nullopt;
}

UpstreamParamState param_state(const c10::IValue& entry, const fs::path& file, int64_t index) {
    UpstreamParamState out;
    if (!entry.isGenericDict())
        fail(kLog, "resume", "{}: the state of parameter #{} is a {}, not a dict", file.string(), index,
             entry.tagKind());
    for (const auto& kv : entry.toGenericDict()) {
        if (!kv.key().isString())
            fail(kLog, "resume", "{}: parameter #{} has a state key that is not a string", file.string(),
                 index);
        const std::string key = kv.key().toStringRef();
        const c10::IValue& v = kv.value();
        if (v.isNone()) continue;  // torch-optimi's kahan_comp of a float32 parameter
        if (v.isTensor())
            out.tensors[key] = v.toTensor();
        else if (v.isDouble())
            out.numbers[key] = v.toDouble();  // e.g. adamw_bf16's accumulated_decay (a Python float)
        else if (v.isInt())
            out.numbers[key] = static_cast<double>(v.toInt());
        else
            fail(kLog, "resume", "{}: parameter #{} has state '{}' of type {}, which st does not read",
                 file.string(), index, key, v.tagKind());
    }
    return out;
}

UpstreamOptimizerState read_optimizer_bin(const fs::path& dir) {
    UpstreamOptimizerState out;
    out.file = dir / "optimizer.bin";
    std::error_code ec;
    if (!fs::is_regular_file(out.file, ec))
        refuse(dir, "it has no optimizer.bin (accelerate's optimizer state)");
    c10::IValue value;
    try {
        value = read_torch_save(out.file, kLog);
    } catch (const Error& e) {
        refuse(dir, fmt::format("optimizer.bin: {} (DeepSpeed and FSDP optimizer states are not read)",
                                e.message()));
    }
    if (!value.isGenericDict()) refuse(dir, "optimizer.bin does not hold an optimizer state dict");
    const auto dict = value.toGenericDict();
    const auto state_it = dict.find(c10::IValue("state"));
    const auto groups_it = dict.find(c10::IValue("param_groups"));
    if (state_it == dict.end() || groups_it == dict.end() || !state_it->value().isGenericDict() ||
        !groups_it->value().isList())
        refuse(dir, "optimizer.bin has no 'state' dict and 'param_groups' list (torch.optim's state_dict)");
    const auto state = state_it->value().toGenericDict();
    for (const auto& g : groups_it->value().toList()) {
        const c10::IValue group = g;
        if (!group.isGenericDict()) refuse(dir, "optimizer.bin: a parameter group is not a dict");
        const auto gd = group.toGenericDict();
        const auto params = gd.find(c10::IValue("params"));
        if (params == gd.end() || !params->value().isList())
            refuse(dir, "optimizer.bin: a parameter group has no 'params' list");
        std::optional<int64_t> group_step;
        if (const auto s = gd.find(c10::IValue("step")); s != gd.end()) group_step = step_of(s->value());
        for (const auto& id : params->value().toList()) {
            const c10::IValue idv = id;
            if (!idv.isInt()) refuse(dir, "optimizer.bin: a parameter id is not an integer");
            UpstreamParamState ps;
            if (const auto it = state.find(idv); it != state.end())
                ps = param_state(it->value(), out.file, static_cast<int64_t>(out.params.size()));
            ps.group_step = group_step;
            out.params.push_back(std::move(ps));
        }
    }
    return out;
}

// st's name of an upstream state key (bitsandbytes' 8-bit optimizers name theirs state1/state2).
std::optional<std::string> st_key(const std::string& key, const at::Tensor& t) {
    if (key == "qmap1" || key == "qmap2") return std::nullopt;  // bitsandbytes' fixed dynamic maps
    if (key == "state1") return t.scalar_type() == at::kByte ? "exp_avg.q" : "exp_avg";
    if (key == "state2") return t.scalar_type() == at::kByte ? "exp_avg_sq.q" : "exp_avg_sq";
    if (key == "absmax1") return "exp_avg.absmax";
    if (key == "absmax2") return "exp_avg_sq.absmax";
    return key;
}
}  // namespace

std::string init_lora_way_out(const fs::path& dir) {
    std::error_code ec;
    const fs::path lora = dir / kLoraFile;
    return fs::exists(lora, ec)
               ? fmt::format(
                     "to continue from its LoRA weights only, set init_lora {} and "
                     "resume_from_checkpoint none (the optimizer and LR schedule start over)",
                     lora.string())
               : std::string("it holds no pytorch_lora_weights.safetensors st could start from");
}

SimpleTunerCheckpoint read_simpletuner_checkpoint(const fs::path& dir) {
    SimpleTunerCheckpoint ck;
    ck.dir = dir;
    const fs::path state_file = dir / "training_state.json";
    std::error_code ec;
    if (!fs::is_regular_file(state_file, ec))
        refuse(dir, "it has no training_state.json (its step and epoch)");
    const nlohmann::json state =
        sdk::parse_json_text(sdk::read_file(state_file), state_file.string(), kLog, "resume");
    if (!state.is_object()) fail(kLog, "resume", "{}: expected a JSON object", state_file.string());
    if (!state.contains("global_step"))
        fail(kLog, "resume", "{}: no 'global_step' (SimpleTuner writes global_step, epoch_step, epoch)",
             state_file.string());
    ck.global_step = integer_key(state, "global_step", 0, state_file);
    ck.epoch = std::max<int64_t>(1, integer_key(state, "epoch", 1, state_file));
    ck.epoch_step = integer_key(state, "epoch_step", 0, state_file);
    ck.lora = dir / kLoraFile;
    if (!fs::is_regular_file(ck.lora, ec))
        refuse(dir,
               "it has no pytorch_lora_weights.safetensors: st resumes SimpleTuner's LoRA and LyCORIS "
               "checkpoints (a full fine-tune's accelerate state is not read)");
    if (fs::is_regular_file(dir / "ema" / kLoraFile, ec)) ck.ema = dir / "ema" / kLoraFile;
    ck.optimizer = read_optimizer_bin(dir);
    return ck;
}

sdk::StateDict translate_optimizer_state(const UpstreamOptimizerState& upstream, const sdk::StateDict& fresh,
                                         const std::vector<std::pair<std::string, at::Tensor>>& order,
                                         int64_t global_step) {
    const fs::path dir = upstream.file.parent_path();
    if (upstream.params.size() != order.size())
        refuse(dir, fmt::format("optimizer.bin holds {} parameters but st trains {}: the LoRA targets, "
                                "lora_type or the model differ from SimpleTuner's run",
                                upstream.params.size(), order.size()));
    sdk::StateDict out;
    out.meta = fresh.meta;
    out.meta["params"] = nlohmann::json::object();
    for (size_t i = 0; i < order.size(); ++i) {
        const auto& [name, param] = order[i];
        const UpstreamParamState& ps = upstream.params[i];
        if (ps.tensors.empty() && ps.numbers.empty()) continue;  // never stepped upstream
        nlohmann::json entry = nlohmann::json::object();
        std::optional<int64_t> step = ps.group_step;
        if (const auto n = ps.numbers.find("step"); n != ps.numbers.end())
            step = static_cast<int64_t>(n->second);
        if (const auto t = ps.tensors.find("step"); t != ps.tensors.end())
            step = step_of(c10::IValue(t->second));
        entry["step"] = step.value_or(global_step);
        for (const auto& [key, value] : ps.numbers)
            if (key != "step") entry["scalars"][key] = value;
        for (const auto& [key, t] : ps.tensors) {
            if (key == "step") continue;
            const auto sk = st_key(key, t);
            if (!sk) continue;
            at::Tensor v = t.contiguous();
            const bool eight_bit = sk->find('.') != std::string::npos;
            if (eight_bit) {
                if (sk->size() > 2 && sk->substr(sk->size() - 2) == ".q") v = v.reshape({-1});
            } else if (v.sizes() != param.sizes()) {
                refuse(dir,
                       fmt::format("optimizer.bin's parameter #{} has '{}' of shape {} but st's parameter "
                                   "#{} ({}) is {}: the LoRA targets or rank differ from SimpleTuner's run",
                                   i, key, c10::str(v.sizes()), i, name, c10::str(param.sizes())));
            }
            // Floating state follows the parameter's dtype (bitsandbytes keeps float32 state).
            if (v.is_floating_point() && !eight_bit && key != "state1" && key != "state2")
                v = v.to(param.scalar_type());
            out.tensors[name + "::" + *sk] = v.to(param.device()).clone();
        }
        out.meta["params"][name] = std::move(entry);
    }
    return out;
}

}  // namespace st::host::train
