// st-host prepare: discovery + caching through a model's encoders and the data_local plugin, with
// a summary that counts and names skipped files. Uses the fixture model (a test double whose
// encoders pool pixels) and the real data_local plugin from the build tree.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

std::string run(const std::string& cmd) {
    std::string out;
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    int status = pclose(p);
    out += "\n[exit " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + "]";
    return out;
}

void expect_contains(const std::string& text, const std::string& part) {
    EXPECT_NE(text.find(part), std::string::npos) << "expected '" << part << "' in:\n" << text;
}

}  // namespace

TEST(PrepareTest, CachesDatasetAndReportsSkippedFiles) {
    if (std::system("command -v ffmpeg > /dev/null") != 0)
        GTEST_SKIP() << "ffmpeg CLI (test media maker) missing";
    fs::path t = fs::temp_directory_path() / ("st_prepare_" + std::to_string(::getpid()));
    fs::remove_all(t);
    fs::create_directories(t / "videos");
    for (int i = 0; i < 2; ++i) {
        auto clip = t / "videos" / ("clip" + std::to_string(i) + ".mp4");
        ASSERT_EQ(
            std::system(
                ("ffmpeg -v error -y -f lavfi -i testsrc=size=96x64:rate=16:duration=1 -pix_fmt yuv420p '" +
                 clip.string() + "'")
                    .c_str()),
            0);
        std::ofstream(t / "videos" / ("clip" + std::to_string(i) + ".txt"))
            << "a test pattern number " << i << "\n";
    }
    std::ofstream(t / "videos" / "broken.mp4");  // zero bytes
    std::ofstream(t / "videos" / "broken.txt") << "never used\n";
    nlohmann::json data = nlohmann::json::array({{{"id", "clips"},
                                                  {"type", "local"},
                                                  {"dataset_type", "video"},
                                                  {"instance_data_dir", (t / "videos").string()},
                                                  {"caption_strategy", "textfile"},
                                                  {"resolution", 64},
                                                  {"resolution_type", "pixel"},
                                                  {"cache_dir_vae", (t / "cache" / "vae").string()},
                                                  {"video", {{"num_frames", 9}}}},
                                                 {{"id", "text"},
                                                  {"type", "local"},
                                                  {"dataset_type", "text_embeds"},
                                                  {"default", true},
                                                  {"cache_dir", (t / "cache" / "text").string()}}});
    std::ofstream(t / "multidatabackend.json") << data.dump(2);
    nlohmann::json config = {{"model_family", "fixture"},
                             {"pretrained_model_name_or_path", (t / "model").string()},
                             {"data_backend_config", (t / "multidatabackend.json").string()},
                             {"output_dir", (t / "out").string()},
                             {"train_batch_size", 1},
                             {"seed", 1}};
    std::ofstream(t / "config.json") << config.dump(2);
    const std::string host = std::string(ST_HOST_EXE) + " --no-install-plugins --plugin-dir " +
                             ST_TEST_FIXTURE_ROOT + "/model --plugin-dir " + ST_TEST_PLUGIN_DIR;
    auto out = run(host + " prepare " + (t / "config.json").string());
    expect_contains(out, "[exit 0]");
    expect_contains(out, "data.local@1: 2 samples, 1 skipped");
    expect_contains(out, "broken.mp4");
    expect_contains(out, "dataset clips:");
    EXPECT_TRUE(fs::exists(t / "cache" / "vae"));
    // A second run reuses the caches.
    auto again = run(host + " prepare " + (t / "config.json").string());
    expect_contains(again, "[exit 0]");
    expect_contains(again, "data.local@1: 2 samples, 1 skipped");
    // A dataset whose every file is unusable stops prepare with its name and the reason.
    fs::create_directories(t / "bad");
    std::ofstream(t / "bad" / "only.mp4");  // zero bytes
    nlohmann::json with_bad = data;
    with_bad.push_back({{"id", "all-broken"},
                        {"type", "local"},
                        {"dataset_type", "video"},
                        {"instance_data_dir", (t / "bad").string()},
                        {"caption_strategy", "filename"},
                        {"resolution", 64},
                        {"resolution_type", "pixel"},
                        {"cache_dir_vae", (t / "cache" / "vae-bad").string()},
                        {"video", {{"num_frames", 9}}}});
    std::ofstream(t / "with_bad.json") << with_bad.dump(2);
    auto empty = run(host + " prepare " + (t / "config.json").string() + " --data_backend_config " +
                     (t / "with_bad.json").string());
    expect_contains(empty, "[exit 1]");
    expect_contains(empty, "dataset 'all-broken' (video) yields no usable sample: 1 file(s) skipped; first:");
    expect_contains(empty, "only.mp4");
    // Every media dataset disabled: 0 samples used to be a success (exit 0).
    nlohmann::json disabled = data;
    disabled[0]["disabled"] = true;
    std::ofstream(t / "disabled.json") << disabled.dump(2);
    auto none = run(host + " prepare " + (t / "config.json").string() + " --data_backend_config " +
                    (t / "disabled.json").string());
    expect_contains(none, "[exit 1]");
    expect_contains(none, "no enabled video or image dataset yields a sample");
    // A missing dataset config is a clear error naming the key.
    auto bad = run(host + " prepare " + (t / "config.json").string() + " --data_backend_config " +
                   (t / "nope.json").string());
    expect_contains(bad, "[exit 1]");
    expect_contains(bad, "nope.json");
    fs::remove_all(t);
}
