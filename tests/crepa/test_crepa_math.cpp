// CREPA's math against SimpleTuner's own code (tests/golden/crepa, made by
// scripts/golden/crepa_reference.py from simpletuner/helpers/training/crepa.py): the loss, the logged
// scores and the projector's gradient for every alignment case, the weight of every schedule and
// cutoff mode; then the regularizer's plumbing (taps with geometry, cached features, metrics, state).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <filesystem>

#include "core/crepa.h"
#include "core/crepa_math.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/safetensors.h"

namespace fs = std::filesystem;
using namespace st::plugins::crepa;

namespace {

const fs::path kGolden = fs::path(ST_TEST_GOLDEN_DIR) / "crepa";

const nlohmann::json& cases() {
    static const nlohmann::json j = st::sdk::read_json_file(kGolden / "case.json", "test");
    return j;
}

at::Tensor g(const std::string& name) {
    static auto f = st::sdk::SafetensorsFile::open(kGolden / "alignment.safetensors");
    return f->load(name);
}

bool close(double got, double want) {
    return std::abs(got - want) <= 1e-5 + 1e-4 * std::abs(want);
}

CrepaSettings settings_from(const nlohmann::json& over) {
    CrepaSettings s;
    s.enabled = true;
    s.block_index = 0;
    for (const auto& [k, v] : over.items()) {
        if (k == "crepa_adjacent_distance")
            s.adjacent_distance = v;
        else if (k == "crepa_cumulative_neighbors")
            s.cumulative_neighbors = v;
        else if (k == "crepa_normalize_neighbour_sum")
            s.normalize_neighbour_sum = v;
        else if (k == "crepa_adjacent_tau")
            s.adjacent_tau = v;
        else if (k == "crepa_spatial_align")
            s.spatial_align = v;
        else if (k == "crepa_normalize_by_frames")
            s.normalize_by_frames = v;
        else if (k == "crepa_warmup_steps")
            s.warmup_steps = v;
        else if (k == "crepa_lambda")
            s.lambda = v;
        else if (k == "crepa_scheduler")
            s.schedule = v == "linear"       ? LambdaSchedule::linear
                         : v == "cosine"     ? LambdaSchedule::cosine
                         : v == "polynomial" ? LambdaSchedule::polynomial
                                             : LambdaSchedule::constant;
        else if (k == "crepa_decay_steps")
            s.decay_steps = v;
        else if (k == "crepa_lambda_end")
            s.lambda_end = v;
        else if (k == "crepa_power")
            s.power = v;
        else if (k == "crepa_cutoff_step")
            s.cutoff_step = v;
        else if (k == "crepa_similarity_threshold")
            s.similarity_threshold = v.get<double>();
        else if (k == "crepa_similarity_ema_decay")
            s.similarity_ema_decay = v;
        else if (k == "crepa_threshold_mode")
            s.threshold_recoverable = v == "recoverable";
        else
            ADD_FAILURE() << "unhandled golden key " << k;
    }
    return s;
}

/// The options' declared defaults (as the host resolves them) with `over` on top.
st::sdk::ConfigView crepa_config(const nlohmann::json& over) {
    nlohmann::json c = nlohmann::json::object();
    for (const auto& o : crepa_options()) c[o.name] = o.default_value;
    c["crepa_enabled"] = true;
    for (const auto& [k, v] : over.items()) c[k] = v;
    return st::sdk::ConfigView(std::make_shared<const nlohmann::json>(c));
}

}  // namespace

