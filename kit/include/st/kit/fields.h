// Config structs declared once (STYLE.md 16): a FieldTable lists a struct's JSON keys next to the
// members they fill, and that one declaration gives the parser (from_json, with unknown-key errors
// that name the key, the file and the closest known key), the writer (to_json) and the defaults (a
// key that is absent keeps the member's initializer). Used for the diffusers / transformers
// config.json of every network a family loads.
//
//   const FieldTable<MyConfig>& fields() {
//       static const auto t = FieldTable<MyConfig>("model.mine@1", "transformer config")
//                                 .constant("_class_name", "MyTransformer")
//                                 .field("num_layers", &MyConfig::num_layers)
//                                 .field("image_dim", &MyConfig::image_dim);  // std::optional: null
//       return t;
//   }
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "st/error.h"
#include "st/json_file.h"

namespace st::kit {

namespace detail {

template <typename V>
struct IsOptional : std::false_type {};
template <typename V>
struct IsOptional<std::optional<V>> : std::true_type {
    using type = V;
};
template <typename V>
struct IsArray : std::false_type {};
template <typename V, size_t N>
struct IsArray<std::array<V, N>> : std::true_type {
    using type = V;
    static constexpr size_t size = N;
};

/// st::Error "<source>: unknown key '<key>' in a <what> (value <v>; closest known key '<k>')".
[[noreturn]] void unknown_key(const std::string& component, const std::string& what,
                              const std::string& source, const std::string& key, const nlohmann::json& value,
                              const std::vector<std::string>& known);
/// st::Error "<source>: <key> '<value>' is not supported: <why> (expected '<allowed>' or ...)".
[[noreturn]] void unexpected_value(const std::string& component, const std::string& source,
                                   const std::string& key, const nlohmann::json& value,
                                   const std::vector<nlohmann::json>& allowed, const std::string& why);
/// st::Error "<source>: key '<key>' must have <n> entries, got <value>".
[[noreturn]] void wrong_length(const std::string& component, const std::string& source,
                               const std::string& key, size_t n, const nlohmann::json& value);

template <typename V>
V read_value(const nlohmann::json& value, const std::string& key, const std::string& source,
             const std::string& component) {
    if constexpr (IsOptional<V>::value) {
        if (value.is_null()) return std::nullopt;
        return read_value<typename IsOptional<V>::type>(value, key, source, component);
    } else if constexpr (IsArray<V>::value) {
        auto list = sdk::json_as<std::vector<typename IsArray<V>::type>>(value, key, source, component);
        if (list.size() != IsArray<V>::size) wrong_length(component, source, key, IsArray<V>::size, value);
        V out{};
        for (size_t i = 0; i < out.size(); ++i) out[i] = list[i];
        return out;
    } else {
        return sdk::json_as<V>(value, key, source, component);
    }
}

template <typename V>
nlohmann::json write_value(const V& v) {
    if constexpr (IsOptional<V>::value) {
        return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
    } else {
        return nlohmann::json(v);
    }
}

}  // namespace detail

template <typename T>
class FieldTable {
  public:
    using Reader = std::function<void(T&, const nlohmann::json& value, const std::string& source)>;
    using Writer = std::function<nlohmann::json(const T&)>;

    /// `component` prefixes errors ("model.wan@1"); `what` names the document ("Wan transformer config").
    FieldTable(std::string component, std::string what)
        : component_(std::move(component)), what_(std::move(what)) {}

    /// `key` <-> `member`. Member types: bool, int64_t, double, std::string, std::vector / std::array of
    /// those, and std::optional of any of them (JSON null <-> nullopt).
    template <typename V>
    FieldTable& field(std::string key, V T::*member) {
        const std::string component = component_;
        Reader read = [member, component, key](T& t, const nlohmann::json& value, const std::string& source) {
            t.*member = detail::read_value<V>(value, key, source, component);
        };
        return custom(std::move(key), std::move(read),
                      [member](const T& t) { return detail::write_value(t.*member); });
    }

    /// As field(), and a JSON null sets `when_null` (diffusers writes null for "the default": e.g.
    /// out_channels null = in_channels, resolved by the caller).
    template <typename V>
    FieldTable& field(std::string key, V T::*member, V when_null) {
        const std::string component = component_;
        Reader read = [member, component, key, when_null](T& t, const nlohmann::json& value,
                                                          const std::string& source) {
            t.*member = value.is_null() ? when_null : detail::read_value<V>(value, key, source, component);
        };
        return custom(std::move(key), std::move(read),
                      [member](const T& t) { return detail::write_value(t.*member); });
    }

