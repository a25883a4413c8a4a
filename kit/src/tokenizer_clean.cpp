// Wan prompt cleaning: ports of Python's html.unescape (Lib/html/__init__.py) and of
// wan/modules/tokenizers.py `basic_clean` (minus ftfy) / `whitespace_clean`; Python's str.lower() and
// str.strip() (st/kit/python_text.h).
#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "python_lower_table.h"
#include "st/kit/python_text.h"
#include "st/kit/tokenizer.h"
#include "tokenizer_entities.h"

namespace st::kit {
namespace {

constexpr uint32_t kInvalidByte = 0xFFFFFFFFu;

// Decodes the code point at text[pos]; returns its byte length. Malformed sequences decode as one
// byte with code point kInvalidByte (passed through untouched, never whitespace).
size_t decode_utf8(std::string_view text, size_t pos, uint32_t& cp) {
    const auto b0 = static_cast<unsigned char>(text[pos]);
    size_t len = 0;
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    } else if ((b0 & 0xE0) == 0xC0) {
        cp = b0 & 0x1F;
        len = 2;
    } else if ((b0 & 0xF0) == 0xE0) {
        cp = b0 & 0x0F;
        len = 3;
    } else if ((b0 & 0xF8) == 0xF0) {
        cp = b0 & 0x07;
        len = 4;
    } else {
        cp = kInvalidByte;
        return 1;
    }
    if (pos + len > text.size()) {
        cp = kInvalidByte;
        return 1;
    }
    for (size_t i = 1; i < len; ++i) {
        const auto b = static_cast<unsigned char>(text[pos + i]);
        if ((b & 0xC0) != 0x80) {
            cp = kInvalidByte;
            return 1;
        }
        cp = (cp << 6) | (b & 0x3F);
    }
    return len;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// Python str.isspace() / the `\s` class of a str regex.
bool is_python_space(uint32_t cp) {
    if (cp >= 0x09 && cp <= 0x0D) return true;
    if (cp >= 0x1C && cp <= 0x20) return true;
    if (cp >= 0x2000 && cp <= 0x200A) return true;
    switch (cp) {
        case 0x85:
        case 0xA0:
        case 0x1680:
        case 0x2028:
        case 0x2029:
        case 0x202F:
        case 0x205F:
        case 0x3000:
            return true;
        default:
            return false;
    }
}

const std::unordered_map<std::string_view, std::string_view>& entity_table() {
    static const auto table = [] {
        std::unordered_map<std::string_view, std::string_view> t;
        t.reserve(detail::kHtmlEntityCount);
        for (size_t i = 0; i < detail::kHtmlEntityCount; ++i)
            t.emplace(detail::kHtmlEntities[i].name, detail::kHtmlEntities[i].utf8);
        return t;
    }();
    return table;
}

// Html._replace_charref for a numeric reference.
void append_numeric(std::string& out, uint64_t num) {
    for (size_t i = 0; i < detail::kInvalidCharrefCount; ++i)
        if (detail::kInvalidCharrefs[i].code == num) {
            out += detail::kInvalidCharrefs[i].utf8;
            return;
        }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        append_utf8(out, 0xFFFD);
        return;
    }
    for (size_t i = 0; i < detail::kInvalidCodepointCount; ++i)
        if (detail::kInvalidCodepoints[i] == num) return;
    append_utf8(out, static_cast<uint32_t>(num));
}

bool is_hex(char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}
bool is_dec(char c) {
    return c >= '0' && c <= '9';
}

// Tries the numeric alternatives of Python's _charref regex at text[pos] == '#'.
// Returns the bytes consumed after '&' (0: no match).
size_t numeric_charref(std::string_view text, size_t pos, std::string& out) {
    const bool hex = pos + 1 < text.size() && (text[pos + 1] == 'x' || text[pos + 1] == 'X');
    // '#[0-9]+' is tried before '#[xX][0-9a-fA-F]+'; they cannot both match.
    size_t start = pos + 1;
    if (hex) ++start;
    size_t end = start;
    while (end < text.size() && (hex ? is_hex(text[end]) : is_dec(text[end]))) ++end;
    if (end == start) return 0;
    uint64_t num = 0;
    for (size_t i = start; i < end; ++i) {
        const char c = text[i];
        const uint64_t digit = is_dec(c) ? c - '0' : (std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
        num = num * (hex ? 16 : 10) + digit;
        if (num > 0x10FFFF) num = 0x110000;  // saturate: every larger value maps to U+FFFD alike
    }
    if (end < text.size() && text[end] == ';') ++end;
    append_numeric(out, num);
    return end - pos;
}

// Named alternative: '[^\t\n\f <&#;]{1,32};?' (counted in code points), then the exact name, or
// the longest known prefix of at least 2 code points followed by the rest unchanged.
size_t named_charref(std::string_view text, size_t pos, std::string& out) {
    std::vector<size_t> bounds{pos};  // byte offsets of code-point boundaries
    size_t end = pos;
    while (end < text.size() && bounds.size() <= 32) {
        const char c = text[end];
        if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';')
            break;
        uint32_t cp = 0;
        end += decode_utf8(text, end, cp);
        bounds.push_back(end);
    }
    if (bounds.size() == 1) return 0;
    if (end < text.size() && text[end] == ';') {
        ++end;
        bounds.push_back(end);
    }
    const std::string_view name = text.substr(pos, end - pos);
    const auto& table = entity_table();
    if (auto it = table.find(name); it != table.end()) {
        out += it->second;
        return end - pos;
    }
    const size_t n = bounds.size() - 1;  // code points in name
    for (size_t x = n - 1; x >= 2 && x < n; --x) {
        const std::string_view prefix = text.substr(pos, bounds[x] - pos);
        if (auto it = table.find(prefix); it != table.end()) {
            out += it->second;
            out += text.substr(bounds[x], end - bounds[x]);
            return end - pos;
        }
    }
    out += '&';
    out += name;
    return end - pos;
}

}  // namespace

