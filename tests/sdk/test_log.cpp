// The logger and the progress display.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "st/error.h"
#include "st/log.h"

namespace fs = std::filesystem;

TEST(LogTest, ParsesLevelsCaseInsensitively) {
    EXPECT_EQ(st::log::parse_level("DEBUG"), st::log::Level::debug);
    EXPECT_EQ(st::log::parse_level("warning"), st::log::Level::warn);
    EXPECT_EQ(st::log::parse_level("off"), st::log::Level::off);
    try {
        st::log::parse_level("loud");
        FAIL();
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown log level 'loud'"), std::string::npos);
    }
}

TEST(LogTest, FileSinkGetsComponentPrefixAndRespectsLevel) {
    auto path = fs::temp_directory_path() / ("st_log_" + std::to_string(::getpid()) + ".log");
    st::log::set_file(path.string());
    st::log::set_level(st::log::Level::info);
    st::log::debug("model.wan", "hidden {}", 1);
    st::log::info("model.wan", "loaded {} tensors", 825);
    st::log::set_file("");
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    EXPECT_NE(text.find("INFO  [model.wan] loaded 825 tensors"), std::string::npos) << text;
    EXPECT_EQ(text.find("hidden"), std::string::npos);
    fs::remove(path);
}

TEST(LogTest, ErrorCarriesComponentPhaseAndContext) {
    st::Error e("safetensors", "open", "bad header");
    auto e2 = e.with_context("while loading model.wan@1");
    std::string w = e2.what();
    EXPECT_EQ(w, "[safetensors] open: bad header\n  while loading model.wan@1");
    EXPECT_EQ(e2.component(), "safetensors");
    EXPECT_EQ(e2.context().size(), 1u);
}

TEST(ProgressTest, LineShowsCountRateAndEta) {
    st::log::force_terminal(false);
    st::log::Progress p("data", "decoding", 10, "frames");
    p.advance(5);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::string line = p.line();
    EXPECT_NE(line.find("decoding: 5/10  50%"), std::string::npos) << line;
    EXPECT_NE(line.find("frames/s"), std::string::npos) << line;
    EXPECT_NE(line.find("ETA "), std::string::npos) << line;
    EXPECT_GT(p.eta_seconds(), 0.0);
    p.set_note("loss 0.12");
    EXPECT_NE(p.line().find("| loss 0.12"), std::string::npos);
    p.finish();
}

TEST(ProgressTest, UnknownTotalHasNoEta) {
    st::log::force_terminal(false);
    st::log::Progress p("data", "scanning", 0);
    p.advance(3);
    EXPECT_LT(p.eta_seconds(), 0.0);
    EXPECT_EQ(p.line().find("ETA"), std::string::npos);
    p.finish();
}

TEST(ProgressTest, PlainModePrintsPeriodicLinesToTheLog) {
    st::log::force_terminal(false);
    auto path = fs::temp_directory_path() / ("st_progress_" + std::to_string(::getpid()) + ".log");
    st::log::set_file(path.string());
    st::log::set_level(st::log::Level::info);
    double old = st::log::Progress::plain_interval_s;
    st::log::Progress::plain_interval_s = 0.0;
    {
        st::log::Progress p("cache", "encoding", 3);
        p.advance();
        p.advance();
        p.advance();
    }
    st::log::Progress::plain_interval_s = old;
    st::log::set_file("");
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    EXPECT_NE(text.find("[cache] encoding: 1/3"), std::string::npos) << text;
    EXPECT_NE(text.find("[cache] encoding: 3/3 100%"), std::string::npos) << text;
    EXPECT_EQ(text.find('\r'), std::string::npos);
    fs::remove(path);
}

TEST(ProgressTest, FormatsDurations) {
    EXPECT_EQ(st::log::format_duration(12.34), "12.3s");
    EXPECT_EQ(st::log::format_duration(185), "3m05s");
    EXPECT_EQ(st::log::format_duration(3720), "1h02m");
}