    /// A key with its own reading and writing (null meaning something, renamed values, ...).
    /// An empty writer: the key is read but never written.
    FieldTable& custom(std::string key, Reader read, Writer write) {
        entries_.push_back({std::move(key), std::move(read), std::move(write)});
        return *this;
    }

    /// A key that is accepted and ignored (it does not change what the struct describes).
    FieldTable& ignore(std::string key) {
        return custom(std::move(key), [](T&, const nlohmann::json&, const std::string&) {}, {});
    }

    /// A key whose value must be one of `allowed` (the network st implements): another value is an
    /// st::Error naming the key, the value and `why`; absent means the file's default, which the caller
    /// chose to be allowed. Written as allowed[0].
    FieldTable& expect(std::string key, std::vector<nlohmann::json> allowed, std::string why) {
        const std::string component = component_;
        const std::string k = key;
        const nlohmann::json first = allowed.front();
        Reader read = [component, k, allowed, why](T&, const nlohmann::json& value,
                                                   const std::string& source) {
            for (const auto& a : allowed)
                if (value == a) return;
            detail::unexpected_value(component, source, k, value, allowed, why);
        };
        return custom(std::move(key), std::move(read), [first](const T&) { return first; });
    }

    /// transformers configs carry many keys that do not change the network (training, generation,
    /// bookkeeping, keys added between versions): accept keys the table does not list. `report`
    /// (optional) receives them once per read, e.g. to log them.
    FieldTable& accept_other_keys(
        std::function<void(const std::vector<std::string>& keys, const std::string& source)> report = {}) {
        accept_other_ = true;
        report_other_ = std::move(report);
        return *this;
    }

    /// A fixed entry of to_json (e.g. "_class_name"); keys starting with '_' are never read.
    FieldTable& constant(std::string key, nlohmann::json value) {
        constants_.emplace_back(std::move(key), std::move(value));
        return *this;
    }

    /// Fills `t` (starting from its current values) from the object `j`. Keys starting with '_'
    /// (`_class_name`, `_diffusers_version`, `_name_or_path`) are skipped; an unknown key is an
    /// st::Error naming it, `source` and the closest known key.
    void read(T& t, const nlohmann::json& j, const std::string& source) const {
        if (!j.is_object())
            fail(component_, "config", "{}: expected a JSON object for the {}, got {}", source, what_,
                 j.type_name());
        std::vector<std::string> other;
        for (const auto& [key, value] : j.items()) {
            if (!key.empty() && key[0] == '_') continue;
            const Entry* e = find(key);
            if (!e) {
                if (!accept_other_) detail::unknown_key(component_, what_, source, key, value, keys());
                other.push_back(key);
                continue;
            }
            e->read(t, value, source);
        }
        if (!other.empty() && report_other_) report_other_(other, source);
    }

    /// A default-constructed T filled by read().
    T from_json(const nlohmann::json& j, const std::string& source) const {
        T t{};
        read(t, j, source);
        return t;
    }

    /// from_json, then `finish(t)` (derived values, validate()); an st::Error thrown by `finish`
    /// gains "while reading <source>".
    template <typename Finish>
    T from_json(const nlohmann::json& j, const std::string& source, Finish&& finish) const {
        T t = from_json(j, source);
        try {
            finish(t);
        } catch (const Error& e) {
            throw e.with_context("while reading " + source);
        }
        return t;
    }

    /// The constants, then every written key, in declaration order.
    nlohmann::json to_json(const T& t) const {
        nlohmann::json j = nlohmann::json::object();
        for (const auto& [k, v] : constants_) j[k] = v;
        for (const auto& e : entries_)
            if (e.write) j[e.key] = e.write(t);
        return j;
    }

    /// The readable keys, in declaration order.
    std::vector<std::string> keys() const {
        std::vector<std::string> out;
        for (const auto& e : entries_) out.push_back(e.key);
        return out;
    }

  private:
    struct Entry {
        std::string key;
        Reader read;
        Writer write;
    };
    const Entry* find(const std::string& key) const {
        for (const auto& e : entries_)
            if (e.key == key) return &e;
        return nullptr;
    }

    std::string component_;
    std::string what_;
    std::vector<Entry> entries_;
    std::vector<std::pair<std::string, nlohmann::json>> constants_;
    bool accept_other_ = false;
    std::function<void(const std::vector<std::string>&, const std::string&)> report_other_;
};

}  // namespace st::kit
