// Wan VAE key layouts and random-weight writer. The renaming table follows diffusers
// scripts/convert_wan_to_diffusers.py convert_vae() / convert_vae_22() (original Wan-Video names ->
// diffusers names).
#include "st/kit/vae_weights.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <vector>

#include "st/error.h"
#include "st/kit/vae.h"
#include "st/log.h"

namespace st::kit {
namespace {

constexpr const char* kComponent = "model.wan.vae";

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}

/// Splits "12.rest" into (12, "rest"); nullopt when `s` does not start with "<digits>.".
std::optional<std::pair<int64_t, std::string>> split_index(const std::string& s) {
    const size_t dot = s.find('.');
    if (dot == 0 || dot == std::string::npos) return std::nullopt;
    for (size_t i = 0; i < dot; ++i)
        if (s[i] < '0' || s[i] > '9') return std::nullopt;
    return std::make_pair(std::stoll(s.substr(0, dot)), s.substr(dot + 1));
}

[[noreturn]] void unknown_key(const std::string& key) {
    fail(kComponent, "weights", "'{}' is not a parameter of the Wan VAE (AutoencoderKLWan) layout", key);
}

/// Residual block parameters: diffusers norm1/conv1/norm2/conv2/conv_shortcut -> original
/// residual.0 (RMS) / .2 (conv) / .3 (RMS) / .6 (conv) and shortcut (Sequential indices upstream).
std::string residual_to_original(const std::string& tail, const std::string& full) {
    if (tail == "norm1.gamma") return "residual.0.gamma";
    if (tail == "norm2.gamma") return "residual.3.gamma";
    if (starts_with(tail, "conv1.")) return "residual.2." + tail.substr(6);
    if (starts_with(tail, "conv2.")) return "residual.6." + tail.substr(6);
    if (starts_with(tail, "conv_shortcut.")) return "shortcut." + tail.substr(14);
    unknown_key(full);
}

std::string side_to_original(const std::string& side, const std::string& rest, const std::string& full,
                             const WanVAEConfig& config) {
    if (starts_with(rest, "conv_in.")) return side + ".conv1." + rest.substr(8);
    if (rest == "norm_out.gamma") return side + ".head.0.gamma";
    if (starts_with(rest, "conv_out.")) return side + ".head.2." + rest.substr(9);
    if (starts_with(rest, "mid_block.resnets.")) {
        auto idx = split_index(rest.substr(18));
        if (!idx || idx->first > 1) unknown_key(full);
        return side + ".middle." + std::to_string(idx->first == 0 ? 0 : 2) + "." +
               residual_to_original(idx->second, full);
    }
    if (starts_with(rest, "mid_block.attentions.0.")) return side + ".middle.1." + rest.substr(23);
    if (side == "encoder" && starts_with(rest, "down_blocks.") && config.is_residual) {
        // 2.2: down_blocks.X.resnets.Y / .downsampler -> downsamples.X.downsamples.{Y | num_res_blocks}.
        auto block = split_index(rest.substr(12));
        if (!block) unknown_key(full);
        const std::string prefix = side + ".downsamples." + std::to_string(block->first) + ".downsamples.";
        if (starts_with(block->second, "resnets.")) {
            auto res = split_index(block->second.substr(8));
            if (!res || res->first >= config.num_res_blocks) unknown_key(full);
            return prefix + std::to_string(res->first) + "." + residual_to_original(res->second, full);
        }
        if (starts_with(block->second, "downsampler."))
            return prefix + std::to_string(config.num_res_blocks) + "." + block->second.substr(12);
        unknown_key(full);
    }
    if (side == "decoder" && starts_with(rest, "up_blocks.") && config.is_residual) {
        // 2.2: up_blocks.X.resnets.Y / .upsampler -> upsamples.X.upsamples.{Y | num_res_blocks + 1}.
        auto block = split_index(rest.substr(10));
        if (!block) unknown_key(full);
        const std::string prefix = side + ".upsamples." + std::to_string(block->first) + ".upsamples.";
        if (starts_with(block->second, "resnets.")) {
            auto res = split_index(block->second.substr(8));
            if (!res || res->first > config.num_res_blocks) unknown_key(full);
            return prefix + std::to_string(res->first) + "." + residual_to_original(res->second, full);
        }
        if (starts_with(block->second, "upsampler."))
            return prefix + std::to_string(config.num_res_blocks + 1) + "." + block->second.substr(10);
        unknown_key(full);
    }
    if (side == "encoder" && starts_with(rest, "down_blocks.")) {
        auto idx = split_index(rest.substr(12));
        if (!idx) unknown_key(full);
        const std::string prefix = side + ".downsamples." + std::to_string(idx->first) + ".";
        if (starts_with(idx->second, "resample.") || starts_with(idx->second, "time_conv."))
            return prefix + idx->second;
        return prefix + residual_to_original(idx->second, full);
    }
    if (side == "decoder" && starts_with(rest, "up_blocks.")) {
        // Original decoder.upsamples is flat: per block num_res_blocks + 1 residual blocks and one
        // resampler (none after the last block).
        auto block = split_index(rest.substr(10));
        if (!block) unknown_key(full);
        const int64_t stride = config.num_res_blocks + 2;
        const int64_t base = block->first * stride;
        if (starts_with(block->second, "resnets.")) {
            auto res = split_index(block->second.substr(8));
            if (!res || res->first > config.num_res_blocks) unknown_key(full);
            return side + ".upsamples." + std::to_string(base + res->first) + "." +
                   residual_to_original(res->second, full);
        }
        if (starts_with(block->second, "upsamplers.0."))
            return side + ".upsamples." + std::to_string(base + config.num_res_blocks + 1) + "." +
                   block->second.substr(13);
    }
    unknown_key(full);
}

}  // namespace

