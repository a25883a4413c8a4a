// The boundary between st_kit and libst_kit_spm, the small module that wraps sentencepiece.
//
// Why a separate module: Debian's libsentencepiece.so.0 carries its own protobuf-lite 3.14 and exports
// those symbols, while LibTorch pulls in libprotobuf.so.32 (3.21). Linked into one global symbol
// scope they interpose: the process crashes in libprotobuf's static initialisation, or sentencepiece
// aborts with "compiled against version 3.14.0 ... installed version (3.21.12)". So st_kit does
// not link sentencepiece; tokenizer.cpp dlopen()s libst_kit_spm with RTLD_LOCAL | RTLD_DEEPBIND, which
// keeps sentencepiece bound to its own protobuf and out of the global scope.
//
// The module exports one C symbol, `st_kit_spm_api`, returning this table. Both sides are built
// together with the same compiler and libstdc++, so std types cross the boundary; functions never
// throw (errors come back as false/nullptr plus a message).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace st::kit::spm_api {

constexpr int kVersion = 1;
constexpr const char* kModuleName = "libst_kit_spm.so";
constexpr const char* kEntryPoint = "st_kit_spm_api";

struct Api {
    int version;
    /// Loads a SentencePiece model file; nullptr and *error on failure.
    void* (*open)(const std::string& path, std::string* error);
    void (*close)(void* handle);
    bool (*encode_ids)(void* handle, std::string_view text, std::vector<int>* ids, std::string* error);
    bool (*encode_pieces)(void* handle, std::string_view text, std::vector<std::string>* pieces,
                          std::string* error);
    bool (*decode)(void* handle, const std::vector<int>& ids, std::string* text, std::string* error);
    int (*piece_size)(void* handle);
    int (*piece_to_id)(void* handle, std::string_view piece);
    /// The model's pad/eos/unk ids (-1 when the model disables one).
    void (*special_ids)(void* handle, int* pad, int* eos, int* unk);
    /// SentencePieceTrainer::Train on in-memory sentences with SetRandomGeneratorSeed(seed); the
    /// serialized ModelProto lands in *model.
    bool (*train)(const std::unordered_map<std::string, std::string>& args,
                  const std::vector<std::string>& sentences, uint32_t seed, std::string* model,
                  std::string* error);
};

/// The module's table, loaded once (thread-safe) from the folder of libst_kit, then by name
/// through the library search path. Throws st::Error naming the paths tried and dlerror().
/// Implemented in tokenizer.cpp.
const Api& module();

}  // namespace st::kit::spm_api

extern "C" const st::kit::spm_api::Api* st_kit_spm_api();
