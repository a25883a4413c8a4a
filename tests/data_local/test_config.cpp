// multidatabackend.json parsing: keys, types, placeholders, S2V auto-split, errors.
#include "backend.h"
#include "config.h"

#include <gtest/gtest.h>

#include "st/error.h"

namespace dl = st::plugins::data_local;
using nlohmann::json;

namespace {

dl::RunDataSettings run() {
    dl::RunDataSettings r;
    r.config_dir = "/cfg";
    r.output_dir = "/out";
    r.model_family = "wan";
    return r;
}

std::string error_of(const json& entries, dl::RunDataSettings r = run()) {
    try {
        dl::parse_datasets(entries, r);
    } catch (const st::Error& e) {
        return e.message();
    }
    return "";
}

}  // namespace

TEST(DataConfigTest, ParsesEveryQuickstartKey) {
    const json entries = json::parse(R"([
      {"id": "clips", "type": "local", "dataset_type": "video", "instance_data_dir": "data/{id}",
       "crop": false, "crop_aspect": "preserve", "resolution": 480, "resolution_type": "pixel_area",
       "minimum_image_size": 256, "maximum_image_size": 1024, "target_downsample_size": 512,
       "caption_strategy": "textfile", "metadata_backend": "discovery", "repeats": 2,
       "cache_dir_vae": "{output_dir}/cache/vae/{model_family}/{id}", "write_batch_size": 16,
       "probability": 0.5, "disabled": false,
       "video": {"num_frames": 75, "min_frames": 80, "max_frames": 200, "is_i2v": true,
                 "bucket_strategy": "resolution_frames", "frame_interval": 8}},
      {"id": "text", "dataset_type": "text_embeds", "default": true, "type": "local", "cache_dir": "cache/text"}
    ])");
    auto ds = dl::parse_datasets(entries, run());
    ASSERT_EQ(ds.size(), 2u);
    const auto& v = ds[0];
    EXPECT_EQ(v.dataset_type, dl::DatasetType::video);
    EXPECT_EQ(v.instance_data_dir, "/cfg/data/clips");
    EXPECT_EQ(v.cache_dir_vae, "/out/cache/vae/wan/clips");
    EXPECT_EQ(v.resolution, 480);
    EXPECT_EQ(v.minimum_image_size, 256);
    EXPECT_EQ(v.caption_strategy, "textfile");
    EXPECT_EQ(v.repeats, 2);
    EXPECT_EQ(v.write_batch_size, 16);
    EXPECT_DOUBLE_EQ(v.probability, 0.5);
    EXPECT_EQ(v.video.num_frames, 75);
    EXPECT_EQ(v.video.min_frames, 80);
    EXPECT_EQ(v.video.max_frames, 200);
    EXPECT_EQ(v.video.is_i2v.value(), true);
    EXPECT_EQ(v.video.bucket_strategy, "resolution_frames");
    EXPECT_EQ(v.video.frame_interval, 8);
    EXPECT_TRUE(ds[1].is_default);
    EXPECT_EQ(ds[1].cache_dir, "/cfg/cache/text");
}

TEST(DataConfigTest, MinFramesDefaultsToNumFrames) {
    auto ds = dl::parse_datasets(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "video":{"num_frames":33}}])"),
                                 run());
    EXPECT_EQ(ds[0].video.min_frames, 33);
}

TEST(DataConfigTest, UnknownKeyNamesClosestKnownKey) {
    const std::string e = error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "resolutoin": 480}])"));
    EXPECT_NE(e.find("unknown key 'resolutoin'"), std::string::npos) << e;
    EXPECT_NE(e.find("did you mean 'resolution'"), std::string::npos) << e;
    const std::string v = error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "video": {"num_frame": 33}}])"));
    EXPECT_NE(v.find("did you mean 'num_frames'"), std::string::npos) << v;
}

