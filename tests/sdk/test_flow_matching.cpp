// Parity of st::sdk flow-matching training math with tests/golden/flow_matching_training
// (SimpleTuner conventions), plus the sampling, auto-shift and error behaviour.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "st/error.h"
#include "st/flow_matching.h"
#include "st/safetensors.h"

namespace {

namespace fs = std::filesystem;
using namespace st::sdk;

const fs::path kDir = fs::path(ST_TEST_GOLDEN_DIR) / "flow_matching_training";

void expect_close(const at::Tensor& a, const at::Tensor& ref, double atol, double rtol,
                  const std::string& what) {
    ASSERT_EQ(a.numel(), ref.numel()) << what;
    const at::Tensor ad = a.to(at::kDouble).reshape(ref.sizes()), rd = ref.to(at::kDouble);
    const double worst = ((ad - rd).abs() - (rd.abs() * rtol + atol)).max().item<double>();
    EXPECT_LE(worst, 0.0) << what << ": max |diff| " << (ad - rd).abs().max().item<double>();
}

TEST(FlowMatchingTest, MatchesSimpleTunerGolden) {
    const auto in = SafetensorsFile::open(kDir / "inputs.safetensors");
    const auto out = SafetensorsFile::open(kDir / "outputs.safetensors");
    std::ifstream f(kDir / "case.json");
    const nlohmann::json tol = nlohmann::json::parse(f).at("tolerance").at("fp32");
    const double atol = tol.at("atol").get<double>(), rtol = tol.at("rtol").get<double>();

    const at::Tensor latents = in->load("latents"), noise = in->load("noise"), sigmas = in->load("sigmas");
    const double shift = in->load("shift").item<double>();
    const double scale = in->load("sigmoid_scale").item<double>();
    const double offset = in->load("sampling_offset").item<double>();

    const FlowMatchingBatch b = make_flow_matching_batch(latents, noise, sigmas);
    expect_close(b.noisy, out->load("noisy_latents"), atol, rtol, "noisy_latents");
    expect_close(b.target, out->load("target"), atol, rtol, "target");
    expect_close(b.timesteps, out->load("timesteps"), atol, rtol, "timesteps");
    expect_close(shift_sigmas(sigmas, shift), out->load("sigmas_shifted"), atol, rtol, "sigmas_shifted");

    const at::Tensor ln = logit_normal_from_normal(in->load("normal_samples"), scale, offset);
    expect_close(ln, out->load("logit_normal_sigmas"), atol, rtol, "logit_normal_sigmas");
    expect_close(shift_sigmas(ln, shift), out->load("logit_normal_sigmas_shifted"), atol, rtol,
                 "logit_normal_sigmas_shifted");

    const at::Tensor pred = in->load("model_pred");
    expect_close(flow_matching_loss_per_sample(pred, b.target), out->load("loss_per_sample"), atol, rtol,
                 "loss_per_sample");
    expect_close(flow_matching_loss(pred, b.target), out->load("loss"), atol, rtol, "loss");
    expect_close(x0_from_velocity(b.noisy, b.target, sigmas), out->load("x0_from_velocity"), atol, rtol,
                 "x0_from_velocity");
}

TEST(FlowMatchingTest, SamplingIsDeterministicPerGeneratorAndMatchesFormula) {
    FlowSigmaOptions o;  // logit-normal, shift 3
    o.sigmoid_scale = 1.5;
    o.offset = -0.2;
    const std::vector<int64_t> shape{8, 16, 3, 8, 8};
    at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(42);
    at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(42);
    const at::Tensor a = sample_flow_sigmas(8, o, shape, g1);
    const at::Tensor b = sample_flow_sigmas(8, o, shape, g2);
    EXPECT_TRUE(at::equal(a, b));
    EXPECT_FALSE(at::equal(a, sample_flow_sigmas(8, o, shape, g1)));  // the generator advanced
    // Same draws by hand: z ~ N(0,1) from an identically seeded generator.
    at::Generator g3 = at::make_generator<at::CPUGeneratorImpl>(42);
    at::Tensor z = at::empty({8});
    z.normal_(0.0, 1.0, g3);
    expect_close(a, shift_sigmas(at::sigmoid((z - 0.2) * 1.5), 3.0), 1e-7, 1e-6, "logit-normal by hand");
    EXPECT_GT(a.min().item<float>(), 0.0f);
    EXPECT_LT(a.max().item<float>(), 1.0f);

    o.sampling = parse_sigma_sampling("uniform");
    o.shift = 0.0;  // no static shift, no auto shift -> plain U(0,1)
    at::Generator g4 = at::make_generator<at::CPUGeneratorImpl>(7);
    const at::Tensor u = sample_flow_sigmas(4096, o, shape, g4);
    EXPECT_NEAR(u.mean().item<double>(), 0.5, 0.02);
    EXPECT_GE(u.min().item<float>(), 0.0f);
    EXPECT_LT(u.max().item<float>(), 1.0f);
}

TEST(FlowMatchingTest, ShiftProperties) {
    const at::Tensor s = at::linspace(0.0, 1.0, 11, at::kDouble);
    EXPECT_TRUE(at::allclose(shift_sigmas(s, 1.0), s));
    const at::Tensor sh = shift_sigmas(s, 3.0);
    EXPECT_DOUBLE_EQ(sh[0].item<double>(), 0.0);
    EXPECT_DOUBLE_EQ(sh[10].item<double>(), 1.0);
    EXPECT_NEAR(sh[5].item<double>(), 0.75, 1e-12);  // 3*0.5 / (1 + 2*0.5)
    EXPECT_TRUE((sh.slice(0, 1, 10) > s.slice(0, 1, 10)).all().item<bool>());
    EXPECT_THROW(shift_sigmas(s, 0.0), st::Error);
    EXPECT_THROW(shift_sigmas(s, -2.0), st::Error);
}

TEST(FlowMatchingTest, AutoShiftFollowsCalculateShiftAndIsClamped) {
    AutoShiftOptions o;
    EXPECT_NEAR(auto_shift_value(256, o), std::exp(0.5), 1e-12);
    EXPECT_NEAR(auto_shift_value(4096, o), std::exp(1.15), 1e-12);
    // Wan 480p, 81 frames: latents [1, 16, 21, 60, 104], patch 2 -> 21 * 30 * 52 tokens, mu ~ 6.
    const std::vector<int64_t> video{1, 16, 21, 60, 104};
    EXPECT_EQ(auto_shift_seq_len(video), 21 * 30 * 52);
    EXPECT_DOUBLE_EQ(auto_shift_value(21 * 30 * 52, o), o.max_shift_value);
    o.max_shift_value = 1000.0;
    const double mu = 0.5 + (21.0 * 30 * 52 - 256) * (1.15 - 0.5) / (4096 - 256);
    EXPECT_NEAR(auto_shift_value(21 * 30 * 52, o), std::exp(mu), 1e-9);
    EXPECT_GT(std::exp(mu), 300.0);  // what SimpleTuner would use unclamped

    FlowSigmaOptions f;
    EXPECT_DOUBLE_EQ(effective_shift(f, video), 3.0);  // static shift wins
    f.shift = 0.0;
    EXPECT_DOUBLE_EQ(effective_shift(f, video), 1.0);  // no shift at all
    f.auto_shift = true;
    EXPECT_DOUBLE_EQ(effective_shift(f, video), 12.0);
    EXPECT_NEAR(effective_shift(f, std::vector<int64_t>{1, 16, 1, 32, 32}), std::exp(0.5), 1e-12);
}

TEST(FlowMatchingTest, BatchKeepsDtypeAndChecksShapes) {
    const at::Tensor x0 = at::randn({2, 4, 3, 3}).to(at::kBFloat16),
                     e = at::randn({2, 4, 3, 3}).to(at::kBFloat16);
    const FlowMatchingBatch b = make_flow_matching_batch(x0, e, at::tensor({0.0f, 1.0f}));
    EXPECT_EQ(b.noisy.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(b.noisy[0], x0[0]));  // sigma 0: clean
    EXPECT_TRUE(at::equal(b.noisy[1], e[1]));   // sigma 1: pure noise
    EXPECT_EQ(b.timesteps.scalar_type(), at::kFloat);
    EXPECT_FLOAT_EQ(b.timesteps[1].item<float>(), 1000.0f);
    const at::Tensor loss = flow_matching_loss_per_sample(b.target, b.target);
    EXPECT_EQ(loss.scalar_type(), at::kFloat);
    EXPECT_EQ(loss.sum().item<float>(), 0.0f);
    EXPECT_THROW(make_flow_matching_batch(x0, e, at::tensor({0.5f})), st::Error);
    EXPECT_THROW(make_flow_matching_batch(x0, e.narrow(0, 0, 1), at::tensor({0.5f, 0.5f})), st::Error);
    EXPECT_THROW(flow_matching_loss(x0, x0.narrow(1, 0, 2)), st::Error);
    EXPECT_THROW(parse_sigma_sampling("beta"), st::Error);
    at::Generator none;
    EXPECT_THROW(sample_flow_sigmas(2, {}, std::vector<int64_t>{2, 4, 3, 3}, none), st::Error);
}

}  // namespace
