// Parity of st::sdk::DPMSolverMultistepSampler with diffusers' DPMSolverMultistepScheduler (dpmsolver++,
// flow_prediction, use_flow_sigmas; Sana Video 480p's shipped scheduler) on every case of
// tests/golden/schedulers_dpm: sigmas, timesteps and full 10/50-step trajectories driven by the analytic
// fake model v = 0.3 x + 0.2 tanh(x) t / 1000 + 0.1 t / 1000; plus step-order errors and the
// scheduler_config.json reader.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>

#include "st/error.h"
#include "st/json_file.h"
#include "st/safetensors.h"
#include "st/samplers.h"

namespace {

namespace fs = std::filesystem;
using st::sdk::SamplerConfig;

const fs::path kDir = fs::path(ST_TEST_GOLDEN_DIR) / "schedulers_dpm";

// Tolerances of tests/golden/schedulers (PROVENANCE.md there), kept for this golden.
constexpr double kSigmaAtol = 1e-6;
constexpr double kTrajAtol = 5e-6;
constexpr double kTrajRtol = 1e-6;

struct Golden {
    std::shared_ptr<st::sdk::SafetensorsFile> inputs, outputs;
};

const Golden& golden() {
    static const Golden g = [] {
        Golden r;
        r.inputs = st::sdk::SafetensorsFile::open(kDir / "inputs.safetensors");
        r.outputs = st::sdk::SafetensorsFile::open(kDir / "outputs.safetensors");
        return r;
    }();
    return g;
}

// diffusers' save_config() writes Python's json, where lambda_min_clipped = -inf is the bare token
// -Infinity: st::sdk::read_json_file reads it (as the string "-Infinity"; json_as<double> -> -inf).
nlohmann::json read_diffusers_json(const fs::path& p) {
    return st::sdk::read_json_file(p, "test");
}

nlohmann::json sana_config() {
    return read_diffusers_json(kDir / "sana_n10" / "scheduler_config.json");
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& ref) {
    return (a.to(at::kDouble) - ref.to(at::kDouble)).abs().max().item<double>();
}

// |a - ref| <= atol + rtol * |ref| element-wise; reports the worst element.
void expect_close(const at::Tensor& a, const at::Tensor& ref, double atol, double rtol,
                  const std::string& what) {
    ASSERT_EQ(a.sizes(), ref.sizes()) << what;
    const at::Tensor ad = a.to(at::kDouble), rd = ref.to(at::kDouble);
    const double worst = ((ad - rd).abs() - (rd.abs() * rtol + atol)).max().item<double>();
    EXPECT_LE(worst, 0.0) << what << ": max |diff| " << max_abs_diff(a, ref) << " exceeds atol " << atol
                          << " + rtol " << rtol << "*|ref|";
}

at::Tensor to_tensor(const std::vector<double>& v) {
    return at::tensor(at::ArrayRef<double>(v.data(), v.size()), at::kDouble);
}

at::Tensor fake_model(const at::Tensor& x, double t) {
    return x * 0.3 + at::tanh(x) * (0.2 * t / 1000.0) + 0.1 * t / 1000.0;
}

struct ParityCase {
    std::string name;  // golden prefix = folder of its scheduler_config.json
    int steps;
};

class DPMSolverParityTest : public ::testing::TestWithParam<ParityCase> {};

TEST_P(DPMSolverParityTest, MatchesDiffusers) {
    const ParityCase c = GetParam();
    const std::string& p = c.name;
    const Golden& g = golden();
    const nlohmann::json j = read_diffusers_json(kDir / p / "scheduler_config.json");
    ASSERT_EQ(SamplerConfig::sampler_name_for(j), "dpmsolver++");
    auto sampler =
        st::sdk::make_sampler(SamplerConfig::sampler_name_for(j), SamplerConfig::from_diffusers_json(j));
    sampler->set_timesteps(c.steps);
    ASSERT_EQ(sampler->num_steps(), c.steps);

    expect_close(to_tensor(sampler->sigmas()), g.outputs->load(p + "_sigmas"), kSigmaAtol, 0.0,
                 p + " sigmas");
    const at::Tensor ref_t = g.outputs->load(p + "_timesteps");
    ASSERT_EQ(ref_t.scalar_type(), at::kLong);
    EXPECT_TRUE(at::equal(to_tensor(sampler->timesteps()).to(at::kLong), ref_t))
        << p << " timesteps must match";
    for (double t : sampler->timesteps()) EXPECT_EQ(t, std::floor(t));

    const at::Tensor traj = g.outputs->load(p + "_trajectory");
    const at::Tensor outs = g.outputs->load(p + "_model_outputs");
    at::Tensor x = g.inputs->load("initial_noise");
    expect_close(x, traj[0], 0.0, 0.0, p + " x_0");
    double worst = 0.0;
    for (int64_t i = 0; i < sampler->num_steps(); ++i) {
        const at::Tensor v = fake_model(x, sampler->timesteps()[static_cast<size_t>(i)]);
        expect_close(v, outs[i], kTrajAtol, kTrajRtol, p + " model output " + std::to_string(i));
        x = sampler->step(v, i, x);
        ASSERT_EQ(x.scalar_type(), at::kFloat);
        expect_close(x, traj[i + 1], kTrajAtol, kTrajRtol, p + " x_" + std::to_string(i + 1));
        worst = std::max(worst, max_abs_diff(x, traj[i + 1]));
    }
    RecordProperty("max_abs_diff", std::to_string(worst));
    std::cout << "[dpm parity] " << p << ": max |x - diffusers| over the trajectory " << worst << ", final "
              << max_abs_diff(x, traj[c.steps]) << "\n";
}

INSTANTIATE_TEST_SUITE_P(Golden, DPMSolverParityTest,
                         ::testing::Values(ParityCase{"sana_n10", 10}, ParityCase{"sana_n50", 50},
                                           ParityCase{"shift3_n10", 10}, ParityCase{"order1_n10", 10},
                                           ParityCase{"order3_n10", 10}, ParityCase{"order3_n50", 50},
                                           ParityCase{"order3_nolof_n10", 10}, ParityCase{"heun_n10", 10}),
                         [](const auto& info) { return info.param.name; });

TEST(DPMSolverSamplerTest, ReadsSanaVideoConfig) {
    const nlohmann::json j = sana_config();
    const SamplerConfig c = SamplerConfig::from_diffusers_json(j);
    EXPECT_EQ(SamplerConfig::sampler_name_for(j), "dpmsolver++");
    EXPECT_DOUBLE_EQ(c.shift, 8.0);
    EXPECT_EQ(c.num_train_timesteps, 1000);
    EXPECT_EQ(c.solver_order, 2);
    EXPECT_EQ(c.solver_type, "midpoint");
    EXPECT_EQ(c.algorithm_type, "dpmsolver++");
    EXPECT_TRUE(c.lower_order_final);
    EXPECT_FALSE(c.euler_at_final);
    EXPECT_EQ(c.final_sigmas_type, "zero");
    // The file's bare -Infinity token was read, and reads back as a number.
    ASSERT_TRUE(j.contains("lambda_min_clipped"));
    EXPECT_EQ(st::sdk::json_as<double>(j["lambda_min_clipped"], "lambda_min_clipped", "x", "test"),
              -std::numeric_limits<double>::infinity());
    EXPECT_EQ(st::sdk::quote_python_non_finite(R"({"a": -Infinity, "b": "NaN Infinity", "c": [NaN, 1]})"),
              R"({"a": "-Infinity", "b": "NaN Infinity", "c": ["NaN", 1]})");
    nlohmann::json k = j;
    k["lambda_min_clipped"] = -std::numeric_limits<double>::infinity();
    EXPECT_DOUBLE_EQ(SamplerConfig::from_diffusers_json(k).shift, 8.0);
}

TEST(DPMSolverSamplerTest, SanaTimestepsAndSigmas) {
    SamplerConfig cfg;
    cfg.shift = 8.0;
    auto s = st::sdk::make_sampler("dpmsolver++", cfg);
    s->set_timesteps(10);
    // sigma_0 = shift(1 - 1/1000) < 1 (not UniPC's 1 - 1e-6), timesteps truncated.
    EXPECT_NEAR(s->sigmas()[0], 8.0 * 0.999 / (1.0 + 7.0 * 0.999), 1e-7);
    const double head[] = {999, 986, 969, 948};
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(s->timesteps()[i], head[i]) << i;
    EXPECT_EQ(s->sigmas().size(), 11u);
    EXPECT_EQ(s->sigmas().back(), 0.0);
}

TEST(DPMSolverSamplerTest, SelectsSamplerFromDiffusersClass) {
    nlohmann::json j = {{"_class_name", "UniPCMultistepScheduler"}};
    EXPECT_EQ(SamplerConfig::sampler_name_for(j), "unipc");
    j["_class_name"] = "FlowMatchEulerDiscreteScheduler";
    EXPECT_EQ(SamplerConfig::sampler_name_for(j), "flow_match_euler");
    j["_class_name"] = "DDIMScheduler";
    EXPECT_THROW(SamplerConfig::sampler_name_for(j), st::Error);
    EXPECT_THROW(SamplerConfig::sampler_name_for(nlohmann::json::object()), st::Error);
}

TEST(DPMSolverSamplerTest, NamesAndAliases) {
    for (const char* name : {"dpmsolver++", "dpm++", "dpmsolver_multistep"}) {
        auto s = st::sdk::make_sampler(name, {});
        EXPECT_EQ(s->name(), "dpmsolver++") << name;
        // The SamplerConfig default solver_type ("bh2", UniPC's) is a midpoint DPM-Solver, as in
        // diffusers' __init__.
        EXPECT_EQ(s->config().solver_type, "midpoint") << name;
    }
    const auto names = st::sdk::sampler_names();
    for (const char* name : {"dpmsolver++", "dpm++", "dpmsolver_multistep"})
        EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
}

// Refusals name the offending key.
void expect_refused(const nlohmann::json& j, const std::string& key) {
    try {
        SamplerConfig::from_diffusers_json(j);
        ADD_FAILURE() << "expected st::Error for " << key;
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
}

TEST(DPMSolverSamplerTest, RejectsUnsupportedDiffusersOptions) {
    const nlohmann::json base = sana_config();
    const std::pair<const char*, nlohmann::json> cases[] = {
        {"use_karras_sigmas", true},
        {"use_exponential_sigmas", true},
        {"use_beta_sigmas", true},
        {"use_lu_lambdas", true},
        {"use_dynamic_shifting", true},
        {"thresholding", true},
        {"prediction_type", "epsilon"},
        {"use_flow_sigmas", false},
        {"algorithm_type", "sde-dpmsolver++"},
        {"algorithm_type", "dpmsolver"},
        {"final_sigmas_type", "sigma_min"},
        {"solver_type", "rk4"},
    };
    for (const auto& [key, value] : cases) {
        nlohmann::json j = base;
        j[key] = value;
        expect_refused(j, key);
    }
    nlohmann::json j = base;
    j.erase("prediction_type");  // diffusers' default is epsilon
    expect_refused(j, "prediction_type");

    // The sampler itself refuses what it does not implement.
    SamplerConfig bad;
    bad.solver_order = 4;
    EXPECT_THROW(st::sdk::make_sampler("dpmsolver++", bad), st::Error);
    bad = {};
    bad.solver_type = "bh3";
    EXPECT_THROW(st::sdk::make_sampler("dpmsolver++", bad), st::Error);
    bad = {};
    bad.final_sigmas_type = "sigma_min";
    EXPECT_THROW(st::sdk::make_sampler("dpmsolver++", bad), st::Error);
    bad = {};
    bad.algorithm_type = "sde-dpmsolver++";
    EXPECT_THROW(st::sdk::make_sampler("dpmsolver++", bad), st::Error);
}

TEST(DPMSolverSamplerTest, DiffusersAliasesOfSolverNames) {
    nlohmann::json j = sana_config();
    j["solver_type"] = "bh2";
    EXPECT_EQ(SamplerConfig::from_diffusers_json(j).solver_type, "midpoint");
    j["solver_type"] = "heun";
    EXPECT_EQ(SamplerConfig::from_diffusers_json(j).solver_type, "heun");
    j["algorithm_type"] = "deis";
    EXPECT_EQ(SamplerConfig::from_diffusers_json(j).algorithm_type, "dpmsolver++");
}

TEST(DPMSolverSamplerTest, RequiresOrderedStepsAndResetRestarts) {
    auto s = st::sdk::make_sampler("dpmsolver++", {});
    const at::Tensor x = at::randn({3}), v = at::randn({3});
    EXPECT_THROW(s->step(v, 0, x), st::Error);  // before set_timesteps
    s->set_timesteps(5);
    EXPECT_THROW(s->step(v, 1, x), st::Error);  // must start at 0
    const at::Tensor a = s->step(v, 0, x);
    EXPECT_THROW(s->step(v, 2, a), st::Error);
    EXPECT_THROW(s->step(v, 5, a), st::Error);
    EXPECT_THROW(s->step(v, -1, a), st::Error);
    EXPECT_THROW(s->step(at::randn({4}), 1, at::randn({4})), st::Error);  // shape changed mid-run
    EXPECT_THROW(s->step(at::randn({2}), 1, a), st::Error);               // velocity/sample mismatch
    s->reset();
    EXPECT_TRUE(at::equal(s->step(v, 0, x), a));
    s->set_timesteps(5);  // also starts over
    EXPECT_TRUE(at::equal(s->step(v, 0, x), a));
}

// With an exact velocity field (x_sigma = (1-sigma) x0 + sigma e, v = e - x0) every order lands on x0:
// DPM-Solver++ is exact for a constant data prediction.
TEST(DPMSolverSamplerTest, ExactVelocityRecoversCleanSample) {
    at::manual_seed(0);
    const at::Tensor x0 = at::randn({2, 3, 4}), e = at::randn({2, 3, 4});
    for (int64_t order = 1; order <= 3; ++order) {
        for (const char* type : {"midpoint", "heun"}) {
            SamplerConfig cfg;
            cfg.shift = 8.0;
            cfg.solver_order = order;
            cfg.solver_type = type;
            auto s = st::sdk::make_sampler("dpmsolver++", cfg);
            s->set_timesteps(20);
            at::Tensor x = e * s->sigmas()[0] + x0 * (1.0 - s->sigmas()[0]);
            for (int64_t i = 0; i < s->num_steps(); ++i) {
                x = s->step(e - x0, i, x);
                const double sig = s->sigmas()[static_cast<size_t>(i + 1)];
                EXPECT_LE((x - (e * sig + x0 * (1.0 - sig))).abs().max().item<float>(), 2e-5)
                    << "order " << order << " " << type << " step " << i;
            }
        }
    }
}

TEST(DPMSolverSamplerTest, SingleStepAndDtypes) {
    const at::Tensor x = at::ones({1, 2}, at::kBFloat16), v = at::full({1, 2}, 0.5, at::kBFloat16);
    auto s = st::sdk::make_sampler("dpmsolver++", {});
    s->set_timesteps(1);
    const at::Tensor out = s->step(v, 0, x);
    EXPECT_EQ(out.scalar_type(), at::kBFloat16);
    EXPECT_NEAR(out[0][0].item<float>(), 1.0f - 0.5f * static_cast<float>(s->sigmas()[0]), 1e-2);

    SamplerConfig cfg;
    cfg.shift = 8.0;
    auto d = st::sdk::make_sampler("dpmsolver++", cfg);
    d->set_timesteps(6);
    at::Tensor xd = at::randn({4}, at::kDouble);
    for (int64_t i = 0; i < d->num_steps(); ++i) xd = d->step(fake_model(xd, d->timesteps()[i]), i, xd);
    EXPECT_EQ(xd.scalar_type(), at::kDouble);
    EXPECT_TRUE(at::isfinite(xd).all().item<bool>());
}

}  // namespace
