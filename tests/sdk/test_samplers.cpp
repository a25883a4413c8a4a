// Parity of st::sdk samplers with diffusers' FlowMatchEulerDiscreteScheduler and
// UniPCMultistepScheduler (flow mode) on every case of tests/golden/schedulers: sigmas, timesteps
// and full 10/40-step trajectories driven by the analytic fake model v = 0.3 x + 0.1 t / 1000.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "st/error.h"
#include "st/safetensors.h"
#include "st/samplers.h"

namespace {

namespace fs = std::filesystem;
using st::sdk::SamplerConfig;

const fs::path kDir = fs::path(ST_TEST_GOLDEN_DIR) / "schedulers";

struct Golden {
    std::shared_ptr<st::sdk::SafetensorsFile> inputs, outputs;
    nlohmann::json tolerance;
};

const Golden& golden() {
    static const Golden g = [] {
        Golden r;
        r.inputs = st::sdk::SafetensorsFile::open(kDir / "inputs.safetensors");
        r.outputs = st::sdk::SafetensorsFile::open(kDir / "outputs.safetensors");
        std::ifstream f(kDir / "case.json");
        r.tolerance = nlohmann::json::parse(f).at("tolerance");
        return r;
    }();
    return g;
}

nlohmann::json read_json(const fs::path& p) {
    std::ifstream f(p);
    return nlohmann::json::parse(f);
}

// |a - ref| <= atol + rtol * |ref| element-wise; reports the worst element.
void expect_close(const at::Tensor& a, const at::Tensor& ref, double atol, double rtol,
                  const std::string& what) {
    ASSERT_EQ(a.sizes(), ref.sizes()) << what;
    const at::Tensor ad = a.to(at::kDouble), rd = ref.to(at::kDouble);
    const at::Tensor excess = (ad - rd).abs() - (rd.abs() * rtol + atol);
    const double worst = excess.max().item<double>();
    EXPECT_LE(worst, 0.0) << what << ": max |diff| " << (ad - rd).abs().max().item<double>()
                          << " exceeds atol " << atol << " + rtol " << rtol << "*|ref|";
}

at::Tensor to_tensor(const std::vector<double>& v) {
    return at::tensor(at::ArrayRef<double>(v.data(), v.size()), at::kDouble);
}

struct ParityCase {
    std::string sampler;  // "euler" | "unipc" (golden prefix)
    int shift;
    int steps;
};

std::string prefix(const ParityCase& c) {
    return c.sampler + "_shift" + std::to_string(c.shift) + "_n" + std::to_string(c.steps);
}

class SamplerParityTest : public ::testing::TestWithParam<ParityCase> {};

TEST_P(SamplerParityTest, MatchesDiffusers) {
    const ParityCase c = GetParam();
    const std::string p = prefix(c);
    const Golden& g = golden();
    // The config is read from the golden's own scheduler_config.json (diffusers save_config()).
    const SamplerConfig cfg = SamplerConfig::from_diffusers_json(
        read_json(kDir / (c.sampler + "_shift" + std::to_string(c.shift)) / "scheduler_config.json"));
    EXPECT_DOUBLE_EQ(cfg.shift, c.shift);
    auto sampler = st::sdk::make_sampler(c.sampler, cfg);
    sampler->set_timesteps(c.steps);
    ASSERT_EQ(sampler->num_steps(), c.steps);

    const double sigma_atol = g.tolerance.at("sigmas").at("atol").get<double>();
    expect_close(to_tensor(sampler->sigmas()), g.outputs->load(p + "_sigmas"), sigma_atol, 0.0,
                 p + " sigmas");
    const at::Tensor ref_t = g.outputs->load(p + "_timesteps");
    if (c.sampler == "unipc") {
        ASSERT_EQ(ref_t.scalar_type(), at::kLong);
        const at::Tensor mine = to_tensor(sampler->timesteps()).to(at::kLong);
        EXPECT_TRUE(at::equal(mine, ref_t)) << p << " timesteps must match exactly";
        // Integers exactly (the double values are whole numbers).
        for (double t : sampler->timesteps()) EXPECT_EQ(t, std::floor(t));
    } else {
        expect_close(to_tensor(sampler->timesteps()), ref_t,
                     g.tolerance.at("euler_timesteps").at("atol").get<double>(), 0.0, p + " timesteps");
    }

    const double atol = g.tolerance.at("trajectory").at("atol").get<double>();
    const double rtol = g.tolerance.at("trajectory").at("rtol").get<double>();
    const at::Tensor traj = g.outputs->load(p + "_trajectory");
    const at::Tensor outs = g.outputs->load(p + "_model_outputs");
    at::Tensor x = g.inputs->load("initial_noise");
    expect_close(x, traj[0], 0.0, 0.0, p + " x_0");
    for (int64_t i = 0; i < sampler->num_steps(); ++i) {
        const at::Tensor v = x * 0.3 + 0.1 * sampler->timesteps()[static_cast<size_t>(i)] / 1000.0;
        expect_close(v, outs[i], atol, rtol, p + " model output " + std::to_string(i));
        x = sampler->step(v, i, x);
        ASSERT_EQ(x.scalar_type(), at::kFloat);
        expect_close(x, traj[i + 1], atol, rtol, p + " x_" + std::to_string(i + 1));
    }
}

INSTANTIATE_TEST_SUITE_P(Golden, SamplerParityTest,
                         ::testing::Values(ParityCase{"euler", 3, 10}, ParityCase{"euler", 3, 40},
                                           ParityCase{"euler", 5, 10}, ParityCase{"euler", 5, 40},
                                           ParityCase{"unipc", 3, 10}, ParityCase{"unipc", 3, 40},
                                           ParityCase{"unipc", 5, 10}, ParityCase{"unipc", 5, 40}),
                         [](const auto& info) { return prefix(info.param); });

TEST(SamplerTest, EulerDocumentedTimesteps) {
    // models.md 12.2, checked against diffusers: shift 3, N = 10.
    const double expected[] = {1000, 960.13, 913.35, 857.69, 790.37, 707.28, 602.15, 464.88, 278.05, 8.93};
    auto s = st::sdk::make_sampler("flow_match_euler", {});
    s->set_timesteps(10);
    for (size_t i = 0; i < 10; ++i) EXPECT_NEAR(s->timesteps()[i], expected[i], 0.006) << i;
    EXPECT_EQ(s->sigmas().back(), 0.0);
}

TEST(SamplerTest, UniPCDocumentedTimesteps) {
    const double expected[] = {999, 964, 923, 875, 818, 750, 667, 563, 429, 251};
    auto s = st::sdk::make_sampler("unipc", {});
    s->set_timesteps(10);
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(s->timesteps()[i], expected[i]) << i;
    EXPECT_NEAR(s->sigmas()[9], 0.2519, 1e-4);
}

// With an exact velocity field (x_sigma = (1-sigma) x0 + sigma e, v = e - x0) both samplers must
// land on x0: Euler exactly (linear path), UniPC through its final x = x0 step.
TEST(SamplerTest, ExactVelocityRecoversCleanSample) {
    at::manual_seed(0);
    const at::Tensor x0 = at::randn({2, 3, 4}), e = at::randn({2, 3, 4});
    for (const char* name : {"euler", "unipc"}) {
        auto s = st::sdk::make_sampler(name, {});
        s->set_timesteps(7);
        at::Tensor x = e.clone();
        for (int64_t i = 0; i < s->num_steps(); ++i) x = s->step(e - x0, i, x);
        EXPECT_LE((x - x0).abs().max().item<float>(), 2e-5) << name;
    }
}

TEST(SamplerTest, SingleStepAndDtypes) {
    const at::Tensor x = at::ones({1, 2}, at::kBFloat16), v = at::full({1, 2}, 0.5, at::kBFloat16);
    for (const char* name : {"euler", "unipc"}) {
        auto s = st::sdk::make_sampler(name, {});
        s->set_timesteps(1);
        const at::Tensor out = s->step(v, 0, x);
        EXPECT_EQ(out.scalar_type(), at::kBFloat16) << name;
        EXPECT_NEAR(out[0][0].item<float>(), 0.5f, 1e-2) << name;  // x0 = x - 1 * v
    }
}

TEST(SamplerTest, UniPCRequiresOrderedStepsAndResetRestarts) {
    auto s = st::sdk::make_sampler("unipc", {});
    const at::Tensor x = at::randn({3}), v = at::randn({3});
    EXPECT_THROW(s->step(v, 0, x), st::Error);  // before set_timesteps
    s->set_timesteps(5);
    const at::Tensor a = s->step(v, 0, x);
    EXPECT_THROW(s->step(v, 2, a), st::Error);
    EXPECT_THROW(s->step(v, 5, a), st::Error);
    s->reset();
    EXPECT_TRUE(at::equal(s->step(v, 0, x), a));
    EXPECT_THROW(s->step(at::randn({4}), 1, a), st::Error);
}

TEST(SamplerTest, UnknownNameListsKnownOnes) {
    try {
        st::sdk::make_sampler("ddim", {});
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("ddim"), std::string::npos) << msg;
        for (const auto& n : st::sdk::sampler_names()) EXPECT_NE(msg.find(n), std::string::npos) << msg;
    }
}

