// model.wan@1 (plugins/wan/plugin): WanFamily directly (make_model, probe, forward components on the
// golden models, load / predict / taps / encoders on a tiny made model, options) and the same
// commands through st-host with st-wan.so (forward, make-model, inspect).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/clip_vision.h"
#include "core/config.h"
#include "core/ff_chunking.h"
#include "hf_golden.h"
#include "st/bucket_alignment.h"
#include "st/error.h"
#include "st/safetensors.h"
#include "test_transformer_util.h"
#include "wan_family.h"

namespace st::plugins::wan {
namespace {

namespace fs = std::filesystem;
using st::sdk::ConfigView;
using st::sdk::TensorMap;
using test::allclose_manifest;
using test::golden;

TensorMap load_all(const fs::path& file) {
    auto src = st::sdk::open_tensor_source(file);
    TensorMap m;
    for (const auto& i : src->infos()) m[i.name] = src->load(i.name);
    return m;
}

ConfigView config_of(const nlohmann::json& j) {
    return ConfigView(std::make_shared<const nlohmann::json>(j));
}

struct RunResult {
    int code = -1;
    std::string out;
};

RunResult run_host(const std::string& args) {
    const std::string cmd = std::string("ST_PLUGIN_PATH= ") + ST_HOST_EXE + " --plugin-dir " +
                            ST_TEST_PLUGIN_DIR + " " + args + " 2>&1";
    RunResult r;
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) return r;
    char buf[4096];
    while (fgets(buf, sizeof buf, p) != nullptr) r.out += buf;
    const int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

// The golden models assembled into one diffusers pipeline folder: transformer = wan_t2v,
// vae = wan_vae (z 4 = the DiT's 4 channels), text_encoder + tokenizer = umt5 (d_model 16 = text_dim).
void write_golden_pipeline(const fs::path& dir) {
    fs::create_directories(dir / "transformer");
    fs::create_directories(dir / "vae");
    fs::copy_file(golden("wan_t2v/config.json"), dir / "transformer/config.json");
    fs::copy_file(golden("wan_t2v/diffusion_pytorch_model.safetensors"),
                  dir / "transformer/diffusion_pytorch_model.safetensors");
    fs::copy_file(golden("wan_vae/config.json"), dir / "vae/config.json");
    fs::copy_file(golden("wan_vae/diffusion_pytorch_model.safetensors"),
                  dir / "vae/diffusion_pytorch_model.safetensors");
    fs::copy(golden("umt5/text_encoder"), dir / "text_encoder", fs::copy_options::recursive);
    fs::copy(golden("umt5/tokenizer"), dir / "tokenizer", fs::copy_options::recursive);
    std::ofstream(dir / "model_index.json") << R"({"_class_name": "WanPipeline", "transformer": ["diffusers",
        "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"], "text_encoder": ["transformers",
        "UMT5EncoderModel"], "tokenizer": ["transformers", "T5Tokenizer"]})";
}

class WanPluginTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        root_ = fs::temp_directory_path() / ("st_wan_plugin_" + std::to_string(::getpid()));
        fs::remove_all(root_);
        fs::create_directories(root_);
        WanFamily family;
        family.make_model("tiny", root_ / "tiny", 3);
        write_golden_pipeline(root_ / "golden");
    }
    static void TearDownTestSuite() { fs::remove_all(root_); }
    static fs::path root_;
};
fs::path WanPluginTest::root_;

void expect_golden_vae(const TensorMap& out) {
    const fs::path ref = golden("wan_vae/outputs.safetensors");
    const test::Tolerance vae_tol{2e-4, 1e-4, 1.0};  // MANIFEST wan_vae: atol/rtol only
    for (const char* name : {"posterior_mean_t1", "posterior_logvar_t1", "latents_normalized_t1",
                             "posterior_mean_t9", "posterior_logvar_t9", "latents_normalized_t9"}) {
        ASSERT_TRUE(out.count(name)) << name;
        EXPECT_TRUE(allclose_manifest(out.at(name), test::load_tensor(ref, name), vae_tol)) << name;
    }
}

