// The trainer's data-parallel side (docs/distributed.md): joining the ranks, each rank's slice of the
// global batch, the gradient and loss averages, and the agreement on when to stop. Every rank walks
// the same global batches with the same generators (the noise and sigmas are drawn for the global
// batch and sliced), so N ranks x batch b train exactly as one process with batch N*b.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "dist/dist_env.h"
#include "st/error.h"
#include "st/sharded_caching.h"
#include "train/trainer_impl.h"

namespace st::host::train {

namespace {
constexpr const char* kLog = "host.train";
}

void Trainer::start_distributed() {
    const dist::DistEnv env = dist::read_dist_env();
    launch_ = dist::read_launch_config(setup_.config);
    if (!env.launched()) return;
    rank_ = env.rank;
    world_ = env.world_size;
    log::info(kLog, "data parallel: rank {} of {} (local rank {} of {}), meeting at {}:{}{}; timeout {} s",
              rank_, world_, env.local_rank, env.local_world_size, env.master_addr, env.master_port,
              env.agent_store ? " (torchrun's store)" : "", launch_.timeout_s);
    coll_ = std::make_unique<dist::Collectives>(env, std::chrono::seconds(launch_.timeout_s));
    log::info(
        kLog,
        "all {} ranks joined (Gloo); rank 0 writes checkpoints, metrics and validation, runs the Lua hooks",
        world_);
}

sdk::Batch Trainer::shard_of(const sdk::Batch& global) const {
    const int64_t n = static_cast<int64_t>(global.samples.size());
    if (n % world_ != 0)
        fail(kLog, "step", "a batch of {} samples cannot be split over {} ranks (bucket {})", n, world_,
             global.samples.empty() ? std::string("?") : global.samples.front().bucket);
    const int64_t b = n / world_;
    const int64_t off = b * rank_;
    sdk::Batch local;
    local.samples.assign(global.samples.begin() + off, global.samples.begin() + off + b);
    for (const auto& [name, t] : global.tensors) {
        if (!t.defined() || t.dim() == 0 || t.size(0) != n)
            fail(kLog, "step",
                 "batch tensor '{}' has {} rows for {} samples: it cannot be split over the ranks", name,
                 t.defined() && t.dim() > 0 ? t.size(0) : 0, n);
        local.tensors[name] = t.narrow(0, off, b);
    }
    return local;
}

void Trainer::reduce_step(StepReport& r, double& loss_sum, bool& finite, int64_t micro_batches) {
    if (!coll_) return;
    coll_->report_step(global_step_ + 1);
    const dist::ReduceTiming t = reducer_->finish();
    r.time.allreduce = t.wait;
    r.time.allreduce_span = t.total;
    // The loss figures: every rank has the same names (same model, same regularizers).
    std::vector<double> v{loss_sum, finite ? 0.0 : 1.0, static_cast<double>(micro_batches)};
    for (const auto& [name, x] : r.terms) v.push_back(x);
    for (const auto& [name, x] : r.metrics) v.push_back(x);
    at::Tensor all = at::tensor(v, at::TensorOptions().dtype(at::kDouble));
    const auto t0 = std::chrono::steady_clock::now();
    coll_->all_reduce_sum(all, "the step's loss figures");
    r.time.allreduce += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double w = static_cast<double>(world_);
    const double* a = all.data_ptr<double>();
    if (a[2] != static_cast<double>(micro_batches) * w)
        fail(kLog, "step", "the ranks ran different numbers of micro-batches in step {} ({} here, {} in all)",
             global_step_ + 1, micro_batches, a[2]);
    loss_sum = a[0] / w;
    finite = finite && a[1] == 0;
    size_t k = 3;
    for (auto& [name, x] : r.terms) x = a[k++] / w;
    for (auto& [name, x] : r.metrics) x = a[k++] / w;
}

bool Trainer::agree_to_stop(std::string& stop_reason, int& code, bool signal_here) {
    if (!coll_) return !stop_reason.empty() || nonfinite_weights_;
    at::Tensor sig = at::tensor({signal_here ? 1.0 : 0.0, signal_here ? static_cast<double>(rank_) : -1.0},
                                at::TensorOptions().dtype(at::kDouble));
    coll_->all_reduce_max(sig, "the stop-signal check");
    const bool any_signal = sig[0].item<double>() > 0;
    // Rank 0 decides (its hooks, its saves); the others follow.
    at::Tensor d = at::tensor({stop_reason.empty() ? 0.0 : 1.0, static_cast<double>(code), lr_scale_,
                               nonfinite_weights_ ? 1.0 : 0.0},
                              at::TensorOptions().dtype(at::kDouble));
    coll_->broadcast(d, 0, "rank 0's decisions");
    const double* x = d.data_ptr<double>();
    const bool stop0 = x[0] > 0;
    code = static_cast<int>(x[1]);
    lr_scale_ = x[2];
    nonfinite_weights_ = x[3] > 0;
    if (stop0 && stop_reason.empty() && !writer()) stop_reason = "rank 0 stops the run (see its log)";
    if (any_signal && stop_reason.empty())
        stop_reason = fmt::format("a stop signal (SIGINT/SIGTERM) reached rank {}",
                                  static_cast<int>(sig[1].item<double>()));
    return !stop_reason.empty() || nonfinite_weights_;
}

void Trainer::prepare_data_distributed() {
    std::vector<sdk::ShardedCaching*> shards;
    for (auto& b : backends_) shards.push_back(dynamic_cast<sdk::ShardedCaching*>(b.backend.get()));
    const bool split = std::all_of(shards.begin(), shards.end(), [](auto* s) { return s != nullptr; });
    if (split) {
        log::info(kLog,
                  "caching split over {} ranks: each encodes its share, then every rank reads every cache",
                  world_);
        for (auto* s : shards) s->set_cache_shard(rank_, world_);
        prepare_data_backends(backends_, &model_->family());
        coll_->barrier("caching (every rank encodes its share)");
        for (auto* s : shards) s->set_cache_shard(0, 1);
    } else {
        log::info(
            kLog,
            "a data backend cannot split its caching (no sdk::ShardedCaching): rank 0 builds the caches");
    }
    if (!writer()) {
        log::info(kLog, "waiting for rank 0 to complete the caches (process_group_timeout {} s)",
                  launch_.timeout_s);
        coll_->barrier("waiting for rank 0's caches");
    }
    prepare_data_backends(backends_, &model_->family());
    if (writer()) coll_->barrier("handing the complete caches to the other ranks");
}

void Trainer::sync_weights() {
    if (!coll_) return;
    at::NoGradGuard no_grad;
    double differs = 0;
    for (auto& t : param_tensors_) {
        at::Tensor mine = t.detach().to(at::kCPU, at::kFloat).contiguous().clone();  // Gloo: host memory
        at::Tensor theirs = mine.clone();
        coll_->broadcast(theirs, 0, "the trainable weights of rank 0");
        differs = std::max(differs, (mine - theirs).abs().max().item<double>());
        t.detach().copy_(theirs);
    }
    if (differs > 0)
        log::warn(kLog,
                  "rank {}'s trainable weights differed from rank 0's by up to {:.3g}: rank 0's are used",
                  rank_, differs);
    std::vector<std::string> names;
    for (const auto& [n, t] : params_) names.push_back(n);
    while (names.size() < param_tensors_.size())
        names.push_back(fmt::format("regularizer tensor {}", names.size()));
    reducer_ = std::make_unique<dist::GradReducer>(*coll_, param_tensors_, names, launch_.bucket_cap_bytes);
    log::info(kLog, "gradients averaged over {} ranks: {}, sent while backward runs", world_,
              reducer_->describe());
}

}  // namespace st::host::train
