// The Gemma tokenizer of a Sana / Sana Video pipeline (`tokenizer/`: tokenizer.model + HF side files),
// as transformers' GemmaTokenizer (and GemmaTokenizerFast) with add_bos_token=True, add_eos_token=False
// run it: ids = [bos] + sentencepiece(text); with truncation the SentencePiece ids are cut to
// max_length - 1; padding="max_length" right-pads with pad. Gemma ids: pad 0 '<pad>', eos 1 '<eos>',
// bos 2 '<bos>', unk 3 '<unk>'.
//
// The SentencePiece model is the kit's (st/kit/sentencepiece.h; sentencepiece stays in the kit's
// module). Reference: huggingface/transformers src/transformers/models/gemma/tokenization_gemma.py
// (GemmaTokenizer._tokenize = sp_model.encode(text, out_type=str), no prefix space added;
// build_inputs_with_special_tokens). Known difference: special-token strings typed inside a prompt
// ("<bos>", "<start_of_turn>") are split by transformers into their ids; here they are ordinary text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "st/kit/sentencepiece.h"
#include "st/kit/tokenizer.h"

namespace st::plugins::sanavideo {

class GemmaTokenizer {
  public:
    /// `path`: a tokenizer folder holding tokenizer.model (a pipeline's `tokenizer/`), or the
    /// tokenizer.model file itself. st::Error naming the path and the expected file when it is absent,
    /// not a SentencePiece model, or lacks one of Gemma's special pieces.
    static GemmaTokenizer load(const std::filesystem::path& path);
    /// The folder's tokenizer.model, or st::Error (folder without it, tokenizer.json only, ...).
    static std::filesystem::path find_model_file(const std::filesystem::path& path);

    /// SentencePiece ids of `text` (no special tokens).
    std::vector<int> encode_raw(std::string_view text) const;
    std::vector<std::string> encode_pieces(std::string_view text) const;
    std::string decode(const std::vector<int>& ids) const;

    /// tokenizer.encode(text): [bos] + encode_raw(text), unpadded, uncut.
    std::vector<int64_t> encode(std::string_view text) const;
    /// tokenizer(texts, padding="max_length", max_length, truncation=True, add_special_tokens=True):
    /// [bos] + ids cut to max_length - 1, right-padded with pad; attention_mask 1 on bos + ids.
    /// st::Error when max_length < 1.
    st::kit::TokenizedBatch operator()(const std::vector<std::string>& texts, int64_t max_length) const;

    int64_t vocab_size() const;
    int64_t pad_id() const { return pad_id_; }
    int64_t eos_id() const { return eos_id_; }
    int64_t bos_id() const { return bos_id_; }
    int64_t unk_id() const { return unk_id_; }
    const std::filesystem::path& model_file() const { return sp_->file(); }

  private:
    explicit GemmaTokenizer(std::shared_ptr<st::kit::SentencePieceModel> sp);
    std::shared_ptr<st::kit::SentencePieceModel> sp_;
    int64_t pad_id_ = 0;
    int64_t eos_id_ = 1;
    int64_t bos_id_ = 2;
    int64_t unk_id_ = 3;
};

/// Trains a small Gemma-style SentencePiece model (BPE, byte fallback, identity normalisation, no
/// dummy prefix, digits split, pad 0 / eos 1 / bos 2 / unk 3 as gemma-2's tokenizer.model) on the kit's
/// built-in text, its lower-cased copy and Sana Video's complex human instruction, and writes
/// `out_dir`/tokenizer.model plus tokenizer_config.json and special_tokens_map.json (a HF Gemma
/// tokenizer folder). Deterministic for (vocab_size, seed). vocab_size in [384, 8000] (the 256 byte
/// pieces and the corpus's characters come first). Returns the model file.
std::filesystem::path train_tiny_gemma_tokenizer(const std::filesystem::path& out_dir, int vocab_size,
                                                 uint32_t seed);

/// Writes tokenizer_config.json (GemmaTokenizer, add_bos_token true, add_eos_token false, right
/// padding) and special_tokens_map.json next to a tokenizer.model in `out_dir`.
void write_gemma_tokenizer_side_files(const std::filesystem::path& out_dir);

}  // namespace st::plugins::sanavideo
