// st-host generate end to end (subprocess) on the tiny Wan model: the mp4 and png read back with
// ffprobe/ffmpeg, seeds, guidance, LoRA files in every format st reads, I2V refusal, --help.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "fixtures.h"
#include "st/lora.h"
#include "st/safetensors.h"

namespace {

using st_test::ValidateEnv;
namespace fs = std::filesystem;

class GenerateTest : public ::testing::Test {
  protected:
    void SetUp() override { env = &ValidateEnv::get(); }
    /// Runs generate with the common tiny settings (seed 1, guidance 3 unless `args` sets them) plus `args`.
    st_test::Proc generate(const fs::path& out, const std::string& args) const {
        std::string common =
            "--prompt 'a red ball' --frames 9 --resolution 32x32 --steps 2 --mixed_precision no ";
        if (args.find("--seed") == std::string::npos) common += "--seed 1 ";
        if (args.find("--guidance") == std::string::npos) common += "--guidance 3 ";
        return st_test::shell(st_test::host_prefix() + "generate --plugin wan --model '" +
                              env->model_dir.string() + "' " + common + "--out '" + out.string() + "' " +
                              args);
    }
    /// The first frame, from the lossless PNG written beside the mp4. (libx264's output is not
    /// bit-reproducible from run to run, so pixel equality is checked on the PNG; the in-process tests
    /// compare whole videos as tensors.)
    std::string pixels(const std::string& name, const std::string& args) const {
        const fs::path out = env->root / "gen" / (name + ".mp4");
        const auto r = generate(out, args);
        EXPECT_EQ(r.code, 0) << r.out;
        return st_test::decode_rgb(fs::path(out).replace_extension(".png"));
    }
    ValidateEnv* env = nullptr;
};

TEST_F(GenerateTest, WritesAnMp4AndAFirstFramePngThatDecodeBack) {
    const fs::path out = env->root / "gen" / "basic.mp4";
    const auto r = generate(out, "--fps 16 --scheduler unipc --flow_shift 5");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("step 2/2"), std::string::npos) << "progress lines: " << r.out;
    const auto p = st_test::probe(out);
    EXPECT_EQ(p.frames, 9);
    EXPECT_EQ(p.width, 32);
    EXPECT_EQ(p.height, 32);
    EXPECT_EQ(p.fps, "16/1");
    EXPECT_EQ(p.codec, "h264");
    EXPECT_EQ(p.pix_fmt, "yuv420p");
    const auto png = st_test::probe(env->root / "gen" / "basic.png");
    EXPECT_EQ(png.codec, "png");
    EXPECT_EQ(png.width, 32);
    EXPECT_EQ(png.height, 32);
}

TEST_F(GenerateTest, SeedsGuidanceAndSchedulerDecideThePixels) {
    const std::string a = pixels("seed1", "");
    ASSERT_EQ(a.size(), 32u * 32 * 3);
    const std::string again = pixels("seed1_again", "");
    EXPECT_EQ(a.size(), again.size());
    EXPECT_TRUE(a == again) << "first differing byte "
                            << std::distance(a.begin(),
                                             std::mismatch(a.begin(), a.end(), again.begin()).first);
    EXPECT_TRUE(a != pixels("seed2", "--seed 2"));
    EXPECT_TRUE(a != pixels("guidance1", "--guidance 1"));
    EXPECT_TRUE(a != pixels("unipc", "--scheduler unipc"));
    EXPECT_TRUE(a != pixels("negative", "--negative_prompt 'green squares'"));
    // Config keys pass through: skip-layer guidance over the whole run changes the render.
    EXPECT_TRUE(a !=
                pixels("slg",
                       "--validation_guidance_skip_layers '[1]' --validation_guidance_skip_layers_start 0 "
                       "--validation_guidance_skip_layers_stop 1"));
}

TEST_F(GenerateTest, ASkipLayerTheModelLacksIsRefusedBeforeSampling) {
    // The tiny model has 2 blocks: skip layer 9 used to render (exit 0) as if no layer were skipped.
    const fs::path out = env->root / "gen" / "skip9.mp4";
    const auto r = generate(out, "--validation_guidance_skip_layers '[9]'");
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(
        r.out.find("validation_guidance_skip_layers = [9]: block 9 does not exist in model.wan@1 (blocks "
                   "0 .. 1)"),
        std::string::npos)
        << r.out;
    EXPECT_FALSE(fs::exists(out));
}

