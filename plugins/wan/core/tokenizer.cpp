// UMT5Tokenizer: sentencepiece behind a pimpl, Wan's padding/cutting to 512 and eos.
// Reference: wan/modules/tokenizers.py HuggingfaceTokenizer.__call__ (padding='max_length',
// truncation=True, add_special_tokens=True) on google/umt5-xxl's spiece.model.
#include "core/tokenizer.h"

#include <ATen/ATen.h>
#include <sentencepiece_processor.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

#include "st/error.h"
#include "st/log.h"

namespace st::plugins::wan {
namespace {

constexpr const char* kComponent = "model.wan.tokenizer";
constexpr const char* kModelName = "spiece.model";

std::string list_dir(const std::filesystem::path& dir) {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? "(empty)" : out;
}

// Resolves a special id the way HF's T5Tokenizer does: the model's own id, else the piece.
int64_t special_id(const sentencepiece::SentencePieceProcessor& sp, int model_id, const char* piece,
                   const std::filesystem::path& file) {
    if (model_id >= 0) return model_id;
    const int id = sp.PieceToId(piece);
    if (id < 0 || (id == sp.unk_id() && std::string(piece) != "<unk>"))
        fail(kComponent, "load", "'{}' defines no '{}' token (UMT5 needs pad '<pad>' and eos '</s>')", file.string(),
             piece);
    return id;
}

}  // namespace

struct UMT5Tokenizer::Impl {
    sentencepiece::SentencePieceProcessor sp;
};

UMT5Tokenizer::UMT5Tokenizer(std::unique_ptr<Impl> impl, std::filesystem::path model_file)
    : impl_(std::move(impl)), model_file_(std::move(model_file)) {}
UMT5Tokenizer::UMT5Tokenizer(UMT5Tokenizer&&) noexcept = default;
UMT5Tokenizer& UMT5Tokenizer::operator=(UMT5Tokenizer&&) noexcept = default;
UMT5Tokenizer::~UMT5Tokenizer() = default;

std::filesystem::path UMT5Tokenizer::find_model_file(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    if (!fs::exists(path))
        fail(kComponent, "load", "tokenizer path '{}' does not exist (expected a tokenizer folder with {} or the "
             "{} file itself)", path.string(), kModelName, kModelName);
    if (fs::is_regular_file(path)) {
        if (path.filename() == "tokenizer.json")
            fail(kComponent, "load", "'{}' is a HF tokenizers file; st reads the SentencePiece model {} that "
                 "Wan-AI/*-Diffusers/tokenizer/ and google/umt5-xxl ship next to it", path.string(), kModelName);
        return path;
    }
    const fs::path model = path / kModelName;
    if (!fs::exists(model))
        fail(kComponent, "load", "tokenizer folder '{}' has no {} (files: {}); the UMT5 tokenizer needs the "
             "SentencePiece model {} (tokenizer.json alone is not read)", path.string(), kModelName, list_dir(path),
             kModelName);
    return model;
}

UMT5Tokenizer UMT5Tokenizer::load(const std::filesystem::path& path) {
    const std::filesystem::path file = find_model_file(path);
    auto impl = std::make_unique<Impl>();
    const auto status = impl->sp.Load(file.string());
    if (!status.ok())
        fail(kComponent, "load", "'{}' is not a SentencePiece model: {}", file.string(), status.ToString());
    UMT5Tokenizer tok(std::move(impl), file);
    const auto& sp = tok.impl_->sp;
    tok.pad_id_ = special_id(sp, sp.pad_id(), "<pad>", file);
    tok.eos_id_ = special_id(sp, sp.eos_id(), "</s>", file);
    tok.unk_id_ = sp.unk_id();
    st::log::info(kComponent, "loaded {} ({} pieces; pad {}, eos {}, unk {})", file.string(), sp.GetPieceSize(),
                  tok.pad_id_, tok.eos_id_, tok.unk_id_);
    return tok;
}

int64_t UMT5Tokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }

