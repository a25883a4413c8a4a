// Force-included first into every translation unit of the clang fuzz build (tests/fuzz/libfuzzer).
//
// LibTorch 1.13's headers use std::vector<c10::IValue> while IValue is still incomplete
// (ATen/core/List.h: ListImpl; ATen/core/ivalue_inl.h). In C++20, libstdc++ 12 declares vector's
// members constexpr, and clang (14 and 16 alike) instantiates a constexpr function as soon as it is
// referenced, so it fails on the incomplete type where GCC, which defers the instantiation, builds.
// This build therefore compiles libstdc++ without its C++20 constexpr markers (_GLIBCXX20_CONSTEXPR
// is only defined by c++config.h when not defined already). That changes no layout and no mangled
// name, so the code still links against the GCC-built LibTorch, fmt and libstdc++; only constant
// evaluation of std::vector / std::string, which st does not use, is lost. Two consequences follow:
// - basic_string picks its constexpr-ness from __cpp_lib_is_constant_evaluated: undefined here so that
//   its declarations agree with the (now non-constexpr) members;
// - fmt marks buffer members FMT_CONSTEXPR20 whatever the library does: emptied after fmt/core.h.
// Nothing here is used by the GCC build.
#pragma once

#define _GLIBCXX20_CONSTEXPR
#include <type_traits>
#undef __cpp_lib_is_constant_evaluated
#include <fmt/core.h>
#undef FMT_CONSTEXPR20
#define FMT_CONSTEXPR20
