// Gradient checkpointing as a torch::autograd::Function (see block_runner.h).
// Follows the reentrant variant of torch/utils/checkpoint.py::CheckpointFunction.
#include "st/kit/block_runner.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <mutex>
#include <utility>

namespace st::kit {
namespace {

// Holds the function between forward and backward (stored in the autograd context as a capsule), and
// the state of the default generators at the forward (torch.utils.checkpoint preserve_rng_state=True):
// the re-run in backward draws the same dropout masks (LoRA dropout) as the forward did.
struct CheckpointClosure : torch::CustomClassHolder {
    std::function<at::Tensor(const std::vector<at::Tensor>&)> fn;
    size_t n_inputs = 0;
    std::vector<std::pair<at::Generator, at::Tensor>> rng;
};

// The default generators of the CPU and of `device` (when it is another one).
std::vector<at::Generator> default_generators(const at::Device& device) {
    std::vector<at::Generator> g{at::detail::getDefaultCPUGenerator()};
    if (device.type() != at::kCPU) g.push_back(at::globalContext().defaultGenerator(device));
    return g;
}

at::Tensor generator_state(at::Generator& g) {
    std::lock_guard<std::mutex> lock(g.mutex());
    return g.get_state();
}

void set_generator_state(at::Generator& g, const at::Tensor& state) {
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_state(state);
}

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
    // all = inputs..., parameters...
    static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList all,
                                                  c10::intrusive_ptr<CheckpointClosure> closure) {
        std::vector<at::Tensor> inputs(all.begin(), all.begin() + static_cast<int64_t>(closure->n_inputs));
        at::Tensor out = closure->fn(inputs);  // grad mode is off inside Function::forward
        ctx->save_for_backward(inputs);
        ctx->saved_data["closure"] = at::IValue::make_capsule(closure);
        std::vector<at::Tensor> params(all.begin() + static_cast<int64_t>(closure->n_inputs), all.end());
        ctx->saved_data["n_all"] = static_cast<int64_t>(all.size());
        // Parameters are needed again in backward: keep references (not copies).
        ctx->saved_data["params"] = at::IValue(c10::List<at::Tensor>(params));
        return {out};
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        auto closure =
            c10::static_intrusive_pointer_cast<CheckpointClosure>(ctx->saved_data["closure"].toCapsule());
        std::vector<at::Tensor> saved = ctx->get_saved_variables();
        std::vector<at::Tensor> params = ctx->saved_data["params"].toTensorVector();
        const int64_t n_all = ctx->saved_data["n_all"].toInt();

        // Detached copies of the inputs that keep their requires_grad flag, so the re-run builds a
        // graph from them (and from the parameters) only.
        std::vector<at::Tensor> inputs;
        inputs.reserve(saved.size());
        for (const auto& t : saved) inputs.push_back(t.detach().requires_grad_(t.requires_grad()));

        // Re-run with the generators as they were in forward, then give them back their current state.
        std::vector<at::Tensor> now;
        for (auto& [g, state] : closure->rng) {
            now.push_back(generator_state(g));
            set_generator_state(g, state);
        }
        at::Tensor out;
        try {
            torch::autograd::AutoGradMode enable(true);
            out = closure->fn(inputs);
        } catch (...) {
            for (size_t k = 0; k < now.size(); ++k) set_generator_state(closure->rng[k].first, now[k]);
            throw;
        }
        for (size_t k = 0; k < now.size(); ++k) set_generator_state(closure->rng[k].first, now[k]);
        std::vector<at::Tensor> wrt;
        std::vector<int64_t> slot;  // position in the returned list for each wrt entry
        for (size_t i = 0; i < inputs.size(); ++i) {
            if (inputs[i].requires_grad()) {
                wrt.push_back(inputs[i]);
                slot.push_back(static_cast<int64_t>(i));
            }
        }
        for (size_t i = 0; i < params.size(); ++i) {
            if (params[i].requires_grad()) {
                wrt.push_back(params[i]);
                slot.push_back(static_cast<int64_t>(inputs.size() + i));
            }
        }
        torch::autograd::variable_list result(static_cast<size_t>(n_all) + 1);  // + closure slot
        if (wrt.empty() || !out.requires_grad()) return result;
        auto grads = torch::autograd::grad({out}, wrt, {grad_outputs[0]}, /*retain_graph=*/false,
                                           /*create_graph=*/false, /*allow_unused=*/true);
        for (size_t k = 0; k < grads.size(); ++k) result[static_cast<size_t>(slot[k])] = grads[k];
        return result;
    }
};

}  // namespace

at::Tensor checkpointed_call(std::function<at::Tensor(const std::vector<at::Tensor>&)> fn,
                             const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& parameters,
                             const std::vector<at::Generator>& generators) {
    bool any_grad = false;
    for (const auto& t : inputs) any_grad = any_grad || t.requires_grad();
    for (const auto& t : parameters) any_grad = any_grad || t.requires_grad();
    if (!torch::autograd::GradMode::is_enabled() || !any_grad) return fn(inputs);

    auto closure = c10::make_intrusive<CheckpointClosure>();
    closure->fn = std::move(fn);
    closure->n_inputs = inputs.size();
    std::vector<at::Generator> all_generators =
        default_generators(inputs.empty() ? at::Device(at::kCPU) : inputs.front().device());
    all_generators.insert(all_generators.end(), generators.begin(), generators.end());
    for (auto& g : all_generators) closure->rng.emplace_back(g, generator_state(g));
    std::vector<at::Tensor> all(inputs);
    all.insert(all.end(), parameters.begin(), parameters.end());
    return CheckpointFunction::apply(at::TensorList(all), closure)[0];
}

}  // namespace st::kit
