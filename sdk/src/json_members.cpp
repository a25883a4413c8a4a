#include "json_members.h"

#include <fmt/format.h>

#include <unordered_set>
#include <utility>
#include <vector>

namespace st::sdk::detail {

namespace {

using json = nlohmann::json;

// nlohmann SAX handler: the root object's members are built one at a time in `member_`.
class MemberReader {
  public:
    explicit MemberReader(const std::function<void(const std::string&, json&)>& on_member)
        : on_member_(on_member) {}

    bool null() { return add(json(nullptr)); }
    bool boolean(bool v) { return add(json(v)); }
    bool number_integer(json::number_integer_t v) { return add(json(v)); }
    bool number_unsigned(json::number_unsigned_t v) { return add(json(v)); }
    bool number_float(json::number_float_t v, const std::string& /*text*/) { return add(json(v)); }
    bool string(std::string& v) { return add(json(std::move(v))); }
    bool binary(json::binary_t& v) { return add(json(std::move(v))); }

    bool start_object(std::size_t /*size*/) {
        if (!root_open_ && !root_done_) {
            root_open_ = true;
            return true;
        }
        return open(json::object());
    }
    bool end_object() {
        if (stack_.empty()) {
            root_open_ = false;
            root_done_ = true;
            return true;
        }
        return close();
    }
    bool start_array(std::size_t /*size*/) { return open(json::array()); }
    bool end_array() { return close(); }

    bool key(std::string& k) {
        if (stack_.empty()) {
            if (!top_keys_.insert(k).second)
                throw JsonMembersError(fmt::format("lists '{}' more than once", k));
            top_key_ = std::move(k);
            return true;
        }
        json& object = *stack_.back();
        if (object.contains(k)) {
            throw JsonMembersError(fmt::format("'{}' lists the key '{}' more than once", top_key_, k));
        }
        slot_ = &object[k];
        return true;
    }

    bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                     const nlohmann::detail::exception& e) {
        throw JsonMembersError(fmt::format("is not valid JSON: {}", e.what()));
    }

  private:
    void require_root(const json& value) const {
        if (!root_open_)
            throw JsonMembersError(fmt::format("is a JSON {}, expected an object", value.type_name()));
    }

    // Places `value` where the next value goes: a member of the root, an array element or an
    // object member. Returns where it was placed.
    json* place(json&& value) {
        if (stack_.empty()) {
            member_ = std::move(value);
            return &member_;
        }
        json& parent = *stack_.back();
        if (parent.is_array()) {
            parent.push_back(std::move(value));
            return &parent.back();
        }
        *slot_ = std::move(value);
        return slot_;
    }

    bool add(json&& value) {
        require_root(value);
        const bool top = stack_.empty();
        place(std::move(value));
        if (top) finish_member();
        return true;
    }
    // A container's address stays valid while it is open: its parent gets no new element until
    // the container closes (arrays) and std::map nodes never move (objects).
    bool open(json&& container) {
        require_root(container);
        stack_.push_back(place(std::move(container)));
        return true;
    }
    bool close() {
        stack_.pop_back();
        if (stack_.empty()) finish_member();
        return true;
    }
    void finish_member() {
        on_member_(top_key_, member_);
        member_ = json();
    }

    const std::function<void(const std::string&, json&)>& on_member_;
    std::unordered_set<std::string> top_keys_;
    std::string top_key_;
    json member_;
    std::vector<json*> stack_;
    json* slot_ = nullptr;
    bool root_open_ = false;
    bool root_done_ = false;
};

}  // namespace

void for_each_json_member(
    std::string_view text,
    const std::function<void(const std::string& key, nlohmann::json& value)>& on_member) {
    MemberReader reader(on_member);
    json::sax_parse(text.begin(), text.end(), &reader);
}

}  // namespace st::sdk::detail