TEST_F(WanPluginTest, MakeModelTinyWritesTheDiffusersLayout) {
    const fs::path m = root_ / "tiny";
    for (const char* f :
         {"model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
          "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
          "text_encoder/model.safetensors", "tokenizer/spiece.model", "scheduler/scheduler_config.json"})
        EXPECT_TRUE(fs::is_regular_file(m / f)) << f;
    const auto index = nlohmann::json::parse(std::ifstream(m / "model_index.json"));
    EXPECT_EQ(index["_class_name"], "WanPipeline");
    EXPECT_EQ(index["vae"][1], "AutoencoderKLWan");
    EXPECT_EQ(index["transformer"][1], "WanTransformer3DModel");
    const auto sched = nlohmann::json::parse(std::ifstream(m / "scheduler/scheduler_config.json"));
    EXPECT_EQ(sched["_class_name"], "UniPCMultistepScheduler");
    EXPECT_EQ(sched["prediction_type"], "flow_prediction");
    EXPECT_TRUE(sched["use_flow_sigmas"].get<bool>());
    EXPECT_EQ(WanTransformerConfig::from_file(m / "transformer/config.json"), WanTransformerConfig::tiny());
    const auto src = st::sdk::SafetensorsFile::open(m / "transformer/diffusion_pytorch_model.safetensors");
    EXPECT_EQ(static_cast<int64_t>(src->infos().size()), WanTransformerConfig::tiny().tensor_count());
    uintmax_t total = 0;
    for (const auto& e : fs::recursive_directory_iterator(m))
        if (e.is_regular_file()) total += e.file_size();
    EXPECT_LT(total, 8u << 20) << "the tiny preset must stay small";
}

TEST_F(WanPluginTest, ProbeAcceptsWanLayoutsAndRejectsForeignPathsWithoutThrowing) {
    WanFamily f;
    auto r = f.probe(root_ / "tiny");
    EXPECT_TRUE(r.loadable) << r.reason;
    EXPECT_NE(r.variant.find("diffusers pipeline"), std::string::npos) << r.variant;
    r = f.probe(root_ / "tiny" / "transformer");
    EXPECT_TRUE(r.loadable) << r.reason;
    EXPECT_NE(r.variant.find("transformer folder"), std::string::npos) << r.variant;
    r = f.probe(golden("wan_t2v/original_format.safetensors"));
    EXPECT_TRUE(r.loadable) << r.reason;
    EXPECT_NE(r.variant.find("original"), std::string::npos) << r.variant;
    r = f.probe(golden("wan_t2v/sharded/diffusion_pytorch_model.safetensors.index.json"));
    EXPECT_TRUE(r.loadable) << r.reason;
    for (const fs::path& foreign : {root_ / "does_not_exist", golden("wan_vae"),
                                    golden("umt5/tokenizer/spiece.model"), root_ / "tiny" / "vae"}) {
        EXPECT_NO_THROW(r = f.probe(foreign)) << foreign;
        EXPECT_FALSE(r.loadable) << foreign;
        EXPECT_FALSE(r.reason.empty()) << foreign;
    }
}

TEST_F(WanPluginTest, ForwardComponentsReproduceTheGoldenOutputs) {
    WanFamily f;
    const ConfigView cfg = config_of(nlohmann::json::object());
    const fs::path model = root_ / "golden";
    // transformer: 1-D and per-token timesteps in one call
    TensorMap out =
        f.forward_component(model, "transformer", load_all(golden("wan_t2v/inputs.safetensors")), cfg);
    const fs::path t2v_ref = golden("wan_t2v/outputs.safetensors");
    EXPECT_TRUE(allclose_manifest(out.at("out"), test::load_tensor(t2v_ref, "out")));
    EXPECT_TRUE(allclose_manifest(out.at("out_per_token_timestep"),
                                  test::load_tensor(t2v_ref, "out_per_token_timestep")));
    // the bf16 file as a single-file model
    out = f.forward_component(golden("wan_t2v/diffusion_pytorch_model.bf16.safetensors"), "transformer",
                              load_all(golden("wan_t2v/inputs.safetensors")), cfg);
    EXPECT_TRUE(allclose_manifest(out.at("out"), test::load_tensor(t2v_ref, "out_bf16_weights")));
    // VAE
    const TensorMap vae_in = load_all(golden("wan_vae/inputs.safetensors"));
    expect_golden_vae(f.forward_component(model, "vae_encode", vae_in, cfg));
    out = f.forward_component(model, "vae_decode", vae_in, cfg);
    const test::Tolerance vae_tol{2e-4, 1e-4, 1.0};
    for (const char* name : {"decoded_t1", "decoded_t3"})
        EXPECT_TRUE(allclose_manifest(
            out.at(name), test::load_tensor(golden("wan_vae/outputs.safetensors"), name), vae_tol))
            << name;
    // text encoder
    out = f.forward_component(model, "text_encoder", load_all(golden("umt5/inputs.safetensors")), cfg);
    const TensorMap ref = load_all(golden("umt5/outputs.safetensors"));
    EXPECT_TRUE(at::equal(out.at("seq_lens"), ref.at("seq_lens")));
    EXPECT_TRUE(allclose_manifest(out.at("prompt_embeds"), ref.at("prompt_embeds"), {2e-4, 1e-4, 1.0}));
    const int64_t n0 = ref.at("seq_lens")[0].item<int64_t>();
    EXPECT_TRUE(allclose_manifest(out.at("last_hidden_state")[0].narrow(0, 0, n0),
                                  ref.at("last_hidden_state")[0].narrow(0, 0, n0), {2e-4, 1e-4, 1.0}));
}