TEST(CrepaMath, AlignmentLossScoresAndGradientMatchSimpleTuner) {
    ASSERT_EQ(cases().at("alignment").size(), 6u);
    for (const auto& [name, c] : cases().at("alignment").items()) {
        SCOPED_TRACE(name);
        const CrepaSettings s = settings_from(c.at("config"));
        const std::string p = name + "_";
        at::Tensor w = g(p + "linear_weight").clone().requires_grad_(true);
        const at::Tensor h = at::layer_norm(g(p + "hidden"), {6}, g(p + "ln_weight"), g(p + "ln_bias"), 1e-5);
        const at::Tensor projected = at::linear(h, w, g(p + "linear_bias"));
        const Grid pgrid{c.at("grid")[0].get<int64_t>(), c.at("grid")[1].get<int64_t>()};
        const Grid fgrid{c.at("teacher_grid")[0].get<int64_t>(), c.at("teacher_grid")[1].get<int64_t>()};
        const Alignment a = crepa_alignment(projected, pgrid, g(p + "features"), fgrid, s);
        CrepaSchedule sched(s);
        const double weight = sched.weight(c.at("step"), c.at("total_steps"), a.alignment);
        const at::Tensor loss = -a.score * weight;
        const auto& log = c.at("log");
        EXPECT_TRUE(close(loss.item<double>(), g(p + "loss").item<double>()))
            << loss.item<double>() << " vs " << g(p + "loss").item<double>();
        EXPECT_TRUE(close(a.alignment, log.at("crepa_alignment_score"))) << a.alignment;
        EXPECT_TRUE(close(a.self_similarity, log.at("crepa_similarity_self"))) << a.self_similarity;
        EXPECT_NEAR(weight, log.at("crepa_weight").get<double>(), 1e-12);
        loss.backward();
        const at::Tensor want = g(p + "grad_linear_weight");
        EXPECT_TRUE(((w.grad() - want).abs() <= 1e-5 + 1e-4 * want.abs()).all().item<bool>())
            << "max |diff| " << (w.grad() - want).abs().max().item<double>();
    }
}

TEST(CrepaMath, EveryScheduleAndCutoffModeMatchesSimpleTuner) {
    const auto& sims = cases().at("similarities");
    const int64_t total = cases().at("total_steps");
    ASSERT_EQ(cases().at("schedules").size(), 7u);
    for (const auto& [name, c] : cases().at("schedules").items()) {
        SCOPED_TRACE(name);
        CrepaSchedule s(settings_from(c.at("config")));
        for (int64_t i = 0; i < total; ++i)
            EXPECT_NEAR(s.weight(i, total, sims[i].get<double>()), c.at("weights")[i].get<double>(), 1e-12)
                << "step " << i;
    }
}

TEST(CrepaMath, ScheduleStateRoundTripsSoResumeContinuesTheEmaAndCutoff) {
    CrepaSettings s;
    s.similarity_threshold = 0.5;
    s.similarity_ema_decay = 0.5;
    CrepaSchedule a(s), b(s);
    for (double sim : {0.3, 0.9, 0.95}) a.weight(0, 10, sim);
    b.restore(a.state());
    for (double sim : {0.1, 0.0, 0.6}) EXPECT_EQ(a.weight(5, 10, sim), b.weight(5, 10, sim));
    EXPECT_EQ(a.similarity_ema(), b.similarity_ema());
}

TEST(CrepaMath, NonSquareGridsAlignIn2DNotOverAFlattenedRaster) {
    // A 2x4 model grid vs a 4x4 teacher grid: the teacher is resampled to 2x4 over the frame. A teacher
    // whose columns carry distinct directions, and a model that reproduces them at the same places,
    // align perfectly in 2-D (a 1-D raster interpolation would mix rows and columns).
    CrepaSettings s;
    s.adjacent_distance = 0;
    const at::Tensor cols = at::eye(4).repeat({4, 1});  // token (r, c) = e_c on the 4x4 grid
    const at::Tensor teacher = cols.reshape({1, 1, 16, 4});
    const at::Tensor model =
        at::upsample_bilinear2d(cols.reshape({1, 4, 4, 4}).permute({0, 3, 1, 2}), {2, 4}, false)
            .permute({0, 2, 3, 1})
            .reshape({1, 1, 8, 4});
    const Alignment a = crepa_alignment(model, {2, 4}, teacher, {4, 4}, s);
    EXPECT_NEAR(a.alignment, 1.0, 1e-6);
}

