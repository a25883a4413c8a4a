// SIGINT / SIGTERM during training: the first one asks the loop to finish the current step, write a
// checkpoint and exit; a second one ends the process at once (exit code 130).
#pragma once

namespace st::host::train {

class StopSignal {
  public:
    /// Installs the handlers (restored by the destructor).
    StopSignal();
    ~StopSignal();
    StopSignal(const StopSignal&) = delete;
    StopSignal& operator=(const StopSignal&) = delete;

    /// Whether a signal arrived; `name` receives "SIGINT" or "SIGTERM".
    bool requested(const char** name = nullptr) const;
};

}  // namespace st::host::train
