// Shared fixture of the training tests: one tiny Wan model (st-host make-model), eight short
// captioned clips (ffmpeg CLI, tests only) and a multidatabackend.json whose caches are shared by
// every run, built once per test executable. Runs go through the real st-host binary.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../common/host_process.h"

namespace st_test {

namespace fs = std::filesystem;

inline std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
    std::vector<nlohmann::json> out;
    std::istringstream in(read_text(p));
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
}

struct RunResult {
    int code = -1;
    std::string log;
};

/// The fixture's folder (model, clips, dataset config, caches) and helpers to run st-host on it.
class TrainEnv {
  public:
    static TrainEnv& get() {
        static TrainEnv env;
        return env;
    }
    fs::path root;

    /// Writes config.json for `out` (base settings merged with `extra`) and returns its path.
    fs::path config(const std::string& out, const nlohmann::json& extra = nlohmann::json::object()) const {
        nlohmann::json c = {{"model_family", "wan"},
                            {"model_type", "lora"},
                            {"pretrained_model_name_or_path", (root / "model").string()},
                            {"data_backend_config", (root / "multidatabackend.json").string()},
                            {"output_dir", (root / out).string()},
                            {"train_batch_size", 2},
                            {"max_train_steps", 12},
                            {"learning_rate", 3e-3},
                            {"lr_scheduler", "constant"},
                            {"optimizer", "adamw"},
                            {"mixed_precision", "no"},
                            {"lora_rank", 4},
                            {"checkpoint_step_interval", 5},
                            {"checkpoints_total_limit", 3},
                            {"resume_from_checkpoint", "latest"},
                            {"max_grad_norm", 1.0},
                            {"grad_clip_method", "norm"},
                            {"seed", 7}};
        for (const auto& [k, v] : extra.items()) c[k] = v;
        const fs::path p = root / (out + ".config.json");
        write_text(p, c.dump(2));
        return p;
    }

    /// Runs `st-host CONFIG ARGS` to completion, capturing stderr+stdout.
    RunResult run(const fs::path& config, const std::string& args = "",
                  const std::string& prefix = "") const {
        const Proc p = shell(prefix + host_prefix() + "'" + config.string() + "' " + args);
        return {p.code, p.out};
    }

    /// Starts st-host in the background (log to `log`); returns its pid.
    pid_t spawn(const fs::path& config, const fs::path& log, const std::string& args = "") const {
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::setenv("ST_PLUGIN_PATH", "", 1);
            const std::string cmd = std::string("exec ") + ST_HOST_EXE +
                                    " --no-install-plugins --plugin-dir '" + ST_TEST_PLUGIN_DIR + "' '" +
                                    config.string() + "' " + args + " > '" + log.string() + "' 2>&1";
            ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        return pid;
    }

    /// Waits until `metrics` has at least `lines` lines (or the timeout); returns the count seen.
    static size_t wait_for_steps(const fs::path& metrics, size_t lines, double timeout_s = 120) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
        size_t n = 0;
        while (std::chrono::steady_clock::now() < end) {
            std::istringstream in(read_text(metrics));
            std::string l;
            n = 0;
            while (std::getline(in, l))
                if (!l.empty()) ++n;
            if (n >= lines) return n;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return n;
    }

    static int wait_exit(pid_t pid) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

  private:
    TrainEnv() {
        root = fs::path(ST_TEST_BINARY_DIR) / "tmp-train" / std::to_string(::getpid());
        fs::remove_all(root);
        fs::create_directories(root / "data");
        const std::string make = host_prefix() + "make-model --plugin wan --preset tiny --seed 3 --out '" +
                                 (root / "model").string() + "' > '" + (root / "make.log").string() +
                                 "' 2>&1";
        if (std::system(make.c_str()) != 0) throw std::runtime_error("make-model failed: " + make);
        const char* sources[] = {"testsrc",    "testsrc2", "smptebars", "mandelbrot",
                                 "rgbtestsrc", "life",     "cellauto",  "gradients"};
        int i = 0;
        for (const char* src : sources) {
            const fs::path clip = root / "data" / ("clip" + std::to_string(i) + ".mp4");
            const std::string cmd = std::string("ffmpeg -nostdin -v error -y -f lavfi -i ") + src +
                                    "=size=128x96:rate=16 -t 1.2 -pix_fmt yuv420p '" + clip.string() + "'";
            if (std::system(cmd.c_str()) != 0) throw std::runtime_error("ffmpeg failed: " + cmd);
            write_text(fs::path(clip).replace_extension(".txt"), std::string("a ") + src + " pattern");
            ++i;
        }
        write_datasets("multidatabackend.json", "cache");
    }

  public:
    /// A multidatabackend.json over the fixture clips with caches under `cache_dir`; returns its path.
    fs::path write_datasets(const std::string& name, const std::string& cache_dir) const {
        nlohmann::json datasets = nlohmann::json::parse(R"([
          {"id": "clips", "type": "local", "dataset_type": "video", "instance_data_dir": "data",
           "caption_strategy": "textfile", "resolution": 64, "resolution_type": "pixel", "crop": true,
           "crop_aspect": "square", "video": {"num_frames": 17, "min_frames": 17}},
          {"id": "text", "type": "local", "dataset_type": "text_embeds", "default": true}])");
        datasets[0]["cache_dir_vae"] = cache_dir + "/vae";
        datasets[1]["cache_dir"] = cache_dir + "/text";
        write_text(root / name, datasets.dump(2));
        return root / name;
    }

  private:
    ~TrainEnv() {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
};

}  // namespace st_test
