// Bucket geometry: target sizes per resolution/resolution_type (SimpleTuner's formula with the
// model's spatial multiple), resize-then-crop plans, and frame counts under the model's k*t+1 rule.
// Reference: SimpleTuner multiaspect/image.py (calculate_new_size_by_pixel_area / _by_pixel_edge),
// image_manipulation/training_sample.py (intermediary size + crop), models/wan adjust_video_frames.
#pragma once

#include <cstdint>
#include <string>

#include "config.h"

namespace st::plugins::data_local {

class AspectResolutionMaps;

struct Size {
    int w = 0;
    int h = 0;
    bool operator==(const Size&) const = default;
};

/// Nearest multiple of `multiple` (at least one multiple); halves go to the even neighbour, as
/// Python's round() in SimpleTuner's _round_to_nearest_multiple.
int round_to_multiple(double value, int multiple);
/// Aspect ratio w/h rounded to `decimals` (aspect_bucket_rounding).
double rounded_aspect(int w, int h, int decimals);
/// Training size for a source of aspect `ar` (already rounded) at the dataset's resolution;
/// `portrait`: the source is taller than wide (resolution_type pixel: its width is the resolution).
Size bucket_size_for_aspect(double ar, const DatasetConfig& ds, int alignment, bool portrait = false);

/// How one source frame becomes a training frame: resize the (rotated) source to `resized`, then
/// take the `target` window at (`crop_x`, `crop_y`).
struct ResizePlan {
    Size source;
    Size resized;
    Size target;
    int crop_x = 0;
    int crop_y = 0;
    double aspect = 1.0;  ///< rounded aspect of the target (bucket aspect)
    Size computed;        ///< the target before SimpleTuner's per-aspect memo (== target without one)
};

/// Plans resize + crop per crop / crop_style / crop_aspect / maximum_image_size /
/// target_downsample_size. `random_unit` in [0,1) seeds the random crop position / random aspect
/// (derived from the run seed and the file, so plans are stable across runs). `memo`: SimpleTuner's
/// per-aspect memo of sizes for the area resolution types (aspect_map.h); null: none.
ResizePlan plan_resize(Size source, const DatasetConfig& ds, int rounding, int alignment,
                       double random_unit_a, double random_unit_b, AspectResolutionMaps* memo = nullptr);

/// Whether a source is below `minimum_image_size` in the dataset's resolution units.
bool below_minimum_size(Size source, const DatasetConfig& ds);

/// Largest count <= n with count % t == 1 (t = temporal multiple; t <= 1 returns n).
int round_frames_down(int n, int temporal_multiple);

/// Frames a clip with `available` frames trains with (0 = does not qualify), per bucket_strategy.
int training_frames(int available, const VideoSettings& v, int temporal_multiple);

/// "640x352@33"
std::string bucket_key(Size size, int frames);

}  // namespace st::plugins::data_local
