#include "st/text.h"

#include <algorithm>
#include <cstdint>

namespace st::sdk {

std::string shape_str(at::IntArrayRef sizes) {
    std::string out = "[";
    for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
    return out + "]";
}

std::string shape_str(const at::Tensor& t) {
    return t.defined() ? shape_str(t.sizes()) : std::string("undefined");
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

std::string closest_name(const std::string& key_in, const std::vector<std::string>& names) {
    // Only the key's first kMaxCompared bytes are compared: no name comes close to that length, and a
    // key of megabytes (hostile input) would otherwise cost megabytes x name length per name.
    constexpr size_t kMaxCompared = 256;
    const std::string key = key_in.substr(0, kMaxCompared);
    std::string best;
    size_t best_d = SIZE_MAX;
    for (const auto& n : names) {
        size_t d = edit_distance(key, n);
        // Prefer names that contain the key or are contained in it (abbreviations).
        if (n.find(key) != std::string::npos || key.find(n) != std::string::npos) d = std::min(d, d / 2 + 1);
        if (d < best_d || (d == best_d && n < best)) best_d = d, best = n;
    }
    return best;
}

}  // namespace st::sdk
