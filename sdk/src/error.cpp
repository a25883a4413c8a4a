#include "st/error.h"

namespace st {

Error::Error(std::string component, std::string phase, std::string message)
    : std::runtime_error(message),
      component_(std::move(component)),
      phase_(std::move(phase)),
      message_(std::move(message)) {
    rebuild_what();
}

Error::~Error() = default;

Error Error::with_context(std::string line) const {
    Error copy = *this;
    copy.context_.push_back(std::move(line));
    copy.rebuild_what();
    return copy;
}

void Error::rebuild_what() {
    // "[component] phase: message" followed by the context lines, outermost last.
    what_.clear();
    if (!component_.empty()) what_ += "[" + component_ + "] ";
    if (!phase_.empty()) what_ += phase_ + ": ";
    what_ += message_;
    for (const auto& line : context_) what_ += "\n  " + line;
}

}  // namespace st
