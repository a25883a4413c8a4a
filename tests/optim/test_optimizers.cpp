// Optimizers against golden values from tests/golden/optim/make_golden.py, state round trips,
// name resolution and configuration errors.
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>

#include "optim_test_util.h"
#include "st/error.h"

namespace st::plugins::optim::test {
namespace {

struct GoldenRun {
    std::unique_ptr<sdk::Optimizer> opt;
    std::vector<sdk::OptimizerParam> params;
};

GoldenRun make_golden_optimizer(const std::string& optimizer, const nlohmann::json& c,
                                nlohmann::json overrides = nlohmann::json::object()) {
    const at::ScalarType dtype = c["dtype"] == "bfloat16" ? at::kBFloat16 : at::kFloat;
    sdk::OptimizerInit init;
    init.params = golden_params(dtype);
    for (const auto& g : c["groups"])
        init.groups.push_back({g["lr"].get<double>(), g["weight_decay"].get<double>()});
    const auto& hp = c["hparams"];
    overrides["beta1"] = hp["beta1"];
    overrides["beta2"] = hp["beta2"];
    if (hp.contains("eps")) overrides["eps"] = hp["eps"];
    init.overrides = overrides;
    init.config = config({{"learning_rate", 1e-3}});
    GoldenRun run{make_optimizer(optimizer, init), init.params};
    return run;
}

/// Runs the golden schedule; calls `check(step, params)` at each checkpoint of the case.
template <typename Check>
void run_golden(GoldenRun& run, const nlohmann::json& c, Check&& check) {
    const auto& g = golden();
    std::vector<double> base_lrs;
    for (const auto& grp : c["groups"]) base_lrs.push_back(grp["lr"].get<double>());
    const at::ScalarType dtype = run.params.front().param.scalar_type();
    for (int t = 0; t < g["steps"].get<int>(); ++t) {
        for (size_t gi = 0; gi < base_lrs.size(); ++gi) {
            run.opt->set_lr(static_cast<int>(gi), base_lrs[gi] * g["lr_factor"][t].get<double>());
        }
        for (auto& p : run.params) {
            p.param.mutable_grad() = from_json(g["grads"][t][p.name], p.param.sizes().vec()).to(dtype);
        }
        run.opt->step();
        run.opt->zero_grad();
        const std::string key = std::to_string(t + 1);
        if (c["checkpoints"].contains(key)) check(key, run.params);
    }
}

void expect_matches_reference(const std::string& optimizer, const std::string& case_name, double tol) {
    const auto& c = golden()["cases"][case_name];
    GoldenRun run = make_golden_optimizer(optimizer, c);
    int checked = 0;
    run_golden(run, c, [&](const std::string& step, const std::vector<sdk::OptimizerParam>& params) {
        for (const auto& p : params) {
            at::Tensor ref = from_json64(c["checkpoints"][step][p.name], p.param.sizes().vec());
            const double d = max_abs_diff(p.param, ref);
            EXPECT_LE(d, tol) << optimizer << " '" << p.name << "' after step " << step;
            ++checked;
        }
    });
    EXPECT_EQ(checked, 12);
}

TEST(OptimizerGoldenTest, AdamWMatchesTorchAdamWWithTwoGroups) {
    expect_matches_reference("adamw", "adamw", 2e-6);
}

TEST(OptimizerGoldenTest, LionMatchesFloat64Reference) {
    expect_matches_reference("lion", "lion", 5e-6);
}

TEST(OptimizerGoldenTest, OptimiLionMatchesFloat64Reference) {
    expect_matches_reference("optimi-lion", "optimi-lion", 5e-6);
}

TEST(OptimizerGoldenTest, OptimiAdamWMatchesFloat64Reference) {
    expect_matches_reference("optimi-adamw", "optimi-adamw", 5e-6);
}

// bf16 weights: Kahan summation keeps them within one bf16 ulp of the float64 trajectory, while
// the same run without it drifts (updates smaller than half an ulp are lost).
double bf16_error(const std::string& optimizer, const std::string& case_name, bool kahan) {
    const auto& c = golden()["cases"][case_name];
    GoldenRun run = make_golden_optimizer(optimizer, c, {{"kahan_sum", kahan}});
    double worst = 0.0;  // in units of bf16 ulp of the reference value
    run_golden(run, c, [&](const std::string& step, const std::vector<sdk::OptimizerParam>& params) {
        for (const auto& p : params) {
            at::Tensor ref = from_json64(c["checkpoints"][step][p.name], p.param.sizes().vec());
            at::Tensor ulp = at::exp2(at::floor(at::log2(ref.abs().clamp_min(1e-3))) - 7.0);
            worst = std::max(worst, ((p.param.to(at::kDouble) - ref).abs() / ulp).max().item<double>());
        }
    });
    return worst;
}

TEST(OptimizerGoldenTest, OptimiAdamWKahanKeepsBf16WeightsOnTrajectory) {
    const double with = bf16_error("optimi-adamw", "optimi-adamw-bf16", true);
    const double without = bf16_error("optimi-adamw", "optimi-adamw-bf16", false);
    EXPECT_LE(with, 1.0);
    EXPECT_GT(without, 2.0 * with);
}

TEST(OptimizerGoldenTest, OptimiLionKahanKeepsBf16WeightsOnTrajectory) {
    const double with = bf16_error("optimi-lion", "optimi-lion-bf16", true);
    const double without = bf16_error("optimi-lion", "optimi-lion-bf16", false);
    EXPECT_LE(with, 1.0);
    EXPECT_GT(without, 2.0 * with);
}

TEST(OptimizerGoldenTest, AdamWBf16MatchesPublishedStepAndTracksFloat64) {
    const auto& c = golden()["cases"]["adamw_bf16"];
    GoldenRun run = make_golden_optimizer("adamw_bf16", c);
    int checked = 0;
    run_golden(run, c, [&](const std::string& step, const std::vector<sdk::OptimizerParam>& params) {
        const auto sd = run.opt->state_dict();
        for (const auto& p : params) {
            const auto shape = p.param.sizes().vec();
            const at::Tensor& shift = sd.tensors.at(p.name + "::shift");
            // (a) the bf16 replica of the published step: same operations, same roundings.
            at::Tensor rep_p = from_json64(c["replica"][step][p.name]["param"], shape);
            at::Tensor rep_s = from_json64(c["replica"][step][p.name]["shift"], shape);
            EXPECT_EQ(max_abs_diff(p.param, rep_p), 0.0) << p.name << " step " << step;
            EXPECT_EQ(max_abs_diff(shift, rep_s), 0.0) << p.name << " step " << step;
            // (b) p + shift is the compensated value: it follows the float64 run of the same rule.
            at::Tensor ideal = from_json64(c["checkpoints"][step][p.name], shape);
            at::Tensor total = p.param.to(at::kDouble) + shift.to(at::kDouble);
            EXPECT_LE(max_abs_diff(total, ideal), 3e-4) << p.name << " step " << step;
            ++checked;
        }
    });
    EXPECT_EQ(checked, 12);
}

// ------------------------------------------------------------------------------------------------
// State round trip: stop mid-way, save, restore into a fresh optimizer over fresh tensors, continue.

std::vector<sdk::OptimizerParam> roundtrip_params(at::ScalarType dtype) {
    at::manual_seed(7);
    std::vector<sdk::OptimizerParam> out;
    out.push_back(
        {"big.weight", at::randn({64, 80}).to(dtype).set_requires_grad(true), 0});  // 5120: 8-bit state
    out.push_back({"small.bias", at::randn({33}).to(dtype).set_requires_grad(true), 1});
    out.push_back({"never.updated", at::randn({5}).to(dtype).set_requires_grad(true), 1});
    return out;
}

std::unique_ptr<sdk::Optimizer> make_for(const std::string& name, std::vector<sdk::OptimizerParam> params) {
    sdk::OptimizerInit init;
    init.params = std::move(params);
    init.groups = {{2e-3, 0.05}, {1e-3, 0.0}};
    init.config = config();
    return make_optimizer(name, init);
}

void run_steps(sdk::Optimizer& opt, int from, int to) {
    for (int t = from; t < to; ++t) {
        at::manual_seed(100 + t);
        for (const auto& p : opt.params()) {
            if (p.name == "never.updated") continue;
            p.param.mutable_grad() = at::randn(p.param.sizes()).to(p.param.scalar_type());
        }
        opt.set_lr(0, 2e-3 * (1.0 - t / 40.0));
        opt.step();
        opt.zero_grad();
    }
}

void expect_bit_identical_resume(const std::string& name, at::ScalarType dtype) {
    auto reference = make_for(name, roundtrip_params(dtype));
    run_steps(*reference, 0, 20);

    auto first = make_for(name, roundtrip_params(dtype));
    run_steps(*first, 0, 9);
    sdk::StateDict saved = first->state_dict();
    saved.meta = nlohmann::json::parse(saved.meta.dump());  // what a checkpoint file keeps
    EXPECT_FALSE(saved.tensors.count("never.updated::exp_avg")) << "state exists only after an update";

    std::vector<sdk::OptimizerParam> fresh = roundtrip_params(dtype);
    for (size_t i = 0; i < fresh.size(); ++i) {
        at::NoGradGuard guard;
        fresh[i].param.copy_(first->params()[i].param);
    }
    auto resumed = make_for(name, fresh);
    resumed->load_state_dict(saved);
    EXPECT_EQ(resumed->state_bytes(), first->state_bytes());
    run_steps(*resumed, 9, 20);

    for (size_t i = 0; i < fresh.size(); ++i) {
        EXPECT_TRUE(at::equal(reference->params()[i].param, resumed->params()[i].param))
            << name << ": '" << fresh[i].name << "' differs after resuming";
    }
    const auto a = reference->state_dict(), b = resumed->state_dict();
    ASSERT_EQ(a.tensors.size(), b.tensors.size());
    for (const auto& [key, t] : a.tensors) EXPECT_TRUE(at::equal(t, b.tensors.at(key))) << name << " " << key;
    EXPECT_EQ(a.meta, b.meta);
}

TEST(OptimizerStateTest, EveryOptimizerResumesBitIdentically) {
    for (const auto& name : optimizer_names()) {
        SCOPED_TRACE(name);
        expect_bit_identical_resume(name, name == "adamw_bf16" ? at::kBFloat16 : at::kFloat);
    }
    expect_bit_identical_resume("optimi-adamw", at::kBFloat16);  // with Kahan buffers
    expect_bit_identical_resume("optimi-lion", at::kBFloat16);
}

TEST(OptimizerStateTest, StateIsKeyedByParameterName) {
    auto opt = make_for("adamw", roundtrip_params(at::kFloat));
    run_steps(*opt, 0, 2);
    const auto sd = opt->state_dict();
    EXPECT_TRUE(sd.tensors.count("big.weight::exp_avg"));
    EXPECT_TRUE(sd.tensors.count("small.bias::exp_avg_sq"));
    EXPECT_EQ(sd.meta["params"]["big.weight"]["step"], 2);
    // Reordered parameters load the same state.
    auto params = roundtrip_params(at::kFloat);
    std::swap(params[0], params[1]);
    auto other = make_for("adamw", params);
    other->load_state_dict(sd);
    EXPECT_TRUE(at::equal(other->state_dict().tensors.at("big.weight::exp_avg"),
                          sd.tensors.at("big.weight::exp_avg")));
}

TEST(OptimizerStateTest, LoadRejectsMismatchedState) {
    auto opt = make_for("adamw", roundtrip_params(at::kFloat));
    run_steps(*opt, 0, 1);
    auto sd = opt->state_dict();

    auto missing = sd;
    missing.tensors.erase("big.weight::exp_avg_sq");
    auto fresh = make_for("adamw", roundtrip_params(at::kFloat));
    EXPECT_THROW(fresh->load_state_dict(missing), st::Error);

    auto extra = sd;
    extra.tensors["big.weight::momentum"] = at::zeros({1});
    try {
        fresh->load_state_dict(extra);
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("big.weight::momentum"), std::string::npos) << e.what();
    }

