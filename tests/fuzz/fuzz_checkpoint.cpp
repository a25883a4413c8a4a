// Target checkpoint_manifest: the checkpoint_manifest.json of a checkpoint folder, as resuming reads
// it (CheckpointStore::verify: st's format marker, every listed file present with its size and
// checksum) and as the listing of a run's checkpoints reads it (complete / partial / foreign, which
// decide what pruning may delete). The folder holds two real files next to the manifest; what verify
// accepts lists only files inside the folder.
#include <nlohmann/json.hpp>

#include <fstream>

#include "harness.h"
#include "train/checkpoint_store.h"

namespace st::fuzz {

namespace fs = std::filesystem;

void checkpoint_manifest(std::string_view input) {
    static const fs::path root = [] {
        const fs::path r = scratch_dir() / "run";
        fs::create_directories(r / "checkpoint-100");
        std::ofstream(r / "checkpoint-100" / "model.safetensors") << "0123456789";
        std::ofstream(r / "checkpoint-100" / "training_state.json") << "{\"step\": 100}\n";
        return r;
    }();
    const fs::path dir = root / "checkpoint-100";
    write_scratch("run/checkpoint-100/checkpoint_manifest.json", input);
    const bool ours = host::train::CheckpointStore::written_by_st(dir);
    const host::train::CheckpointStore store(root);
    const auto complete = store.complete();
    const auto foreign = store.foreign();
    if (ours != (complete.size() == 1) || ours == (foreign.size() == 1))
        invariant_failed("checkpoint-100 is neither st's nor foreign (or both)");
    if (!ours && !store.partial().empty())
        invariant_failed("a foreign checkpoint counted as st's partial one");
    host::train::CheckpointStore::verify(dir);
    // Accepted: every file the manifest lists is one of the checkpoint's own files.
    const nlohmann::json manifest = nlohmann::json::parse(input);
    for (const auto& [rel, size] : manifest.at("files").items()) {
        const fs::path p = fs::path(rel).lexically_normal();
        if (p.is_absolute() || p.empty() || *p.begin() == "..")
            invariant_failed("verify accepted a manifest listing '" + rel + "', outside the checkpoint");
    }
}

}  // namespace st::fuzz

ST_FUZZ_ENTRY(st::fuzz::checkpoint_manifest)
