// Validator on the tiny Wan model in process: prompts and file names, mp4/png read back, EMA swap
// calls per ema_validation mode, preview callbacks, schedule, settings errors.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "config/options_table.h"
#include "fixtures.h"
#include "st/error.h"
#include "validate/validator.h"

namespace {

using namespace st::host::validate;
using st_test::ValidateEnv;
namespace fs = std::filesystem;

st::sdk::ConfigView config(const nlohmann::json& values) {
    st::host::OptionTable table;
    for (auto& s : validation_options()) table.add(s);
    auto r = st::host::resolve_config(values, {}, table);
    return st::sdk::ConfigView(std::make_shared<const nlohmann::json>(r.values));
}

nlohmann::json base() {
    return {{"validation_prompt", "a red ball"},
            {"validation_step_interval", 10},
            {"validation_num_inference_steps", 2},
            {"validation_num_video_frames", 5},
            {"validation_resolution", "32x32"},
            {"validation_guidance", 3.0},
            {"validation_seed", 4},
            {"framerate", 12}};
}

class ValidatorTest : public ::testing::Test {
  protected:
    void SetUp() override {
        env = &ValidateEnv::get();
        model = env->load();
        out = env->root / ::testing::UnitTest::GetInstance()->current_test_info()->name();
        fs::remove_all(out);
    }
    Validator make(const nlohmann::json& extra = nlohmann::json::object()) {
        nlohmann::json v = base();
        for (const auto& [k, x] : extra.items()) v[k] = x;
        return Validator(config(v), env->root, out, *model, 99);
    }
    std::vector<std::string> names(const Validator::Output& o) const {
        std::vector<std::string> n;
        for (const auto& f : o.files) n.push_back(f.filename().string());
        return n;
    }
    ValidateEnv* env = nullptr;
    std::unique_ptr<st::host::ModelHandle> model;
    fs::path out;
};

TEST_F(ValidatorTest, ScheduleAndEnabled) {
    auto v = make();
    EXPECT_TRUE(v.enabled());
    EXPECT_TRUE(v.due(10));
    EXPECT_TRUE(v.due(30));
    EXPECT_FALSE(v.due(15));
    EXPECT_FALSE(v.due(0));
    auto off = make({{"validation_step_interval", 0}});
    EXPECT_FALSE(off.enabled());
    EXPECT_FALSE(off.due(10));
    auto no_prompt = make({{"validation_prompt", nullptr}});
    EXPECT_FALSE(no_prompt.enabled());
    EXPECT_EQ(make({{"validation_prompt_library", true}}).prompts().size(), 7u);
}

TEST_F(ValidatorTest, UserPromptLibraryNicknamesNameTheFiles) {
    st_test::shell("mkdir -p '" + env->root.string() + "'");
    std::ofstream(env->root / "library.json")
        << R"({"cat": "a cat", "dog house": {"prompt": "a dog house", "negative_prompt": "dark"}})";
    auto v = make({{"user_prompt_library", "library.json"}});
    const auto prompts = v.prompts();
    ASSERT_EQ(prompts.size(), 3u);
    EXPECT_EQ(prompts[0].nickname, "validation");
    EXPECT_EQ(prompts[1].nickname, "cat");
    EXPECT_EQ(prompts[1].negative, "blurry, cropped, ugly");
    EXPECT_EQ(prompts[2].negative, "dark");
    // Five distinct texts (three prompts, two distinct negatives) are encoded once.
    EXPECT_EQ(v.encode_prompts(prompts), 5u);
    EXPECT_EQ(v.encode_prompts(prompts), 0u);
    const auto o = v.run(20, prompts, {});
    EXPECT_EQ(names(o), (std::vector<std::string>{"step_20_validation.mp4", "step_20_validation.png",
                                                  "step_20_cat.mp4", "step_20_cat.png",
                                                  "step_20_dog_house.mp4", "step_20_dog_house.png"}));
    EXPECT_GT(o.seconds, 0.0);
    const auto p = st_test::probe(out / "validation" / "step_20_cat.mp4");
    EXPECT_EQ(p.frames, 5);
    EXPECT_EQ(p.width, 32);
    EXPECT_EQ(p.height, 32);
    EXPECT_EQ(p.fps, "12/1");
    EXPECT_EQ(p.codec, "h264");
    EXPECT_EQ(p.pix_fmt, "yuv420p");
    const auto png = st_test::probe(out / "validation" / "step_20_cat.png");
    EXPECT_EQ(png.width, 32);
    EXPECT_EQ(png.codec, "png");
    // Same seed and prompt: the render is reproducible.
    // Same seed and prompt: the render is reproducible (compared on the lossless first-frame PNG;
    // libx264's bitstream is not bit-reproducible from run to run).
    const std::string first = st_test::decode_rgb(out / "validation" / "step_20_validation.png");
    v.run(30, {prompts[0]}, {});
    EXPECT_TRUE(first == st_test::decode_rgb(out / "validation" / "step_30_validation.png"));
    EXPECT_EQ(first.size(), 32u * 32 * 3);
}

TEST_F(ValidatorTest, SeveralResolutionsAreSuffixed) {
    auto v = make({{"validation_resolution", "32x32,48x32"}});
    const auto o = v.run(5, v.prompts(), {});
    EXPECT_EQ(names(o),
              (std::vector<std::string>{"step_5_validation_32x32.mp4", "step_5_validation_32x32.png",
                                        "step_5_validation_48x32.mp4", "step_5_validation_48x32.png"}));
    EXPECT_EQ(st_test::probe(o.files[2]).width, 48);
}

TEST_F(ValidatorTest, EmaSwapIsCalledPerMode) {
    int swaps = 0;
    auto swap = [&] { ++swaps; };
    auto none = make({{"ema_validation", "none"}});
    EXPECT_EQ(names(none.run(1, none.prompts(), swap)),
              (std::vector<std::string>{"step_1_validation.mp4", "step_1_validation.png"}));
    EXPECT_EQ(swaps, 0);
    auto only = make({{"ema_validation", "ema_only"}});
    EXPECT_EQ(names(only.run(2, only.prompts(), swap)),
              (std::vector<std::string>{"step_2_validation.mp4", "step_2_validation.png"}));
    EXPECT_EQ(swaps, 2);
    swaps = 0;
    auto both = make({{"ema_validation", "comparison"}});
    EXPECT_EQ(names(both.run(3, both.prompts(), swap)),
              (std::vector<std::string>{"step_3_validation.mp4", "step_3_validation.png",
                                        "step_3_validation_ema.mp4", "step_3_validation_ema.png"}));
    EXPECT_EQ(swaps, 2);
    // No EMA in the run (empty swap): the trained weights once, whatever the mode.
    EXPECT_EQ(both.run(4, both.prompts(), {}).files.size(), 2u);
}

TEST_F(ValidatorTest, EmaWeightsReallyRenderAndAreSwappedBackOnError) {
    // swap_ema exchanges the transformer's weights with a perturbed copy: the _ema video must differ.
    std::vector<at::Tensor> other;
    for (const auto& p : model->trainable().parameters()) other.push_back(p.detach().clone() * 1.5);
    auto swap = [&] {
        at::NoGradGuard g;
        size_t i = 0;
        for (auto& p : model->trainable().parameters()) {
            at::Tensor tmp = p.detach().clone();
            p.detach().copy_(other[i]);
            other[i++] = tmp;
        }
    };
    auto v = make({{"ema_validation", "comparison"}});
    const auto o = v.run(7, v.prompts(), swap);
    EXPECT_TRUE(st_test::decode_rgb(o.files[1]) != st_test::decode_rgb(o.files[3]));  // the PNGs
    // A failing render (driving audio is refused) still swaps the trained weights back.
    model->trainable().train();
    Prompt bad = v.prompts()[0];
    bad.audio = env->root / "missing.wav";
    int calls = 0;
    auto counting = [&] {
        ++calls;
        swap();
    };
    auto only = make({{"ema_validation", "ema_only"}});
    EXPECT_THROW(only.run(8, {bad}, counting), st::Error);
    EXPECT_EQ(calls, 2);
    EXPECT_TRUE(model->trainable().is_training()) << "train mode must be restored";
}

TEST_F(ValidatorTest, PreviewIsCalledEveryPreviewSteps) {
    auto v = make({{"validation_preview", true},
                   {"validation_preview_steps", 2},
                   {"validation_num_inference_steps", 4}});
    std::vector<int64_t> seen;
    v.run(9, v.prompts(), {}, [&](const std::string& nick, int64_t step, const at::Tensor& frame) {
        EXPECT_EQ(nick, "validation");
        EXPECT_EQ(frame.sizes(), (std::vector<int64_t>{32, 32, 3}));
        EXPECT_EQ(frame.scalar_type(), at::kByte);
        seen.push_back(step);
    });
    EXPECT_EQ(seen, (std::vector<int64_t>{1, 3}));
    const auto event = preview_event(out, 9, "a cat", 3, at::zeros({32, 32, 3}, at::kByte));
    EXPECT_EQ(event.type, "validation.preview");
    EXPECT_TRUE(event.raw_only);
    EXPECT_EQ(event.data["sampling_step"], 3);
    ASSERT_EQ(event.attachments.size(), 1u);
    EXPECT_EQ(event.attachments[0].filename(), "preview_step_9_a_cat_3.png");
    EXPECT_EQ(st_test::probe(event.attachments[0]).width, 32);
    // validation_preview false: never called.
    auto quiet = make();
    int calls = 0;
    quiet.run(9, quiet.prompts(), {}, [&](const std::string&, int64_t, const at::Tensor&) { ++calls; });
    EXPECT_EQ(calls, 0);
}

TEST_F(ValidatorTest, BadSettingsAreReportedTogether) {
    try {
        make({{"validation_resolution", "32xq"},
              {"validation_guidance", 1.0},
              {"validation_guidance_skip_layers", "[1]"}});
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("validation_resolution"), std::string::npos) << m;
        EXPECT_NE(m.find("skip-layer guidance"), std::string::npos) << m;
    }
    // Out of the option's declared range: refused when the configuration is resolved.
    try {
        make({{"validation_num_inference_steps", 0}});
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        const std::string m = e.what();
        EXPECT_NE(
            m.find("validation_num_inference_steps = 0 (config file): expected a whole number in [1, 10000]"),
            std::string::npos)
            << m;
    }
    // A bare index (SimpleTuner silently drops it) is one layer here.
    EXPECT_EQ(make({{"validation_guidance_skip_layers", 1}}).settings().skip_layers,
              (std::vector<int64_t>{1}));
    EXPECT_EQ(make({{"validation_seed", nullptr}}).settings().seed, std::nullopt);
}

}  // namespace
