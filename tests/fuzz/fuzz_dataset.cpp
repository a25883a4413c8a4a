// Target dataset_config: a multidatabackend.json, read the way the host reads it (JSON limits, then
// parsed) and handed to the local data backend's parser (parse_datasets: keys, types, ranges, ids,
// the path templates {output_dir}/{model_family}/{id}, S2V audio auto-split, links between
// datasets), once for a model without audio and
// once for one whose samples carry audio. Dataset ids name cache and metadata files: an accepted id
// is never a path.
#include <string>

#include "config.h"
#include "harness.h"
#include "st/json_file.h"

namespace st::fuzz {

void dataset_config(std::string_view input) {
    const nlohmann::json entries = sdk::parse_json_text(input, "multidatabackend.json", "host.data", "open");
    for (const bool audio : {false, true}) {
        plugins::data_local::RunDataSettings run;
        run.config_dir = "/fuzz/config";
        run.output_dir = "/fuzz/output";
        run.model_family = "wan";
        run.model_takes_audio = audio;
        for (const auto& d : plugins::data_local::parse_datasets(entries, run)) {
            if (d.id.empty() || d.id.find_first_of("/\\") != std::string::npos ||
                d.id.find("..") != std::string::npos)
                invariant_failed("accepted the dataset id '" + d.id + "'");
        }
    }
}

}  // namespace st::fuzz

ST_FUZZ_ENTRY(st::fuzz::dataset_config)
