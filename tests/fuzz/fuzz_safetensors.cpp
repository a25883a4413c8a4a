// Target safetensors_header: the bytes of a .safetensors file (8-byte header length, JSON header,
// data buffer) as SafetensorsFile::from_bytes validates them (the same checks as open() on a file).
// Whatever it accepts must then load: every tensor reads inside the buffer, in its declared size.
#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "harness.h"
#include "st/safetensors.h"

namespace st::fuzz {

void safetensors_header(std::string_view input) {
    auto bytes = std::make_shared<const std::string>(input);
    const auto file = sdk::SafetensorsFile::from_bytes(bytes, "fuzz.safetensors");
    uint64_t covered = 0;
    for (const auto& info : file->infos()) {
        const at::Tensor t = file->load(info.name);
        if (t.numel() != info.numel())
            invariant_failed("tensor '" + info.name + "' loaded with another element count than its shape");
        if (file->view(info.name).numel() != info.numel())
            invariant_failed("tensor '" + info.name + "' viewed with another element count than its shape");
        covered += info.end - info.begin;
    }
    if (covered != file->file_size() - 8 - file->header_size())
        invariant_failed("accepted tensors that do not cover the data buffer exactly");
    (void)file->metadata();
}

}  // namespace st::fuzz

ST_FUZZ_ENTRY(st::fuzz::safetensors_header)
