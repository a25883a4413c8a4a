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

    /// Whether a signal arrived since the last StopSignal was made; `name` receives "SIGINT" or
    /// "SIGTERM". Static so the Lua hooks can poll it while a handler runs.
    static bool requested(const char** name = nullptr);
};

}  // namespace st::host::train
