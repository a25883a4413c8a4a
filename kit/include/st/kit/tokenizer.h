// The UMT5 tokenizer as Wan uses it: prompt cleaning + SentencePiece (spiece.model) + `</s>` +
// padding/cutting to 512 with an attention mask. sentencepiece stays behind a pimpl: this header
// does not include it.
//
// Reference: Wan-Video/Wan2.2 wan/modules/tokenizers.py (HuggingfaceTokenizer with clean='whitespace',
// basic_clean/whitespace_clean) and diffusers pipeline_wan.py `prompt_clean` — both do
//   text = ftfy.fix_text(text); text = html.unescape(html.unescape(text)).strip()
//   text = re.sub(r"\s+", " ", text).strip()
// then the HF T5 tokenizer with padding="max_length", truncation=True, max_length=512,
// add_special_tokens=True: ids = spm(text)[:511] + [eos], right-padded with pad.
//
// Known difference: ftfy (mojibake repair, e.g. "â€™" -> "’") is not available in C++ here and is
// not applied; prompts that are valid UTF-8 text — the normal case — are unaffected. html.unescape
// is ported exactly (all 2231 WHATWG names from Python's table, numeric references with Python's
// replacement rules). The tokenizer is the SentencePiece model itself, as the slow T5Tokenizer
// uses it; Wan's AutoTokenizer loads the fast tokenizer.json, which agrees on ordinary text.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace st::kit {

/// html.unescape (Python) for the HTML 4 named entities and all numeric references.
std::string html_unescape(std::string_view text);
/// re.sub(r"\s+", " ", text).strip() with Python's Unicode whitespace set (str.isspace).
std::string whitespace_clean(std::string_view text);
/// Wan prompt_clean without ftfy: whitespace_clean(html_unescape(html_unescape(text)).strip()).
std::string prompt_clean(std::string_view text);

/// A batch as the text encoder takes it.
struct TokenizedBatch {
    at::Tensor input_ids;       ///< [B, max_length] int64, right-padded with pad_id
    at::Tensor attention_mask;  ///< [B, max_length] int64, 1 on the tokens incl. eos
    std::vector<int64_t> seq_lens;
};

class UMT5Tokenizer {
  public:
    /// `path`: a tokenizer folder holding spiece.model (the HF/diffusers `tokenizer/` folder, or
    /// Wan's `google/umt5-xxl/`), or the spiece.model file itself. Throws st::Error naming the path
    /// and the expected file when it is absent or not a SentencePiece model.
    static UMT5Tokenizer load(const std::filesystem::path& path);
    /// The folder's model file, or throws st::Error (folder without spiece.model, tokenizer.json only...).
    static std::filesystem::path find_model_file(const std::filesystem::path& path);

    UMT5Tokenizer(UMT5Tokenizer&&) noexcept;
    UMT5Tokenizer& operator=(UMT5Tokenizer&&) noexcept;
    ~UMT5Tokenizer();

    /// Raw SentencePiece ids / pieces of `text` (no cleaning, no eos).
    std::vector<int> encode_raw(std::string_view text) const;
    std::vector<std::string> encode_pieces(std::string_view text) const;
    std::string decode(const std::vector<int>& ids) const;

    /// Wan's sequence for one prompt: spm(prompt_clean(text)) cut to max_length - 1, then eos;
    /// unpadded (length <= max_length).
    std::vector<int64_t> encode(std::string_view text, int64_t max_length = 512) const;
    /// Batch of prompts -> ids and mask padded to max_length.
    TokenizedBatch operator()(const std::vector<std::string>& prompts, int64_t max_length = 512) const;

    int64_t vocab_size() const;
    int64_t pad_id() const { return pad_id_; }
    int64_t eos_id() const { return eos_id_; }
    int64_t unk_id() const { return unk_id_; }
    const std::filesystem::path& model_file() const { return model_file_; }

  private:
    struct Impl;
    UMT5Tokenizer(std::unique_ptr<Impl> impl, std::filesystem::path model_file);
    std::unique_ptr<Impl> impl_;
    std::filesystem::path model_file_;
    int64_t pad_id_ = 0;
    int64_t eos_id_ = 1;
    int64_t unk_id_ = 2;
};

/// Trains a small unigram SentencePiece model on a built-in English text (pad 0, eos 1, unk 2, no
/// bos — the UMT5 special ids) and writes `out_dir/spiece.model` plus the HF side files
/// (tokenizer_config.json, special_tokens_map.json), so a tiny model folder has a self-contained
/// tokenizer. Deterministic for a given (vocab_size, seed). Returns the model file path.
std::filesystem::path train_tiny_tokenizer(const std::filesystem::path& out_dir, int vocab_size,
                                           uint32_t seed);

/// Writes tokenizer_config.json and special_tokens_map.json (what transformers' T5Tokenizer reads
/// next to spiece.model) into out_dir.
void write_tokenizer_side_files(const std::filesystem::path& out_dir);

/// Copies a tokenizer (the folder of `source`'s spiece.model) into out_dir as spiece.model plus the
/// HF side files. Returns the model file path.
std::filesystem::path write_tokenizer_folder(const std::filesystem::path& source,
                                             const std::filesystem::path& out_dir);

}  // namespace st::kit
