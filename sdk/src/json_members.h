// Streaming reader for a JSON object's top-level members (SDK-internal).
//
// nlohmann's DOM parser with a callback is quadratic in the number of members (it walks the object
// at every key) and its DOM silently keeps the last of duplicate keys. This reader parses with
// nlohmann's SAX interface (iterative, no recursion), builds one member's value at a time, hands it
// to a callback and drops it, so memory is one member and time is linear in the text. Duplicate keys
// are refused at every level. Nesting depth must be bounded by the caller first (check_json_limits):
// a member's value is still a DOM, and destroying a deep DOM recurses.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace st::sdk::detail {

/// Raised for a text that is not a JSON object, not valid JSON or repeats a key. The message is
/// complete except for the file name ("header is not valid JSON: ...", "lists 'x' more than once").
struct JsonMembersError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Calls `on_member(key, value)` for each member of the object `text`, in order.
void for_each_json_member(
    std::string_view text,
    const std::function<void(const std::string& key, nlohmann::json& value)>& on_member);

}  // namespace st::sdk::detail