TEST_F(GenerateTest, LoraFilesInEveryFormatLoadAndStrengthZeroIsNoLora) {
    // Random non-zero adapters on the tiny model, written by the SDK in both formats st writes.
    const fs::path dir = env->root / "lora";
    fs::create_directories(dir);
    {
        auto model = env->load();
        torch::nn::Module& root = model->trainable();
        st::sdk::LoraConfig lc;
        lc.rank = 4;
        lc.alpha = 2.0;
        st::sdk::inject_lora(root, model->default_lora_targets(), lc);
        at::NoGradGuard g;
        at::manual_seed(3);
        for (auto& [name, t] : st::sdk::lora_parameters(root))
            if (name.find("lora_B") != std::string::npos) t.copy_(at::randn(t.sizes()) * 0.5);
        st::sdk::save_lora(dir / "comfy.safetensors", root, st::sdk::LoraFormat::comfyui,
                           model->lora_name_map());
        st::sdk::save_lora(dir / "diffusers.safetensors", root, st::sdk::LoraFormat::diffusers);
    }
    // kohya names from the comfyui file: lora_unet_<native module with '_'>.lora_down/lora_up/alpha.
    {
        auto src = st::sdk::open_tensor_source(dir / "comfy.safetensors");
        st::sdk::TensorMap kohya;
        for (const auto& info : src->infos()) {
            std::string k = info.name.substr(std::string("diffusion_model.").size());
            std::string suffix;
            for (const auto& [from, to] :
                 std::vector<std::pair<std::string, std::string>>{{".lora_A.weight", ".lora_down.weight"},
                                                                  {".lora_B.weight", ".lora_up.weight"},
                                                                  {".alpha", ".alpha"}})
                if (k.size() > from.size() && k.compare(k.size() - from.size(), from.size(), from) == 0) {
                    suffix = to;
                    k = k.substr(0, k.size() - from.size());
                }
            ASSERT_FALSE(suffix.empty()) << info.name;
            std::replace(k.begin(), k.end(), '.', '_');
            kohya["lora_unet_" + k + suffix] = src->load(info.name);
        }
        st::sdk::save_safetensors(dir / "kohya.safetensors", kohya, {});
    }
    const std::string base = pixels("nolora", "");
    const std::string comfy = pixels("comfy", "--lora '" + (dir / "comfy.safetensors").string() + "'");
    EXPECT_TRUE(base != comfy);
    EXPECT_TRUE(comfy ==
                pixels("diffusers", "--lora '" + (dir / "diffusers.safetensors").string() + ":1.0'"));
    EXPECT_TRUE(comfy == pixels("kohya", "--lora '" + (dir / "kohya.safetensors").string() + "'"));
    EXPECT_TRUE(base == pixels("zero", "--lora '" + (dir / "comfy.safetensors").string() + ":0'"));
    const std::string half = pixels("half", "--lora '" + (dir / "diffusers.safetensors").string() + ":0.5'");
    EXPECT_TRUE(half != base);
    EXPECT_TRUE(half != comfy);
    // Two files stack (folded in order): 0.5 + 0.5 renders like 1.0 up to rounding of the sums.
    const std::string stacked =
        pixels("stacked", "--lora '" + (dir / "comfy.safetensors").string() + ":0.5' --lora '" +
                              (dir / "kohya.safetensors").string() + ":0.5'");
    ASSERT_EQ(stacked.size(), comfy.size());
    int max_diff = 0;
    for (size_t i = 0; i < stacked.size(); ++i)
        max_diff = std::max(max_diff, std::abs(static_cast<int>(static_cast<uint8_t>(stacked[i])) -
                                               static_cast<int>(static_cast<uint8_t>(comfy[i]))));
    EXPECT_LE(max_diff, 2);
    EXPECT_TRUE(stacked != half);
}

