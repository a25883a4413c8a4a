// TensorBoard event files (report_to tensorboard, #23): the writer's records are read back by an
// independent reader (tests/train/read_tfevents.py: its own bitwise CRC-32C and protobuf decoder),
// and a training run writes every metric as a scalar per step and validation first frames as images
// where SimpleTuner puts them (output_dir/logs/<tracker_project_name>/).
#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>

#include "fixtures.h"
#include "media/video_writer.h"
#include "train/tensorboard.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;
namespace tr = st::host::train;

nlohmann::json read_events(const fs::path& file) {
    const std::string cmd = "/usr/bin/python3 '" + std::string(ST_TEST_SOURCE_DIR) +
                            "/tests/train/read_tfevents.py' '" + file.string() + "' 2>&1";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    const int status = ::pclose(pipe);
    EXPECT_EQ(status, 0) << out;
    if (status != 0) return nlohmann::json::array();
    return nlohmann::json::parse(out);
}

fs::path scratch(const std::string& name) {
    const fs::path d = fs::temp_directory_path() / ("st_tb_" + std::to_string(::getpid())) / name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

TEST(TensorBoardTest, Crc32cMatchesTheStandardCheckValue) {
    EXPECT_EQ(tr::crc32c("123456789", 9), 0xE3069283u);  // CRC-32C check value (RFC 3720 B.4)
    EXPECT_EQ(tr::crc32c("", 0), 0u);
}

TEST(TensorBoardTest, RecordsAreReadBackByAnIndependentReader) {
    const fs::path dir = scratch("unit");
    fs::path file;
    {
        tr::TensorBoardWriter w(dir, /*resume_step=*/5);
        file = w.file();
        w.write_metrics({{"step", 6},
                         {"loss", 0.25},
                         {"lr", 1e-4},
                         {"time", {{"forward", 1.5}}},
                         {"bucket", "480x832"},
                         {"timesteps", {1, 2}}});
        w.write_metrics({{"loss/val", 0.5}});  // no step: skipped
        const fs::path png = dir / "frame.png";
        st::host::media::write_png(png, at::full({6, 10, 3}, 200, at::kByte));
        w.write_png_file(7, "validation/step_7_validation", png);
    }
    EXPECT_EQ(file.parent_path(), dir);
    EXPECT_EQ(file.filename().string().rfind("events.out.tfevents.", 0), 0u) << file;
    const auto events = read_events(file);
    ASSERT_EQ(events.size(), 4u) << events.dump();
    EXPECT_EQ(events[0]["file_version"], "brain.Event:2");
    EXPECT_EQ(events[1]["session_status"], 1);  // SessionLog START: TensorBoard purges steps >= 6
    EXPECT_EQ(events[1]["step"], 6);
    EXPECT_EQ(events[2]["step"], 6);
    const auto& s = events[2]["scalars"];
    EXPECT_EQ(s.size(), 3u) << s.dump();
    EXPECT_FLOAT_EQ(s["loss"].get<float>(), 0.25f);
    EXPECT_FLOAT_EQ(s["lr"].get<float>(), 1e-4f);
    EXPECT_FLOAT_EQ(s["time/forward"].get<float>(), 1.5f);
    EXPECT_GT(events[2]["wall_time"].get<double>(), 1.7e9);
    const auto& img = events[3]["images"][0];
    EXPECT_EQ(events[3]["step"], 7);
    EXPECT_EQ(img["tag"], "validation/step_7_validation");
    EXPECT_EQ(img["height"], 6);
    EXPECT_EQ(img["width"], 10);
    EXPECT_EQ(img["colorspace"], 3);
    EXPECT_EQ(img["png_signature"], true);
    // A damaged byte is caught by the reader's CRC check (the reader is not a rubber stamp).
    std::string bytes;
    {
        std::ifstream in(file, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    bytes[bytes.size() / 2] ^= 0x40;
    const fs::path bad = dir / "events.out.tfevents.damaged";
    std::ofstream(bad, std::ios::binary) << bytes;
    const std::string cmd = "/usr/bin/python3 '" + std::string(ST_TEST_SOURCE_DIR) +
                            "/tests/train/read_tfevents.py' '" + bad.string() + "' > /dev/null 2>&1";
    EXPECT_NE(std::system(cmd.c_str()), 0);
}

TEST(TensorBoardTest, TrainingWritesEveryMetricAndValidationFrames) {
    auto& env = TrainEnv::get();
    auto r = env.run(env.config("tensorboard", {{"max_train_steps", 4},
                                                {"report_to", "tensorboard"},
                                                {"tracker_project_name", "lora-training"},
                                                {"validation_step_interval", 4},
                                                {"validation_prompt", "a test pattern"},
                                                {"validation_num_video_frames", 5},
                                                {"validation_resolution", "32x32"},
                                                {"validation_num_inference_steps", 2}}));
    ASSERT_EQ(r.code, 0) << r.log;
    const fs::path dir = env.root / "tensorboard" / "logs" / "lora-training";
    EXPECT_NE(r.log.find("tensorboard --logdir " + (env.root / "tensorboard" / "logs").string()),
              std::string::npos)
        << r.log;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
    ASSERT_EQ(files.size(), 1u);
    const auto events = read_events(files[0]);
    std::map<int64_t, nlohmann::json> scalars;
    int images = 0;
    for (const auto& e : events) {
        for (const auto& [tag, v] : e["scalars"].items()) scalars[e["step"].get<int64_t>()][tag] = v;
        for (const auto& img : e["images"]) {
            ++images;
            EXPECT_EQ(e["step"], 4);
            EXPECT_EQ(img["width"], 32);
            EXPECT_EQ(img["png_signature"], true);
        }
    }
    std::vector<nlohmann::json> lines;
    for (auto& l : st_test::read_jsonl(env.root / "tensorboard" / "metrics.jsonl"))
        if (l.contains("loss")) lines.push_back(l);
    ASSERT_EQ(lines.size(), 4u);
    EXPECT_TRUE(scalars[4].contains("validation/seconds")) << scalars[4].dump();
    for (const auto& l : lines) {
        const auto& s = scalars[l["step"].get<int64_t>()];
        EXPECT_FLOAT_EQ(s["loss"].get<float>(), static_cast<float>(l["loss"].get<double>())) << s.dump();
        EXPECT_FLOAT_EQ(s["lr"].get<float>(), static_cast<float>(l["lr"].get<double>()));
        EXPECT_TRUE(s.contains("grad_norm") && s.contains("time/total") && s.contains("epoch")) << s.dump();
    }
    EXPECT_EQ(images, 1);
}

}  // namespace
