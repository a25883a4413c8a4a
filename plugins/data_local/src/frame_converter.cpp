#include "frame_converter.h"

extern "C" {
#include <libavutil/frame.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include <ATen/ATen.h>

#include <cstring>

#include "st/error.h"

namespace st::plugins::data_local {
namespace {

constexpr const char* kComponent = "data.local.media";

/// 8-bit 4:2:0 planar: what swscale's unscaled SIMD YUV->RGB converter handles.
bool fast_format(int format) {
    return format == AV_PIX_FMT_YUV420P || format == AV_PIX_FMT_YUVJ420P;
}

[[noreturn]] void unsupported(int format) {
    const char* name = av_get_pix_fmt_name(static_cast<AVPixelFormat>(format));
    throw Error(kComponent, "decode",
                fmt::format("swscale cannot convert pixel format '{}'", name ? name : "unknown"));
}

/// Area averaging when shrinking (no aliasing), bicubic when enlarging.
int resize_flags(const AVFrame* f, Size to) {
    const bool shrink = static_cast<int64_t>(to.w) * to.h < static_cast<int64_t>(f->width) * f->height;
    return shrink ? SWS_AREA : SWS_BICUBIC;
}

/// Honours the frame's matrix (BT.601/709/...) and range instead of swscale's BT.601 limited default,
/// on a context whose output is RGB. `geometry` identifies the context's shape: a new context may reuse
/// the old one's address.
void apply_colour_details(SwsSlot& slot, const AVFrame* f, std::array<int, 4> geometry) {
    const int cs = f->colorspace == AVCOL_SPC_UNSPECIFIED ? SWS_CS_DEFAULT : static_cast<int>(f->colorspace);
    const int jpeg_range = f->color_range == AVCOL_RANGE_JPEG ? 1 : 0;
    const std::array<int, 7> state{geometry[0], geometry[1], geometry[2], geometry[3],
                                   f->format,   cs,          jpeg_range};
    if (slot.ctx == slot.configured && state == slot.configured_state) return;
    int* inv_table = nullptr;
    int* table = nullptr;
    int src_range = 0, dst_range = 0, brightness = 0, contrast = 0, saturation = 0;
    if (sws_getColorspaceDetails(slot.ctx, &inv_table, &src_range, &table, &dst_range, &brightness, &contrast,
                                 &saturation) >= 0) {
        src_range = jpeg_range ? 1 : src_range;
        sws_setColorspaceDetails(slot.ctx, sws_getCoefficients(cs), src_range, table, 1, brightness, contrast,
                                 saturation);
    }
    slot.configured = slot.ctx;
    slot.configured_state = state;
}

/// Applies the display rotation to an image [H, W, 3].
at::Tensor rotate_image(const at::Tensor& img, int rotation) {
    switch (rotation) {
        case 90:
            return img.transpose(0, 1).flip({1});
        case 180:
            return img.flip({0, 1});
        case 270:
            return img.transpose(0, 1).flip({0});
        default:
            return img;
    }
}

constexpr int kAlign = 64;

int aligned(int n) {
    return (n + kAlign - 1) / kAlign * kAlign;
}

}  // namespace

FrameConverter::FrameConverter(const ResizePlan& plan, int rotation) : plan_(plan), rotation_(rotation) {
    coded_resized_ =
        (rotation == 90 || rotation == 270) ? Size{plan.resized.h, plan.resized.w} : plan.resized;
}

FrameConverter::~FrameConverter() {
    sws_freeContext(scale_.ctx);
    sws_freeContext(to_rgb_.ctx);
    sws_freeContext(general_.ctx);
}

void FrameConverter::convert(const AVFrame* frame, uint8_t* dst) {
    last_fast_ = fast_format(frame->format);
    if (last_fast_)
        convert_fast(frame, dst);
    else
        convert_general(frame, dst);
}

namespace {

/// Copies the display-orientation crop of `rgb` ([size.h, size.w, 3] in coded orientation, rows of
/// `row_pixels` pixels, its top-left at pixel (x0, y0) of the resized frame; x0 = y0 = 0 when rotated)
/// into `dst`.
void rotate_crop_into(const uint8_t* rgb, Size size, int row_pixels, int rotation, const ResizePlan& plan,
                      int x0, int y0, uint8_t* dst) {
    const int tw = plan.target.w, th = plan.target.h;
    if (rotation == 0) {
        const size_t row = static_cast<size_t>(tw) * 3;
        for (int r = 0; r < th; ++r)
            std::memcpy(
                dst + r * row,
                rgb + (static_cast<size_t>(plan.crop_y - y0 + r) * row_pixels + (plan.crop_x - x0)) * 3, row);
        return;
    }
    at::Tensor img = at::from_blob(const_cast<uint8_t*>(rgb), {size.h, size.w, 3},
                                   {static_cast<int64_t>(row_pixels) * 3, 3, 1}, at::kByte);
    at::Tensor shown = rotate_image(img, rotation)
                           .slice(0, plan.crop_y - y0, plan.crop_y - y0 + th)
                           .slice(1, plan.crop_x - x0, plan.crop_x - x0 + tw);
    at::from_blob(dst, {th, tw, 3}, at::kByte).copy_(shown);
}

}  // namespace

void FrameConverter::convert_fast(const AVFrame* f, uint8_t* dst) {
    const auto format = static_cast<AVPixelFormat>(f->format);
    const int rw = coded_resized_.w, rh = coded_resized_.h;
    // The window to convert, in coded orientation: the crop itself (its start rounded down to the chroma
    // grid) when not rotated, else the whole resized frame.
    int x0 = 0, y0 = 0, ww = rw, wh = rh;
    if (rotation_ == 0) {
        x0 = plan_.crop_x & ~1;
        y0 = plan_.crop_y & ~1;
        ww = plan_.target.w + (plan_.crop_x - x0);
        wh = plan_.target.h + (plan_.crop_y - y0);
    }
    // swscale (5.1) takes its unscaled SIMD YUV->RGB converter only for an even height. That converter
    // rounds the width up to 8 pixels and silently leaves a partial last group unconverted when the output
    // row has no room for it, and its SSSE3 loop stores 16 pixels at a time (24 bytes past a row of 8k
    // pixels: valgrind caught it writing past the buffer). Convert a multiple of 16 columns and an even
    // number of rows (reading up to 15 pixels and 1 row past the window, which the source planes must
    // hold) and drop the extras.
    const int ww16 = (ww + 15) & ~15;
    const int wh2 = (wh + 1) & ~1;
    const uint8_t* planes[4] = {f->data[0], f->data[1], f->data[2], nullptr};
    int strides[4] = {f->linesize[0], f->linesize[1], f->linesize[2], 0};
    const bool planes_hold_window = x0 + ww16 <= strides[0] && x0 / 2 + ww16 / 2 <= strides[1] &&
                                    x0 / 2 + ww16 / 2 <= strides[2] && y0 + wh2 <= rh;
    if (f->width != rw || f->height != rh || !planes_hold_window) {
        // Resize (or copy) into padded planes, same pixel format both sides: no range or matrix change.
        scale_.ctx = sws_getCachedContext(scale_.ctx, f->width, f->height, format, rw, rh, format,
                                          resize_flags(f, coded_resized_), nullptr, nullptr, nullptr);
        if (!scale_.ctx) unsupported(f->format);
        // Padding: 16 columns per row, one luma row below an odd height (chroma already rounds up).
        const int ys = aligned(rw + 16), cs = aligned((rw + 1) / 2 + 16), ch = (rh + 1) / 2;
        const size_t luma_rows = static_cast<size_t>(rh) + (rh & 1);
        yuv_.resize(static_cast<size_t>(ys) * luma_rows + 2 * static_cast<size_t>(cs) * ch + kAlign);
        uint8_t* base = yuv_.data() + (kAlign - reinterpret_cast<uintptr_t>(yuv_.data()) % kAlign) % kAlign;
        uint8_t* out[4] = {base, base + static_cast<size_t>(ys) * luma_rows,
                           base + static_cast<size_t>(ys) * luma_rows + static_cast<size_t>(cs) * ch,
                           nullptr};
        int out_strides[4] = {ys, cs, cs, 0};
        sws_scale(scale_.ctx, f->data, f->linesize, 0, f->height, out, out_strides);
        for (int i = 0; i < 3; ++i) {
            planes[i] = out[i];
            strides[i] = out_strides[i];
        }
    }
    const uint8_t* window[4] = {planes[0] + static_cast<ptrdiff_t>(y0) * strides[0] + x0,
                                planes[1] + static_cast<ptrdiff_t>(y0 / 2) * strides[1] + x0 / 2,
                                planes[2] + static_cast<ptrdiff_t>(y0 / 2) * strides[2] + x0 / 2, nullptr};
    to_rgb_.ctx = sws_getCachedContext(to_rgb_.ctx, ww16, wh2, format, ww16, wh2, AV_PIX_FMT_RGB24, SWS_POINT,
                                       nullptr, nullptr, nullptr);
    if (!to_rgb_.ctx) unsupported(f->format);
    apply_colour_details(to_rgb_, f, {ww16, wh2, ww16, wh2});
    const bool direct = rotation_ == 0 && x0 == plan_.crop_x && y0 == plan_.crop_y &&
                        ww16 == plan_.target.w && wh2 == plan_.target.h;
    if (!direct) rgb_.resize(static_cast<size_t>(ww16) * wh2 * 3 + kAlign);  // slack: see above
    uint8_t* out[4] = {direct ? dst : rgb_.data(), nullptr, nullptr, nullptr};
    int out_strides[4] = {ww16 * 3, 0, 0, 0};
    sws_scale(to_rgb_.ctx, window, strides, 0, wh2, out, out_strides);
    if (!direct) rotate_crop_into(rgb_.data(), {ww, wh}, ww16, rotation_, plan_, x0, y0, dst);
}

void FrameConverter::convert_general(const AVFrame* f, uint8_t* dst) {
    const int rw = coded_resized_.w, rh = coded_resized_.h;
    general_.ctx =
        sws_getCachedContext(general_.ctx, f->width, f->height, static_cast<AVPixelFormat>(f->format), rw, rh,
                             AV_PIX_FMT_RGB24, resize_flags(f, coded_resized_), nullptr, nullptr, nullptr);
    if (!general_.ctx) unsupported(f->format);
    apply_colour_details(general_, f, {f->width, f->height, rw, rh});
    rgb_.resize(static_cast<size_t>(rw) * rh * 3);
    uint8_t* out[4] = {rgb_.data(), nullptr, nullptr, nullptr};
    int out_strides[4] = {rw * 3, 0, 0, 0};
    sws_scale(general_.ctx, f->data, f->linesize, 0, f->height, out, out_strides);
    rotate_crop_into(rgb_.data(), {rw, rh}, rw, rotation_, plan_, 0, 0, dst);
}

}  // namespace st::plugins::data_local