const char* to_string(WanVAELayout layout) {
    switch (layout) {
        case WanVAELayout::diffusers:
            return "diffusers";
        case WanVAELayout::original:
            return "original";
    }
    return "?";
}

WanVAELayout detect_wan_vae_layout(const st::sdk::TensorSource& source) {
    if (source.contains("encoder.conv_in.weight")) return WanVAELayout::diffusers;
    if (source.contains("encoder.conv1.weight")) return WanVAELayout::original;
    const auto infos = source.infos();
    std::string names;
    for (size_t i = 0; i < infos.size() && i < 5; ++i) names += (i ? ", " : "") + infos[i].name;
    fail(kComponent, "load",
         "{} is not a Wan VAE checkpoint: neither 'encoder.conv_in.weight' (diffusers) nor "
         "'encoder.conv1.weight' "
         "(original Wan) is present ({} tensors; first: {})",
         source.describe(), infos.size(), names.empty() ? "none" : names);
}

std::string wan_vae_diffusers_to_original(const std::string& key, const WanVAEConfig& config) {
    if (starts_with(key, "quant_conv.")) return "conv1." + key.substr(11);
    if (starts_with(key, "post_quant_conv.")) return "conv2." + key.substr(16);
    if (starts_with(key, "encoder.")) return side_to_original("encoder", key.substr(8), key, config);
    if (starts_with(key, "decoder.")) return side_to_original("decoder", key.substr(8), key, config);
    unknown_key(key);
}

std::map<std::string, std::string> wan_vae_original_key_map(const torch::nn::Module& module,
                                                            const WanVAEConfig& config) {
    std::map<std::string, std::string> map;
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
        const std::string original = wan_vae_diffusers_to_original(item.key(), config);
        if (!map.emplace(original, item.key()).second)
            fail(kComponent, "weights", "key table maps two parameters to '{}'", original);
    }
    return map;
}

void write_random_wan_vae(const std::filesystem::path& dir, const WanVAEConfig& config, uint64_t seed) {
    config.validate("write_random_wan_vae");
    AutoencoderKLWanImpl model(config);
    at::Generator gen = at::detail::createCPUGenerator(seed);
    st::sdk::TensorMap tensors;
    {
        at::NoGradGuard no_grad;
        for (const auto& item : model.named_parameters(/*recurse=*/true)) {
            at::Tensor p = item.value();
            const std::string& name = item.key();
            if (name.size() >= 6 && name.compare(name.size() - 6, 6, ".gamma") == 0) {
                p.normal_(1.0, 0.1, gen);
            } else if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
                p.normal_(0.0, 0.1, gen);
            } else {
                const double fan_in = static_cast<double>(p.numel() / p.size(0));
                p.normal_(0.0, 1.0 / std::sqrt(fan_in), gen);
            }
            tensors.emplace(name, p.detach().contiguous());
        }
    }
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) fail(kComponent, "write", "cannot create directory '{}': {}", dir.string(), ec.message());
    const auto config_path = dir / "config.json";
    {
        std::ofstream out(config_path);
        out << config.to_json().dump(2) << "\n";
        if (!out) fail(kComponent, "write", "cannot write '{}'", config_path.string());
    }
    st::sdk::save_safetensors(dir / "diffusion_pytorch_model.safetensors", tensors, {{"format", "pt"}});
    st::log::info(kComponent, "wrote random Wan VAE (base_dim {}, z_dim {}, {} tensors, seed {}) to {}",
                  config.base_dim, config.z_dim, tensors.size(), seed, dir.string());
}

}  // namespace st::kit
