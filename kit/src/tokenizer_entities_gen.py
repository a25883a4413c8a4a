# Generates plugins/wan/core/tokenizer_entities.cpp from Python's html module (WHATWG entity list):
#   /usr/bin/python3 plugins/wan/core/tokenizer_entities_gen.py > plugins/wan/core/tokenizer_entities.cpp
import html, html.entities

def lit(s):
    out = []
    for b in s.encode('utf-8'):
        c = chr(b)
        if c in '"\\?' or b < 0x20 or b >= 0x7f:
            out.append('\\%03o' % b)
        else:
            out.append(c)
    return '"' + ''.join(out) + '"'

items = sorted(html.entities.html5.items())
lines = []
cur = '    '
for name, value in items:
    e = '{%s, %s}, ' % (lit(name), lit(value))
    if len(cur) + len(e) > 112:
        lines.append(cur.rstrip())
        cur = '    '
    cur += e
lines.append(cur.rstrip())

inv = sorted(html._invalid_charrefs.items())
inv_lines = []
cur = '    '
for num, value in inv:
    e = '{0x%x, %s}, ' % (num, lit(value))
    if len(cur) + len(e) > 112:
        inv_lines.append(cur.rstrip()); cur = '    '
    cur += e
inv_lines.append(cur.rstrip())

cps = sorted(html._invalid_codepoints)
cp_lines = []
cur = '    '
for cp in cps:
    e = '0x%x, ' % cp
    if len(cur) + len(e) > 112:
        cp_lines.append(cur.rstrip()); cur = '    '
    cur += e
cp_lines.append(cur.rstrip())

print('''// GENERATED from Python %s html.entities.html5 (the WHATWG named character references, %d names,
// with and without the trailing ';' exactly as Python lists them), html._invalid_charrefs and
// html._invalid_codepoints, so that html_unescape() (tokenizer_clean.cpp) matches Python's
// html.unescape, which Wan's prompt_clean calls. Regenerate with:
//   /usr/bin/python3 plugins/wan/core/tokenizer_entities_gen.py > plugins/wan/core/tokenizer_entities.cpp
#include "core/tokenizer_entities.h"

namespace st::plugins::wan::detail {

const HtmlEntity kHtmlEntities[] = {
%s
};
const size_t kHtmlEntityCount = sizeof(kHtmlEntities) / sizeof(kHtmlEntities[0]);

const HtmlCharref kInvalidCharrefs[] = {
%s
};
const size_t kInvalidCharrefCount = sizeof(kInvalidCharrefs) / sizeof(kInvalidCharrefs[0]);

const uint32_t kInvalidCodepoints[] = {
%s
};
const size_t kInvalidCodepointCount = sizeof(kInvalidCodepoints) / sizeof(kInvalidCodepoints[0]);

}  // namespace st::plugins::wan::detail''' % (__import__('sys').version.split()[0], len(items), '\n'.join(lines), '\n'.join(inv_lines), '\n'.join(cp_lines)))
