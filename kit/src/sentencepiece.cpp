// SentencePieceModel and train_sentencepiece (see st/kit/sentencepiece.h): thin wrappers over the
// function table of the sentencepiece module (tokenizer_spm_api.h), turning its error strings into
// st::Error.
#include "st/kit/sentencepiece.h"

#include <fstream>

#include "st/error.h"
#include "tokenizer_spm_api.h"

namespace st::kit {

struct SentencePieceModel::Impl {
    const spm_api::Api* api = nullptr;
    void* handle = nullptr;
    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
    ~Impl() {
        if (handle) api->close(handle);
    }
};

SentencePieceModel::SentencePieceModel(std::unique_ptr<Impl> impl, std::filesystem::path file,
                                       std::string component)
    : impl_(std::move(impl)), file_(std::move(file)), component_(std::move(component)) {}
SentencePieceModel::SentencePieceModel(SentencePieceModel&&) noexcept = default;
SentencePieceModel& SentencePieceModel::operator=(SentencePieceModel&&) noexcept = default;
SentencePieceModel::~SentencePieceModel() = default;

SentencePieceModel SentencePieceModel::load(const std::filesystem::path& model_file,
                                            const std::string& component) {
    if (!std::filesystem::is_regular_file(model_file))
        fail(component, "load", "SentencePiece model '{}' does not exist or is not a file",
             model_file.string());
    auto impl = std::make_unique<Impl>();
    impl->api = &spm_api::module();
    std::string error;
    impl->handle = impl->api->open(model_file.string(), &error);
    if (!impl->handle)
        fail(component, "load", "'{}' is not a SentencePiece model: {}", model_file.string(), error);
    const spm_api::Api& api = *impl->api;
    void* handle = impl->handle;
    SentencePieceModel model(std::move(impl), model_file, component);
    api.special_ids(handle, &model.pad_id_, &model.eos_id_, &model.unk_id_);
    return model;
}

std::vector<int> SentencePieceModel::encode(std::string_view text) const {
    std::vector<int> ids;
    std::string error;
    if (!impl_->api->encode_ids(impl_->handle, text, &ids, &error))
        fail(component_, "encode", "SentencePiece encode with {} failed: {}", file_.string(), error);
    return ids;
}

std::vector<std::string> SentencePieceModel::encode_pieces(std::string_view text) const {
    std::vector<std::string> pieces;
    std::string error;
    if (!impl_->api->encode_pieces(impl_->handle, text, &pieces, &error))
        fail(component_, "encode", "SentencePiece encode with {} failed: {}", file_.string(), error);
    return pieces;
}

std::string SentencePieceModel::decode(const std::vector<int>& ids) const {
    std::string text;
    std::string error;
    if (!impl_->api->decode(impl_->handle, ids, &text, &error))
        fail(component_, "decode", "SentencePiece decode with {} failed: {}", file_.string(), error);
    return text;
}

int64_t SentencePieceModel::size() const {
    return impl_->api->piece_size(impl_->handle);
}

int SentencePieceModel::piece_to_id(std::string_view piece) const {
    return impl_->api->piece_to_id(impl_->handle, piece);
}

void train_sentencepiece(const std::filesystem::path& model_file,
                         const std::unordered_map<std::string, std::string>& args,
                         const std::vector<std::string>& sentences, uint32_t seed,
                         const std::string& component) {
    std::string serialized, error;
    if (!spm_api::module().train(args, sentences, seed, &serialized, &error))
        fail(component, "train", "SentencePiece training ({} sentences, seed {}) failed: {}",
             sentences.size(), seed, error);
    if (model_file.has_parent_path()) std::filesystem::create_directories(model_file.parent_path());
    std::ofstream out(model_file, std::ios::binary);
    out.write(serialized.data(), static_cast<std::streamsize>(serialized.size()));
    out.close();
    if (!out) fail(component, "train", "cannot write '{}'", model_file.string());
}

}  // namespace st::kit
