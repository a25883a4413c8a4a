// Shared fixture of the validation tests: one tiny Wan model (st-host make-model --preset tiny), the
// wan plugin loaded in process through the host's registry, and helpers to run st-host generate and
// read its videos back with ffprobe / ffmpeg (CLI tools, tests only).
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "commands/commands.h"
#include "plugins/guard.h"
#include "plugins/model_handle.h"
#include "plugins/registry.h"
#include "st/model.h"

#include "../common/host_process.h"

namespace st_test {

namespace fs = std::filesystem;

/// ffprobe's view of the first video stream (and the first audio stream when present).
struct Probe {
    int64_t frames = 0, width = 0, height = 0;
    std::string fps, pix_fmt, codec;
};

inline Probe probe(const fs::path& file) {
    const Proc r = shell(
        "ffprobe -v error -count_frames -select_streams v:0 -show_entries "
        "stream=nb_read_frames,width,height,r_frame_rate,pix_fmt,codec_name -of json '" +
        file.string() + "'");
    Probe p;
    if (r.code != 0) return p;
    const auto s = nlohmann::json::parse(r.out).at("streams").at(0);
    p.frames = std::stoll(s.at("nb_read_frames").get<std::string>());
    p.width = s.at("width");
    p.height = s.at("height");
    p.fps = s.at("r_frame_rate");
    p.pix_fmt = s.at("pix_fmt");
    p.codec = s.at("codec_name");
    return p;
}

/// Every decoded frame as packed RGB bytes (ffmpeg CLI).
inline std::string decode_rgb(const fs::path& file) {
    return shell("ffmpeg -nostdin -v error -i '" + file.string() +
                 "' -f rawvideo -pix_fmt rgb24 - 2>/dev/null")
        .out;
}

/// The tiny model on disk and the wan plugin loaded in this process.
class ValidateEnv {
  public:
    static ValidateEnv& get() {
        static ValidateEnv env;
        return env;
    }
    fs::path root;
    fs::path model_dir;
    st::host::PluginRegistry registry;
    const st::host::ComponentEntry* entry = nullptr;

    /// A freshly loaded tiny model (fp32, CPU, inference); `dir` defaults to model_dir.
    std::unique_ptr<st::host::ModelHandle> load(const nlohmann::json& config = nlohmann::json::object(),
                                                const fs::path& dir = {}) const {
        auto model = std::make_unique<st::host::ModelHandle>(*entry);
        st::sdk::ModelLoadRequest req;
        req.path = dir.empty() ? model_dir : dir;
        req.config = st::sdk::ConfigView(std::make_shared<const nlohmann::json>(config));
        req.dtype = at::kFloat;
        req.training = false;
        model->load(req);
        return model;
    }

    /// make-model --preset tiny-a14b (two Wan 2.2 experts, boundary 0.875), made on first use.
    const fs::path& a14b_dir() {
        if (a14b_.empty()) {
            const fs::path dir = root / "a14b";
            const Proc r =
                shell(host_prefix() + "make-model --plugin wan --preset tiny-a14b --seed 6 --out '" +
                      dir.string() + "'");
            if (r.code != 0) throw std::runtime_error("make-model tiny-a14b failed: " + r.out);
            a14b_ = dir;
        }
        return a14b_;
    }

  private:
    fs::path a14b_;
    ValidateEnv() {
        root = fs::path(ST_TEST_BINARY_DIR) / "tmp-validate" / std::to_string(::getpid());
        fs::remove_all(root);
        fs::create_directories(root);
        model_dir = root / "model";
        const Proc r = shell(host_prefix() + "make-model --plugin wan --preset tiny --seed 5 --out '" +
                             model_dir.string() + "'");
        if (r.code != 0) throw std::runtime_error("make-model failed: " + r.out);
        registry.discover({{fs::path(ST_TEST_PLUGIN_DIR), "--plugin-dir"}});
        entry = &st::host::model_component(registry, "wan");
    }
    ~ValidateEnv() {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
};

}  // namespace st_test
