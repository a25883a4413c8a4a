// libst_kit_spm: sentencepiece behind the plain function table of kit/src/tokenizer_spm_api.h. Loaded by
// core/tokenizer.cpp with dlopen(RTLD_LOCAL | RTLD_DEEPBIND); see that header for why.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <memory>

#include "tokenizer_spm_api.h"

namespace {

using sentencepiece::SentencePieceProcessor;
using st::kit::spm_api::Api;

SentencePieceProcessor* as_sp(void* handle) {
    return static_cast<SentencePieceProcessor*>(handle);
}

void* open_model(const std::string& path, std::string* error) {
    try {
        auto sp = std::make_unique<SentencePieceProcessor>();
        const auto status = sp->Load(path);
        if (!status.ok()) {
            *error = status.ToString();
            return nullptr;
        }
        return sp.release();
    } catch (const std::exception& e) {
        *error = e.what();
        return nullptr;
    }
}

void close_model(void* handle) {
    delete as_sp(handle);
}

template <typename Out>
bool encode(void* handle, std::string_view text, Out* out, std::string* error) {
    try {
        const auto status = as_sp(handle)->Encode(text, out);
        if (!status.ok()) *error = status.ToString();
        return status.ok();
    } catch (const std::exception& e) {
        *error = e.what();
        return false;
    }
}

bool encode_ids(void* handle, std::string_view text, std::vector<int>* ids, std::string* error) {
    return encode(handle, text, ids, error);
}

bool encode_pieces(void* handle, std::string_view text, std::vector<std::string>* pieces,
                   std::string* error) {
    return encode(handle, text, pieces, error);
}

bool decode(void* handle, const std::vector<int>& ids, std::string* text, std::string* error) {
    try {
        const auto status = as_sp(handle)->Decode(ids, text);
        if (!status.ok()) *error = status.ToString();
        return status.ok();
    } catch (const std::exception& e) {
        *error = e.what();
        return false;
    }
}

int piece_size(void* handle) {
    return as_sp(handle)->GetPieceSize();
}
int piece_to_id(void* handle, std::string_view piece) {
    return as_sp(handle)->PieceToId(piece);
}

void special_ids(void* handle, int* pad, int* eos, int* unk) {
    *pad = as_sp(handle)->pad_id();
    *eos = as_sp(handle)->eos_id();
    *unk = as_sp(handle)->unk_id();
}

// Feeds in-memory sentences to the trainer.
class VectorIterator final : public sentencepiece::SentenceIterator {
  public:
    explicit VectorIterator(const std::vector<std::string>& sentences) : sentences_(sentences) {}
    bool done() const override { return index_ >= sentences_.size(); }
    void Next() override { ++index_; }
    const std::string& value() const override { return sentences_[index_]; }
    sentencepiece::util::Status status() const override { return {}; }

  private:
    const std::vector<std::string>& sentences_;
    size_t index_ = 0;
};

bool train(const std::unordered_map<std::string, std::string>& args,
           const std::vector<std::string>& sentences, uint32_t seed, std::string* model, std::string* error) {
    try {
        sentencepiece::SetRandomGeneratorSeed(seed);
        VectorIterator it(sentences);
        const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, model);
        if (!status.ok()) *error = status.ToString();
        return status.ok();
    } catch (const std::exception& e) {
        *error = e.what();
        return false;
    }
}

const Api kApi{st::kit::spm_api::kVersion,
               open_model,
               close_model,
               encode_ids,
               encode_pieces,
               decode,
               piece_size,
               piece_to_id,
               special_ids,
               train};

}  // namespace

extern "C" __attribute__((visibility("default"))) const Api* st_kit_spm_api() {
    return &kApi;
}
