// Data tables behind html_unescape() (tokenizer_clean.cpp), generated from Python's html module by
// tokenizer_entities_gen.py so the C++ prompt cleaning matches Python's html.unescape.
#pragma once

#include <cstddef>
#include <cstdint>

namespace st::kit::detail {

struct HtmlEntity {
    const char* name;  ///< without '&', with the ';' when the standard requires it ("amp;", "amp")
    const char* utf8;  ///< replacement text
};
struct HtmlCharref {
    uint32_t code;  ///< numeric reference that HTML maps to another character (&#x80; -> U+20AC)
    const char* utf8;
};

extern const HtmlEntity kHtmlEntities[];
extern const size_t kHtmlEntityCount;
extern const HtmlCharref kInvalidCharrefs[];
extern const size_t kInvalidCharrefCount;
/// Code points a numeric reference resolves to nothing (controls, non-characters).
extern const uint32_t kInvalidCodepoints[];
extern const size_t kInvalidCodepointCount;

}  // namespace st::kit::detail
