// `st-host forward` components of the Wan VAE (st/kit/vae_forward.h).
#include "st/kit/vae_forward.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <utility>
#include <vector>

#include "st/error.h"

namespace st::kit {

namespace {

// Inputs named <prefix><suffix>: one output set per suffix ("video_t9" -> "_t9").
std::vector<std::pair<std::string, at::Tensor>> with_prefix(const sdk::TensorMap& in,
                                                            const std::string& prefix,
                                                            const std::string& component,
                                                            const std::string& owner) {
    std::vector<std::pair<std::string, at::Tensor>> r;
    std::vector<std::string> names;
    for (const auto& [name, t] : in) {
        names.push_back(name);
        if (name.rfind(prefix, 0) == 0) r.emplace_back(name.substr(prefix.size()), t);
    }
    if (r.empty())
        fail(owner, "forward",
             "component '{}' needs input tensors named '{}*' (e.g. '{}_t1'); the inputs hold: {}", component,
             prefix, prefix, fmt::join(names, ", "));
    return r;
}

}  // namespace

bool is_vae_component(const std::string& component) {
    return component == "vae_encode" || component == "vae_decode";
}

sdk::TensorMap run_vae_component(WanVAE& vae, const std::string& component, const sdk::TensorMap& inputs,
                                 const std::string& owner) {
    vae.module()->eval();
    torch::NoGradGuard no_grad;
    sdk::TensorMap out;
    if (component == "vae_encode") {
        for (const auto& [suffix, video] : with_prefix(inputs, "video", component, owner)) {
            // video [B, 3, T, H, W] -> posterior [B, z, 1 + (T-1)/4, H/8, W/8]
            const EncodeResult r = vae.encode(video.to(at::kFloat).contiguous());
            out["posterior_mean" + suffix] = r.mean;
            out["posterior_logvar" + suffix] = r.logvar;
            out["latents_normalized" + suffix] = vae.normalize_latents(r.mean);
        }
    } else if (component == "vae_decode") {
        for (const auto& [suffix, latents] : with_prefix(inputs, "latents", component, owner)) {
            // latents [B, z, F, h, w] raw -> video [B, 3, 1 + 4(F-1), 8h, 8w] in [-1, 1]
            out["decoded" + suffix] = vae.decode(latents.to(at::kFloat).contiguous());
        }
    } else {
        fail(owner, "forward", "'{}' is not a VAE component (vae_encode, vae_decode)", component);
    }
    return out;
}

}  // namespace st::kit