TEST(DataConfigTest, IdsAreNamesNotPaths) {
    // Issue 18: an id of ../../../../tmp/x put caches and metadata outside the run's folders.
    for (const char* id : {"../../../../tmp/x", "a/b", "a\\b", "..", "."}) {
        json entries = json::array({{{"id", id}, {"dataset_type", "video"}, {"instance_data_dir", "/d"}}});
        const std::string e = error_of(entries);
        EXPECT_NE(e.find("may not contain '/', '\\' or '..'"), std::string::npos) << id << ": " << e;
    }
    EXPECT_EQ(error_of(json::parse(R"([{"id":"disney-black-and-white.v2","dataset_type":"video",
        "instance_data_dir":"/d"}])"))
                  .find("may not contain"),
              std::string::npos);
}

TEST(DataConfigTest, WrongTypeNamesKeyValueAndExpectation) {
    const std::string e = error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "resolution": "big"}])"));
    EXPECT_NE(e.find("'resolution'"), std::string::npos) << e;
    EXPECT_NE(e.find("\"big\""), std::string::npos) << e;
    EXPECT_NE(e.find("expected a number"), std::string::npos) << e;
    const std::string c = error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "crop": 3}])"));
    EXPECT_NE(c.find("expected a boolean"), std::string::npos) << c;
    const std::string s = error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "caption_strategy": "textfiles"}])"));
    EXPECT_NE(s.find("closest: 'textfile'"), std::string::npos) << s;
    EXPECT_NE(error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "video": {"num_frames": 33, "min_frames": 17}}])"))
                  .find("min_frames 17"),
              std::string::npos);
    EXPECT_NE(error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "repeats": 1.5}])"))
                  .find("whole number"),
              std::string::npos);
    EXPECT_NE(
        error_of(
            json::parse(
                R"([{"id":"a","dataset_type":"text_embeds","cache_dir":"x"},{"id":"a","dataset_type":"text_embeds","cache_dir":"x"}])"))
            .find("used twice"),
        std::string::npos);
    EXPECT_NE(error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/{nope}"}])"))
                  .find("unknown placeholder '{nope}'"),
              std::string::npos);
    EXPECT_NE(error_of(json::parse(R"([{"id":"a","type":"aws","dataset_type":"video"}])")).find("type 'aws'"),
              std::string::npos);
}

// Issue 18: "repeats": 1e9 allocated until bad_alloc (3.3 GB); now refused with the key and range.
TEST(DataConfigTest, AbsurdRepeatsAreRefusedWithTheRange) {
    for (const char* value : {"1e9", "100001", "-1"}) {
        const std::string e = error_of(json::parse(std::string(R"([{"id":"a","dataset_type":"video",
            "instance_data_dir":"/d", "repeats": )") +
                                                   value + "}]"));
        EXPECT_NE(e.find("key 'repeats' must be in [0, 100000]"), std::string::npos) << value << ": " << e;
    }
    EXPECT_EQ(error_of(json::parse(R"([{"id":"a","dataset_type":"video","instance_data_dir":"/d",
        "repeats": 100000}])")),
              "");
}

// Issue 18: aspect_bucket_alignment 0 divided by zero while bucketing; the option carries its range.
TEST(DataConfigTest, RunOptionsDeclareTheirRanges) {
    bool seen = false;
    for (const auto& spec : dl::data_local_options()) {
        if (spec.name != "aspect_bucket_alignment") continue;
        seen = true;
        ASSERT_TRUE(spec.min_value.has_value());
        EXPECT_EQ(*spec.min_value, 1);
        EXPECT_EQ(st::sdk::option_range_text(spec), "[1, 1024]");
    }
    EXPECT_TRUE(seen);
}

TEST(DataConfigTest, DisabledDatasetNeedsNoFolder) {
    auto ds = dl::parse_datasets(json::parse(R"([{"id":"a","dataset_type":"video","disabled":true},
        {"id":"b","dataset_type":"video","disable":true}])"),
                                 run());
    EXPECT_TRUE(ds[0].disabled);
    EXPECT_TRUE(ds[1].disabled);
}

