// ValidationController in process on a fake model and in-memory data: off when nothing is to render,
// the reference sample (first usable training sample, with audio when the model samples from audio;
// eval_dataset_id's first sample; the checkpoint's one after a resume), the schedule, and prompts
// edited by on_validation_start handlers.
#include <gtest/gtest.h>

#include "config/options_table.h"
#include "fake_parts.h"
#include "st/error.h"
#include "train/validation_controller.h"

namespace {

using st::host::train::DataCursor;
using st::host::train::ValidationController;
using st_test::FakeBackend;

st::sdk::ConfigView config(const nlohmann::json& values) {
    st::host::OptionTable table;
    for (auto& s : st::host::validate::validation_options()) table.add(s);
    auto r = st::host::resolve_config(values, {}, table);
    return st::sdk::ConfigView(std::make_shared<const nlohmann::json>(r.values));
}

nlohmann::json base() {
    return {{"validation_prompt", "a red ball"}, {"validation_step_interval", 4}};
}

std::vector<st::host::OpenedBackend> data(bool audio) {
    auto b = std::make_unique<FakeBackend>("clips", std::vector<std::string>{"c0", "c1", "c2"});
    b->with_audio = audio;
    b->held_out = {"h0"};
    std::vector<st::host::OpenedBackend> v;
    v.push_back(st_test::opened(std::move(b)));
    return v;
}

std::unique_ptr<ValidationController> make(st::host::ModelHandle& model, const nlohmann::json& extra = {}) {
    nlohmann::json v = base();
    for (const auto& [k, x] : extra.items()) v[k] = x;
    return ValidationController::create(config(v), "/tmp", "/tmp/out", model, 1);
}

}  // namespace

TEST(ValidationControllerTest, OffWithoutPromptOrIntervalAndTheSchedule) {
    auto model = st_test::fake_model(nullptr);
    EXPECT_EQ(make(*model, {{"validation_step_interval", 0}}), nullptr);
    EXPECT_EQ(ValidationController::create(config({{"validation_step_interval", 4}}), "/tmp", "/tmp/out",
                                           *model, 1),
              nullptr);
    auto v = make(*model);
    ASSERT_NE(v, nullptr);
    EXPECT_TRUE(v->due(8, false, false));
    EXPECT_FALSE(v->due(8, true, false)) << "a skipped step does not validate";
    EXPECT_FALSE(v->due(7, false, false));
    EXPECT_TRUE(v->due(7, false, true)) << "st.validate_now()";
    EXPECT_TRUE(v->reference_json().is_null()) << "a text-only model needs no reference";
}

TEST(ValidationControllerTest, ReferenceIsTheFirstTrainingSampleWithTheMediaTheModelNeeds) {
    auto model = st_test::fake_model(nullptr, {{"reference image", st::sdk::MediaKind::image},
                                               {"driving audio", st::sdk::MediaKind::audio}});
    auto backends = data(true);
    DataCursor cursor(backends, 2, 0);
    auto v = make(*model);
    ASSERT_NE(v, nullptr);
    v->choose_reference(nullptr, cursor);
    EXPECT_TRUE(v->reference_json().is_null()) << "no eval_dataset_id: chosen from the training batches";
    auto batch = cursor.next();  // c0 (no audio), c1 (audio)
    v->offer(*batch);
    const auto ref = v->reference_json();
    EXPECT_EQ(ref.value("id", ""), "clips/c1") << ref.dump();
    EXPECT_EQ(ref.value("audio", ""), "/data/c1.mp4");
    EXPECT_DOUBLE_EQ(ref.value("audio_start", 0.0), 0.5);
    v->offer(*cursor.next());  // later batches never replace it
    EXPECT_EQ(v->reference_json(), ref);

    // After a resume the checkpoint's reference wins.
    auto again = make(*model);
    again->choose_reference(
        {{"id", "clips/c2"}, {"video", "/data/c2.mp4"}, {"audio", "/a.wav"}, {"audio_start", 1.5}}, cursor);
    EXPECT_EQ(again->reference_json().value("id", ""), "clips/c2");
}

TEST(ValidationControllerTest, EvalDatasetIdTakesThatDatasetsFirstSampleOrFailsNamingIt) {
    auto model = st_test::fake_model(nullptr, {{"first-frame image", st::sdk::MediaKind::image}});
    auto backends = data(false);
    DataCursor cursor(backends, 2, 0);
    cursor.next();
    const auto before = cursor.position();
    auto held = make(*model, {{"eval_dataset_id", "clips_eval"}});
    held->choose_reference(nullptr, cursor);
    EXPECT_EQ(held->reference_json().value("id", ""), "clips_eval/h0");
    auto train = make(*model, {{"eval_dataset_id", "clips"}});
    train->choose_reference(nullptr, cursor);
    EXPECT_EQ(train->reference_json().value("id", ""), "clips/c0");
    EXPECT_EQ(cursor.position().data, before.data) << "the search leaves the data position alone";
    auto none = make(*model, {{"eval_dataset_id", "nope"}});
    try {
        none->choose_reference(nullptr, cursor);
        FAIL();
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("eval_dataset_id 'nope': no usable sample of that dataset"),
                  std::string::npos);
        EXPECT_NE(std::string(e.what()).find("clips, clips_eval"), std::string::npos) << e.what();
    }
}

TEST(ValidationControllerTest, HandlersEditPromptsKnownOnesKeepTheirNicknames) {
    auto model = st_test::fake_model(nullptr);
    auto v = make(*model, {{"validation_negative_prompt", "blurry"}});
    const auto same = v->prompts({});
    ASSERT_EQ(same.size(), 1u);
    EXPECT_EQ(same[0].nickname, "validation");
    const auto edited = v->prompts([](const nlohmann::json& texts) {
        EXPECT_EQ(texts, nlohmann::json::array({"a red ball"}));
        return nlohmann::json::array({"a blue cube", "a red ball", 3});
    });
    ASSERT_EQ(edited.size(), 2u);
    EXPECT_EQ(edited[0].nickname, "hook_0");
    EXPECT_EQ(edited[0].negative, "blurry");
    EXPECT_EQ(edited[1].nickname, "validation");
}
