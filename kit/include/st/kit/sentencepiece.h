// A raw SentencePiece model (spiece.model, tokenizer.model) for the tokenizers built on one: the UMT5
// tokenizer (tokenizer.h) and family tokenizers such as Gemma's (plugins/sanavideo). sentencepiece
// itself stays in the kit's module libst_kit_spm (loaded with RTLD_DEEPBIND, see
// kit/src/tokenizer_spm_api.h); this header includes nothing of it.
//
// The model is used as the slow transformers tokenizers use theirs: SentencePieceProcessor.encode /
// piece_to_id / decode, with the model's own normaliser (spiece.model: NFKC + dummy prefix;
// Gemma's tokenizer.model: identity, no dummy prefix). Adding special tokens (bos, eos), cutting and
// padding are the caller's rules.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace st::kit {

class SentencePieceModel {
  public:
    /// Loads a model file. st::Error (component `component`, phase "load") naming the file when it
    /// does not exist, is not a SentencePiece model, or the sentencepiece module cannot be loaded.
    static SentencePieceModel load(const std::filesystem::path& model_file, const std::string& component);

    SentencePieceModel(SentencePieceModel&&) noexcept;
    SentencePieceModel& operator=(SentencePieceModel&&) noexcept;
    ~SentencePieceModel();

    /// Ids / pieces of `text` (the model's normaliser applied; no special tokens added).
    /// Throw st::Error (phase "encode") naming the model file on a sentencepiece failure.
    std::vector<int> encode(std::string_view text) const;
    std::vector<std::string> encode_pieces(std::string_view text) const;
    std::string decode(const std::vector<int>& ids) const;

    /// Number of pieces (ids 0 .. size - 1).
    int64_t size() const;
    /// The id of a piece, or unk_id() when the model has no such piece.
    int piece_to_id(std::string_view piece) const;
    /// The model's special ids from its trainer spec; -1 when the model disables one.
    int pad_id() const { return pad_id_; }
    int eos_id() const { return eos_id_; }
    int unk_id() const { return unk_id_; }
    const std::filesystem::path& file() const { return file_; }

  private:
    struct Impl;
    SentencePieceModel(std::unique_ptr<Impl> impl, std::filesystem::path file, std::string component);
    std::unique_ptr<Impl> impl_;
    std::filesystem::path file_;
    std::string component_;
    int pad_id_ = -1;
    int eos_id_ = -1;
    int unk_id_ = -1;
};

/// Trains a SentencePiece model in-process (SentencePieceTrainer::Train with `args` as spm_train
/// flags without dashes, e.g. {"model_type", "bpe"}, {"vocab_size", "512"}; SetRandomGeneratorSeed(seed))
/// on `sentences` and writes the serialized ModelProto to `model_file` (parent folders created).
/// st::Error (component `component`, phase "train") with sentencepiece's message on failure.
void train_sentencepiece(const std::filesystem::path& model_file,
                         const std::unordered_map<std::string, std::string>& args,
                         const std::vector<std::string>& sentences, uint32_t seed,
                         const std::string& component);

/// The kit's built-in training text for tiny tokenizers: prompt-like English sentences with
/// digits, punctuation, upper and lower case and a few accented words (what train_tiny_tokenizer uses).
const std::vector<std::string>& tiny_tokenizer_corpus();

}  // namespace st::kit