TEST_F(WanPluginTest, ForwardI2V22PicksTheExpertByTheBoundary) {
    WanFamily f;
    const TensorMap out =
        f.forward_component(golden("wan_i2v"), "transformer", load_all(golden("wan_i2v/inputs.safetensors")),
                            config_of(nlohmann::json::object()));
    const fs::path ref = golden("wan_i2v/outputs.safetensors");
    ASSERT_TRUE(out.count("out_t950") && out.count("out_t400"));
    EXPECT_TRUE(allclose_manifest(out.at("out_t950"), test::load_tensor(ref, "out_t950")));
    EXPECT_TRUE(allclose_manifest(out.at("out_t400"), test::load_tensor(ref, "out_t400")));
}

TEST_F(WanPluginTest, ForwardOnTheTinyModelGivesFiniteOutputsOfTheRightShapes) {
    WanFamily f;
    const ConfigView cfg = config_of(nlohmann::json::object());
    const fs::path m = root_ / "tiny";
    at::manual_seed(0);
    TensorMap out = f.forward_component(m, "transformer",
                                        {{"hidden_states", at::randn({1, 4, 2, 8, 8})},
                                         {"timestep", at::full({1}, 500.0)},
                                         {"encoder_hidden_states", at::randn({1, 7, 16})}},
                                        cfg);
    EXPECT_EQ(out.at("out").sizes(), (at::IntArrayRef{1, 4, 2, 8, 8}));
    EXPECT_TRUE(out.at("out").isfinite().all().item<bool>());
    out = f.forward_component(m, "vae_encode", {{"video_x", at::rand({1, 3, 5, 16, 16}) * 2 - 1}}, cfg);
    EXPECT_EQ(out.at("latents_normalized_x").sizes(), (at::IntArrayRef{1, 4, 2, 2, 2}));
    EXPECT_TRUE(out.at("posterior_mean_x").isfinite().all().item<bool>());
    out = f.forward_component(m, "vae_decode", {{"latents", at::randn({1, 4, 2, 2, 2})}}, cfg);
    EXPECT_EQ(out.at("decoded").sizes(), (at::IntArrayRef{1, 3, 5, 16, 16}));
    EXPECT_TRUE(out.at("decoded").isfinite().all().item<bool>());
    at::Tensor ids = at::zeros({1, 512}, at::kLong);
    ids.narrow(1, 0, 4).copy_(at::tensor({5, 9, 17, 1}, at::kLong));
    out = f.forward_component(m, "text_encoder", {{"input_ids", ids}}, cfg);
    EXPECT_EQ(out.at("prompt_embeds").sizes(), (at::IntArrayRef{1, 512, 16}));
    EXPECT_EQ(out.at("seq_lens").item<int64_t>(), 4);
    EXPECT_TRUE(out.at("prompt_embeds").isfinite().all().item<bool>());
}

TEST_F(WanPluginTest, ForwardErrorsNameTheMissingTensorOrPart) {
    WanFamily f;
    const ConfigView cfg = config_of(nlohmann::json::object());
    try {
        f.forward_component(root_ / "tiny", "transformer", {{"hidden_states", at::randn({1, 4, 1, 8, 8})}},
                            cfg);
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("encoder_hidden_states"), std::string::npos) << e.what();
    }
    try {
        f.forward_component(root_ / "tiny" / "transformer", "vae_encode",
                            {{"video", at::zeros({1, 3, 1, 16, 16})}}, cfg);
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("VAE"), std::string::npos) << e.what();
    }
    EXPECT_THROW(
        f.forward_component(root_ / "tiny", "vae_decode", {{"video", at::zeros({1, 3, 1, 16, 16})}}, cfg),
        st::Error);
}

