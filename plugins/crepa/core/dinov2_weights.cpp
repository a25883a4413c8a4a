// Finding and loading a DINOv2 teacher (see dinov2.h): torch-hub .pth pickles (read with LibTorch's
// zip-archive unpickler), .safetensors with the hub's names, folders with config.json; the
// architecture read from the tensor shapes where no config says it.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>

#include "core/dinov2.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/torch_pickle.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::plugins::crepa {

namespace fs = std::filesystem;

namespace {

constexpr const char* kComponent = "reg.crepa.dinov2";

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<int64_t> shape_of(const st::sdk::TensorSource& s, const std::string& name) {
    for (const auto& i : s.infos())
        if (i.name == name) return i.shape;
    fail(kComponent, "load", "{} has no '{}': it is not a DINOv2 (torch hub) checkpoint", s.describe(), name);
}

/// The architecture from the tensor shapes (and the hub's conventions for what shapes cannot tell).
DinoConfig infer_config(const st::sdk::TensorSource& s) {
    DinoConfig c;
    const auto patch = shape_of(s, "patch_embed.proj.weight");  // [D, 3, p, p]
    c.embed_dim = patch[0];
    c.patch_size = patch[2];
    const auto pos = shape_of(s, "pos_embed");  // [1, 1 + M*M, D]
    const int64_t m = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(pos[1] - 1))));
    c.img_size = m * c.patch_size;
    c.depth = 0;
    while (s.contains("blocks." + std::to_string(c.depth) + ".norm1.weight")) ++c.depth;
    if (c.depth == 0) {
        if (s.contains("blocks.0.0.norm1.weight"))
            fail(kComponent, "load",
                 "{} stores its blocks in chunks (block_chunks > 0); st reads the hub's "
                 "unchunked layout (blocks.N.*)",
                 s.describe());
        fail(kComponent, "load", "{} has no blocks.0.norm1.weight: not a DINOv2 checkpoint", s.describe());
    }
    c.num_heads = std::max<int64_t>(1, c.embed_dim / 64);
    c.swiglu = s.contains("blocks.0.mlp.w12.weight");
    c.ffn_hidden =
        c.swiglu ? shape_of(s, "blocks.0.mlp.w12.weight")[0] / 2 : shape_of(s, "blocks.0.mlp.fc1.weight")[0];
    c.layer_scale = s.contains("blocks.0.ls1.gamma");
    if (s.contains("register_tokens")) {
        c.num_register_tokens = shape_of(s, "register_tokens")[1];
        // The hub builds its *_reg models with interpolate_antialias=True, interpolate_offset=0.0.
        c.interpolate_antialias = true;
        c.interpolate_offset = 0.0;
    }
    return c;
}

void apply_config_json(DinoConfig& c, const fs::path& file) {
    const nlohmann::json j = st::sdk::read_json_file(file, kComponent);
    const std::string origin = file.string();
    auto get_int = [&](const char* k, int64_t& v) {
        v = st::sdk::json_value_or<int64_t>(j, k, v, origin, kComponent);
    };
    get_int("num_heads", c.num_heads);
    get_int("num_register_tokens", c.num_register_tokens);
    c.interpolate_antialias =
        st::sdk::json_value_or<bool>(j, "interpolate_antialias", c.interpolate_antialias, origin, kComponent);
    c.interpolate_offset =
        st::sdk::json_value_or<double>(j, "interpolate_offset", c.interpolate_offset, origin, kComponent);
    c.layer_norm_eps =
        st::sdk::json_value_or<double>(j, "layer_norm_eps", c.layer_norm_eps, origin, kComponent);
    const std::string ffn = st::sdk::json_value_or<std::string>(
        j, "ffn_layer", c.swiglu ? "swiglufused" : "mlp", origin, kComponent);
    if ((ffn == "swiglufused" || ffn == "swiglu") != c.swiglu)
        fail(kComponent, "load", "{}: ffn_layer '{}' does not match the weights ({})", origin, ffn,
             c.swiglu ? "mlp.w12/w3: swiglufused" : "mlp.fc1/fc2: mlp");
    int64_t depth = c.depth, dim = c.embed_dim, patch = c.patch_size;
    get_int("depth", depth);
    get_int("embed_dim", dim);
    get_int("patch_size", patch);
    if (depth != c.depth || dim != c.embed_dim || patch != c.patch_size)
        fail(kComponent, "load",
             "{}: depth {}, embed_dim {}, patch_size {} disagree with the weights ({}, {}, {})", origin,
             depth, dim, patch, c.depth, c.embed_dim, c.patch_size);
    if (c.embed_dim % c.num_heads != 0)
        fail(kComponent, "load", "{}: embed_dim {} is not a multiple of num_heads {}", origin, c.embed_dim,
             c.num_heads);
}

}  // namespace