    auto shaped = sd;
    shaped.tensors["small.bias::exp_avg"] = at::zeros({34});
    EXPECT_THROW(fresh->load_state_dict(shaped), st::Error);

    auto lion = make_for("lion", roundtrip_params(at::kFloat));
    EXPECT_THROW(lion->load_state_dict(sd), st::Error);  // saved by optim.adamw@1
}

// ------------------------------------------------------------------------------------------------
// Names and configuration.

TEST(OptimizerConfigTest, UnsupportedNameListsSupportedOnes) {
    try {
        resolve_optimizer_name("adafactor");
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("adafactor"), std::string::npos) << msg;
        for (const auto& n : supported_optimizer_names()) EXPECT_NE(msg.find(n), std::string::npos) << n;
    }
    sdk::OptimizerInit init;
    init.params = roundtrip_params(at::kFloat);
    init.groups = {{1e-3, 0.0}, {1e-3, 0.0}};
    EXPECT_THROW(make_optimizer("sgd", init), st::Error);
}

TEST(OptimizerConfigTest, PagedNamesAreAliases) {
    EXPECT_EQ(resolve_optimizer_name("bnb-lion8bit-paged"), "bnb-lion8bit");
    EXPECT_EQ(resolve_optimizer_name("bnb-adamw8bit-paged"), "bnb-adamw8bit");
    EXPECT_EQ(resolve_optimizer_name("optimi-lion"), "optimi-lion");
    auto opt = make_for("bnb-lion8bit-paged", roundtrip_params(at::kFloat));
    EXPECT_EQ(opt->state_dict().meta["optimizer"], "optim.bnb-lion8bit@1");
}

