// Every call into plugin code goes through call_plugin(): an exception thrown inside gains the
// plugin, the component and the phase, so the user sees where it came from.
#pragma once

#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <exception>
#include <string>
#include <utility>

#include "plugins/registry.h"
#include "st/error.h"

namespace st::host {

inline std::string plugin_context(const ComponentEntry& c, const std::string& phase) {
    return fmt::format("in plugin '{}' ({}), component '{}', phase '{}'", c.plugin_name,
                       c.plugin_file.string(), c.id, phase);
}

template <typename F>
decltype(auto) call_plugin(const ComponentEntry& c, const std::string& phase, F&& f) {
    try {
        return std::forward<F>(f)();
    } catch (const Error& e) {
        throw e.with_context(plugin_context(c, phase));
    } catch (const c10::Error& e) {
        // TORCH_CHECK failures: the message without LibTorch's C++ backtrace.
        throw Error(c.id, phase, e.what_without_backtrace()).with_context(plugin_context(c, phase));
    } catch (const std::exception& e) {
        throw Error(c.id, phase, e.what()).with_context(plugin_context(c, phase));
    } catch (...) {
        throw Error(c.id, phase, "a non-standard exception was thrown")
            .with_context(plugin_context(c, phase));
    }
}

}  // namespace st::host