std::string html_unescape(std::string_view text) {
    if (text.find('&') == std::string_view::npos) return std::string(text);
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
        if (text[i] != '&' || i + 1 >= text.size()) {
            out += text[i++];
            continue;
        }
        const size_t consumed =
            text[i + 1] == '#' ? numeric_charref(text, i + 1, out) : named_charref(text, i + 1, out);
        if (consumed == 0) {
            out += text[i++];
        } else {
            i += 1 + consumed;
        }
    }
    return out;
}

std::string whitespace_clean(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    bool pending_space = false;
    size_t i = 0;
    while (i < text.size()) {
        uint32_t cp = 0;
        const size_t len = decode_utf8(text, i, cp);
        if (cp != kInvalidByte && is_python_space(cp)) {
            pending_space = true;
        } else {
            if (pending_space && !out.empty()) out += ' ';
            pending_space = false;
            out.append(text.substr(i, len));
        }
        i += len;
    }
    return out;
}

std::string prompt_clean(std::string_view text) {
    // basic_clean: ftfy.fix_text (not available, see tokenizer.h), html.unescape twice, strip;
    // whitespace_clean: collapse \s+ to ' ', strip. The strip is subsumed by whitespace_clean.
    return whitespace_clean(html_unescape(html_unescape(text)));
}

namespace {

// The lower-case code point of `cp` from the generated runs (cp itself when it has none).
uint32_t lower_code_point(uint32_t cp) {
    const detail::LowerRun* begin = detail::kPythonLowerRuns;
    const detail::LowerRun* end = begin + detail::kPythonLowerRunCount;
    const detail::LowerRun* it =
        std::upper_bound(begin, end, cp, [](uint32_t c, const detail::LowerRun& r) { return c < r.first; });
    if (it == begin) return cp;
    --it;
    if (cp > it->last || (cp - it->first) % it->step != 0) return cp;
    return static_cast<uint32_t>(static_cast<int64_t>(cp) + it->delta);
}

}  // namespace

std::string python_lower(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
        const auto b = static_cast<unsigned char>(text[i]);
        if (b < 0x80) {  // ASCII fast path
            out += static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b);
            ++i;
            continue;
        }
        uint32_t cp = 0;
        const size_t len = decode_utf8(text, i, cp);
        if (cp == kInvalidByte) {
            out.append(text.substr(i, len));
        } else if (cp == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE: the one 2-character lowering
            out += 'i';
            append_utf8(out, 0x307);
        } else {
            append_utf8(out, lower_code_point(cp));
        }
        i += len;
    }
    return out;
}

std::string python_strip(std::string_view text) {
    size_t begin = 0, end = text.size();
    while (begin < end) {
        uint32_t cp = 0;
        const size_t len = decode_utf8(text, begin, cp);
        if (cp == kInvalidByte || !is_python_space(cp)) break;
        begin += len;
    }
    // From the back: step to the start of the last code point (skip continuation bytes), test it.
    while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80 && end - start < 4)
            --start;
        uint32_t cp = 0;
        const size_t len = decode_utf8(text, start, cp);
        if (start + len != end || cp == kInvalidByte || !is_python_space(cp)) break;
        end = start;
    }
    return std::string(text.substr(begin, end - begin));
}

}  // namespace st::kit
