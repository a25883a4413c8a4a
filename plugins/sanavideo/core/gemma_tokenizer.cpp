// GemmaTokenizer and the tiny Gemma-style tokenizer trainer (see gemma_tokenizer.h).
#include "core/gemma_tokenizer.h"

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <unordered_map>

#include "core/gemma_prompts.h"
#include "st/error.h"
#include "st/kit/python_text.h"
#include "st/log.h"

namespace st::plugins::sanavideo {
namespace {

constexpr const char* kComponent = "model.sanavideo.tokenizer";
constexpr const char* kModelName = "tokenizer.model";

// Gemma's special pieces and ids (gemma-2-2b-it tokenizer.model trainer spec).
struct Special {
    const char* piece;
    int64_t id;
};
constexpr Special kPad{"<pad>", 0}, kEos{"<eos>", 1}, kBos{"<bos>", 2}, kUnk{"<unk>", 3};

std::string list_dir(const std::filesystem::path& dir) {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
        names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? "(empty)" : out;
}

// The model's own id for a special, else its piece (GemmaTokenizer converts the token strings with
// sp_model.piece_to_id).
int64_t special_id(const st::kit::SentencePieceModel& sp, int model_id, const char* piece) {
    if (model_id >= 0) return model_id;
    const int id = sp.piece_to_id(piece);
    if (id < 0 || id == sp.unk_id())
        fail(kComponent, "load",
             "'{}' defines no '{}' piece (a Gemma tokenizer has <pad>, <eos>, <bos>, <unk>)",
             sp.file().string(), piece);
    return id;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    out.close();
    if (!out) fail(kComponent, "write", "cannot write '{}'", path.string());
}

}  // namespace

GemmaTokenizer::GemmaTokenizer(std::shared_ptr<st::kit::SentencePieceModel> sp) : sp_(std::move(sp)) {}

std::filesystem::path GemmaTokenizer::find_model_file(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    if (!fs::exists(path))
        fail(kComponent, "load",
             "tokenizer path '{}' does not exist (expected a Gemma tokenizer folder with {} or the file "
             "itself)",
             path.string(), kModelName);
    if (fs::is_regular_file(path)) {
        if (path.filename() == "tokenizer.json")
            fail(kComponent, "load",
                 "'{}' is a HF tokenizers file; st reads the SentencePiece model {} that a Sana pipeline's "
                 "tokenizer/ folder ships next to it",
                 path.string(), kModelName);
        return path;
    }
    const fs::path model = path / kModelName;
    if (!fs::exists(model))
        fail(kComponent, "load",
             "tokenizer folder '{}' has no {} (files: {}); the Gemma tokenizer needs the SentencePiece model "
             "(tokenizer.json alone is not read)",
             path.string(), kModelName, list_dir(path));
    return model;
}

GemmaTokenizer GemmaTokenizer::load(const std::filesystem::path& path) {
    const std::filesystem::path file = find_model_file(path);
    auto sp =
        std::make_shared<st::kit::SentencePieceModel>(st::kit::SentencePieceModel::load(file, kComponent));
    GemmaTokenizer tok(sp);
    tok.pad_id_ = special_id(*sp, sp->pad_id(), kPad.piece);
    tok.eos_id_ = special_id(*sp, sp->eos_id(), kEos.piece);
    tok.bos_id_ = special_id(*sp, -1, kBos.piece);
    tok.unk_id_ = sp->unk_id();
    st::log::info(kComponent, "loaded {} ({} pieces; pad {}, eos {}, bos {}, unk {})", file.string(),
                  sp->size(), tok.pad_id_, tok.eos_id_, tok.bos_id_, tok.unk_id_);
    return tok;
}

int64_t GemmaTokenizer::vocab_size() const {
    return sp_->size();
}

std::vector<int> GemmaTokenizer::encode_raw(std::string_view text) const {
    return sp_->encode(text);
}

std::vector<std::string> GemmaTokenizer::encode_pieces(std::string_view text) const {
    return sp_->encode_pieces(text);
}

std::string GemmaTokenizer::decode(const std::vector<int>& ids) const {
    return sp_->decode(ids);
}

std::vector<int64_t> GemmaTokenizer::encode(std::string_view text) const {
    const std::vector<int> raw = encode_raw(text);
    std::vector<int64_t> ids;
    ids.reserve(raw.size() + 1);
    ids.push_back(bos_id_);
    ids.insert(ids.end(), raw.begin(), raw.end());
    return ids;
}

st::kit::TokenizedBatch GemmaTokenizer::operator()(const std::vector<std::string>& texts,
                                                   int64_t max_length) const {
    if (max_length < 1)
        fail(kComponent, "encode", "max_length must be >= 1 (room for <bos>), got {}", max_length);
    const auto b = static_cast<int64_t>(texts.size());
    st::kit::TokenizedBatch batch;
    batch.input_ids = at::full({b, max_length}, pad_id_, at::kLong);
    batch.attention_mask = at::zeros({b, max_length}, at::kLong);
    auto ids_acc = batch.input_ids.accessor<int64_t, 2>();
    auto mask_acc = batch.attention_mask.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
        std::vector<int64_t> ids = encode(texts[static_cast<size_t>(i)]);
        // truncation=True with one special token: the text ids are cut to max_length - 1.
        ids.resize(std::min<size_t>(ids.size(), static_cast<size_t>(max_length)));
        for (size_t j = 0; j < ids.size(); ++j) {
            ids_acc[i][static_cast<int64_t>(j)] = ids[j];
            mask_acc[i][static_cast<int64_t>(j)] = 1;
        }
        batch.seq_lens.push_back(static_cast<int64_t>(ids.size()));
    }
    return batch;
}

