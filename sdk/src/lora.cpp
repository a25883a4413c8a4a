// st::sdk::Linear with a LoRA adapter, and suffix injection. The adapter follows PEFT
// (peft/tuners/lora/layer.py: LoraLayer.update_layer / reset_lora_parameters with
// init_lora_weights=True, Linear.forward / merge / unmerge); the base layer follows
// torch::nn::LinearImpl (torch/csrc/api/src/nn/modules/linear.cpp) so swapping it in changes nothing.
#include "st/lora.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/nn/init.h>

#include <cmath>
#include <set>

#include "st/error.h"
#include "st/log.h"

namespace st::sdk {

namespace {
constexpr const char* kComponent = "sdk.lora";

uint64_t fnv1a(const std::string& s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}
}  // namespace

// ---- LoraFactor -----------------------------------------------------------------------------------

LoraFactorImpl::LoraFactorImpl(int64_t rows, int64_t cols) : rows_(rows), cols_(cols) {
    reset();
}

void LoraFactorImpl::reset() {
    weight = register_parameter("weight", at::zeros({rows_, cols_}));
}

void LoraFactorImpl::pretty_print(std::ostream& stream) const {
    stream << "st::sdk::LoraFactor(" << rows_ << ", " << cols_ << ")";
}

// ---- Linear ---------------------------------------------------------------------------------------

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias)
    : LinearImpl(LinearOptions(in_features, out_features, with_bias)) {}

LinearImpl::LinearImpl(const LinearOptions& options) : options_(options) {
    if (options.in < 1 || options.out < 1) {
        fail(kComponent, "construct", "Linear needs positive sizes, got in {} out {}", options.in,
             options.out);
    }
    reset();
}

void LinearImpl::reset() {
    weight = register_parameter("weight", at::empty({options_.out, options_.in}));
    if (options_.bias) {
        bias = register_parameter("bias", at::empty({options_.out}));
    } else {
        bias = at::Tensor();
    }
    reset_parameters();
    // clone() copies this object, clears its children and calls reset(): re-create the adapter
    // (the parameter values are copied afterwards by Cloneable).
    if (lora_rank_ > 0) register_adapter(lora_rank_);
    if (lycoris_) lycoris_ = register_module("lycoris", std::make_shared<LycorisAdapterImpl>(*lycoris_));
}

void LinearImpl::reset_parameters() {
    // A model built to be filled by a strict load right away: leave the memory untouched.
    if (DeferredInit::active()) return;
    // Same calls and order as torch::nn::LinearImpl::reset_parameters (global generator).
    torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
    if (bias.defined()) {
        const auto fans = torch::nn::init::_calculate_fan_in_and_fan_out(weight);
        const double bound = 1.0 / std::sqrt(static_cast<double>(std::get<0>(fans)));
        torch::nn::init::uniform_(bias, -bound, bound);
    }
}

void LinearImpl::pretty_print(std::ostream& stream) const {
    stream << "st::sdk::Linear(in_features=" << options_.in << ", out_features=" << options_.out
           << ", bias=" << (options_.bias ? "true" : "false");
    if (lora_rank_ > 0) stream << ", lora_rank=" << lora_rank_ << ", lora_alpha=" << lora_alpha_;
    if (lycoris_) stream << ", lycoris=" << lycoris_->algo();
    stream << ")";
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
    // x [..., in] -> [..., out]
    at::Tensor out = stored_ || weight.scalar_type() != x.scalar_type()
                         ? stored_linear(x, weight, weight_scale, bias)
                         : at::linear(x, weight, bias);
    if (lycoris_ && !merged_ && lora_multiplier_ != 0.0) {
        // LyCORIS's default (non-bypass) forward: the weight delta rebuilt, applied as a second linear.
        const LycorisOptions& lo = lycoris_->options();
        // Uniform draws on the CPU from the run's generator (else ATen's default), as torch.rand does.
        auto uniform = [&](int64_t n) {
            return dropout_generator_ ? at::rand({n}, *dropout_generator_, at::TensorOptions(at::kFloat))
                                      : at::rand({n}, at::TensorOptions(at::kFloat));
        };
        if (is_training() && lo.module_dropout > 0.0 && uniform(1).item<float>() < lo.module_dropout)
            return out;
        at::Tensor dw = lycoris_->delta_weight();
        if (is_training() && lo.rank_dropout > 0.0) {
            at::Tensor keep = uniform(options_.out).gt(lo.rank_dropout).to(dw.scalar_type());
            if (lo.rank_dropout_scale) keep = keep / keep.mean();
            dw = dw * keep.to(dw.device()).view({-1, 1});
        }
        return out + (at::linear(x.to(dw.scalar_type()), dw) * lora_multiplier_).to(out.scalar_type());
    }
    if (lora_rank_ == 0 || merged_ || lora_multiplier_ == 0.0) return out;
    at::Tensor h = x.to(lora_A->weight.scalar_type());
    if (is_training() && lora_dropout_ > 0.0) {
        if (dropout_generator_) {
            // Inverted dropout (at::dropout's math) with the masks drawn from the run's generator.
            // (The run's generator is a CPU one: masks for other devices are drawn there and moved.)
            const at::Tensor keep = at::empty(h.sizes(), h.options().device(at::kCPU))
                                        .bernoulli_(1.0 - lora_dropout_, *dropout_generator_)
                                        .to(h.device());
            h = h * keep / (1.0 - lora_dropout_);
        } else {
            h = at::dropout(h, lora_dropout_, /*train=*/true);
        }
    }
    h = at::linear(at::linear(h, lora_A->weight), lora_B->weight);  // [..., r] -> [..., out]
    return out + (h * lora_scaling()).to(out.scalar_type());
}