TEST(CrepaRegularizer, ComputeProjectsTheTappedVideoTokensAndReportsMetrics) {
    // Through the component as the host drives it: tap [B, L, D] with text tokens after the video
    // tokens, geometry, cached features; the result must equal the math on the projected tokens.
    const auto cfg =
        crepa_config({{"crepa_block_index", 1},
                      {"crepa_encoder", (fs::path(ST_TEST_GOLDEN_DIR) / "dinov2" / "vits_style").string()},
                      {"crepa_encoder_image_size", 8}});
    st::sdk::RegularizerInit init;
    init.config = cfg;
    init.tap_dims = {{"blocks.0.out", 6}, {"blocks.1.out", 6}};
    init.seed = 7;
    CrepaRegularizer reg(init);
    EXPECT_EQ(reg.taps(), std::vector<std::string>{"blocks.1.out"});
    ASSERT_TRUE(reg.sample_features());
    auto mods = reg.modules();
    ASSERT_EQ(mods.size(), 1u);

    st::sdk::RegularizerInputs in;
    in.step = 3;
    in.total_steps = 10;
    const at::Tensor tap = at::randn({2, 3 * 2 * 4 + 5, 6}).requires_grad_(true);
    in.taps["blocks.1.out"] = tap;
    st::sdk::TapGeometry geo;
    geo.hidden_size = 6;
    geo.grid = {3, 2, 4};
    in.geometry["blocks.1.out"] = geo;
    in.batch[kFeatures] = at::randn({2, 3, 16, 16}).to(at::kHalf);
    const auto out = reg.compute(in);
    ASSERT_TRUE(out.terms.count("crepa_loss"));
    for (const char* m : {"crepa_alignment_score", "crepa_similarity_self", "crepa_weight", "crepa_cutoff",
                          "crepa_alignment_score_ema"})
        EXPECT_TRUE(out.metrics.count(m)) << m;

    auto* proj = dynamic_cast<torch::nn::SequentialImpl*>(mods[0].second.get());
    ASSERT_NE(proj, nullptr);
    at::NoGradGuard no_grad;
    const at::Tensor video = tap.slice(1, 0, 24).reshape({2, 3, 8, 6});
    CrepaSettings s;
    const Alignment a =
        crepa_alignment(proj->forward(video), {2, 4}, in.batch[kFeatures].to(at::kFloat), {4, 4}, s);
    EXPECT_NEAR(out.terms.at("crepa_loss").item<double>(), -a.score.item<double>() * 0.5, 1e-6);
    EXPECT_NEAR(out.metrics.at("crepa_alignment_score"), a.alignment, 1e-6);
}

TEST(CrepaRegularizer, BadSettingsFailNamingTheKey) {
    st::sdk::RegularizerInit init;
    init.tap_dims = {{"blocks.0.out", 6}};
    auto error = [&](nlohmann::json over) {
        nlohmann::json c = {
            {"crepa_block_index", 0}, {"crepa_encoder", "x"}, {"crepa_feature_source", "backbone"}};
        for (const auto& [k, v] : over.items()) c[k] = v;
        init.config = crepa_config(c);
        try {
            CrepaRegularizer r(init);
        } catch (const st::Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(
        error({{"crepa_block_index", 9}}).find("crepa_block_index 9 is outside the model's blocks 0..0"),
        std::string::npos);
    EXPECT_NE(error({{"crepa_adjacent_tau", 0.0}}).find("crepa_adjacent_tau"), std::string::npos);
    EXPECT_NE(error({{"crepa_feature_source", "self_flow"}}).find("self_flow"), std::string::npos);
    EXPECT_NE(error({{"crepa_feature_source", "encoder"}, {"crepa_encoder", "/nonexistent/teacher"}})
                  .find("/nonexistent/teacher"),
              std::string::npos);
    EXPECT_EQ(error({}), "");  // backbone: block 0 teaches block 0 (the last block by default)
}

TEST(CrepaRegularizer, BackboneSourceAlignsWithADetachedLaterBlock) {
    st::sdk::RegularizerInit init;
    init.config = crepa_config({{"crepa_block_index", 0}, {"crepa_feature_source", "backbone"}});
    init.tap_dims = {{"blocks.0.out", 6}, {"blocks.1.out", 6}, {"blocks.2.out", 6}};
    CrepaRegularizer reg(init);
    EXPECT_EQ(reg.taps(),
              (std::vector<std::string>{"blocks.0.out", "blocks.2.out"}));  // the last block teaches
    EXPECT_FALSE(reg.sample_features());
    st::sdk::RegularizerInputs in;
    st::sdk::TapGeometry geo;
    geo.hidden_size = 6;
    geo.grid = {2, 2, 2};
    const at::Tensor student = at::randn({1, 8, 6}).requires_grad_(true);
    const at::Tensor teacher = at::randn({1, 8, 6}).requires_grad_(true);
    in.taps = {{"blocks.0.out", student}, {"blocks.2.out", teacher}};
    in.geometry = {{"blocks.0.out", geo}, {"blocks.2.out", geo}};
    const auto out = reg.compute(in);
    out.terms.at("crepa_loss").backward();
    EXPECT_TRUE(student.grad().defined());
    EXPECT_FALSE(teacher.grad().defined()) << "the teacher block must be detached";
}
