// st-bench-data: decode + resize throughput of the data_local pipeline (FFmpeg libraries, swscale
// area filter, crop) on generated 480p H.264 clips with 1 and 2 worker threads, next to the ffmpeg
// CLI decoding the same clips to raw frames in the same run. Benchmarks are not tests (STYLE 15):
// the numbers go to docs/performance.md.
//
//   st-host bench data [--clips N] [--seconds S] [--dir DIR]   (also: st-bench-data ...)
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "geometry.h"
#include "media.h"
#include "parallel.h"
#include "st/error.h"

namespace dl = st::plugins::data_local;

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int run(const std::string& cmd) {
    return std::system(cmd.c_str());
}

}  // namespace

namespace st::plugins::data_local {

int run_bench_data(const std::vector<std::string>& args) {
    int clips = 4;
    int seconds = 4;
    std::filesystem::path dir = std::filesystem::temp_directory_path() / "st-bench-data";
    if (args.size() % 2 != 0) {
        std::fprintf(stderr, "usage: st-host bench data [--clips N] [--seconds S] [--dir DIR]\n");
        return 2;
    }
    for (size_t i = 0; i + 1 < args.size(); i += 2) {
        const std::string a = args[i];
        if (a == "--clips")
            clips = std::atoi(args[i + 1].c_str());
        else if (a == "--seconds")
            seconds = std::atoi(args[i + 1].c_str());
        else if (a == "--dir")
            dir = args[i + 1];
        else {
            std::fprintf(stderr, "usage: st-bench-data [--clips N] [--seconds S] [--dir DIR]\n");
            return 2;
        }
    }
    try {
        std::filesystem::create_directories(dir);
        std::vector<std::filesystem::path> files;
        for (int c = 0; c < clips; ++c) {
            auto f = dir / ("clip" + std::to_string(c) + ".mp4");
            if (!std::filesystem::exists(f)) {
                const std::string cmd =
                    "ffmpeg -v error -y -f lavfi -i testsrc2=size=854x480:rate=30:duration=" +
                    std::to_string(seconds) + " -vf hue=h=" + std::to_string(c * 40) +
                    " -c:v libx264 -preset veryfast -pix_fmt yuv420p '" + f.string() + "'";
                if (run(cmd) != 0)
                    throw st::Error("bench", "setup", "ffmpeg CLI failed to generate " + f.string());
            }
            files.push_back(f);
        }
        dl::DatasetConfig ds;
        ds.resolution = 480;
        ds.resolution_type = "pixel_area";
        std::vector<dl::MediaInfo> infos;
        int64_t total_frames = 0;
        for (const auto& f : files) {
            infos.push_back(dl::probe_media(f));
            total_frames += infos.back().grid_frames;
        }
        const dl::ResizePlan plan = dl::plan_resize(infos[0].display, ds, 2, 16, 0.5, 0.5);
        std::printf("clips: %d x %d s of 854x480 H.264 30 fps (%lld frames), resize to %dx%d (crop %dx%d)\n",
                    clips, seconds, static_cast<long long>(total_frames), plan.resized.w, plan.resized.h,
                    plan.target.w, plan.target.h);
        for (int threads : {1, 2}) {
            const double t0 = now_s();
            dl::parallel_for(static_cast<int64_t>(files.size()), threads, [&](int64_t i) {
                dl::decode_video(files[i], infos[i], 0, infos[i].grid_frames, plan, 1);
            });
            const double dt = now_s() - t0;
            std::printf("st decode+resize  threads=%d: %8.1f frames/s  (%.2f s)\n", threads,
                        total_frames / dt, dt);
        }
        for (int threads : {1, 2}) {
            const double t0 = now_s();
            for (const auto& f : files)
                run("ffmpeg -v error -threads " + std::to_string(threads) + " -i '" + f.string() +
                    "' -f rawvideo - > /dev/null");
            const double dt = now_s() - t0;
            std::printf("ffmpeg CLI raw decode (native yuv)   -threads %d: %8.1f frames/s  (%.2f s)\n",
                        threads, total_frames / dt, dt);
        }
        for (int threads : {1, 2}) {
            const double t0 = now_s();
            for (const auto& f : files)
                run("ffmpeg -v error -threads " + std::to_string(threads) + " -i '" + f.string() +
                    "' -vf scale=" + std::to_string(plan.resized.w) + ":" + std::to_string(plan.resized.h) +
                    ":flags=area,format=rgb24 -f rawvideo - > /dev/null");
            const double dt = now_s() - t0;
            std::printf("ffmpeg CLI decode+scale to rgb24    -threads %d: %8.1f frames/s  (%.2f s)\n",
                        threads, total_frames / dt, dt);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "st-bench-data: %s\n", e.what());
        return 1;
    }
    return 0;
}

}  // namespace st::plugins::data_local