TEST_F(WanPluginTest, LoadPredictTapsAndEncodersOnTheTinyModel) {
    WanFamily f;
    st::sdk::ModelLoadRequest req;
    req.path = root_ / "tiny";
    req.config = config_of({{"model_flavour", "t2v-480p-1.3b-2.1"}, {"gradient_checkpointing", true}});
    f.load(req);
    EXPECT_EQ(f.spatial_multiple(), 16);
    EXPECT_EQ(f.temporal_multiple(), 4);
    const std::string id = f.cache_identity();
    EXPECT_EQ(id.rfind("wan|", 0), 0u) << id;
    EXPECT_EQ(id, f.cache_identity());

    const TensorMap lat = f.encode_video(at::rand({2, 3, 5, 32, 48}) * 2 - 1);
    EXPECT_EQ(lat.at("latents").sizes(), (at::IntArrayRef{2, 4, 2, 4, 6}));
    EXPECT_TRUE(lat.at("latents").isfinite().all().item<bool>());
    EXPECT_THROW(f.encode_video(at::zeros({1, 3, 4, 32, 32})), st::Error);  // 4 frames: not 4k+1

    const TensorMap txt = f.encode_text({"a cat on a sofa", "a dog running in the park at night"});
    const at::Tensor pe = txt.at("prompt_embeds");
    ASSERT_EQ(pe.sizes(), (at::IntArrayRef{2, 512, 16}));
    EXPECT_GT(pe[0][0].abs().sum().item<double>(), 0.0);
    EXPECT_EQ(pe[0].narrow(0, 100, 412).abs().sum().item<double>(), 0.0);  // zero rows after the prompt

    st::sdk::PredictInputs in;
    in.noisy = lat.at("latents").narrow(0, 0, 1).clone();
    in.timesteps = at::full({1}, 700.0);
    in.conditioning["prompt_embeds"] = pe.narrow(0, 0, 1);
    in.taps = {"blocks.1.out"};
    const auto out = f.predict(in);
    EXPECT_EQ(out.velocity.sizes(), in.noisy.sizes());
    EXPECT_TRUE(out.velocity.isfinite().all().item<bool>());
    ASSERT_TRUE(out.taps.count("blocks.1.out"));
    EXPECT_EQ(out.taps.at("blocks.1.out").sizes(), (at::IntArrayRef{1, 2 * 2 * 3, 24}));
    // (gradients, determinism, LoRA and save round trips: the conformance battery,
    // test_plugin_conformance.cpp)
    in.taps = {"blocks.9.out"};
    EXPECT_THROW(f.predict(in), st::Error);
    EXPECT_EQ(f.default_lora_targets(), (std::vector<std::string>{"to_q", "to_k", "to_v", "to_out.0"}));
}

TEST_F(WanPluginTest, Wan22ExpertPairSwitchesAtTheBoundaryOnlyWithoutGradients) {
    // make-model tiny-a14b: transformer/ = high-noise expert, transformer_2/ = low-noise expert,
    // boundary_ratio 0.875. Each single-expert family is the reference for one side of the switch.
    const fs::path dir = root_ / "a14b";
    WanFamily maker;
    maker.make_model("tiny-a14b", dir, 9);
    const auto index = nlohmann::json::parse(std::ifstream(dir / "model_index.json"));
    EXPECT_EQ(index.at("boundary_ratio").get<double>(), 0.875);
    ASSERT_TRUE(fs::exists(dir / "transformer_2" / "diffusion_pytorch_model.safetensors"));

    auto load = [&](const std::string& flavour, bool other) {
        auto f = std::make_unique<WanFamily>();
        st::sdk::ModelLoadRequest req;
        req.path = dir;
        req.training = false;
        req.config = config_of({{"model_flavour", flavour}, {"wan_validation_load_other_stage", other}});
        f->load(req);
        return f;
    };
    auto pair = load("animegen-t2v-low", true);  // trains transformer_2, peer transformer
    auto high = load("animegen-t2v-high", false);
    auto low = load("animegen-t2v-low", false);
    ASSERT_TRUE(pair->expert_boundary().has_value());
    EXPECT_DOUBLE_EQ(*pair->expert_boundary(), 875.0);
    EXPECT_FALSE(low->expert_boundary().has_value());  // one network: one guidance scale

    const TensorMap txt = low->encode_text({"a paper boat on a river"});
    st::sdk::PredictInputs in;
    in.noisy = at::randn({1, 4, 2, 4, 6}, at::TensorOptions().dtype(at::kFloat));
    in.conditioning["prompt_embeds"] = txt.at("prompt_embeds");
    auto velocity = [&](WanFamily& f, double t) {
        in.timesteps = at::full({1}, t);
        return f.predict(in).velocity;
    };
    {
        torch::NoGradGuard no_grad;
        EXPECT_TRUE(at::equal(velocity(*pair, 900.0), velocity(*high, 900.0)));
        EXPECT_TRUE(at::equal(velocity(*pair, 875.0), velocity(*high, 875.0)));  // t >= boundary: high
        EXPECT_TRUE(at::equal(velocity(*pair, 500.0), velocity(*low, 500.0)));
        EXPECT_FALSE(at::allclose(velocity(*high, 500.0), velocity(*low, 500.0)));  // the experts differ
        in.timesteps = at::tensor({900.0, 500.0});
        in.noisy = in.noisy.expand({2, -1, -1, -1, -1}).contiguous();
        in.conditioning["prompt_embeds"] = txt.at("prompt_embeds").expand({2, -1, -1});
        EXPECT_THROW(pair->predict(in), st::Error);  // a batch may not straddle the boundary
        in.noisy = in.noisy.narrow(0, 0, 1);
        in.conditioning["prompt_embeds"] = txt.at("prompt_embeds");
    }
    // Training (gradients on) always runs the trained expert, whatever the timestep.
    EXPECT_TRUE(at::allclose(velocity(*pair, 900.0), velocity(*low, 900.0)));
}

