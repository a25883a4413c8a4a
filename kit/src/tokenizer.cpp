// UMT5Tokenizer: the kit's SentencePieceModel behind a pimpl, Wan's padding/cutting to 512 and eos;
// and the loader of the sentencepiece module itself (spm_api::module).
// Reference: wan/modules/tokenizers.py HuggingfaceTokenizer.__call__ (padding='max_length',
// truncation=True, add_special_tokens=True) on google/umt5-xxl's spiece.model.
#include "st/kit/tokenizer.h"

#include <ATen/ATen.h>
#include <dlfcn.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

#include "st/error.h"
#include "st/kit/sentencepiece.h"
#include "st/log.h"
#include "tokenizer_spm_api.h"

namespace st::kit {
namespace {

constexpr const char* kComponent = "model.wan.tokenizer";
constexpr const char* kModelName = "spiece.model";

std::string list_dir(const std::filesystem::path& dir) {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
        names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? "(empty)" : out;
}

// Resolves a special id the way HF's T5Tokenizer does: the model's own id, else the piece.
int64_t special_id(const SentencePieceModel& sp, int model_id, const char* piece,
                   const std::filesystem::path& file) {
    if (model_id >= 0) return model_id;
    const int id = sp.piece_to_id(piece);
    if (id < 0 || id == sp.unk_id())
        fail(kComponent, "load", "'{}' defines no '{}' token (UMT5 needs pad '<pad>' and eos '</s>')",
             file.string(), piece);
    return id;
}

const spm_api::Api& load_module() {
    namespace fs = std::filesystem;
    std::vector<std::string> tried;
    std::string errors;
    auto try_open = [&](const std::string& path) -> void* {
        tried.push_back(path);
        void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
        if (!handle) errors += fmt::format("{}{}", errors.empty() ? "" : "; ", ::dlerror());
        return handle;
    };
    void* handle = nullptr;
    Dl_info info{};
    if (::dladdr(reinterpret_cast<void*>(&load_module), &info) != 0 && info.dli_fname != nullptr) {
        const fs::path beside = fs::path(info.dli_fname).parent_path() / spm_api::kModuleName;
        if (fs::exists(beside)) handle = try_open(beside.string());
    }
    if (!handle) handle = try_open(spm_api::kModuleName);
    if (!handle) {
        std::string list;
        for (const auto& t : tried) list += (list.empty() ? "" : ", ") + t;
        fail(kComponent, "load", "cannot load the sentencepiece module (tried {}): {}", list, errors);
    }
    using Entry = const spm_api::Api* (*)();
    auto entry = reinterpret_cast<Entry>(::dlsym(handle, spm_api::kEntryPoint));
    if (!entry) fail(kComponent, "load", "{} has no symbol {}", tried.back(), spm_api::kEntryPoint);
    const spm_api::Api* api = entry();
    if (api == nullptr || api->version != spm_api::kVersion)
        fail(kComponent, "load", "{} has API version {}, st_kit expects {}", tried.back(),
             api ? api->version : -1, spm_api::kVersion);
    st::log::debug(kComponent, "sentencepiece module loaded from {}", tried.back());
    return *api;
}

}  // namespace

const spm_api::Api& spm_api::module() {
    static const spm_api::Api& api = load_module();
    return api;
}

struct UMT5Tokenizer::Impl {
    SentencePieceModel sp;
};

UMT5Tokenizer::UMT5Tokenizer(std::unique_ptr<Impl> impl, std::filesystem::path model_file)
    : impl_(std::move(impl)), model_file_(std::move(model_file)) {}
UMT5Tokenizer::UMT5Tokenizer(UMT5Tokenizer&&) noexcept = default;
UMT5Tokenizer& UMT5Tokenizer::operator=(UMT5Tokenizer&&) noexcept = default;
UMT5Tokenizer::~UMT5Tokenizer() = default;

std::filesystem::path UMT5Tokenizer::find_model_file(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    if (!fs::exists(path))
        fail(kComponent, "load",
             "tokenizer path '{}' does not exist (expected a tokenizer folder with {} or the "
             "{} file itself)",
             path.string(), kModelName, kModelName);
    if (fs::is_regular_file(path)) {
        if (path.filename() == "tokenizer.json")
            fail(kComponent, "load",
                 "'{}' is a HF tokenizers file; st reads the SentencePiece model {} that "
                 "Wan-AI/*-Diffusers/tokenizer/ and google/umt5-xxl ship next to it",
                 path.string(), kModelName);
        return path;
    }
    const fs::path model = path / kModelName;
    if (!fs::exists(model))
        fail(kComponent, "load",
             "tokenizer folder '{}' has no {} (files: {}); the UMT5 tokenizer needs the "
             "SentencePiece model {} (tokenizer.json alone is not read)",
             path.string(), kModelName, list_dir(path), kModelName);
    return model;
}

UMT5Tokenizer UMT5Tokenizer::load(const std::filesystem::path& path) {
    const std::filesystem::path file = find_model_file(path);
    auto impl = std::make_unique<Impl>(Impl{SentencePieceModel::load(file, kComponent)});
    const SentencePieceModel& sp = impl->sp;
    const int64_t unk = sp.unk_id();
    const int64_t pad = special_id(sp, sp.pad_id(), "<pad>", file);
    const int64_t eos = special_id(sp, sp.eos_id(), "</s>", file);
    const int64_t pieces = sp.size();
    UMT5Tokenizer tok(std::move(impl), file);
    tok.unk_id_ = unk;
    tok.pad_id_ = pad;
    tok.eos_id_ = eos;
    st::log::info(kComponent, "loaded {} ({} pieces; pad {}, eos {}, unk {})", file.string(), pieces,
                  tok.pad_id_, tok.eos_id_, tok.unk_id_);
    return tok;
}

int64_t UMT5Tokenizer::vocab_size() const {
    return impl_->sp.size();
}

std::vector<int> UMT5Tokenizer::encode_raw(std::string_view text) const {
    return impl_->sp.encode(text);
}

std::vector<std::string> UMT5Tokenizer::encode_pieces(std::string_view text) const {
    return impl_->sp.encode_pieces(text);
}

std::string UMT5Tokenizer::decode(const std::vector<int>& ids) const {
    return impl_->sp.decode(ids);
}

std::vector<int64_t> UMT5Tokenizer::encode(std::string_view text, int64_t max_length) const {
    if (max_length < 1)
        fail(kComponent, "encode", "max_length must be >= 1 (room for eos), got {}", max_length);
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
    const nlohmann::json config = {{"tokenizer_class", "T5Tokenizer"},
                                   {"eos_token", "</s>"},
                                   {"pad_token", "<pad>"},
                                   {"unk_token", "<unk>"},
                                   {"extra_ids", 0},
                                   {"model_max_length", 512},
                                   {"additional_special_tokens", nlohmann::json::array()}};
    const nlohmann::json special = {{"eos_token", "</s>"}, {"pad_token", "<pad>"}, {"unk_token", "<unk>"}};
    write_text(out_dir / "tokenizer_config.json", config.dump(2) + "\n");
    write_text(out_dir / "special_tokens_map.json", special.dump(2) + "\n");
}

std::filesystem::path write_tokenizer_folder(const std::filesystem::path& source,
                                             const std::filesystem::path& out_dir) {
    namespace fs = std::filesystem;
    const fs::path model = UMT5Tokenizer::find_model_file(source);
    UMT5Tokenizer::load(model);  // refuse to copy something that is not a usable model
    fs::create_directories(out_dir);
    const fs::path target = out_dir / kModelName;
    std::error_code ec;
    if (!fs::equivalent(model, target, ec))
        fs::copy_file(model, target, fs::copy_options::overwrite_existing);
    write_tokenizer_side_files(out_dir);
    st::log::info(kComponent, "wrote tokenizer folder {} (from {})", out_dir.string(), model.string());
    return target;
}

}  // namespace st::kit