void LinearImpl::set_base_weight(const at::Tensor& w, BasePrecision precision) {
    if (w.dim() != 2 || w.size(0) != options_.out || w.size(1) != options_.in)
        fail(kComponent, "load", "Linear({}, {}): base weight of shape {} (expected [{}, {}])", options_.in,
             options_.out, c10::str(w.sizes()), options_.out, options_.in);
    if (has_adapter() && merged_)
        fail(kComponent, "load", "cannot replace the base weight while an adapter is merged");
    at::NoGradGuard no_grad;
    if (!stored_) compute_dtype_ = weight.scalar_type();
    weight.set_requires_grad(false);
    if (precision == BasePrecision::compute) {
        if (stored_) materialize(weight_scale.defined() ? at::kFloat : weight.scalar_type());
        weight.copy_(w);
        return;
    }
    if (precision == BasePrecision::int8) {
        Int8Weight qw = quantize_int8(w);
        weight.set_data(qw.q.to(weight.device()));
        weight_scale = qw.scale.to(weight.device());
    } else {
        at::Tensor v = precision == BasePrecision::bf16   ? w.to(at::kBFloat16)
                       : precision == BasePrecision::fp32 ? w.to(at::kFloat)
                                                          : w;
        weight.set_data(v.device() == weight.device() ? v : v.to(weight.device()));
        weight_scale = at::Tensor();
    }
    stored_ = true;
}

at::Tensor LinearImpl::dense_weight(at::ScalarType dtype) const {
    if (weight.scalar_type() == at::kChar) return dequantize_int8(weight, weight_scale, dtype);
    return weight.to(dtype, /*non_blocking=*/false, /*copy=*/true);
}

void LinearImpl::set_compute_dtype(at::ScalarType dtype) {
    at::NoGradGuard no_grad;
    if (stored_)
        compute_dtype_ = dtype;
    else if (weight.scalar_type() != dtype)
        weight.set_data(weight.to(dtype));
    if (bias.defined() && bias.scalar_type() != dtype) bias.set_data(bias.to(dtype));
}

void LinearImpl::materialize(at::ScalarType dtype) {
    if (!stored_) return;
    at::NoGradGuard no_grad;
    weight.set_data(dense_weight(dtype));
    weight_scale = at::Tensor();
    stored_ = false;
}

void LinearImpl::register_adapter(int64_t rank) {
    lora_A = register_module("lora_A", LoraFactor(rank, options_.in));
    lora_B = register_module("lora_B", LoraFactor(options_.out, rank));
}

void LinearImpl::add_lycoris(const LycorisOptions& options, uint64_t seed) {
    if (has_adapter())
        fail(kComponent, "inject", "Linear({}, {}) already carries an adapter", options_.in, options_.out);
    auto a = std::make_shared<LycorisAdapterImpl>(options_.in, options_.out, options);
    a->init_weights(seed);
    a->to(weight.device(), compute_dtype());
    lycoris_ = register_module("lycoris", a);
    lora_multiplier_ = 1.0;
}

void LinearImpl::set_lycoris(const std::shared_ptr<LycorisAdapterImpl>& adapter, const std::string& what) {
    if (has_lora())
        fail(kComponent, "load", "{}: the module carries a LoRA adapter, the file a LyCORIS one", what);
    if (lycoris_) {
        lycoris_->copy_from(*adapter, what);
        return;
    }
    adapter->to(weight.device(), compute_dtype());
    lycoris_ = register_module("lycoris", adapter);
}

