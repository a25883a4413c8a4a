// SimpleTuner's per-aspect memo of bucket sizes (multiaspect/image.py calculate_new_size_by_pixel_area
// with StateTracker.get/set_resolution_by_aspect): at one resolution, the first size computed for a
// rounded target aspect becomes the size of every later file whose computed target rounds to that
// aspect. SimpleTuner keeps the memo in `output_dir/aspect_resolution_map-<megapixels>.json`
// ({"1.82": [640, 352], ...}) and reads it back in later runs; st reads and extends the same file, so
// both trainers put a clip into the same bucket.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "geometry.h"

namespace st::plugins::data_local {

class AspectResolutionMaps {
  public:
    /// `dir` (the run's output_dir) empty: the memo lives in memory only.
    explicit AspectResolutionMaps(std::filesystem::path dir = {});

    /// The size of a file whose computed target is `computed` (rounded aspect `aspect`) at
    /// `megapixels`: the memoised one, else `computed`, which is memoised.
    Size resolve(double megapixels, double aspect, Size computed);

    /// Writes every map that gained entries (atomically); returns the files written. A map file that
    /// could not be read is never overwritten.
    std::vector<std::filesystem::path> save();

    /// aspect_resolution_map-<megapixels>.json under the directory.
    std::filesystem::path file_for(double megapixels) const;

  private:
    struct Map {
        nlohmann::json entries = nlohmann::json::object();
        bool changed = false;
        bool readable = true;
    };
    Map& map_for(double megapixels);

    std::filesystem::path dir_;
    std::map<double, Map> maps_;
};

/// Python's str() of a float: shortest round-trip digits, "1.0" for integral values ("0.2304").
std::string python_float_str(double v);

}  // namespace st::plugins::data_local
