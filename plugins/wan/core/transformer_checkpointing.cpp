// Gradient checkpointing as a torch::autograd::Function (see transformer_checkpointing.h).
// Follows the reentrant variant of torch/utils/checkpoint.py::CheckpointFunction.
#include "core/transformer_checkpointing.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

namespace st::plugins::wan {
namespace {

// Holds the function between forward and backward (stored in the autograd context as a capsule).
struct CheckpointClosure : torch::CustomClassHolder {
    CheckpointedFn fn;
    size_t n_inputs = 0;
};

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

        at::Tensor out;
        {
            torch::autograd::AutoGradMode enable(true);
            out = closure->fn(inputs);
        }
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

at::Tensor checkpointed_call(CheckpointedFn fn, const std::vector<at::Tensor>& inputs,
                             const std::vector<at::Tensor>& parameters) {
    bool any_grad = false;
    for (const auto& t : inputs) any_grad = any_grad || t.requires_grad();
    for (const auto& t : parameters) any_grad = any_grad || t.requires_grad();
    if (!torch::autograd::GradMode::is_enabled() || !any_grad) return fn(inputs);

    auto closure = c10::make_intrusive<CheckpointClosure>();
    closure->fn = std::move(fn);
    closure->n_inputs = inputs.size();
    std::vector<at::Tensor> all(inputs);
    all.insert(all.end(), parameters.begin(), parameters.end());
    return CheckpointFunction::apply(at::TensorList(all), closure)[0];
}

}  // namespace st::plugins::wan