void LinearImpl::add_lora(const LoraConfig& config) {
    if (lycoris_)
        fail(kComponent, "inject", "Linear({}, {}) already carries a LyCORIS adapter", options_.in,
             options_.out);
    if (lora_rank_ > 0) {
        fail(kComponent, "inject", "Linear({}, {}) already carries a LoRA adapter of rank {}", options_.in,
             options_.out, lora_rank_);
    }
    if (config.rank < 1) fail(kComponent, "inject", "LoRA rank must be >= 1, got {}", config.rank);
    if (config.dropout < 0.0 || config.dropout >= 1.0) {
        fail(kComponent, "inject", "LoRA dropout must be in [0, 1), got {}", config.dropout);
    }
    lora_rank_ = config.rank;
    lora_alpha_ = config.effective_alpha();
    lora_dropout_ = config.dropout;
    lora_multiplier_ = 1.0;
    register_adapter(config.rank);
    // PEFT: kaiming_uniform_(lora_A.weight, a=sqrt(5)) -> U(-1/sqrt(in), 1/sqrt(in)); lora_B zeros.
    // Drawn on CPU in float32 from the config's seed, then moved to the base weight's device/dtype.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(config.seed);
    const double bound = 1.0 / std::sqrt(static_cast<double>(options_.in));
    at::Tensor a = at::empty({config.rank, options_.in}, at::kFloat).uniform_(-bound, bound, gen);
    at::NoGradGuard no_grad;
    lora_A->weight.set_data(a.to(weight.device(), compute_dtype()));
    lora_B->weight.set_data(at::zeros({options_.out, config.rank}, weight.options().dtype(compute_dtype())));
}

int64_t LinearImpl::lora_rank() const {
    if (lora_rank_ == 0)
        fail(kComponent, "query", "Linear({}, {}) has no LoRA adapter", options_.in, options_.out);
    return lora_rank_;
}

double LinearImpl::lora_alpha() const {
    lora_rank();
    return lora_alpha_;
}

void LinearImpl::set_lora_alpha(double alpha) {
    lora_rank();
    if (merged_) fail(kComponent, "alpha", "cannot change the LoRA alpha while the adapter is merged");
    lora_alpha_ = alpha;
}

void LinearImpl::set_lora_scale(double multiplier) {
    if (merged_) fail(kComponent, "scale", "cannot change the LoRA strength while the adapter is merged");
    lora_multiplier_ = multiplier;
}

double LinearImpl::lora_scaling() const {
    return lora_multiplier_ * lora_alpha() / static_cast<double>(lora_rank_);
}

at::Tensor LinearImpl::lora_delta() const {
    if (lycoris_) return lycoris_->delta_weight().detach().to(at::kFloat) * lora_multiplier_;
    const double s = lora_scaling();
    return at::matmul(lora_B->weight.detach().to(at::kFloat), lora_A->weight.detach().to(at::kFloat)) * s;
}

void LinearImpl::merge_lora() {
    if (!lycoris_) lora_rank();
    if (merged_) return;
    at::NoGradGuard no_grad;
    merged_scaling_ = lycoris_ ? lora_multiplier_ : lora_scaling();
    // A stored base weight is never written (it may be a read-only view of the file): merge into a
    // dense copy in the adapter's dtype.
    materialize(lycoris_ ? lycoris_->delta_weight().scalar_type() : lora_A->weight.scalar_type());
    weight.add_(lora_delta().to(weight.scalar_type()));
    merged_ = true;
}

void LinearImpl::unmerge_lora() {
    if (!lycoris_) lora_rank();
    if (!merged_) return;
    at::NoGradGuard no_grad;
    if (lycoris_) {
        weight.sub_(
            (lycoris_->delta_weight().detach().to(at::kFloat) * merged_scaling_).to(weight.scalar_type()));
        merged_ = false;
        return;
    }
    const at::Tensor delta =
        at::matmul(lora_B->weight.detach().to(at::kFloat), lora_A->weight.detach().to(at::kFloat));
    weight.sub_((delta * merged_scaling_).to(weight.scalar_type()));
    merged_ = false;
}

void LinearImpl::freeze_base() {
    weight.requires_grad_(false);
    if (bias.defined()) bias.requires_grad_(false);
}

// ---- tree helpers ---------------------------------------------------------------------------------

void convert_parameters(torch::nn::Module& root,
                        const std::function<at::ScalarType(const std::string&)>& dtype_for) {
    at::NoGradGuard no_grad;
    std::set<std::string> stored;
    for (const auto& [path, lin] : linear_modules(root)) {
        if (!lin->base_stored()) continue;
        const std::string name = path.empty() ? "weight" : path + ".weight";
        lin->set_compute_dtype(dtype_for(name));
        stored.insert(name);
    }
    for (auto& item : root.named_parameters(/*recurse=*/true)) {
        if (stored.count(item.key())) continue;
        const at::ScalarType target = dtype_for(item.key());
        if (item.value().scalar_type() != target) item.value().set_data(item.value().to(target));
    }
}

