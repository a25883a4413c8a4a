// st-bench-optim: time per optimizer step per 1M parameters and optimizer state bytes per parameter
// for every optimizer of plugins/optim, next to LibTorch's own torch::optim::AdamW in the same run.
//
//   st-bench-optim [--numel N] [--tensors K] [--steps S] [--threads T]
//
// Parameters: K tensors of N/K elements (fp32; bf16 for adamw_bf16 and for the "+bf16" rows), fixed
// random gradients, 3 warm-up steps, then the mean over S timed steps. Prints a Markdown table.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/optim.h"
#include "st/log.h"

namespace {

struct Row {
    std::string name;
    double ms_per_step_per_m;
    double state_bytes_per_param;
};

std::vector<at::Tensor> make_params(int64_t numel, int64_t tensors, at::ScalarType dtype) {
    std::vector<at::Tensor> out;
    at::manual_seed(0);
    for (int64_t k = 0; k < tensors; ++k) {
        at::Tensor p = at::randn({numel / tensors}, at::kFloat).to(dtype).set_requires_grad(true);
        p.mutable_grad() = at::randn({numel / tensors}, at::kFloat).mul_(1e-3).to(dtype);
        out.push_back(p);
    }
    return out;
}

template <typename StepFn>
double time_steps(StepFn&& step, int steps) {
    for (int i = 0; i < 3; ++i) step();
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) step();
    auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::milli>(t1 - t0).count() / steps;
}

Row bench_ours(const std::string& name, at::ScalarType dtype, int64_t numel, int64_t tensors, int steps) {
    auto params = make_params(numel, tensors, dtype);
    st::sdk::OptimizerInit init;
    for (size_t i = 0; i < params.size(); ++i) init.params.push_back({"p" + std::to_string(i), params[i], 0});
    init.groups.push_back({1e-4, 1e-2});
    auto opt = st::plugins::optim::make_optimizer(name, init);
    const double ms = time_steps([&] { opt->step(); }, steps);
    const std::string label = name + (dtype == at::kBFloat16 && name != "adamw_bf16" ? " (bf16 params)" : "");
    return Row{label, ms / (static_cast<double>(numel) / 1e6),
               static_cast<double>(opt->state_bytes()) / static_cast<double>(numel)};
}

Row bench_libtorch(int64_t numel, int64_t tensors, int steps) {
    auto params = make_params(numel, tensors, at::kFloat);
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4).weight_decay(1e-2));
    const double ms = time_steps([&] { opt.step(); }, steps);
    int64_t bytes = 0;
    for (const auto& [key, st] : opt.state()) {
        auto& s = static_cast<torch::optim::AdamWParamState&>(*st);
        bytes += s.exp_avg().nbytes() + s.exp_avg_sq().nbytes();
    }
    return Row{"torch::optim::AdamW (LibTorch)", ms / (static_cast<double>(numel) / 1e6),
               static_cast<double>(bytes) / static_cast<double>(numel)};
}

}  // namespace

int main(int argc, char** argv) {
    int64_t numel = 8 << 20, tensors = 8;
    int steps = 20, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--numel"))
            numel = std::atoll(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--tensors"))
            tensors = std::atoll(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--steps"))
            steps = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--threads"))
            threads = std::atoi(argv[i + 1]);
        else {
            std::fprintf(stderr,
                         "unknown argument %s\nusage: st-bench-optim [--numel N] [--tensors K] [--steps S] "
                         "[--threads T]\n",
                         argv[i]);
            return 2;
        }
    }
    if (threads > 0) at::set_num_threads(threads);
    st::log::set_level(st::log::Level::warn);
    std::vector<Row> rows;
    rows.push_back(bench_libtorch(numel, tensors, steps));
    for (const auto& name : st::plugins::optim::optimizer_names()) {
        rows.push_back(
            bench_ours(name, name == "adamw_bf16" ? at::kBFloat16 : at::kFloat, numel, tensors, steps));
    }
    rows.push_back(bench_ours("optimi-adamw", at::kBFloat16, numel, tensors, steps));
    rows.push_back(bench_ours("optimi-lion", at::kBFloat16, numel, tensors, steps));
    std::printf("%lld parameters in %lld tensors, %d timed steps, %d threads\n\n",
                static_cast<long long>(numel), static_cast<long long>(tensors), steps, at::get_num_threads());
    std::printf("| optimizer | ms / step / 1M params | state bytes / param |\n|---|---:|---:|\n");
    for (const auto& r : rows) {
        std::printf("| %s | %.3f | %.3f |\n", r.name.c_str(), r.ms_per_step_per_m, r.state_bytes_per_param);
    }
    return 0;
}
