// sample_latents / sample_video on the tiny Wan model in process: determinism, samplers against a
// direct SDK loop, classifier-free guidance, skip-layer guidance, I2V refusal on a T2V model.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include "fixtures.h"
#include "st/error.h"
#include "st/samplers.h"
#include "validate/sampling.h"

namespace {

using namespace st::host::validate;
using st_test::ValidateEnv;
namespace fs = std::filesystem;

class SamplingTest : public ::testing::Test {
  protected:
    void SetUp() override {
        env = &ValidateEnv::get();
        model = env->load();
        pos = model->encode_text({"a red ball bouncing"});
        neg = model->encode_text({"blurry"});
    }
    SampleRequest request(int64_t steps = 3) const {
        SampleRequest r;
        r.positive = pos;
        r.negative = neg;
        r.frames = 5;
        r.size = {32, 32};
        r.steps = steps;
        r.guidance = 1.0;
        r.seed = 11;
        return r;
    }
    at::Tensor latents(const SampleRequest& r) { return sample_latents(*model, r); }
    ValidateEnv* env = nullptr;
    std::unique_ptr<st::host::ModelHandle> model;
    st::sdk::TensorMap pos, neg;
};

TEST_F(SamplingTest, SameSeedIsIdenticalAndAnotherSeedDiffers) {
    auto r = request();
    const at::Tensor a = latents(r);
    const at::Tensor b = latents(r);
    EXPECT_TRUE(at::equal(a, b));
    r.seed = 12;
    EXPECT_FALSE(at::allclose(a, latents(r)));
    EXPECT_EQ(a.sizes(), (std::vector<int64_t>{1, 4, 2, 4, 4}));
}

TEST_F(SamplingTest, EulerAndUniPCDifferAndEachMatchesADirectSamplerLoop) {
    for (const std::string name : {"euler", "unipc"}) {
        auto r = request(4);
        r.scheduler = name;
        r.sampler.shift = 5.0;
        r.guidance = 4.0;
        const at::Tensor got = latents(r);
        // The loop written out with the SDK sampler and predict() directly.
        at::NoGradGuard no_grad;
        auto gen = at::make_generator<at::CPUGeneratorImpl>(r.seed);
        at::Tensor x = at::randn({1, 4, 2, 4, 4}, gen, at::TensorOptions().dtype(at::kFloat));
        auto sampler = st::sdk::make_sampler(name, r.sampler);
        sampler->set_timesteps(4);
        for (int64_t i = 0; i < 4; ++i) {
            st::sdk::PredictInputs in;
            in.noisy = x;
            in.timesteps = at::full({1}, sampler->timesteps()[i], at::kFloat);
            in.conditioning = pos;
            const at::Tensor vc = model->predict(in).velocity;
            in.conditioning = neg;
            const at::Tensor vu = model->predict(in).velocity;
            x = sampler->step(st::sdk::cfg_combine(vu, vc, 4.0), i, x);
        }
        EXPECT_TRUE(at::allclose(got, x, 1e-5, 1e-6))
            << name << " max diff " << (got - x).abs().max().item<double>();
    }
    auto e = request(4), u = request(4);
    u.scheduler = "unipc";
    EXPECT_GT((latents(e) - latents(u)).abs().max().item<double>(), 1e-3);
}

TEST_F(SamplingTest, GuidanceAboveOneUsesTheNegativePrompt) {
    auto r = request();
    const at::Tensor plain = latents(r);
    r.negative = model->encode_text({"something else entirely"});
    EXPECT_TRUE(at::equal(plain, latents(r))) << "guidance 1 must ignore the negative prompt";
    r.guidance = 5.0;
    const at::Tensor other_neg = latents(r);
    r.negative = neg;
    const at::Tensor cfg = latents(r);
    EXPECT_FALSE(at::allclose(plain, cfg));
    EXPECT_FALSE(at::allclose(cfg, other_neg));
    r.negative.clear();
    EXPECT_THROW(latents(r), st::Error);
}

TEST_F(SamplingTest, SkipLayerGuidanceActsOnlyInsideItsWindow) {
    EXPECT_FALSE(skip_layers_active(0, 4, 0.5, 1.0));
    EXPECT_TRUE(skip_layers_active(2, 4, 0.5, 1.0));
    EXPECT_FALSE(skip_layers_active(2, 4, 0.0, 0.5));  // stop is exclusive
    auto trace = [&](SampleRequest r) {
        std::vector<at::Tensor> steps;
        r.on_step = [&](int64_t, const at::Tensor& x, const at::Tensor&) { steps.push_back(x.clone()); };
        latents(r);
        return steps;
    };
    auto r = request(4);
    r.guidance = 5.0;
    const auto base = trace(r);
    r.skip_layers = {1};
    r.skip_start = 0.5;
    r.skip_stop = 1.0;
    const auto slg = trace(r);
    ASSERT_EQ(slg.size(), 4u);
    EXPECT_TRUE(at::equal(base[0], slg[0]));
    EXPECT_TRUE(at::equal(base[1], slg[1]));
    EXPECT_FALSE(at::allclose(base[2], slg[2]));
    EXPECT_FALSE(at::allclose(base[3], slg[3]));
    // A window between the step fractions (0, .25, .5, .75) never activates.
    r.skip_start = 0.3;
    r.skip_stop = 0.45;
    EXPECT_TRUE(at::equal(base[3], trace(r)[3]));
    // Skipping both blocks differs from skipping one; an index past the last block is an error.
    r.skip_start = 0.0;
    r.skip_stop = 1.0;
    const auto one = trace(r);
    r.skip_layers = {0, 1};
    EXPECT_FALSE(at::allclose(one[3], trace(r)[3]));
    r.skip_layers = {2};
    try {
        latents(r);
        FAIL() << "expected an out-of-range error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("skip layer 2 is out of range"), std::string::npos) << e.what();
    }
    r.guidance = 1.0;
    r.skip_layers = {1};
    EXPECT_THROW(latents(r), st::Error);
}

TEST_F(SamplingTest, Wan22ExpertPairAppliesGuidance2BelowTheBoundary) {
    // Both experts loaded: steps with t >= 875 run the high-noise expert with `guidance`, the rest the
    // low-noise expert with `guidance_2` (diffusers guidance_scale_2). Checked against the loop
    // written out with predict(), which itself picks the expert by timestep.
    auto pair = env->load({{"model_flavour", "animegen-t2v-low"}, {"wan_validation_load_other_stage", true}},
                          env->a14b_dir());
    ASSERT_TRUE(pair->expert_boundary().has_value());
    EXPECT_DOUBLE_EQ(*pair->expert_boundary(), 875.0);
    const auto p = pair->encode_text({"a red ball bouncing"});
    const auto n = pair->encode_text({"blurry"});
    auto r = request(6);
    r.positive = p;
    r.negative = n;
    r.guidance = 4.0;
    r.guidance_2 = 1.0;  // no CFG on the low-noise steps
    const at::Tensor got = sample_latents(*pair, r);

    at::NoGradGuard no_grad;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(r.seed);
    at::Tensor x = at::randn({1, 4, 2, 4, 4}, gen, at::TensorOptions().dtype(at::kFloat));
    auto sampler = st::sdk::make_sampler("euler", r.sampler);
    sampler->set_timesteps(6);
    int64_t high_steps = 0;
    for (int64_t i = 0; i < 6; ++i) {
        const double t = sampler->timesteps()[i];
        st::sdk::PredictInputs in;
        in.noisy = x;
        in.timesteps = at::full({1}, t, at::kFloat);
        in.conditioning = p;
        at::Tensor v = pair->predict(in).velocity;
        if (t >= 875.0) {
            ++high_steps;
            in.conditioning = n;
            v = st::sdk::cfg_combine(pair->predict(in).velocity, v, 4.0);
        }
        x = sampler->step(v, i, x);
    }
    ASSERT_GT(high_steps, 0);
    ASSERT_LT(high_steps, 6);  // the schedule crosses the boundary
    EXPECT_TRUE(at::allclose(got, x, 1e-5, 1e-6)) << "max diff " << (got - x).abs().max().item<double>();

    r.guidance_2.reset();  // unset: guidance everywhere, so the result changes
    EXPECT_FALSE(at::allclose(got, sample_latents(*pair, r), 1e-4, 1e-5));

    // One expert only (no boundary): guidance_2 is ignored.
    auto single = env->load({{"model_flavour", "animegen-t2v-low"}}, env->a14b_dir());
    EXPECT_FALSE(single->expert_boundary().has_value());
    auto s = r;
    s.guidance_2 = 1.0;
    EXPECT_TRUE(at::equal(sample_latents(*single, s), sample_latents(*single, r)));
}

TEST_F(SamplingTest, VideoIsDecodedToPixels) {
    const at::Tensor v = sample_video(*model, request(2));
    EXPECT_EQ(v.sizes(), (std::vector<int64_t>{3, 5, 32, 32}));
    EXPECT_LE(v.abs().max().item<double>(), 1.0);
}

TEST_F(SamplingTest, ImageConditioningOnATextToVideoModelIsRefused) {
    const at::Tensor img = conditioning_image(at::full({40, 60, 3}, 128, at::kByte), {32, 32});
    EXPECT_EQ(img.sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
    try {
        model->encode_conditioning_image(img, 5);
        FAIL() << "a T2V model must refuse a conditioning image";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("not an image-to-video transformer"), std::string::npos)
            << e.what();
    }
}

TEST(ImageReaderTest, ReadsTheFirstFrameOfImagesAndVideos) {
    const fs::path dir = ValidateEnv::get().root / "images";
    fs::create_directories(dir);
    for (const std::string name : {"a.png", "a.jpg", "a.mp4"}) {
        const std::string frames = name == "a.mp4" ? " -t 0.5 -pix_fmt yuv420p" : " -frames:v 1";
        ASSERT_EQ(st_test::shell("ffmpeg -nostdin -v error -y -f lavfi -i testsrc=size=64x48:rate=10" +
                                 frames + " '" + (dir / name).string() + "'")
                      .code,
                  0);
        const at::Tensor f = read_first_frame(dir / name);
        EXPECT_EQ(f.sizes(), (std::vector<int64_t>{48, 64, 3})) << name;
        EXPECT_EQ(f.scalar_type(), at::kByte);
        EXPECT_GT(f.to(at::kFloat).std().item<double>(), 10.0) << name << " decoded to a flat image";
    }
    try {
        read_first_frame(dir / "missing.png");
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("missing.png"), std::string::npos) << e.what();
    }
}

TEST(ResolutionTest, ParsesListsAndEdgesAndRefusesGarbage) {
    auto r = parse_resolutions("832x480, 480X832,256", "validation_resolution");
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0].width, 832);
    EXPECT_EQ(r[0].height, 480);
    EXPECT_EQ(r[1].str(), "480x832");
    EXPECT_EQ(r[2].str(), "256x256");
    EXPECT_THROW(parse_resolutions("832x", "validation_resolution"), st::Error);
    EXPECT_THROW(parse_resolutions("a,256", "validation_resolution"), st::Error);
    EXPECT_THROW(parse_resolutions("", "validation_resolution"), st::Error);
}

}  // namespace
