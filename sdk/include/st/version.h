// st SDK versioning: ABI major/minor and the build fingerprint.
//
// Rules (checked by the host from a plugin's manifest before any plugin code runs; the full text is
// docs/plugins.md "ABI rules"):
//   * ABI major must be equal. A major bump means an incompatible change of an existing interface.
//   * A plugin built against a newer ABI minor than the host is refused: it may call or override
//     things the host does not have. An older minor is accepted.
//   * Minor bumps only ever *add*: a new optional behaviour is a new capability interface (st/model.h),
//     found by id, never a virtual appended to an existing interface; host -> plugin structs
//     (PredictInputs, ModelLoadRequest, DataOpenRequest, ...) may gain fields at their end, because
//     the host allocates them; plugin -> host results grow through their named maps; structs a
//     plugin passes to libst_sdk carry `struct_size` when they may grow (AttentionOptions), the others
//     change only with a major bump.
//   * The fingerprint must match in everything that breaks the ABI: C++ library ABI, LibTorch
//     version, CUDA on/off, compiler family and major version, C++ standard, and the versions of the
//     header-only libraries whose types cross the boundary. A compiler patch-level difference is
//     accepted (host/src/plugins/fingerprint.cpp).
//   * Behaviour versions are separate from the ABI: a change of numerics or defaults of a component
//     makes a new component id `kind.name@N+1`.
#pragma once

#include <fmt/core.h>
#include <toml++/impl/version.h>
#include <torch/version.h>
#include <nlohmann/detail/abi_macros.hpp>

// ABI history: 1.0 first release; 1.1-1.3 appended virtuals to ModelFamily and DataBackend.
// 2.0: ModelFamily is a small core plus capabilities found by id (st/model.h); Encoders moved to
// st/model.h; PredictOutput gained `extra`; AttentionOptions carries struct_size.
// 3.0: Regularizer computes RegularizerOutput (terms + metrics), has state()/restore() and may cache
// per-sample features (SampleFeatureEncoder, DataOpenRequest::sample_features); Registrar gained
// add_forward_tool.
// 4.0: SamplerConfig grew for DPM-Solver++ (algorithm_type, euler_at_final); capabilities
// noise_schedule@1 (NoiseSchedule, SamplingDefaults) and negative_prompt@1 (NegativePromptEncoding).
// AttentionOptions gained softcap and window (read by struct_size) and attention() takes k/v with
// fewer heads than q (grouped-query attention) in 4.0 too.
// 5.0: OptionSpec gained min_value/max_value (range-checked options).
// 6.0: st::sdk::Linear can carry a LyCORIS adapter (LoKr, LoHa: st/lycoris.h), which changed its
// layout; the optional data-backend interface ShardedCaching (st/sharded_caching.h) appeared.
// 7.0: stored base weights (st/base_weights.h): st::sdk::Linear holds weight_scale and a stored form
// (layout change), TensorSource gained view() and release(), LoadOptions gained base_precision, and
// the capability base_weights@1 (BaseWeights) appeared.
#define ST_SDK_ABI_MAJOR 7
#define ST_SDK_ABI_MINOR 0
#define ST_SDK_VERSION_STRING "0.1.0"

#define ST_DETAIL_STR2(x) #x
#define ST_DETAIL_STR(x) ST_DETAIL_STR2(x)

#if defined(__clang__)
#define ST_DETAIL_COMPILER                                                                        \
    "clang-" ST_DETAIL_STR(__clang_major__) "." ST_DETAIL_STR(__clang_minor__) "." ST_DETAIL_STR( \
        __clang_patchlevel__)
#elif defined(__GNUC__)
#define ST_DETAIL_COMPILER \
    "gcc-" ST_DETAIL_STR(__GNUC__) "." ST_DETAIL_STR(__GNUC_MINOR__) "." ST_DETAIL_STR(__GNUC_PATCHLEVEL__)
#else
#define ST_DETAIL_COMPILER "unknown-compiler"
#endif

#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
#define ST_DETAIL_CUDA "cuda=1"
#else
#define ST_DETAIL_CUDA "cuda=0"
#endif

#ifndef _GLIBCXX_USE_CXX11_ABI
#define ST_DETAIL_CXX11_ABI "cxx11abi=none"
#else
#define ST_DETAIL_CXX11_ABI "cxx11abi=" ST_DETAIL_STR(_GLIBCXX_USE_CXX11_ABI)
#endif

/// The build fingerprint compiled into the host and into every plugin's manifest. Plain string
/// literal so it can live in the manifest's constant data. Example:
///   gcc-12.2.0;c++=202002L;cxx11abi=1;torch=1.13;cuda=0;json=3.11.2;toml++=3.3.0;fmt=90100
#define ST_BUILD_FINGERPRINT \
    ST_DETAIL_COMPILER ";c++=" ST_DETAIL_STR(__cplusplus) ";" ST_DETAIL_CXX11_ABI                     \
        ";torch=" ST_DETAIL_STR(TORCH_VERSION_MAJOR) "." ST_DETAIL_STR(TORCH_VERSION_MINOR) ";"       \
            ST_DETAIL_CUDA ";json=" ST_DETAIL_STR(NLOHMANN_JSON_VERSION_MAJOR) "." ST_DETAIL_STR(     \
                NLOHMANN_JSON_VERSION_MINOR) "." ST_DETAIL_STR(NLOHMANN_JSON_VERSION_PATCH)           \
                ";toml++=" ST_DETAIL_STR(TOML_LIB_MAJOR) "." ST_DETAIL_STR(TOML_LIB_MINOR) "."        \
                    ST_DETAIL_STR(TOML_LIB_PATCH) ";fmt=" ST_DETAIL_STR(FMT_VERSION)

namespace st::sdk {

/// ABI and fingerprint of the libst_sdk the process actually loaded (as opposed to the macros,
/// which describe the headers a translation unit was compiled with).
int abi_major();
int abi_minor();
const char* build_fingerprint();
const char* version_string();

}  // namespace st::sdk
