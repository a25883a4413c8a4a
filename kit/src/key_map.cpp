#include "st/kit/key_map.h"

#include <cctype>

namespace st::kit {

namespace {

std::optional<std::string> lookup(const std::vector<KeyPair>& pairs, const std::string& key,
                                  bool to_diffusers) {
    for (const auto& p : pairs)
        if (key == (to_diffusers ? p.original : p.diffusers)) return to_diffusers ? p.diffusers : p.original;
    return std::nullopt;
}

}  // namespace

const char* key_layout_name(KeyLayout layout) {
    return layout == KeyLayout::diffusers ? "diffusers" : "original";
}

bool split_indexed(const std::string& name, const std::string& head, std::string* prefix, std::string* rest) {
    if (name.rfind(head, 0) != 0) return false;
    size_t j = head.size();
    while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
    if (j == head.size() || j >= name.size() || name[j] != '.') return false;
    *prefix = name.substr(0, j + 1);
    *rest = name.substr(j + 1);
    return true;
}

KeyMapTable& KeyMapTable::modules(std::vector<KeyPair> pairs) {
    for (auto& p : pairs) modules_.push_back(std::move(p));
    return *this;
}

KeyMapTable& KeyMapTable::tensors(std::vector<KeyPair> pairs) {
    for (auto& p : pairs) tensors_.push_back(std::move(p));
    return *this;
}

KeyMapTable& KeyMapTable::indexed_modules(std::string head, std::vector<KeyPair> pairs) {
    indexed_modules_.push_back({std::move(head), std::move(pairs)});
    return *this;
}

KeyMapTable& KeyMapTable::indexed_tensors(std::string head, std::vector<KeyPair> pairs) {
    indexed_tensors_.push_back({std::move(head), std::move(pairs)});
    return *this;
}

KeyMapTable& KeyMapTable::fallback(const KeyMapTable* other) {
    fallback_ = other;
    return *this;
}

std::optional<std::string> KeyMapTable::own_module(const std::string& path, bool to_diffusers) const {
    std::string prefix, rest;
    for (const auto& ix : indexed_modules_)
        if (split_indexed(path, ix.head, &prefix, &rest)) {
            if (auto m = lookup(ix.pairs, rest, to_diffusers)) return prefix + *m;
            return std::nullopt;
        }
    return lookup(modules_, path, to_diffusers);
}

std::optional<std::string> KeyMapTable::own_tensor(const std::string& name, bool to_diffusers) const {
    std::string prefix, rest;
    for (const auto& ix : indexed_tensors_)
        if (split_indexed(name, ix.head, &prefix, &rest))
            if (auto t = lookup(ix.pairs, rest, to_diffusers)) return prefix + *t;
    return lookup(tensors_, name, to_diffusers);
}

std::optional<std::string> KeyMapTable::module(const std::string& path, bool to_diffusers) const {
    if (auto m = own_module(path, to_diffusers)) return m;
    return fallback_ ? fallback_->module(path, to_diffusers) : std::nullopt;
}

std::optional<std::string> KeyMapTable::tensor(const std::string& name, bool to_diffusers) const {
    if (auto t = own_tensor(name, to_diffusers)) return t;
    const size_t dot = name.rfind('.');
    const std::string leaf = dot == std::string::npos ? std::string() : name.substr(dot + 1);
    if (leaf == "weight" || leaf == "bias")
        if (auto m = own_module(name.substr(0, dot), to_diffusers)) return *m + "." + leaf;
    return fallback_ ? fallback_->tensor(name, to_diffusers) : std::nullopt;
}

}  // namespace st::kit