// ---------------------------------------------------------------------------------------------

void write_gemma_tokenizer_side_files(const std::filesystem::path& out_dir) {
    // What transformers' GemmaTokenizer reads next to tokenizer.model (the keys of gemma-2-2b-it's
    // tokenizer_config.json that matter; right padding as Sana sets it).
    nlohmann::json added = nlohmann::json::object();
    for (const Special& s : {kPad, kEos, kBos, kUnk})
        added[std::to_string(s.id)] = {{"content", s.piece}, {"lstrip", false},      {"normalized", false},
                                       {"rstrip", false},    {"single_word", false}, {"special", true}};
    const nlohmann::json config = {{"add_bos_token", true},
                                   {"add_eos_token", false},
                                   {"added_tokens_decoder", added},
                                   {"bos_token", kBos.piece},
                                   {"clean_up_tokenization_spaces", false},
                                   {"eos_token", kEos.piece},
                                   {"pad_token", kPad.piece},
                                   {"padding_side", "right"},
                                   {"sp_model_kwargs", nlohmann::json::object()},
                                   {"spaces_between_special_tokens", false},
                                   {"tokenizer_class", "GemmaTokenizer"},
                                   {"unk_token", kUnk.piece},
                                   {"use_default_system_prompt", false}};
    const nlohmann::json special = {{"bos_token", kBos.piece},
                                    {"eos_token", kEos.piece},
                                    {"pad_token", kPad.piece},
                                    {"unk_token", kUnk.piece}};
    write_text(out_dir / "tokenizer_config.json", config.dump(2) + "\n");
    write_text(out_dir / "special_tokens_map.json", special.dump(2) + "\n");
}

std::filesystem::path train_tiny_gemma_tokenizer(const std::filesystem::path& out_dir, int vocab_size,
                                                 uint32_t seed) {
    if (vocab_size < 384 || vocab_size > 8000)
        fail(kComponent, "train", "tiny Gemma tokenizer vocab_size must be in [384, 8000], got {}",
             vocab_size);
    // gemma-2's normaliser spec: identity, no dummy prefix, whitespace kept; BPE with byte fallback.
    const std::unordered_map<std::string, std::string> args = {
        {"model_type", "bpe"},
        {"vocab_size", std::to_string(vocab_size)},
        {"pad_id", std::to_string(kPad.id)},
        {"eos_id", std::to_string(kEos.id)},
        {"bos_id", std::to_string(kBos.id)},
        {"unk_id", std::to_string(kUnk.id)},
        {"pad_piece", kPad.piece},
        {"eos_piece", kEos.piece},
        {"bos_piece", kBos.piece},
        {"unk_piece", kUnk.piece},
        {"normalization_rule_name", "identity"},
        {"add_dummy_prefix", "false"},
        {"remove_extra_whitespaces", "false"},
        {"allow_whitespace_only_pieces", "true"},
        {"split_digits", "true"},
        {"byte_fallback", "true"},
        {"character_coverage", "1.0"},
        {"num_threads", "1"},
        // The corpus is small: allow fewer pieces than asked instead of failing.
        {"hard_vocab_limit", "false"},
        {"minloglevel", "2"},
    };
    std::vector<std::string> corpus = st::kit::tiny_tokenizer_corpus();
    for (const auto& line : st::kit::tiny_tokenizer_corpus()) corpus.push_back(st::kit::python_lower(line));
    for (const auto& line : sana_video_complex_human_instruction()) corpus.push_back(line);
    const std::filesystem::path model = out_dir / kModelName;
    try {
        st::kit::train_sentencepiece(model, args, corpus, seed, kComponent);
    } catch (const Error& e) {
        throw e.with_context(fmt::format("training a tiny Gemma tokenizer with vocab_size {}", vocab_size));
    }
    write_gemma_tokenizer_side_files(out_dir);
    st::log::info(kComponent, "trained tiny Gemma BPE tokenizer (vocab {}, seed {}) -> {}", vocab_size, seed,
                  model.string());
    return model;
}

}  // namespace st::plugins::sanavideo
