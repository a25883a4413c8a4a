// Loss regularizer components (`reg.<name>@N`, e.g. CREPA). A regularizer names the model taps it
// needs (intermediate activations, see ModelFamily::taps) and turns them into extra loss terms.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "st/options.h"
#include "st/tensors.h"

namespace torch::nn {
class Module;
}

namespace st::sdk {

struct RegularizerInit {
    ConfigView config;
    /// The model's hidden size at the requested taps, keyed by tap name.
    std::map<std::string, int64_t> tap_dims;
};

struct RegularizerInputs {
    int64_t step = 0;   ///< optimizer step
    TensorMap taps;     ///< the activations requested by taps(), keyed by tap name
    TensorMap batch;    ///< clean latents ("latents"), pixels if decoded, conditioning
    at::Tensor sigmas;  ///< [B]
};

class Regularizer {
  public:
    virtual ~Regularizer();
    /// Tap names this regularizer needs (e.g. {"blocks.8.out"}). Called once after construction.
    virtual std::vector<std::string> taps() const = 0;
    /// Trainable modules the regularizer owns (projectors); the host adds their parameters to the
    /// optimizer with the prefix "<component>.". Default: none.
    virtual std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> modules();
    /// Named loss terms for this micro-batch; the host adds every term to the diffusion loss and
    /// logs each under its name. Called on the trainer thread inside autograd.
    virtual TensorMap loss_terms(const RegularizerInputs& inputs) = 0;
};

using RegularizerFactory = std::function<std::unique_ptr<Regularizer>(const RegularizerInit&)>;

}  // namespace st::sdk
