// The data_local plugin: registers data.local@1 (the `local` multidatabackend.json backend).
#include <cstdio>

#include "backend.h"
#include "bench_data.h"
#include "extract_audio.h"
#include "st/error.h"
#include "st/plugin.h"
#include "st/registrar.h"

namespace {

int extract_audio_cli(const std::vector<std::string>& args) {
    std::string in, out, format = "wav";
    bool strip = false;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) throw st::Error("extract-audio", "cli", a + " needs a value");
            return args[++i];
        };
        if (a == "--input-dir")
            in = value();
        else if (a == "--output-dir")
            out = value();
        else if (a == "--format")
            format = value();
        else if (a == "--strip-audio")
            strip = true;
        else
            throw st::Error("extract-audio", "cli",
                            "unknown argument '" + a +
                                "' (usage: st-host extract-audio "
                                "--input-dir DIR --output-dir DIR [--strip-audio] [--format wav|flac])");
    }
    if (in.empty() || out.empty())
        throw st::Error("extract-audio", "cli", "--input-dir and --output-dir are required");
    auto report = st::plugins::data_local::run_extract_audio(in, out, strip, format);
    std::printf("extract-audio: %zu written, %zu skipped, %zu videos stripped of audio\n",
                report.written.size(), report.skipped.size(), report.stripped.size());
    for (const auto& s : report.skipped) std::printf("  skipped %s\n", s.c_str());
    return 0;
}

}  // namespace

ST_PLUGIN("data_local", "0.1.0", "data.local@1", "cmd.extract-audio@1", "cmd.bench-data@1")

ST_PLUGIN_ENTRY(registrar) {
    using st::plugins::data_local::LocalDataBackend;
    st::sdk::ComponentInfo info;
    info.id = "data.local@1";
    info.summary =
        "local folders of videos/images/audio from multidatabackend.json: FFmpeg decode, aspect buckets, "
        "latent/text/audio caches";
    info.options = st::plugins::data_local::data_local_options();
    registrar.add_data_backend(std::move(info), [] { return std::make_unique<LocalDataBackend>(); });

    st::sdk::ComponentInfo extract{
        "cmd.extract-audio@1",
        "16 kHz mono audio of every video in a folder, named by stem (SimpleTuner's "
        "generate_s2v_audio.py)",
        {}};
    registrar.add_command(std::move(extract),
                          {"st-host extract-audio --input-dir DIR --output-dir DIR "
                           "[--strip-audio] [--format wav|flac]",
                           [](const std::vector<std::string>& args) { return extract_audio_cli(args); }});
    st::sdk::ComponentInfo bench{"cmd.bench-data@1", "decode + resize throughput next to the ffmpeg CLI", {}};
    registrar.add_command(std::move(bench), {"st-host bench data [--clips N] [--seconds S] [--dir DIR]",
                                             [](const std::vector<std::string>& args) {
                                                 return st::plugins::data_local::run_bench_data(args);
                                             }});
}