std::vector<int> UMT5Tokenizer::encode_raw(std::string_view text) const {
    std::vector<int> ids;
    const auto status = impl_->sp.Encode(text, &ids);
    if (!status.ok()) fail(kComponent, "encode", "SentencePiece encode failed: {}", status.ToString());
    return ids;
}

std::vector<std::string> UMT5Tokenizer::encode_pieces(std::string_view text) const {
    std::vector<std::string> pieces;
    const auto status = impl_->sp.Encode(text, &pieces);
    if (!status.ok()) fail(kComponent, "encode", "SentencePiece encode failed: {}", status.ToString());
    return pieces;
}

std::string UMT5Tokenizer::decode(const std::vector<int>& ids) const {
    std::string text;
    const auto status = impl_->sp.Decode(ids, &text);
    if (!status.ok()) fail(kComponent, "decode", "SentencePiece decode failed: {}", status.ToString());
    return text;
}

std::vector<int64_t> UMT5Tokenizer::encode(std::string_view text, int64_t max_length) const {
    if (max_length < 1) fail(kComponent, "encode", "max_length must be >= 1 (room for eos), got {}", max_length);
    const std::vector<int> raw = encode_raw(prompt_clean(text));
    // HF truncation keeps room for the eos it appends: ids[:max_length - 1] + [eos].
    const size_t keep = std::min<size_t>(raw.size(), static_cast<size_t>(max_length - 1));
    std::vector<int64_t> ids(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(keep));
    ids.push_back(eos_id_);
    return ids;
}

TokenizedBatch UMT5Tokenizer::operator()(const std::vector<std::string>& prompts, int64_t max_length) const {
    const auto b = static_cast<int64_t>(prompts.size());
    TokenizedBatch batch;
    batch.input_ids = at::full({b, max_length}, pad_id_, at::kLong);
    batch.attention_mask = at::zeros({b, max_length}, at::kLong);
    auto ids_acc = batch.input_ids.accessor<int64_t, 2>();
    auto mask_acc = batch.attention_mask.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
        const std::vector<int64_t> ids = encode(prompts[static_cast<size_t>(i)], max_length);
        for (size_t j = 0; j < ids.size(); ++j) {
            ids_acc[i][static_cast<int64_t>(j)] = ids[j];
            mask_acc[i][static_cast<int64_t>(j)] = 1;
        }
        batch.seq_lens.push_back(static_cast<int64_t>(ids.size()));
    }
    return batch;
}

// ---------------------------------------------------------------------------------------------
namespace {

void write_text(const std::filesystem::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out) fail(kComponent, "write", "cannot write '{}'", path.string());
}

}  // namespace

void write_tokenizer_side_files(const std::filesystem::path& out_dir) {
    // What transformers' T5Tokenizer needs next to spiece.model (Wan-AI/*-Diffusers/tokenizer/).
    const nlohmann::json config = {{"tokenizer_class", "T5Tokenizer"}, {"eos_token", "</s>"}, {"pad_token", "<pad>"},
                                   {"unk_token", "<unk>"},           {"extra_ids", 0},      {"model_max_length", 512},
                                   {"additional_special_tokens", nlohmann::json::array()}};
    const nlohmann::json special = {{"eos_token", "</s>"}, {"pad_token", "<pad>"}, {"unk_token", "<unk>"}};
    write_text(out_dir / "tokenizer_config.json", config.dump(2) + "\n");
    write_text(out_dir / "special_tokens_map.json", special.dump(2) + "\n");
}

std::filesystem::path write_tokenizer_folder(const std::filesystem::path& source, const std::filesystem::path& out_dir) {
    namespace fs = std::filesystem;
    const fs::path model = UMT5Tokenizer::find_model_file(source);
    UMT5Tokenizer::load(model);  // refuse to copy something that is not a usable model
    fs::create_directories(out_dir);
    const fs::path target = out_dir / kModelName;
    std::error_code ec;
    if (!fs::equivalent(model, target, ec)) fs::copy_file(model, target, fs::copy_options::overwrite_existing);
    write_tokenizer_side_files(out_dir);
    st::log::info(kComponent, "wrote tokenizer folder {} (from {})", out_dir.string(), model.string());
    return target;
}

}  // namespace st::plugins::wan