/// Predicts on the two-sample encoding `enc` (latents, conditioning_latents, image_embeds) with two
/// prompts, checks the velocity's shape and that gradients reach every trainable parameter. Leaves `in`
/// set up for further predictions; returns the velocity, detached.
at::Tensor predict_checking_gradients(WanFamily& f, const TensorMap& enc, st::sdk::PredictInputs& in) {
    const TensorMap txt = f.encode_text({"a cat", "a dog"});
    in.noisy = at::randn(enc.at("latents").sizes());
    in.timesteps = at::full({2}, 600.0);
    in.conditioning = {{"prompt_embeds", txt.at("prompt_embeds")},
                       {"conditioning_latents", enc.at("conditioning_latents")},
                       {"image_embeds", enc.at("image_embeds")}};
    const at::Tensor v = f.predict(in).velocity;
    EXPECT_EQ(v.sizes(), in.noisy.sizes());
    v.square().mean().backward();
    for (const auto& p : f.trainable().named_parameters())
        EXPECT_TRUE(p.value().grad().defined()) << "no gradient reaches " << p.key();
    return v.detach();
}

TEST_F(WanPluginTest, Wan21ImageToVideoEncodesClipImageEmbedsAndTrains) {
    // make-model tiny-i2v21: the CLIP branch transformer + image_encoder/ + image_processor/. The
    // encoders return the first frame's VAE conditioning and its CLIP penultimate hidden states
    // (diffusers WanImageToVideoPipeline.encode_image), which predict consumes.
    const fs::path dir = root_ / "i2v21";
    WanFamily maker;
    maker.make_model("tiny-i2v21", dir, 5);
    const auto index = nlohmann::json::parse(std::ifstream(dir / "model_index.json"));
    EXPECT_EQ(index.at("image_encoder").at(1), "CLIPVisionModelWithProjection");
    ASSERT_TRUE(fs::exists(dir / "image_processor" / "preprocessor_config.json"));

    WanFamily f;
    st::sdk::ModelLoadRequest req;
    req.path = dir;
    req.training = true;
    req.config = config_of({{"model_flavour", "i2v-14b-2.1"}});
    f.load(req);
    ASSERT_EQ(f.sampling_inputs().size(), 1u);
    EXPECT_EQ(f.sampling_inputs()[0].kind, st::sdk::MediaKind::image);
    EXPECT_TRUE(f.sample_media().empty());
    EXPECT_EQ(st::sdk::find_capability<st::sdk::ImageConditioning>(f),
              static_cast<st::sdk::ImageConditioning*>(&f));
    EXPECT_EQ(st::sdk::find_capability<st::sdk::AudioConditioning>(f), nullptr);
    EXPECT_EQ(st::sdk::find_capability<st::sdk::GuidancePolicy>(f), nullptr);
    EXPECT_NE(f.cache_identity().find("image_encoder:"), std::string::npos) << f.cache_identity();
    // SimpleTuner's Wan buckets: aligned to 32 px whatever aspect_bucket_alignment says.
    const auto* align = st::sdk::find_capability<st::sdk::BucketAlignment>(f);
    ASSERT_NE(align, nullptr);
    EXPECT_EQ(align->bucket_alignment(), 32);
    EXPECT_TRUE(align->bucket_alignment_required());

    const at::Tensor pixels = at::rand({2, 3, 5, 32, 48}) * 2 - 1;
    const TensorMap enc = f.encode_video(pixels);
    ASSERT_TRUE(enc.count("conditioning_latents") && enc.count("image_embeds"));
    EXPECT_EQ(enc.at("latents").sizes(), enc.at("conditioning_latents").sizes());
    EXPECT_EQ(enc.at("image_embeds").sizes(), (at::IntArrayRef{2, 17, 32}));
    // The same numbers as the CLIP encoder run directly on the first frames.
    ClipImageEncoder clip = ClipImageEncoder::load(dir / "image_encoder");
    EXPECT_TRUE(at::allclose(enc.at("image_embeds"), clip.encode(pixels.select(2, 0)), 1e-5, 1e-6));
    const TensorMap cond = f.encode_conditioning_image(pixels.select(2, 0), 5);
    EXPECT_TRUE(at::allclose(cond.at("image_embeds"), enc.at("image_embeds"), 1e-5, 1e-6));

    st::sdk::PredictInputs in;
    const at::Tensor v = predict_checking_gradients(f, enc, in);
    // The image embeddings change the prediction (the CLIP branch is live).
    in.conditioning["image_embeds"] = at::zeros_like(enc.at("image_embeds"));
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(at::allclose(f.predict(in).velocity, v.detach(), 1e-4, 1e-5));
}

