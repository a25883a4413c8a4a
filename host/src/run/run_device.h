// Where a run computes. The one place st looks at the machine's devices (no plugin or other host file
// probes CUDA): the trainer and `generate` ask here, then hand the device and dtype to the model
// plugin in its ModelLoadRequest and to everything the run creates (optimizer state, EMA, sampler).
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace st::host {

struct RunDevice {
    c10::Device device = c10::Device(c10::kCPU);
    std::string why;  ///< one line for the log: what was asked, what the build and machine have
};

/// `requested` is the `device` option: "auto" (a CUDA device when this LibTorch has CUDA and the
/// machine one, the rank's LOCAL_RANK device in a distributed run; else the CPU), "cpu", "cuda" or
/// "cuda:N". `local_rank` picks the device of "auto"/"cuda" in a distributed run.
/// st::Error naming the key when a CUDA device is asked for and this build or machine has none, or
/// N is out of range.
RunDevice pick_run_device(const std::string& requested, int local_rank = 0);

/// Math settings of the device, logged once: on CUDA, TF32 matrix products and convolutions (as
/// SimpleTuner enables them) and the current device set; nothing on the CPU.
void configure_run_device(const RunDevice& run);

}  // namespace st::host
