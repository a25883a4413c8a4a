// Bucket sizes, resize/crop plans and frame rounding.
#include "geometry.h"

#include <gtest/gtest.h>

namespace dl = st::plugins::data_local;

namespace {
dl::DatasetConfig area480() {
    dl::DatasetConfig d;
    d.resolution = 480;
    d.resolution_type = "pixel_area";
    return d;
}
}  // namespace

TEST(DataGeometryTest, PixelArea480On16by9Gives640x352) {
    // SimpleTuner's documented example (inventory 2.2): 16:9 at 480 pixel_area -> 640x352 (alignment 32).
    const double ar = dl::rounded_aspect(1920, 1080, 2);
    EXPECT_DOUBLE_EQ(ar, 1.78);
    EXPECT_EQ(dl::bucket_size_for_aspect(ar, area480(), 32), (dl::Size{640, 352}));
    EXPECT_EQ(dl::bucket_size_for_aspect(ar, area480(), 16), (dl::Size{640, 352}));
    EXPECT_EQ(dl::bucket_size_for_aspect(1.0, area480(), 16), (dl::Size{480, 480}));
    auto px = area480();
    px.resolution_type = "pixel";
    EXPECT_EQ(dl::bucket_size_for_aspect(ar, px, 16), (dl::Size{848, 480}));
    auto area = area480();
    area.resolution_type = "area";
    area.resolution = 0.2304;  // 480^2 / 1e6
    EXPECT_EQ(dl::bucket_size_for_aspect(ar, area, 32), (dl::Size{640, 352}));
}

TEST(DataGeometryTest, ResizeCoversTargetThenCentreCrops) {
    auto p = dl::plan_resize({1920, 1080}, area480(), 2, 16, 0.0, 0.0);
    EXPECT_EQ(p.target, (dl::Size{640, 352}));
    EXPECT_GE(p.resized.w, 640);
    EXPECT_GE(p.resized.h, 352);
    EXPECT_EQ(p.resized, (dl::Size{640, 360}));
    EXPECT_EQ(p.crop_x, 0);
    EXPECT_EQ(p.crop_y, 4);
    // Odd sizes still produce aligned targets.
    auto q = dl::plan_resize({161, 91}, area480(), 2, 16, 0.0, 0.0);
    EXPECT_EQ(q.target.w % 16, 0);
    EXPECT_EQ(q.target.h % 16, 0);
}

TEST(DataGeometryTest, CropAspectSquareAndCornerAndRandom) {
    auto d = area480();
    d.crop = true;
    d.crop_aspect = "square";
    d.crop_style = "corner";
    auto p = dl::plan_resize({1000, 600}, d, 2, 16, 0.3, 0.7);
    EXPECT_EQ(p.target, (dl::Size{480, 480}));
    EXPECT_EQ(p.resized, (dl::Size{1000, 600}));  // crop=true crops at the source scale
    EXPECT_EQ(p.crop_x, 520);
    EXPECT_EQ(p.crop_y, 120);
    d.crop_style = "random";
    auto r = dl::plan_resize({1000, 600}, d, 2, 16, 0.5, 0.0);
    EXPECT_EQ(r.crop_x, 260);
    EXPECT_EQ(r.crop_y, 0);
    d.maximum_image_size = 500;
    d.target_downsample_size = 500;
    auto s = dl::plan_resize({2000, 1200}, d, 2, 16, 0.5, 0.5);
    EXPECT_LT(s.resized.w, 2000);  // downsampled to ~500^2 area first
    EXPECT_GE(s.resized.h, 480);
    d.crop_aspect = "closest";
    d.crop_aspect_buckets = {0.5, 1.0, 1.5};
    EXPECT_DOUBLE_EQ(dl::plan_resize({1000, 600}, d, 2, 16, 0, 0).aspect, 1.5);
}

TEST(DataGeometryTest, FramesFollowTheModelRule) {
    EXPECT_EQ(dl::round_frames_down(75, 4), 73);
    EXPECT_EQ(dl::round_frames_down(81, 4), 81);
    EXPECT_EQ(dl::round_frames_down(80, 4), 77);
    EXPECT_EQ(dl::round_frames_down(7, 1), 7);
    dl::VideoSettings v;
    v.num_frames = 33;
    v.min_frames = 33;
    EXPECT_EQ(dl::training_frames(60, v, 4), 33);
    EXPECT_EQ(dl::training_frames(32, v, 4), 0);
    v.max_frames = 50;
    EXPECT_EQ(dl::training_frames(60, v, 4), 0);
    v.max_frames = 0;
    v.bucket_strategy = "resolution_frames";
    v.frame_interval = 10;
    EXPECT_EQ(dl::training_frames(58, v, 4), 49);  // 58 -> 50 (interval) -> 49 (4k+1)
    EXPECT_EQ(dl::bucket_key({640, 352}, 33), "640x352@33");
}

TEST(DataGeometryTest, MinimumSizeInResolutionUnits) {
    auto d = area480();
    d.minimum_image_size = 400;
    EXPECT_TRUE(dl::below_minimum_size({300, 300}, d));
    EXPECT_FALSE(dl::below_minimum_size({640, 360}, d));
    d.resolution_type = "pixel";
    EXPECT_TRUE(dl::below_minimum_size({800, 399}, d));
}