TEST_F(WanPluginTest, Wan21FirstLastFrameConditionsOnBothFramesAndTrains) {
    // make-model tiny-flf2v21 (Wan2.1-FLF2V's layout: pos_embed over both frames' CLIP tokens). A clip
    // trains on its first and last frame: diffusers WanImageToVideoPipeline with last_image builds the
    // condition VAE(first, black..., last), image_embeds CLIP(first) | CLIP(last) and a mask that also
    // marks the last pixel frame.
    const fs::path dir = root_ / "flf2v21";
    WanFamily maker;
    maker.make_model("tiny-flf2v21", dir, 6);
    WanFamily f;
    st::sdk::ModelLoadRequest req;
    req.path = dir;
    req.training = true;
    req.config = config_of({{"model_flavour", "flf2v-14b-2.1"}});
    f.load(req);
    EXPECT_EQ(f.checkpoint_info().variant.rfind("flf2v", 0), 0u) << f.checkpoint_info().variant;

    const at::Tensor pixels = at::rand({2, 3, 5, 32, 48}) * 2 - 1;
    const at::Tensor first = pixels.select(2, 0), last = pixels.select(2, 4);
    const TensorMap enc = f.encode_video(pixels);
    ClipImageEncoder clip = ClipImageEncoder::load(dir / "image_encoder");
    EXPECT_EQ(enc.at("image_embeds").sizes(), (at::IntArrayRef{2, 34, 32}));
    EXPECT_TRUE(at::allclose(enc.at("image_embeds"), at::cat({clip.encode(first), clip.encode(last)}, 1),
                             1e-5, 1e-6));
    const at::Tensor black = at::zeros({2, 3, 3, 32, 48});
    const at::Tensor expected_condition =
        f.encode_video(at::cat({first.unsqueeze(2), black, last.unsqueeze(2)}, 2)).at("latents");
    EXPECT_TRUE(at::allclose(enc.at("conditioning_latents"), expected_condition, 1e-5, 1e-6));
    const at::Tensor first_only =
        f.encode_video(at::cat({first.unsqueeze(2), black, at::zeros_like(last).unsqueeze(2)}, 2))
            .at("latents");
    EXPECT_FALSE(at::allclose(enc.at("conditioning_latents"), first_only, 1e-4, 1e-5));
    // One validation image serves as first and last frame (SimpleTuner's validation with one image).
    const TensorMap cond = f.encode_conditioning_image(first, 5);
    EXPECT_TRUE(at::allclose(cond.at("image_embeds"), at::cat({clip.encode(first), clip.encode(first)}, 1),
                             1e-5, 1e-6));

    st::sdk::PredictInputs in;
    const at::Tensor v = predict_checking_gradients(f, enc, in);
    torch::NoGradGuard no_grad;
    // The default mask: all of latent frame 0, and channel 3 (the last pixel frame) of the last one.
    at::Tensor mask = at::zeros({2, 4, 2, 4, 6});
    mask.select(2, 0).fill_(1.0);
    mask.select(2, 1).select(1, 3).fill_(1.0);
    in.conditioning["conditioning_mask"] = mask;
    EXPECT_TRUE(at::allclose(f.predict(in).velocity, v.detach(), 1e-5, 1e-6));
    mask.select(2, 1).zero_();  // the I2V mask gives another prediction
    EXPECT_FALSE(at::allclose(f.predict(in).velocity, v.detach(), 1e-4, 1e-5));
    in.conditioning.erase("conditioning_mask");
    // diffusers' layout [2B, 17, D] (first_0, last_0, first_1, last_1) is the same input.
    in.conditioning["image_embeds"] = enc.at("image_embeds").reshape({4, 17, 32});
    EXPECT_TRUE(at::allclose(f.predict(in).velocity, v.detach(), 1e-5, 1e-6));
    // Single-image embeddings [B, 17, D] are refused, never folded into pairs of different samples.
    in.conditioning["image_embeds"] = enc.at("image_embeds").narrow(1, 0, 17);
    EXPECT_THROW(f.predict(in), st::Error);
}

