// The evaluation loss: the training objective on a fixed set of samples, at fixed sigmas
// ((k + 0.5) / eval_timesteps, unshifted) with fixed noise, without dropout and without gradients,
// so its curve moves only when the weights do. As SimpleTuner, the samples are those of the
// `dataset_type: eval` datasets (num_eval_images from each, never trained on), logged as loss/val and
// loss/val/<dataset>. Without eval datasets st takes the first num_eval_images samples of the training
// data order instead (docs/training.md), and says so.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <torch/csrc/autograd/grad_mode.h>
#include <map>

#include "plugins/guard.h"
#include "st/flow_matching.h"
#include "train/trainer_impl.h"

namespace st::host::train {

namespace {
constexpr const char* kLog = "host.train";
}

void Trainer::build_eval_set() {
    if (cfg_.eval_interval <= 0) return;
    eval_batches_ = data_->eval_batches(cfg_.eval_samples, cfg_.batch_size);
    eval_held_out_ = !eval_batches_.empty();
    if (!eval_held_out_) {
        log::info(
            kLog,
            "no dataset_type eval dataset: the evaluation loss uses the first {} training sample(s) of the "
            "data order (add a dataset with \"dataset_type\": \"eval\" to hold samples out)",
            cfg_.eval_samples);
        eval_batches_ = data_->first_samples(cfg_.eval_samples);
    }
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(0);
    for (const auto& b : eval_batches_)
        eval_noise_.push_back(at::randn(b.tensors.at("latents").sizes(), g, at::kFloat));
    std::vector<std::string> ids;
    for (const auto& b : eval_batches_)
        for (const auto& s : b.samples) ids.push_back(s.dataset_id + "/" + s.id);
    log::info(kLog, "evaluation loss every {} steps on {} {} sample(s) x {} timesteps: {}",
              cfg_.eval_interval, ids.size(), eval_held_out_ ? "held-out (dataset_type eval)" : "training",
              cfg_.eval_timesteps, fmt::format("{}", fmt::join(ids, ", ")));
}

void Trainer::evaluate() {
    if (eval_batches_.empty()) return;
    const auto t0 = std::chrono::steady_clock::now();
    torch::nn::Module& root = model_->trainable();
    root.train(false);
    struct Restore {
        torch::nn::Module& m;
        ~Restore() { m.train(true); }
    } restore{root};
    torch::NoGradGuard no_grad;
    nlohmann::json by_timestep = nlohmann::json::object();
    std::map<std::string, std::pair<double, int64_t>> by_dataset;  // loss sum, samples (one dataset a batch)
    double total = 0;
    for (int64_t k = 0; k < cfg_.eval_timesteps; ++k) {
        const double sigma = (static_cast<double>(k) + 0.5) / static_cast<double>(cfg_.eval_timesteps);
        double sum = 0;
        int64_t n = 0;
        for (size_t i = 0; i < eval_batches_.size(); ++i) {
            const auto& batch = eval_batches_[i];
            const int64_t size = static_cast<int64_t>(batch.samples.size());
            const double batch_sum =
                objective_->eval_loss(batch, eval_noise_[i], sigma) * static_cast<double>(size);
            sum += batch_sum;
            n += size;
            auto& d = by_dataset[batch.samples.front().dataset_id];
            d.first += batch_sum;
            d.second += size;
        }
        const double mean = sum / static_cast<double>(n);
        by_timestep[fmt::format("{:.1f}", sigma * 1000.0)] = mean;
        total += mean;
    }
    const double loss = total / static_cast<double>(cfg_.eval_timesteps);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nlohmann::json record = {{"step", global_step_},
                             {"loss/val", loss},
                             {"loss/val/by_timestep", by_timestep},
                             {"eval_seconds", seconds}};
    if (eval_held_out_)
        for (const auto& [dataset, acc] : by_dataset)
            record["loss/val/" + dataset] = acc.first / static_cast<double>(acc.second);
    write_metrics(record);
    log::info(kLog, "step {}: evaluation loss {:.5f} ({:.1f} s)", global_step_, loss, seconds);
    fire("on_evaluation", {{"step", global_step_}, {"loss", loss}});
}

}  // namespace st::host::train
