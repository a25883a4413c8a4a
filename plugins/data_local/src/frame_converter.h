// One decoded video frame -> one training frame: resize (area filter when shrinking, bicubic when
// enlarging), display rotation, crop, RGB24, written straight into the caller's buffer.
//
// Two paths, chosen per frame:
// - fast (8-bit 4:2:0 sources, the usual H.264/H.265/VP9 output): resize in YUV, then swscale's
//   unscaled YUV->RGB converter (SIMD) over the cropped window only. Scaling RGB24 output in one
//   swscale pass costs ~2.5x more per frame than this (measured in docs/performance.md), and the
//   result is at least as close to the analytic YUV->RGB of the resized planes (test_media).
// - general (every other pixel format): one scaled swscale pass to RGB24, then rotate + crop.
// Both honour the frame's colour matrix (BT.601/709/...) and range.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "geometry.h"

struct AVFrame;
struct SwsContext;

namespace st::plugins::data_local {

/// A cached swscale context plus the colour details last applied to it (setting them rebuilds
/// swscale's tables, so only when the context or the frame's values change).
struct SwsSlot {
    SwsContext* ctx = nullptr;
    const SwsContext* configured = nullptr;
    std::array<int, 7> configured_state{};
};

class FrameConverter {
  public:
    /// `plan.resized` / crop / target are in display orientation; `rotation` is the clockwise display
    /// rotation (0, 90, 180, 270) applied after resizing the coded frame.
    FrameConverter(const ResizePlan& plan, int rotation);
    ~FrameConverter();
    FrameConverter(const FrameConverter&) = delete;
    FrameConverter& operator=(const FrameConverter&) = delete;

    /// Writes uint8 [plan.target.h, plan.target.w, 3] RGB (contiguous) to `dst`. Throws st::Error when
    /// swscale cannot convert the frame's pixel format.
    void convert(const AVFrame* frame, uint8_t* dst);

    /// Whether the last convert() took the fast YUV path (tests and the bench report it).
    bool last_was_fast() const { return last_fast_; }

  private:
    void convert_fast(const AVFrame* frame, uint8_t* dst);
    void convert_general(const AVFrame* frame, uint8_t* dst);

    ResizePlan plan_;
    int rotation_ = 0;
    Size coded_resized_;        ///< plan.resized in the frame's coded orientation
    SwsSlot scale_;             ///< fast path: YUV -> YUV resize (same pixel format)
    SwsSlot to_rgb_;            ///< fast path: unscaled YUV -> RGB24 of the window
    SwsSlot general_;           ///< general path: scaled any -> RGB24
    std::vector<uint8_t> yuv_;  ///< resized planes (fast path)
    std::vector<uint8_t> rgb_;  ///< full resized RGB frame before rotate/crop (when not direct)
    bool last_fast_ = false;
};

}  // namespace st::plugins::data_local