TEST_F(WanPluginTest, PretrainedOverridesPickComponentsFromElsewhere) {
    WanFamily f;
    // The tiny made model, with transformer and VAE taken from the golden folders instead.
    const ConfigView cfg =
        config_of({{"pretrained_transformer_model_name_or_path", golden("wan_t2v").string()},
                   {"pretrained_transformer_subfolder", "none"},
                   {"pretrained_vae_model_name_or_path", golden("wan_vae").string()}});
    TensorMap out = f.forward_component(root_ / "tiny", "transformer",
                                        load_all(golden("wan_t2v/inputs.safetensors")), cfg);
    EXPECT_TRUE(
        allclose_manifest(out.at("out"), test::load_tensor(golden("wan_t2v/outputs.safetensors"), "out")));
    expect_golden_vae(f.forward_component(root_ / "tiny", "vae_encode",
                                          load_all(golden("wan_vae/inputs.safetensors")), cfg));
    // A missing override path is an error naming the key, never a download.
    try {
        f.forward_component(root_ / "tiny", "vae_encode", load_all(golden("wan_vae/inputs.safetensors")),
                            config_of({{"pretrained_vae_model_name_or_path", "Wan-AI/not-here"}}));
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("pretrained_vae_model_name_or_path"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("does not download"), std::string::npos) << e.what();
    }
}

TEST_F(WanPluginTest, CacheIdentityChangesWhenTheVaeFilesChange) {
    const fs::path m = root_ / "identity";
    fs::copy(root_ / "tiny", m, fs::copy_options::recursive);
    WanFamily f;
    st::sdk::ModelLoadRequest req;
    req.path = m;
    req.config = config_of(nlohmann::json::object());
    f.load(req);
    const std::string before = f.cache_identity();
    const fs::path weights = m / "vae" / "diffusion_pytorch_model.safetensors";
    fs::last_write_time(weights, fs::last_write_time(weights) + std::chrono::seconds(5));
    EXPECT_NE(f.cache_identity(), before);
}

TEST(WanPluginOptionsTest, DeclaresTheWanKeysOnlyWithSimpleTunerDefaults) {
    std::map<std::string, st::sdk::OptionSpec> specs;
    for (auto& s : wan_option_specs()) specs[s.name] = s;
    for (const char* k :
         {"model_flavour", "pretrained_transformer_model_name_or_path", "pretrained_transformer_subfolder",
          "pretrained_vae_model_name_or_path", "pretrained_t5_model_name_or_path",
          "wan_force_2_1_time_embedding", "wan_validation_load_other_stage", "enable_chunked_feed_forward",
          "feed_forward_chunk_size", "feed_forward_chunk_dim"})
        EXPECT_TRUE(specs.count(k)) << k;
    // Declared by the host for every family (ModelLoadRequest carries them).
    for (const char* k :
         {"model_family", "pretrained_model_name_or_path", "output_dir", "seed", "learning_rate",
          "gradient_checkpointing", "gradient_checkpointing_interval", "tread_config"})
        EXPECT_FALSE(specs.count(k)) << k;
    EXPECT_EQ(specs["model_flavour"].default_value, "t2v-480p-1.3b-2.1");
    EXPECT_NE(std::find(specs["model_flavour"].choices.begin(), specs["model_flavour"].choices.end(),
                        "i2v-14b-2.2-high"),
              specs["model_flavour"].choices.end());
    EXPECT_EQ(specs["pretrained_transformer_subfolder"].default_value, "transformer");
}

TEST(WanPluginOptionsTest, FeedForwardChunkingReadAsSimpleTunerDoes) {
    using st::plugins::wan::resolve_feed_forward_chunking;
    const std::string id = "model.wan@1";
    ::unsetenv("WAN_FEED_FORWARD_CHUNK_SIZE");
    ::unsetenv("WAN_FEED_FORWARD_CHUNK_DIM");
    auto c = resolve_feed_forward_chunking(config_of({{"enable_chunked_feed_forward", true}}), id);
    EXPECT_TRUE(c.enabled);
    EXPECT_FALSE(c.chunk_size.has_value());
    EXPECT_EQ(c.chunk_dim, 0);
    EXPECT_FALSE(resolve_feed_forward_chunking(config_of({}), id).enabled);
    // The environment variable enables chunking by itself (SimpleTuner's WAN_FEED_FORWARD_CHUNK_SIZE).
    ::setenv("WAN_FEED_FORWARD_CHUNK_SIZE", "7", 1);
    ::setenv("WAN_FEED_FORWARD_CHUNK_DIM", "1", 1);
    c = resolve_feed_forward_chunking(config_of({}), id);
    EXPECT_TRUE(c.enabled);
    EXPECT_EQ(c.chunk_size.value_or(-1), 7);
    EXPECT_EQ(c.chunk_dim, 1);
    c = resolve_feed_forward_chunking(config_of({{"enable_chunked_feed_forward", true},
                                                 {"feed_forward_chunk_size", 3},
                                                 {"feed_forward_chunk_dim", 0}}),
                                      id);
    EXPECT_EQ(c.chunk_size.value_or(-1), 3);
    EXPECT_EQ(c.chunk_dim, 0);
    ::unsetenv("WAN_FEED_FORWARD_CHUNK_SIZE");
    // feed_forward_chunk_size <= 0 is automatic, as in SimpleTuner.
    c = resolve_feed_forward_chunking(
        config_of({{"enable_chunked_feed_forward", true}, {"feed_forward_chunk_size", 0}}), id);
    EXPECT_TRUE(c.enabled);
    EXPECT_FALSE(c.chunk_size.has_value());
    ::setenv("WAN_FEED_FORWARD_CHUNK_SIZE", "x7", 1);
    EXPECT_THROW(resolve_feed_forward_chunking(config_of({{"enable_chunked_feed_forward", true}}), id),
                 st::Error);
    ::unsetenv("WAN_FEED_FORWARD_CHUNK_SIZE");
    ::unsetenv("WAN_FEED_FORWARD_CHUNK_DIM");
}

