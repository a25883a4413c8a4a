// python_lower / python_strip (st/kit/python_text.h) against values Python 3.11 gives for str.lower()
// and str.strip().
#include <gtest/gtest.h>

#include <string>

#include "st/kit/python_text.h"

using st::kit::python_lower;
using st::kit::python_strip;

TEST(PythonTextTest, LowerMatchesPythonOnAsciiLatinGreekCyrillic) {
    EXPECT_EQ(python_lower("A Cat, SLEEPING 42 times!"), "a cat, sleeping 42 times!");
    // "ÉCOLE ÀÖØÞ Ÿ" -> "école àöøþ ÿ" (U+0178 lowers to U+00FF, outside its block)
    EXPECT_EQ(python_lower("\xc3\x89"
                           "COLE \xc3\x80\xc3\x96\xc3\x98\xc3\x9e \xc5\xb8"),
              "\xc3\xa9"
              "cole \xc3\xa0\xc3\xb6\xc3\xb8\xc3\xbe \xc3\xbf");
    // × (U+00D7) and ß (U+00DF) have no lower-case mapping; ẞ (U+1E9E) lowers to ß.
    EXPECT_EQ(python_lower("\xc3\x97\xc3\x9f\xe1\xba\x9e"), "\xc3\x97\xc3\x9f\xc3\x9f");
    // Greek "ΣΟΦΙΑ Ά" and Cyrillic "МОСКВА Ё".
    EXPECT_EQ(python_lower("\xce\xa3\xce\x9f\xce\xa6\xce\x99\xce\x91 \xce\x86"),
              "\xcf\x83\xce\xbf\xcf\x86\xce\xb9\xce\xb1 \xce\xac");
    EXPECT_EQ(python_lower("\xd0\x9c\xd0\x9e\xd0\xa1\xd0\x9a\xd0\x92\xd0\x90 \xd0\x81"),
              "\xd0\xbc\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0 \xd1\x91");
    // İ (U+0130) -> "i" + COMBINING DOT ABOVE; Ⅻ (U+216B) -> ⅻ; fullwidth Ａ -> ａ; CJK unchanged.
    EXPECT_EQ(python_lower("\xc4\xb0"), "i\xcc\x87");
    EXPECT_EQ(python_lower("\xe2\x85\xab\xef\xbc\xa1\xe7\x8c\xab"), "\xe2\x85\xbb\xef\xbd\x81\xe7\x8c\xab");
    // Invalid UTF-8 bytes pass through.
    EXPECT_EQ(python_lower(std::string("A\xff"
                                       "B",
                                       3)),
              std::string("a\xff"
                          "b",
                          3));
}

TEST(PythonTextTest, StripRemovesUnicodeWhitespaceAtBothEnds) {
    EXPECT_EQ(python_strip("  \t a  b \n"), "a  b");
    EXPECT_EQ(python_strip(""), "");
    EXPECT_EQ(python_strip(" \n\t"), "");
    // NBSP (U+00A0), IDEOGRAPHIC SPACE (U+3000) and U+001F count as whitespace; ZWSP (U+200B) does not.
    EXPECT_EQ(python_strip("\xc2\xa0\xe3\x80\x80x y\x1f\xe3\x80\x80"), "x y");
    EXPECT_EQ(python_strip("\xe2\x80\x8bx\xe2\x80\x8b"), "\xe2\x80\x8bx\xe2\x80\x8b");
    EXPECT_EQ(python_strip(std::string("\xff ", 2)), std::string("\xff", 1));
}