DinoV2 load_dinov2(const fs::path& path) {
    if (!fs::exists(path)) fail(kComponent, "load", "'{}' does not exist", path.string());
    fs::path weights = path;
    fs::path config;
    if (fs::is_directory(path)) {
        if (fs::exists(path / "config.json")) config = path / "config.json";
        for (const char* n : {"model.safetensors", "dinov2_hub.pth"})
            if (fs::exists(path / n)) {
                weights = path / n;
                break;
            }
        if (weights == path) {
            std::vector<fs::path> found;
            for (const auto& e : fs::directory_iterator(path)) {
                const std::string ext = e.path().extension().string();
                if (ext == ".safetensors" || ext == ".pth") found.push_back(e.path());
            }
            if (found.size() != 1)
                fail(kComponent, "load",
                     "folder '{}' must hold one .safetensors or .pth DINOv2 checkpoint (found {})",
                     path.string(), found.size());
            weights = found.front();
        }
    } else if (fs::exists(path.parent_path() / "config.json")) {
        config = path.parent_path() / "config.json";
    }
    std::shared_ptr<st::sdk::TensorSource> source;
    const std::string name = weights.filename().string();
    if (ends_with(name, ".safetensors"))
        source = st::sdk::open_tensor_source(weights);
    else
        source = std::make_shared<st::kit::MemoryTensorSource>(
            st::kit::read_torch_state_dict(weights, kComponent), weights.string());
    DinoConfig c = infer_config(*source);
    if (!config.empty()) apply_config_json(c, config);
    c.description =
        fmt::format("DINOv2 ViT {}x{} ({} heads, {}{}, patch {}, {} positions) from {}", c.depth, c.embed_dim,
                    c.num_heads, c.swiglu ? "SwiGLU" : "MLP",
                    c.num_register_tokens ? fmt::format(", {} registers", c.num_register_tokens) : "",
                    c.patch_size, c.img_size / c.patch_size, weights.string());
    DinoV2 model(c);
    st::sdk::LoadOptions opts;
    opts.component = kComponent;
    st::sdk::load_strict(*model, *source, opts);
    model->eval();
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    st::log::info(kComponent, "{}", c.description);
    return model;
}

