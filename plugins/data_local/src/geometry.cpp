#include "geometry.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>

#include "aspect_map.h"

namespace st::plugins::data_local {
namespace {

/// Megapixels a resolution value means for the "area" style types.
double to_megapixels(double value, const std::string& type) {
    return type == "pixel_area" ? value * value / 1e6 : value;
}

Size scale_to_cover(Size src, Size target) {
    const double s = std::max(static_cast<double>(target.w) / src.w, static_cast<double>(target.h) / src.h);
    Size out{static_cast<int>(std::lround(src.w * s)), static_cast<int>(std::lround(src.h * s))};
    out.w = std::max(out.w, target.w);
    out.h = std::max(out.h, target.h);
    return out;
}

}  // namespace

int round_to_multiple(double value, int multiple) {
    // Python's round(): halves go to the even neighbour (22.5 -> 22), as in SimpleTuner's
    // _round_to_nearest_multiple; std::nearbyint rounds so in the default rounding mode.
    if (multiple <= 1) return std::max(1, static_cast<int>(std::nearbyint(value)));
    int r = static_cast<int>(std::nearbyint(value / multiple)) * multiple;
    return std::max(r, multiple);
}

double rounded_aspect(int w, int h, int decimals) {
    const double p = std::pow(10.0, decimals);
    return std::round(static_cast<double>(w) / h * p) / p;
}

Size bucket_size_for_aspect(double ar, const DatasetConfig& ds, int alignment, bool portrait) {
    if (ds.resolution_type == "pixel") {
        // calculate_new_size_by_pixel_edge: the short edge is the resolution, the long one
        // int(resolution x ar) (or / ar), each then rounded to the alignment.
        const int res = static_cast<int>(ds.resolution);
        if (portrait)
            return {round_to_multiple(res, alignment),
                    round_to_multiple(static_cast<int>(res / ar), alignment)};
        return {round_to_multiple(static_cast<int>(res * ar), alignment), round_to_multiple(res, alignment)};
    }
    // calculate_new_size_by_pixel_area: edge = round(int(sqrt(MP * 1e6))), then W = edge*sqrt(ar),
    // H = edge/sqrt(ar), each rounded to the alignment.
    const double edge = round_to_multiple(
        static_cast<int>(std::sqrt(to_megapixels(ds.resolution, ds.resolution_type) * 1e6)), alignment);
    const double root = std::sqrt(ar);
    return {round_to_multiple(edge * root, alignment), round_to_multiple(edge / root, alignment)};
}

bool below_minimum_size(Size s, const DatasetConfig& ds) {
    if (ds.minimum_image_size <= 0) return false;
    if (ds.resolution_type == "pixel") return std::min(s.w, s.h) < ds.minimum_image_size;
    return static_cast<double>(s.w) * s.h / 1e6 < to_megapixels(ds.minimum_image_size, ds.resolution_type);
}

ResizePlan plan_resize(Size source, const DatasetConfig& ds, int rounding, int alignment, double ua,
                       double ub, AspectResolutionMaps* memo) {
    ResizePlan p;
    p.source = source;
    double ar = rounded_aspect(source.w, source.h, rounding);
    if (ds.crop) {
        if (ds.crop_aspect == "square") {
            ar = 1.0;
        } else if (ds.crop_aspect == "closest") {
            double best = ds.crop_aspect_buckets.front();
            for (double b : ds.crop_aspect_buckets)
                if (std::fabs(b - ar) < std::fabs(best - ar)) best = b;
            ar = best;
        } else if (ds.crop_aspect == "random") {
            size_t i = std::min(ds.crop_aspect_buckets.size() - 1,
                                static_cast<size_t>(ua * ds.crop_aspect_buckets.size()));
            ar = ds.crop_aspect_buckets[i];
        }
    }
    p.aspect = ar;
    p.target = bucket_size_for_aspect(ar, ds, alignment, source.w < source.h);
    p.computed = p.target;
    // SimpleTuner's per-aspect memo (calculate_new_size_by_pixel_area): not for square sources at aspect
    // 1.0 (returned before it) nor square crops (their size is the edge, set before it).
    const bool square_crop = ds.crop && ds.crop_aspect == "square";
    if (memo && ds.resolution_type != "pixel" && !square_crop && !(ar == 1.0 && source.w == source.h))
        p.target = memo->resolve(to_megapixels(ds.resolution, ds.resolution_type),
                                 rounded_aspect(p.target.w, p.target.h, rounding), p.target);
    if (!ds.crop) {
        // Aspect-preserving resize to cover the target, then a (small) centre crop.
        p.resized = scale_to_cover(source, p.target);
        p.crop_x = (p.resized.w - p.target.w) / 2;
        p.crop_y = (p.resized.h - p.target.h) / 2;
        return p;
    }
    // crop=true crops the target window out of the source at its own scale; only sources above
    // maximum_image_size are first downsampled to target_downsample_size, and sources smaller than
    // the window are scaled up to cover it.
    Size work = source;
    if (ds.maximum_image_size > 0 && ds.target_downsample_size > 0) {
        const bool above = ds.resolution_type == "pixel"
                               ? std::min(source.w, source.h) > ds.maximum_image_size
                               : static_cast<double>(source.w) * source.h / 1e6 >
                                     to_megapixels(ds.maximum_image_size, ds.resolution_type);
        if (above) {
            double s;
            if (ds.resolution_type == "pixel") {
                s = ds.target_downsample_size / std::min(source.w, source.h);
            } else {
                s = std::sqrt(to_megapixels(ds.target_downsample_size, ds.resolution_type) * 1e6 /
                              (static_cast<double>(source.w) * source.h));
            }
            if (s < 1.0)
                work = {static_cast<int>(std::lround(source.w * s)),
                        static_cast<int>(std::lround(source.h * s))};
        }
    }
    if (work.w < p.target.w || work.h < p.target.h) work = scale_to_cover(work, p.target);
    p.resized = work;
    const int free_x = work.w - p.target.w, free_y = work.h - p.target.h;
    if (ds.crop_style == "random") {
        p.crop_x = std::min(free_x, static_cast<int>(ua * (free_x + 1)));
        p.crop_y = std::min(free_y, static_cast<int>(ub * (free_y + 1)));
    } else if (ds.crop_style == "corner") {
        // SimpleTuner's CornerCropping keeps the bottom-right corner.
        p.crop_x = free_x;
        p.crop_y = free_y;
    } else {
        p.crop_x = free_x / 2;
        p.crop_y = free_y / 2;
    }
    return p;
}

int round_frames_down(int n, int t) {
    if (t <= 1) return n;
    if (n < 1) return 0;
    return ((n - 1) / t) * t + 1;
}

int training_frames(int available, const VideoSettings& v, int t) {
    if (available < v.min_frames) return 0;
    if (v.max_frames > 0 && available > v.max_frames) return 0;
    if (v.bucket_strategy == "resolution_frames") {
        int f = available;
        if (v.frame_interval > 1) f = (f / v.frame_interval) * v.frame_interval;
        return std::max(0, round_frames_down(f, t));
    }
    const int f = round_frames_down(v.num_frames, t);
    return available >= f ? f : 0;
}

std::string bucket_key(Size size, int frames) {
    return fmt::format("{}x{}@{}", size.w, size.h, frames);
}

}  // namespace st::plugins::data_local
