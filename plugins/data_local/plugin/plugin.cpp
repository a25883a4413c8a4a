// The data_local plugin: registers data.local@1 (the `local` multidatabackend.json backend).
#include "backend.h"
#include "st/plugin.h"
#include "st/registrar.h"

ST_PLUGIN("data_local", "0.1.0", "data.local@1")

ST_PLUGIN_ENTRY(registrar) {
    using st::plugins::data_local::LocalDataBackend;
    st::sdk::ComponentInfo info;
    info.id = "data.local@1";
    info.summary = "local folders of videos/images/audio from multidatabackend.json: FFmpeg decode, aspect buckets, "
                   "latent/text/audio caches";
    info.options = st::plugins::data_local::data_local_options();
    registrar.add_data_backend(std::move(info), [] { return std::make_unique<LocalDataBackend>(); });
}