TEST_F(GenerateTest, ConfigFileSuppliesTheModelAndTheSettings) {
    // A training config's keys give the same render as the flags; flags still override the file.
    const fs::path cfg = env->root / "gen_config.json";
    fs::create_directories(cfg.parent_path());
    std::ofstream(cfg) << nlohmann::json{
        {"model_family", "wan"},
        {"pretrained_model_name_or_path", env->model_dir.string()},
        {"mixed_precision", "no"},
        {"validation_num_video_frames", 9},
        {"validation_resolution", "32x32"},
        {"validation_num_inference_steps", 2},
        {"validation_guidance", 3.0},
        {"validation_seed",
         1}}.dump();
    const fs::path out = env->root / "gen" / "from_config.mp4";
    auto r = st_test::shell(st_test::host_prefix() + "generate --plugin wan --config '" + cfg.string() +
                            "' --prompt 'a red ball' --out '" + out.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    const std::string from_flags = pixels("config_twin", "");
    EXPECT_TRUE(st_test::decode_rgb(fs::path(out).replace_extension(".png")) == from_flags);
    r = st_test::shell(st_test::host_prefix() + "generate --plugin wan --config '" + cfg.string() +
                       "' --prompt 'a red ball' --seed 2 --out '" + out.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_TRUE(st_test::decode_rgb(fs::path(out).replace_extension(".png")) != from_flags);
}

TEST_F(GenerateTest, ImageOnATextToVideoModelFailsClearly) {
    const fs::path img = env->root / "cond.png";
    ASSERT_EQ(st_test::shell("ffmpeg -nostdin -v error -y -f lavfi -i testsrc=size=64x48 -frames:v 1 '" +
                             img.string() + "'")
                  .code,
              0);
    const auto r = generate(env->root / "gen" / "i2v.mp4", "--image '" + img.string() + "'");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.out.find("--image " + img.string() + ": the model (model.wan@1) takes no image"),
              std::string::npos)
        << r.out;
    EXPECT_FALSE(fs::exists(env->root / "gen" / "i2v.mp4"));
}

TEST_F(GenerateTest, ImageToVideoModelIsConditionedOnTheImage) {
    // A tiny Wan 2.2-style I2V model (36-channel layout scaled down: 4 + 4 + 4 in, 4 out).
    const fs::path model = env->root / "model_i2v";
    auto made =
        st_test::shell(st_test::host_prefix() + "make-model --plugin wan --preset tiny-i2v --seed 5 --out '" +
                       model.string() + "'");
    ASSERT_EQ(made.code, 0) << made.out;
    const fs::path a = env->root / "cond_a.png", b = env->root / "cond_b.png";
    ASSERT_EQ(st_test::shell("ffmpeg -nostdin -v error -y -f lavfi -i testsrc=size=64x48 -frames:v 1 '" +
                             a.string() + "'")
                  .code,
              0);
    ASSERT_EQ(st_test::shell("ffmpeg -nostdin -v error -y -f lavfi -i smptebars=size=64x48 -frames:v 1 '" +
                             b.string() + "'")
                  .code,
              0);
    auto render = [&](const std::string& name, const std::string& image) {
        const fs::path out = env->root / "gen" / (name + ".mp4");
        const auto r =
            st_test::shell(st_test::host_prefix() + "generate --plugin wan --model '" + model.string() +
                           "' --prompt 'a red ball' --frames 9 --resolution 32x32 --steps 2 --seed 1 "
                           "--guidance 3 --mixed_precision no --out '" +
                           out.string() + "'" + (image.empty() ? "" : " --image '" + image + "'"));
        return std::make_pair(r, out);
    };
    const auto [ra, out_a] = render("i2v_a", a.string());
    ASSERT_EQ(ra.code, 0) << ra.out;
    EXPECT_EQ(st_test::probe(out_a).frames, 9);
    const auto [rb, out_b] = render("i2v_b", b.string());
    ASSERT_EQ(rb.code, 0) << rb.out;
    EXPECT_TRUE(st_test::decode_rgb(fs::path(out_a).replace_extension(".png")) !=
                st_test::decode_rgb(fs::path(out_b).replace_extension(".png")))
        << "a different conditioning image must change the video";
    // Without an image the I2V model cannot run (its sampling_inputs say so), and the message names
    // the flag.
    const auto [rn, out_n] = render("i2v_none", "");
    EXPECT_NE(rn.code, 0);
    EXPECT_NE(rn.out.find("--image"), std::string::npos) << rn.out;
}

TEST_F(GenerateTest, MissingFlagsAndHelp) {
    auto r = st_test::shell(st_test::host_prefix() + "generate --plugin wan --model '" +
                            env->model_dir.string() + "' --out x.mp4");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.out.find("--prompt is required"), std::string::npos) << r.out;
    r = st_test::shell(st_test::host_prefix() + "generate --help");
    EXPECT_EQ(r.code, 0) << r.out;
    for (const char* flag : {"--model", "--lora", "--prompt", "--negative_prompt", "--image", "--frames",
                             "--resolution", "--steps", "--guidance", "--seed", "--scheduler", "--flow_shift",
                             "--mixed_precision", "--config", "--out"})
        EXPECT_NE(r.out.find(flag), std::string::npos) << flag << " missing from:\n" << r.out;
}

}  // namespace
