// The plugin's one exporting file: the manifest and the entry point (st/plugin.h).
#include "st/plugin.h"
#include "family.h"
#include "st/registrar.h"

ST_PLUGIN("minidit", "0.1.0", "model.minidit@1")

ST_PLUGIN_ENTRY(registrar) {
    st::sdk::ComponentInfo info;
    info.id = example::minidit::kComponentId;
    info.summary =
        "example family: a small DiT on the kit's Wan VAE and UMT5 text encoder (make-model preset tiny)";
    registrar.add_model(std::move(info), [] { return std::make_unique<example::minidit::MiniDiTFamily>(); });
}