TEST(OptimizerConfigTest, UnknownOptimizerConfigKeyIsAnError) {
    sdk::OptimizerInit init;
    init.params = roundtrip_params(at::kFloat);
    init.groups = {{1e-3, 0.0}, {1e-3, 0.0}};
    init.overrides = parse_optimizer_config("eps=1e-6,momentum=0.9");
    try {
        make_optimizer("adamw", init);
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("momentum"), std::string::npos) << msg;
        EXPECT_NE(msg.find("weight_decay"), std::string::npos) << "lists the known keys: " << msg;
    }
    init.overrides = {{"eps", "tiny"}};
    EXPECT_THROW(make_optimizer("adamw", init), st::Error);
    init.overrides = {{"eps", 1e-6}};  // Lion has no eps
    EXPECT_THROW(make_optimizer("lion", init), st::Error);
}

TEST(OptimizerConfigTest, ParsesSimpleTunerOptimizerConfig) {
    auto j =
        parse_optimizer_config("eps=1e-6, weight_decay=0.0,kahan_sum=false,max_lr=none,min_8bit_size=2048");
    EXPECT_DOUBLE_EQ(j["eps"].get<double>(), 1e-6);
    EXPECT_DOUBLE_EQ(j["weight_decay"].get<double>(), 0.0);
    EXPECT_EQ(j["kahan_sum"], false);
    EXPECT_TRUE(j["max_lr"].is_null());
    EXPECT_EQ(j["min_8bit_size"], 2048);
    EXPECT_EQ(parse_optimizer_config(""), nlohmann::json::object());
    EXPECT_EQ(parse_optimizer_config(R"({"betas": [0.8, 0.9]})")["betas"][1], 0.9);
    EXPECT_THROW(parse_optimizer_config("eps"), st::Error);
}