TEST(DataConfigTest, EvalDatasetsHoldTheTrainingMediaKind) {
    // dataset_type eval: held out for the evaluation loss; videos when the run trains on videos (or
    // the entry has a video block), images otherwise.
    auto ds = dl::parse_datasets(json::parse(R"([
        {"id":"train","dataset_type":"video","instance_data_dir":"v"},
        {"id":"held","dataset_type":"eval","instance_data_dir":"e"},
        {"id":"held2","dataset_type":"eval","instance_data_dir":"e2","video":{"num_frames":17}}])"),
                                 run());
    ASSERT_EQ(ds.size(), 3u);
    EXPECT_FALSE(ds[0].eval);
    EXPECT_TRUE(ds[1].eval);
    EXPECT_EQ(ds[1].dataset_type, dl::DatasetType::video);
    EXPECT_EQ(ds[1].cache_dir_vae, "/out/cache/vae/wan/held");
    EXPECT_TRUE(ds[2].eval);
    EXPECT_EQ(ds[2].video.num_frames, 17);
    auto images = dl::parse_datasets(json::parse(R"([
        {"id":"train","dataset_type":"image","instance_data_dir":"i"},
        {"id":"held","dataset_type":"eval","instance_data_dir":"e"}])"),
                                     run());
    EXPECT_EQ(images[1].dataset_type, dl::DatasetType::image);
    EXPECT_NE(error_of(json::parse(R"([{"id":"held","dataset_type":"eval"}])")).find("instance_data_dir"),
              std::string::npos);
}

TEST(DataConfigTest, S2VAutoSplitCreatesAudioDataset) {
    auto r = run();
    r.model_takes_audio = true;
    auto ds = dl::parse_datasets(json::parse(R"([{"id":"talk","dataset_type":"video","instance_data_dir":"/d",
        "cache_dir_vae":"/c/vae/talk"}])"),
                                 r);
    ASSERT_EQ(ds.size(), 2u);
    EXPECT_EQ(ds[0].s2v_datasets, std::vector<std::string>{"talk_audio"});
    EXPECT_EQ(ds[1].id, "talk_audio");
    EXPECT_EQ(ds[1].dataset_type, dl::DatasetType::audio);
    EXPECT_TRUE(ds[1].audio.source_from_video);
    EXPECT_EQ(ds[1].audio.sample_rate, 16000);
    EXPECT_EQ(ds[1].audio.channels, 1);
    EXPECT_FALSE(ds[1].audio.allow_zero_audio);
    EXPECT_DOUBLE_EQ(ds[1].probability, 0.0);
    EXPECT_EQ(ds[1].cache_dir_vae, "/c/vae/audio/talk_audio");
    // Explicit audio block on a non-S2V family, and the manual link mode.
    auto m = dl::parse_datasets(json::parse(R"([
      {"id":"v","dataset_type":"video","instance_data_dir":"/d","s2v_datasets":["a"]},
      {"id":"a","dataset_type":"audio","instance_data_dir":"/aud","audio":{"allow_zero_audio":true,
       "truncation_mode":"end","max_duration_seconds":10,"duration_interval":2}}])"),
                                run());
    EXPECT_EQ(m.size(), 2u);
    EXPECT_TRUE(m[1].audio.allow_zero_audio);
    EXPECT_EQ(m[1].audio.truncation_mode, "end");
    EXPECT_NE(error_of(json::parse(R"([{"id":"v","dataset_type":"video","instance_data_dir":"/d",
        "s2v_datasets":["missing"]}])"))
                  .find("'missing'"),
              std::string::npos);
    EXPECT_NE(error_of(json::parse(R"([{"id":"v","dataset_type":"video","instance_data_dir":"/d",
        "audio":{"channels":2}}])"))
                  .find("channels 2"),
              std::string::npos);
}

TEST(DataConfigTest, RunSettingsReadFromConfig) {
    auto values = std::make_shared<json>(json{{"vae_batch_size", 2},
                                              {"compress_disk_cache", false},
                                              {"aspect_bucket_rounding", 3},
                                              {"train_batch_size", 4}});
    auto s = dl::run_settings_from_config(st::sdk::ConfigView(values));
    EXPECT_EQ(s.vae_batch_size, 2);
    EXPECT_FALSE(s.compress_disk_cache);
    EXPECT_EQ(s.aspect_bucket_rounding, 3);
    EXPECT_EQ(s.train_batch_size, 4);
    EXPECT_FALSE(s.delete_problematic_images);  // only ever true when set explicitly
}
