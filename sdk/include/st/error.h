// st::Error: the one exception type of st. It carries where it happened (component, phase) and a
// message that names the bad value. Phase boundaries catch, add context and rethrow; the host
// catches at three edges only (plugin calls, Lua calls, main).
#pragma once

#include <fmt/core.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace st {

class Error : public std::runtime_error {
  public:
    /// component: who raised it ("host.config", "model.wan@1", "safetensors"); phase: what was
    /// being done ("load", "step", "parse"); message: what is wrong, with the offending value.
    Error(std::string component, std::string phase, std::string message);
    ~Error() override;

    const std::string& component() const { return component_; }
    const std::string& phase() const { return phase_; }
    const std::string& message() const { return message_; }
    /// Context lines added by outer layers, innermost first ("while loading plugin 'wan' ...").
    const std::vector<std::string>& context() const { return context_; }

    /// Returns a copy with one more context line; used by phase boundaries to rethrow.
    Error with_context(std::string line) const;

    /// "[component] phase: message" plus one indented line per context entry.
    const char* what() const noexcept override { return what_.c_str(); }

  private:
    void rebuild_what();
    std::string component_;
    std::string phase_;
    std::string message_;
    std::vector<std::string> context_;
    std::string what_;
};

/// Throws st::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(std::string component, std::string phase, fmt::format_string<Args...> f,
                       Args&&... args) {
    throw Error(std::move(component), std::move(phase), fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace st