TEST(OptimizerConfigTest, DefaultsAndPrecedence) {
    const auto none = nlohmann::json::object();
    auto hp = resolve_optimizer_hparams("optimi-lion", config(), none);
    EXPECT_EQ(hp.beta1, 0.9);
    EXPECT_EQ(hp.beta2, 0.99);
    EXPECT_EQ(hp.weight_decay, 0.0);
    hp = resolve_optimizer_hparams("adamw_bf16", config(), none);
    EXPECT_EQ(hp.eps, 1e-6);
    EXPECT_EQ(hp.weight_decay, 1e-2);
    hp = resolve_optimizer_hparams("adamw", config(), none);
    EXPECT_EQ(hp.eps, 1e-8);
    // adam_* when set < optimizer_beta* < optimizer_config.
    hp = resolve_optimizer_hparams("adamw", config({{"adam_beta2", 0.95}, {"adam_weight_decay", 0.0}}), none);
    EXPECT_EQ(hp.beta2, 0.95);
    EXPECT_EQ(hp.weight_decay, 0.0);
    hp = resolve_optimizer_hparams("adamw", config({{"adam_beta2", 0.95}, {"optimizer_beta2", 0.98}}), none);
    EXPECT_EQ(hp.beta2, 0.98);
    hp = resolve_optimizer_hparams("adamw", config({{"optimizer_beta2", 0.98}}), {{"beta2", 0.97}});
    EXPECT_EQ(hp.beta2, 0.97);
    hp = resolve_optimizer_hparams("adamw", config({{"adam_beta1", nullptr}}), none);  // null = unset
    EXPECT_EQ(hp.beta1, 0.9);
    EXPECT_THROW(resolve_optimizer_hparams("adamw", config(), {{"beta1", 1.0}}), st::Error);
}

TEST(OptimizerConfigTest, RejectsBadParameters) {
    sdk::OptimizerInit init;
    init.params = roundtrip_params(at::kFloat);
    init.groups = {{1e-3, 0.0}};  // "small.bias" is in group 1
    EXPECT_THROW(make_optimizer("adamw", init), st::Error);
    init.groups = {{1e-3, 0.0}, {1e-3, 0.0}};
    EXPECT_THROW(make_optimizer("adamw_bf16", init), st::Error);  // fp32 weights
    init.params.push_back(init.params.front());
    EXPECT_THROW(make_optimizer("adamw", init), st::Error);  // duplicate name
}

TEST(OptimizerConfigTest, NoGroupsUsesLearningRateAndDefaultWeightDecay) {
    sdk::OptimizerInit init;
    init.params = roundtrip_params(at::kFloat);
    for (auto& p : init.params) p.group = 0;
    init.config = config({{"learning_rate", 5e-5}});
    auto opt = make_optimizer("bnb-adamw8bit", init);
    EXPECT_EQ(opt->group_count(), 1);
    EXPECT_EQ(opt->lr(0), 5e-5);
    EXPECT_EQ(opt->state_dict().meta["groups"][0]["weight_decay"], 1e-2);
    init.config = config();
    EXPECT_THROW(make_optimizer("adamw", init), st::Error);
}

}  // namespace
}  // namespace st::plugins::optim::test