std::map<std::string, int64_t> count_base_precisions(torch::nn::Module& root) {
    std::map<std::string, int64_t> out;
    for (const auto& [path, lin] : linear_modules(root)) {
        if (!lin->base_stored())
            ++out["dense"];
        else if (lin->weight.scalar_type() == at::kChar)
            ++out["int8"];
        else
            ++out[std::string(c10::toString(lin->weight.scalar_type()))];
    }
    return out;
}

std::vector<std::pair<std::string, LinearImpl*>> linear_modules(torch::nn::Module& root) {
    std::vector<std::pair<std::string, LinearImpl*>> out;
    if (auto* self = dynamic_cast<LinearImpl*>(&root)) out.emplace_back("", self);
    for (const auto& item : root.named_modules("", /*include_self=*/false)) {
        if (auto* lin = dynamic_cast<LinearImpl*>(item.value().get())) out.emplace_back(item.key(), lin);
    }
    return out;
}

bool module_matches_suffix(const std::string& module_path, const std::string& suffix) {
    if (suffix.empty() || suffix.size() > module_path.size()) return false;
    if (module_path.compare(module_path.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    return suffix.size() == module_path.size() || module_path[module_path.size() - suffix.size() - 1] == '.';
}

std::vector<std::string> inject_lycoris(
    torch::nn::Module& root, const std::function<std::optional<LycorisOptions>(const std::string&)>& choose,
    uint64_t seed) {
    std::vector<std::string> injected;
    for (auto& [path, lin] : linear_modules(root)) {
        const auto o = choose(path);
        if (!o) continue;
        try {
            lin->add_lycoris(*o, seed * 0x9E3779B97F4A7C15ull ^ fnv1a(path));
        } catch (const Error& e) {
            throw e.with_context(fmt::format("while injecting LyCORIS into module '{}'", path));
        }
        injected.push_back(path);
    }
    return injected;
}

std::vector<std::string> inject_lora(torch::nn::Module& root, const std::vector<std::string>& target_suffixes,
                                     const LoraConfig& config) {
    std::vector<std::string> injected;
    for (auto& [path, lin] : linear_modules(root)) {
        bool hit = false;
        for (const auto& s : target_suffixes) hit = hit || module_matches_suffix(path, s);
        if (!hit) continue;
        LoraConfig c = config;
        c.seed = config.seed * 0x9E3779B97F4A7C15ull ^ fnv1a(path);
        try {
            lin->add_lora(c);
        } catch (const Error& e) {
            throw e.with_context(fmt::format("while injecting LoRA into module '{}'", path));
        }
        injected.push_back(path);
    }
    if (injected.empty()) {
        std::string list;
        for (const auto& s : target_suffixes) list += (list.empty() ? "'" : ", '") + s + "'";
        fail(kComponent, "inject",
             "no st::sdk::Linear module name ends with any of the LoRA targets [{}] ({} Linear "
             "modules searched)",
             list, linear_modules(root).size());
    }
    st::log::info(kComponent, "injected LoRA rank {} alpha {} dropout {} into {} modules", config.rank,
                  config.effective_alpha(), config.dropout, injected.size());
    return injected;
}

TensorMap lora_parameters(torch::nn::Module& root) {
    TensorMap out;
    for (auto& [path, lin] : linear_modules(root)) {
        const std::string p = path.empty() ? "" : path + ".";
        if (lin->has_lycoris())
            for (const auto& item : lin->lycoris()->named_parameters(false))
                out[p + "lycoris." + item.key()] = item.value();
        if (!lin->has_lora()) continue;
        out[p + "lora_A.weight"] = lin->lora_A->weight;
        out[p + "lora_B.weight"] = lin->lora_B->weight;
    }
    return out;
}

int64_t freeze_all_but_lora(torch::nn::Module& root) {
    std::set<const void*> lora;
    for (const auto& [name, t] : lora_parameters(root)) lora.insert(t.unsafeGetTensorImpl());
    int64_t trainable = 0;
    for (auto& p : root.parameters(/*recurse=*/true)) {
        const bool keep = lora.count(p.unsafeGetTensorImpl()) > 0;
        p.requires_grad_(keep);
        trainable += keep ? p.numel() : 0;
    }
    return trainable;
}

void set_lora_dropout_generator(torch::nn::Module& root, std::optional<at::Generator> generator) {
    for (auto& [path, lin] : linear_modules(root))
        if (lin->has_lora() || lin->has_lycoris()) lin->set_dropout_generator(generator);
}

void set_lora_scale(torch::nn::Module& root, double multiplier) {
    for (auto& [path, lin] : linear_modules(root)) {
        if (lin->has_adapter()) lin->set_lora_scale(multiplier);
    }
}

}  // namespace st::sdk