TEST_F(WanPluginTest, HostForwardMakeModelAndInspectThroughStWanSo) {
    const fs::path out = root_ / "host_out.safetensors";
    RunResult r = run_host("forward --plugin wan --model " + (root_ / "golden").string() +
                           " --component transformer --inputs " +
                           golden("wan_t2v/inputs.safetensors").string() + " --output " + out.string());
    ASSERT_EQ(r.code, 0) << r.out;
    const fs::path ref = golden("wan_t2v/outputs.safetensors");
    EXPECT_TRUE(allclose_manifest(test::load_tensor(out, "out"), test::load_tensor(ref, "out")));
    EXPECT_TRUE(allclose_manifest(test::load_tensor(out, "out_per_token_timestep"),
                                  test::load_tensor(ref, "out_per_token_timestep")));

    r = run_host("forward --plugin wan --model " + golden("wan_vae").string() +
                 " --component vae_encode --inputs " + golden("wan_vae/inputs.safetensors").string() +
                 " --output " + out.string());
    ASSERT_EQ(r.code, 0) << r.out;
    expect_golden_vae(load_all(out));

    const fs::path made = root_ / "host_tiny";
    r = run_host("make-model --plugin wan --preset tiny --seed 5 --out " + made.string());
    ASSERT_EQ(r.code, 0) << r.out;
    r = run_host("inspect " + (made / "transformer/diffusion_pytorch_model.safetensors").string());
    ASSERT_EQ(r.code, 0) << r.out;
    // the summary line of `inspect`: "F32: <n> tensors, <m> elements"
    EXPECT_NE(r.out.find("F32: " + std::to_string(WanTransformerConfig::tiny().tensor_count()) + " tensors"),
              std::string::npos)
        << r.out;
    r = run_host("forward --plugin wan --model " + made.string() + " --component vae_decode --inputs " +
                 golden("wan_vae/inputs.safetensors").string() + " --output " + out.string());
    ASSERT_EQ(r.code, 0) << r.out;
    const TensorMap decoded = load_all(out);
    EXPECT_EQ(decoded.at("decoded_t3").sizes(), (at::IntArrayRef{1, 3, 9, 16, 16}));
    EXPECT_TRUE(decoded.at("decoded_t3").isfinite().all().item<bool>());
    r = run_host("forward --plugin wan --model " + made.string() + " --component nope --inputs " +
                 golden("umt5/inputs.safetensors").string() + " --output " + out.string());
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.out.find("vae_encode"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace st::plugins::wan

namespace st::plugins::wan {
namespace {

TEST(WanHfGoldenTest, ImageEncoderComponentMatchesTransformersClipVisionModel) {
    // tests/golden/hf_clip_vision: transformers CLIPVisionModel(pixel_values, output_hidden_states=True).
    const fs::path dir = fs::path(ST_TEST_GOLDEN_DIR) / "hf_clip_vision";
    const TensorMap out =
        test::host_forward("wan", dir, "image_encoder", load_all(dir / "inputs.safetensors"), "clip");
    std::map<std::string, std::string> names{{"last_hidden_state", "last_hidden_state"},
                                             {"pooler_output", "pooler_output"}};
    for (int i = 0; i <= 3; ++i)
        names["hidden_states_" + std::to_string(i)] = "hidden_states_" + std::to_string(i);
    test::expect_hf_parity(out, load_all(dir / "outputs.safetensors"), names);
    // hidden_states_2 = hidden_states[-2] is what Wan 2.1 I2V conditions on.
    EXPECT_EQ(out.count("hidden_states_4"), 0u);
}

}  // namespace
}  // namespace st::plugins::wan