std::string resolve_dinov2_name(const std::string& name) {
    static const std::map<std::string, std::string> aliases = {
        {"dino_v2_g", "dinov2_vitg14"}, {"dinov2_g", "dinov2_vitg14"}, {"dinov2-vitg14", "dinov2_vitg14"},
        {"dino_v2_s", "dinov2_vits14"}, {"dinov2_s", "dinov2_vits14"}, {"dinov2-vitb14", "dinov2_vitb14"},
        {"dinov2_b", "dinov2_vitb14"},  {"dino_v2_b", "dinov2_vitb14"}};
    std::string lower;
    for (char ch : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto it = aliases.find(lower);
    return it == aliases.end() ? name : it->second;
}

fs::path torch_hub_checkpoints() {
    if (const char* th = std::getenv("TORCH_HOME"); th && *th) return fs::path(th) / "hub" / "checkpoints";
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
        return fs::path(x) / "torch" / "hub" / "checkpoints";
    const char* home = std::getenv("HOME");
    return fs::path(home ? home : ".") / ".cache" / "torch" / "hub" / "checkpoints";
}

fs::path locate_crepa_encoder(const std::string& value) {
    if (value.empty()) fail(kComponent, "config", "crepa_encoder is empty: give a DINOv2 name or path");
    if (fs::exists(value)) return value;
    const std::string name = resolve_dinov2_name(value);
    std::string lower;
    for (char ch : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (lower.find("qwen") != std::string::npos)
        fail(kComponent, "config",
             "crepa_encoder '{}' is a Qwen-VL vision encoder, which st does not have: use a DINOv2 teacher "
             "(dinov2_vits14, dinov2_vitb14, dinov2_vitl14, dinov2_vitg14, their _reg variants, or a path)",
             value);
    if (name.rfind("dinov2_vit", 0) != 0)
        fail(kComponent, "config",
             "crepa_encoder '{}' is neither an existing file or folder nor a DINOv2 hub name (dinov2_vits14, "
             "dinov2_vitb14, dinov2_vitl14, dinov2_vitg14, optionally with _reg)",
             value);
    std::string stem = name;
    if (ends_with(stem, "_reg")) stem += "4";
    const fs::path file = torch_hub_checkpoints() / (stem + "_pretrain.pth");
    if (fs::exists(file)) return file;
    fail(
        kComponent, "config",
        "crepa_encoder '{}': the torch-hub checkpoint {} is missing, and st downloads nothing. Copy it there "
        "(from a machine with internet: torch.hub.load('facebookresearch/dinov2', '{}') fetches "
        "https://dl.fbaipublicfiles.com/dinov2/{}/{}_pretrain.pth), or set crepa_encoder to the path of a "
        ".pth, a .safetensors or a folder with config.json",
        value, file.string(), name, name.substr(0, name.find("_reg")), stem);
}

}  // namespace st::plugins::crepa

namespace st::plugins::crepa {

DinoConfig dinov2_preset(const std::string& name) {
    // dinov2/hub/backbones.py: vit_small 384/12/6, vit_base 768/12/12, vit_large 1024/24/16 (MLP x4),
    // vit_giant2 1536/40/24 with the fused SwiGLU (hidden 4096); patch 14 at 518 (37 x 37 positions).
    DinoConfig c;
    c.swiglu = false;
    const bool reg = ends_with(name, "_reg");
    const std::string base = reg ? name.substr(0, name.size() - 4) : name;
    if (base == "tiny") {
        c.img_size = 8, c.patch_size = 2, c.embed_dim = 16, c.depth = 2, c.num_heads = 2, c.ffn_hidden = 64;
        return c;
    }
    if (base == "dinov2_vits14")
        c.embed_dim = 384, c.depth = 12, c.num_heads = 6;
    else if (base == "dinov2_vitb14")
        c.embed_dim = 768, c.depth = 12, c.num_heads = 12;
    else if (base == "dinov2_vitl14")
        c.embed_dim = 1024, c.depth = 24, c.num_heads = 16;
    else if (base == "dinov2_vitg14")
        c.embed_dim = 1536, c.depth = 40, c.num_heads = 24, c.swiglu = true;
    else
        fail(kComponent, "preset",
             "unknown DINOv2 '{}': dinov2_vits14, dinov2_vitb14, dinov2_vitl14, dinov2_vitg14 "
             "(optionally _reg) or tiny",
             name);
    c.ffn_hidden = c.swiglu ? 4096 : 4 * c.embed_dim;
    if (reg) c.num_register_tokens = 4, c.interpolate_antialias = true, c.interpolate_offset = 0.0;
    return c;
}

void save_random_dinov2(const fs::path& dir, const DinoConfig& c, uint64_t seed) {
    fs::create_directories(dir);
    DinoV2 model(c);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    st::sdk::TensorMap tensors;
    {
        at::NoGradGuard no_grad;
        for (const auto& p : model->named_parameters()) {
            at::Tensor t = p.value();
            const std::string& n = p.key();
            if (ends_with(n, "norm1.weight") || ends_with(n, "norm2.weight") || n == "norm.weight")
                t.fill_(1.0);
            else if (ends_with(n, ".gamma"))
                t.fill_(1.0);
            else if (ends_with(n, ".bias"))
                t.zero_();
            else
                t.normal_(0.0, 0.02, gen);
            tensors[n] = t;
        }
    }
    st::sdk::save_safetensors(dir / "model.safetensors", tensors, {{"st.random", "true"}});
    const nlohmann::json j = {{"img_size", c.img_size},
                              {"patch_size", c.patch_size},
                              {"embed_dim", c.embed_dim},
                              {"depth", c.depth},
                              {"num_heads", c.num_heads},
                              {"ffn_layer", c.swiglu ? "swiglufused" : "mlp"},
                              {"num_register_tokens", c.num_register_tokens},
                              {"interpolate_antialias", c.interpolate_antialias},
                              {"interpolate_offset", c.interpolate_offset},
                              {"layer_norm_eps", c.layer_norm_eps},
                              {"init_values", 1.0}};
    std::ofstream(dir / "config.json") << j.dump(2) << "\n";
}

}  // namespace st::plugins::crepa
