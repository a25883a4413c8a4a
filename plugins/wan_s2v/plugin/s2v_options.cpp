// model.wan_s2v@1: the option table and where the sub-networks of an S2V model live (the Wan
// pipeline paths of plugins/wan/core/model_paths.h plus the Wav2Vec2 audio encoder).
#include <fmt/format.h>

#include "core/ff_chunking.h"
#include "s2v_family.h"
#include "st/log.h"

namespace st::plugins::wan_s2v {

namespace fs = std::filesystem;
using st::sdk::ConfigView;

std::vector<st::sdk::OptionSpec> s2v_option_specs() {
    using namespace st::sdk;
    std::vector<OptionSpec> specs;
    // Keys shared with model.wan@1 (the option table merges equal declarations of model families).
    specs.push_back(opt_string("model_flavour", std::string(kS2VFlavour),
                               "Model flavour (SimpleTuner names). wan_s2v: s2v-14b-2.2 (the weights decide "
                               "the sizes).",
                               {kS2VFlavour}));
    for (auto& spec : st::plugins::wan::pipeline_option_specs()) specs.push_back(std::move(spec));
    for (auto& spec : st::plugins::wan::feed_forward_chunking_option_specs())
        specs.push_back(std::move(spec));
    // S2V's own.
    specs.push_back(
        opt_string("pretrained_audio_encoder_model_name_or_path", std::nullopt,
                   "wan_s2v: the Wav2Vec2 audio encoder (a folder with config.json + model.safetensors, HF "
                   "Wav2Vec2ForCTC or Wav2Vec2Model layout). Unset: the model's audio_encoder/ or "
                   "wav2vec2-large-xlsr-53-english/ (the checkpoint S2V was trained with)."));
    for (auto& s : specs) s.group = "model";
    return specs;
}

std::string s2v_component_summary() {
    return "Wan 2.2 S2V speech-to-video DiT (audio injectors, reference image, FramePack motion) + Wav2Vec2 "
           "audio encoder + Wan 2.1 VAE + UMT5 (make-model presets: tiny ~1.4 MB, small ~170 MB)";
}

S2VModelPaths resolve_s2v_paths(const fs::path& model, const ConfigView& config) {
    S2VModelPaths p;
    p.pipeline = st::plugins::wan::resolve_pipeline_paths(model, config, kS2VComponentId);
    if (config.has("pretrained_audio_encoder_model_name_or_path")) {
        const fs::path a = config.get_string("pretrained_audio_encoder_model_name_or_path");
        st::plugins::wan::require_path_exists(a, "pretrained_audio_encoder_model_name_or_path",
                                              kS2VComponentId);
        p.audio_encoder = st::plugins::wan::component_in(a, "audio_encoder");
        st::log::info("model.wan_s2v", "audio encoder from pretrained_audio_encoder_model_name_or_path {}",
                      p.audio_encoder.string());
        return p;
    }
    for (const char* sub : {"audio_encoder", "wav2vec2-large-xlsr-53-english"}) {
        if (fs::is_directory(model / sub)) {
            p.audio_encoder = model / sub;
            break;
        }
    }
    // A Wav2Vec2 folder given directly (`st-host forward --component audio_encoder --model DIR`).
    if (p.audio_encoder.empty() && fs::is_directory(model) && !st::plugins::wan::is_pipeline_folder(model) &&
        fs::exists(model / "config.json"))
        p.audio_encoder = model;
    return p;
}

}  // namespace st::plugins::wan_s2v
