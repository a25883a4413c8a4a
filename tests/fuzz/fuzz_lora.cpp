// Target lora_keys: a LoRA file's tensor names, shapes, dtypes, values and `lora_adapter_metadata`
// as load_lora maps them onto a model (diffusers / PEFT, ComfyUI native names, lora_down / lora_up,
// kohya `lora_unet_` names, `.alpha` scalars, metadata alpha), attached or merged.
//
// The input is text, one tensor per line, so the fuzzer works on names rather than on safetensors
// framing (the safetensors_header target covers that):
//   <key> [<dtype>] [<d0>x<d1>...] [=<v0>,<v1>,...]   a tensor (default F32, scalar; values cycle)
//   @merge                                            merge into the weights instead of attaching
//   @meta <json>                                      the lora_adapter_metadata entry
// The file is written with save_safetensors and loaded into a small two-block model. Whatever is
// accepted leaves only finite weights, and an attached adapter saves (ComfyUI layout) and loads again.
#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"
#include "st/error.h"
#include "st/lora.h"
#include "st/safetensors.h"

namespace st::fuzz {

namespace {

using sdk::Linear;

// diffusers-style names blocks.N.attn1.{to_q,to_out.0}, blocks.N.ffn.net.{0.proj,2}, as in
// tests/sdk/test_lora_format.cpp; native (Wan-like) names blocks.N.self_attn.{q,o}, blocks.N.ffn.{0,2}.
struct BlockImpl : torch::nn::Module {
    BlockImpl() {
        auto attn1 = register_module("attn1", std::make_shared<torch::nn::Module>());
        attn1->register_module("to_q", Linear(4, 4));
        attn1->register_module("to_out", torch::nn::ModuleList(Linear(4, 4)));
        auto net = register_module("ffn", std::make_shared<torch::nn::Module>())
                       ->register_module("net", std::make_shared<torch::nn::Module>());
        net->register_module("0", std::make_shared<torch::nn::Module>())
            ->register_module("proj", Linear(4, 8));
        net->register_module("2", Linear(8, 4));
    }
};
TORCH_MODULE(Block);

struct ModelImpl : torch::nn::Module {
    ModelImpl() {
        at::manual_seed(0);
        register_module("blocks", torch::nn::ModuleList(Block(), Block()));
    }
};
TORCH_MODULE(Model);

std::string to_native(const std::string& p) {
    static const std::vector<std::pair<std::string, std::string>> table = {
        {".attn1.to_q", ".self_attn.q"},
        {".attn1.to_out.0", ".self_attn.o"},
        {".ffn.net.0.proj", ".ffn.0"},
        {".ffn.net.2", ".ffn.2"}};
    for (const auto& [ours, native] : table) {
        if (p.size() > ours.size() && p.compare(p.size() - ours.size(), ours.size(), ours) == 0)
            return p.substr(0, p.size() - ours.size()) + native;
    }
    return "";
}

const std::map<std::string, at::ScalarType>& dtypes() {
    static const std::map<std::string, at::ScalarType> table = {
        {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
        {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
        {"U8", at::kByte},    {"BOOL", at::kBool}};
    return table;
}

// "4x8" -> {4, 8}; "-" or "" -> {} (a scalar). Dimensions are capped at 64 and the tensor at 4096
// elements so one input stays cheap.
bool parse_shape(const std::string& text, std::vector<int64_t>* shape) {
    shape->clear();
    if (text.empty() || text == "-") return true;
    int64_t numel = 1;
    std::stringstream ss(text);
    std::string dim;
    while (std::getline(ss, dim, 'x')) {
        if (dim.empty() || dim.size() > 2 || dim.find_first_not_of("0123456789") != std::string::npos)
            return false;
        const int64_t d = std::stoll(dim);
        if (d > 64 || (numel *= d) > 4096 || shape->size() == 4) return false;
        shape->push_back(d);
    }
    return true;
}

struct Input {
    sdk::TensorMap tensors;
    std::map<std::string, std::string> metadata;
    bool merge = false;
};

Input parse_input(std::string_view text) {
    Input in;
    std::stringstream lines{std::string(text)};
    std::string line;
    while (std::getline(lines, line) && in.tensors.size() < 64) {
        if (line.rfind("@merge", 0) == 0) {
            in.merge = true;
            continue;
        }
        if (line.rfind("@meta ", 0) == 0) {
            in.metadata["lora_adapter_metadata"] = line.substr(6);
            continue;
        }
        std::stringstream words(line);
        std::string key, word;
        if (!(words >> key)) continue;
        at::ScalarType dtype = at::kFloat;
        std::vector<int64_t> shape;
        std::vector<double> values;
        while (words >> word) {
            if (const auto it = dtypes().find(word); it != dtypes().end()) {
                dtype = it->second;
            } else if (word[0] == '=') {
                std::stringstream vs(word.substr(1));
                std::string v;
                while (std::getline(vs, v, ',') && values.size() < 64)
                    values.push_back(std::strtod(v.c_str(), nullptr));
            } else if (!parse_shape(word, &shape)) {
                shape.clear();
            }
        }
        int64_t numel = 1;
        for (const int64_t d : shape) numel *= d;
        std::vector<double> data(static_cast<size_t>(numel));
        for (size_t i = 0; i < data.size(); ++i)
            data[i] = values.empty() ? static_cast<double>(static_cast<int>(i * 7 % 11) - 5) / 8.0
                                     : values[i % values.size()];
        in.tensors[key] = at::tensor(data, at::kDouble).reshape(shape).to(dtype);
    }
    return in;
}

void require_finite(torch::nn::Module& model, const std::string& when) {
    for (const auto& p : model.named_parameters()) {
        if (!at::isfinite(p.value()).all().item<bool>())
            invariant_failed(when + " left non-finite values in '" + p.key() + "'");
    }
    for (const auto& [path, lin] : sdk::linear_modules(model)) {
        if (lin->has_lora() && !std::isfinite(lin->lora_scaling()))
            invariant_failed(when + " gave '" + path + "' a non-finite adapter scale");
    }
}

}  // namespace

void lora_keys(std::string_view input) {
    const Input in = parse_input(input);
    if (in.tensors.empty()) return;
    const auto path = scratch_dir() / "lora.safetensors";
    sdk::save_safetensors(path, in.tensors, in.metadata);
    Model model;
    const auto loaded = sdk::load_lora(path, *model, 0.75, to_native, in.merge);
    require_finite(*model, "load_lora");
    if (in.merge || loaded.empty()) return;
    // An adapter st accepted is one st can save and read back.
    const auto again = scratch_dir() / "again.safetensors";
    try {
        sdk::save_lora(again, *model, sdk::LoraFormat::comfyui, to_native);
        Model fresh;
        if (sdk::load_lora(again, *fresh, 0.75, to_native) != loaded)
            invariant_failed("the saved adapter loads onto other modules");
    } catch (const Error& e) {
        invariant_failed(std::string("an accepted adapter does not round-trip: ") + e.what());
    }
}

}  // namespace st::fuzz

ST_FUZZ_ENTRY(st::fuzz::lora_keys)