TEST(SamplerTest, RejectsUnsupportedDiffusersOptions) {
    nlohmann::json j = read_json(kDir / "unipc_shift3" / "scheduler_config.json");
    j["use_karras_sigmas"] = true;
    EXPECT_THROW(SamplerConfig::from_diffusers_json(j), st::Error);
    j = read_json(kDir / "unipc_shift3" / "scheduler_config.json");
    j["prediction_type"] = "epsilon";
    EXPECT_THROW(SamplerConfig::from_diffusers_json(j), st::Error);
    j = read_json(kDir / "euler_shift3" / "scheduler_config.json");
    j["use_dynamic_shifting"] = true;
    EXPECT_THROW(SamplerConfig::from_diffusers_json(j), st::Error);
    j["_class_name"] = "DDIMScheduler";
    EXPECT_THROW(SamplerConfig::from_diffusers_json(j), st::Error);
    SamplerConfig bad;
    bad.shift = 0.0;
    EXPECT_THROW(st::sdk::make_sampler("euler", bad), st::Error);
}

TEST(SamplerTest, CfgCombine) {
    const at::Tensor u = at::tensor({1.0f, 2.0f}), c = at::tensor({3.0f, 1.0f});
    EXPECT_TRUE(at::allclose(st::sdk::cfg_combine(u, c, 5.0), at::tensor({11.0f, -3.0f})));
    EXPECT_TRUE(at::equal(st::sdk::cfg_combine(u, c, 1.0), c));
    EXPECT_TRUE(at::equal(st::sdk::cfg_combine(u, c, 0.0), u));
    EXPECT_THROW(st::sdk::cfg_combine(u, at::zeros({3}), 2.0), st::Error);
}

}  // namespace
