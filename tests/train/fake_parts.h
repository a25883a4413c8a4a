// In-process test doubles for the trainer's parts (NOT real components): an in-memory data backend
// and a model family whose velocity is a fixed linear map of the noisy latents, each behind a
// ComponentEntry like a plugin's, so the host's call_plugin / ModelHandle paths run as in a real run.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <vector>

#include "plugins/model_handle.h"
#include "plugins/registry.h"
#include "run/data_setup.h"
#include "st/data_backend.h"
#include "st/model.h"

namespace st_test {

/// `ids` per epoch, rotated by the epoch index (so the order shows which epoch it is); batches of
/// the requested size (the last may be short), latents [B, 1, 1, 2, 2] filled with the sample index.
class FakeBackend final : public st::sdk::DataBackend {
  public:
    FakeBackend(std::string dataset, std::vector<std::string> ids)
        : dataset_(std::move(dataset)), ids_(std::move(ids)) {}
    void open(const st::sdk::DataOpenRequest&) override {}
    st::sdk::PrepareSummary prepare(st::sdk::Encoders*) override { return {}; }
    int64_t batches_per_epoch(int64_t batch_size) const override {
        return (static_cast<int64_t>(ids_.size()) + batch_size - 1) / batch_size;
    }
    void start_epoch(int64_t epoch) override {
        epoch_ = epoch;
        index_ = 0;
    }
    std::optional<st::sdk::Batch> next_batch(int64_t batch_size) override {
        if (index_ >= static_cast<int64_t>(ids_.size())) return std::nullopt;
        st::sdk::Batch b;
        std::vector<at::Tensor> lat;
        for (int64_t k = 0; k < batch_size && index_ < static_cast<int64_t>(ids_.size()); ++k, ++index_) {
            const size_t i = static_cast<size_t>((index_ + epoch_) % static_cast<int64_t>(ids_.size()));
            st::sdk::SampleRef s;
            s.dataset_id = dataset_;
            s.id = ids_[i];
            s.path = "/data/" + ids_[i] + ".mp4";
            s.bucket = "2x2@1";
            if (with_audio && i % 2 == 1)
                s.meta["audio"] = {{"source", s.path}, {"start", 0.5}, {"zero", false}};
            b.samples.push_back(s);
            lat.push_back(at::full({1, 1, 2, 2}, static_cast<double>(i)));
        }
        b.tensors["latents"] = at::stack(lat);
        b.tensors["prompt_embeds"] = at::ones({static_cast<int64_t>(lat.size()), 2, 3});
        return b;
    }
    nlohmann::json state() const override { return {{"epoch", epoch_}, {"index", index_}}; }
    void restore(const nlohmann::json& s) override {
        epoch_ = s.at("epoch").get<int64_t>();
        index_ = s.at("index").get<int64_t>();
    }
    std::vector<st::sdk::Batch> eval_batches(int64_t max_samples, int64_t batch_size) override {
        std::vector<st::sdk::Batch> out;
        for (const auto& id : held_out) {
            if (max_samples > 0 && static_cast<int64_t>(out.size()) >= max_samples) break;
            st::sdk::Batch b;
            st::sdk::SampleRef s;
            s.dataset_id = dataset_ + "_eval";
            s.id = id;
            s.path = "/held/" + id + ".mp4";
            b.samples.push_back(s);
            b.tensors["latents"] = at::zeros({1, 1, 1, 2, 2});
            out.push_back(std::move(b));
            (void)batch_size;
        }
        return out;
    }
    bool with_audio = false;            ///< odd-indexed samples carry audio metadata
    std::vector<std::string> held_out;  ///< eval_batches' samples (one per batch)

  private:
    std::string dataset_;
    std::vector<std::string> ids_;
    int64_t epoch_ = 0;
    int64_t index_ = 0;
};

inline st::host::ComponentEntry& fake_entry(const std::string& id) {
    static std::map<std::string, st::host::ComponentEntry> entries;
    auto& e = entries[id];
    e.id = id;
    e.plugin_name = "fake";
    e.plugin_file = "/nowhere/st-fake.so";
    return e;
}

inline st::host::OpenedBackend opened(std::unique_ptr<FakeBackend> b) {
    st::host::OpenedBackend o;
    o.component = &fake_entry("data.fake@1");
    o.backend = std::move(b);
    return o;
}

/// velocity = w * noisy (w a trainable scalar, 0.5 at start); takes every conditioning tensor and
/// records the names it got. `inputs`: what sampling needs besides text.
class FakeFamily final : public st::sdk::ModelFamily {
  public:
    struct Net : torch::nn::Module {
        Net() { w = register_parameter("w", at::full({1}, 0.5)); }
        at::Tensor w;
    };
    std::string cache_identity() const override { return "fake"; }
    int spatial_multiple() const override { return 16; }
    int temporal_multiple() const override { return 4; }
    st::sdk::TensorMap encode_video(const at::Tensor& p) override { return {{"latents", p}}; }
    st::sdk::TensorMap encode_text(const std::vector<std::string>& c) override {
        return {{"prompt_embeds", at::zeros({static_cast<int64_t>(c.size()), 2, 3})}};
    }
    void load(const st::sdk::ModelLoadRequest&) override {}
    torch::nn::Module& trainable() override { return net_; }
    std::vector<std::string> default_lora_targets() const override { return {}; }
    st::sdk::PredictOutput predict(const st::sdk::PredictInputs& in) override {
        seen.clear();
        for (const auto& [k, v] : in.conditioning) seen.push_back(k);
        last_timesteps = in.timesteps;
        return {in.noisy * net_.w, {}, {}};
    }
    std::vector<int64_t> latent_shape(int64_t f, int64_t h, int64_t w) const override {
        return {1, 1 + (f - 1) / 4, h / 16, w / 16};
    }
    at::Tensor decode_latents(const at::Tensor& l) override {
        return l.repeat({1, 3, 1, 16, 16}).clamp(-1, 1);
    }
    std::vector<st::sdk::SamplingInput> sampling_inputs() const override { return inputs; }

    std::vector<std::string> seen;
    at::Tensor last_timesteps;
    std::vector<st::sdk::SamplingInput> inputs;

  private:
    Net net_;
};

/// A ModelHandle over a FakeFamily (`family` points at it).
inline std::unique_ptr<st::host::ModelHandle> fake_model(FakeFamily** family,
                                                         std::vector<st::sdk::SamplingInput> inputs = {}) {
    auto& e = fake_entry("model.fake@1");
    e.model = [inputs] {
        auto f = std::make_unique<FakeFamily>();
        f->inputs = inputs;
        return std::unique_ptr<st::sdk::ModelFamily>(std::move(f));
    };
    auto h = std::make_unique<st::host::ModelHandle>(e);
    if (family) *family = dynamic_cast<FakeFamily*>(&h->family());
    return h;
}

}  // namespace st_test
