#!/usr/bin/python3
"""Float64 reference for the CLIP vision encoder of Wan 2.1 I2V (tests/golden/clip_vision).

Python `transformers` is not installable here, so this is an independent re-implementation of the
published architecture, written from transformers' models/clip/modeling_clip.py
(CLIPVisionEmbeddings, CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPVisionTransformer,
CLIPVisionModelWithProjection with output_hidden_states=True) and image_processing_clip.py
(CLIPImageProcessor: shortest-edge resize, centre crop, rescale, normalize), sharing no code with the
C++ port (plugins/wan/core/clip_vision*.cpp). The patch embedding is a reshape + matmul (no conv),
LayerNorm / GELU / attention are written out by hand, and the bicubic antialiased resize is checked
against a hand-written PIL-style separable resampler (Pillow's ImagingResample coefficients, Keys
a = -0.5). Everything is float64 on the float32-stored weights and images, so a comparison measures
only the C++ float32 arithmetic.

Run with Debian's interpreter (torch 1.13 + numpy; safetensors is written with json + struct):
    /usr/bin/python3 scripts/golden/clip_vision_reference.py [OUT_DIR]   (default tests/golden/clip_vision)
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from safetensors_io import save_safetensors

SEED = 20251121

# The tiny test config (= ClipVisionConfig::tiny() in C++): 56 / 14 = 4x4 patches + class = 17 tokens.
CONFIG = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "model_type": "clip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "projection_dim": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_channels": 3,
    "image_size": 56,
    "patch_size": 14,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "torch_dtype": "float32",
}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# CLIPImageProcessor settings of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers/image_processor, at 56 pixels.
PROCESSOR = {
    "crop_size": {"height": 56, "width": 56},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": CLIP_MEAN,
    "image_processor_type": "CLIPImageProcessor",
    "image_std": CLIP_STD,
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 56},
}

# name -> [B, 3, H, W]: landscape downscale with a truncated long edge (56 * 93 / 70 = 74.4 -> 74),
# portrait downscale (the crop offset is vertical), and an upscale whose bicubic overshoot is clamped.
IMAGES = {"landscape": (2, 70, 93), "portrait": (1, 100, 60), "small": (1, 40, 50)}


# --- weights -----------------------------------------------------------------------------------

def make_weights(cfg, gen):
    """HF CLIPVisionModelWithProjection names -> float32 tensors; O(1)-effective so every branch
    matters (norm weights 1 + 0.1 N and biases 0.1 N, so a dropped bias or gain is caught)."""
    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    d, ff, c, p = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_channels"], cfg["patch_size"]
    positions = (cfg["image_size"] // p) ** 2 + 1
    w = {}
    v = "vision_model."
    w[v + "embeddings.class_embedding"] = randn(d)
    w[v + "embeddings.patch_embedding.weight"] = randn(d, c, p, p) / math.sqrt(c * p * p)
    w[v + "embeddings.position_embedding.weight"] = 0.5 * randn(positions, d)
    for ln in ("pre_layrnorm", "post_layernorm"):
        w[v + ln + ".weight"] = 1 + 0.1 * randn(d)
        w[v + ln + ".bias"] = 0.1 * randn(d)
    for i in range(cfg["num_hidden_layers"]):
        pre = v + "encoder.layers.%d." % i
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[pre + "self_attn.%s.weight" % proj] = randn(d, d) / math.sqrt(d)
            w[pre + "self_attn.%s.bias" % proj] = 0.1 * randn(d)
        for ln in ("layer_norm1", "layer_norm2"):
            w[pre + ln + ".weight"] = 1 + 0.1 * randn(d)
            w[pre + ln + ".bias"] = 0.1 * randn(d)
        w[pre + "mlp.fc1.weight"] = randn(ff, d) / math.sqrt(d)
        w[pre + "mlp.fc1.bias"] = 0.1 * randn(ff)
        w[pre + "mlp.fc2.weight"] = randn(d, ff) / math.sqrt(ff)
        w[pre + "mlp.fc2.bias"] = 0.1 * randn(d)
    w["visual_projection.weight"] = randn(cfg["projection_dim"], d) / math.sqrt(d)
    return {k: t.float() for k, t in w.items()}


# --- preprocessing (float64) -------------------------------------------------------------------

def cubic(x, a=-0.5):
    """Keys cubic convolution with a = -0.5 (Pillow's bicubic_filter)."""
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def pil_resample_matrix(in_size, out_size):
    """Pillow ImagingResample precompute_coeffs: [out, in] normalised weights (antialiased when
    downscaling: the filter is widened by the scale)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        ws = np.array([cubic((x - center + 0.5) / filterscale) for x in range(xmin, xmax)])
        m[i, xmin:xmax] = ws / ws.sum()
    return torch.from_numpy(m)


def resize_bicubic_aa(x, out_h, out_w):
    """x [B, C, H, W] float64 -> [B, C, out_h, out_w]: torch's antialiased bicubic, cross-checked
    against the PIL-style separable resampler."""
    y = F.interpolate(x, size=(out_h, out_w), mode="bicubic", antialias=True, align_corners=False)
    rows, cols = pil_resample_matrix(x.shape[2], out_h), pil_resample_matrix(x.shape[3], out_w)
    y_pil = torch.einsum("oh,bchw,pw->bcop", rows, x, cols)
    diff = (y - y_pil).abs().max().item()
    assert diff < 1e-12, "F.interpolate(antialias) differs from the PIL-style resampler by %g" % diff
    return y


def shortest_edge_size(h, w, size):
    """transformers image_transforms.get_resize_output_image_size(default_to_square=False)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def preprocess(img, proc):
    """img [B, 3, H, W] in [-1, 1] -> pixel_values [B, 3, crop, crop] (CLIPImageProcessor order:
    resize -> centre crop -> rescale -> normalize). Upstream resizes uint8 PIL images; in float the
    resize is followed by a clamp to [0, 1], where the uint8 result would saturate."""
    x = (img.double() + 1.0) / 2.0  # [0, 1], i.e. uint8 / 255
    h, w = x.shape[2:]
    nh, nw = shortest_edge_size(h, w, proc["size"]["shortest_edge"])
    if (nh, nw) != (h, w):
        x = resize_bicubic_aa(x, nh, nw).clamp(0.0, 1.0)
    ch, cw = proc["crop_size"]["height"], proc["crop_size"]["width"]
    top, left = (nh - ch) // 2, (nw - cw) // 2  # transformers image_transforms.center_crop
    x = x[:, :, top:top + ch, left:left + cw]
    x = x * (255.0 * proc["rescale_factor"])
    mean = torch.tensor(proc["image_mean"], dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(proc["image_std"], dtype=torch.float64)[None, :, None, None]
    return (x - mean) / std


# --- model (float64) ---------------------------------------------------------------------------

def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as nn.LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def activation(x, name):
    if name == "gelu":  # transformers ACT2FN["gelu"]: exact erf GELU
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "quick_gelu":  # QuickGELUActivation
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(name)


def linear(x, w, b=None):
    y = x @ w.t()
    return y if b is None else y + b


def clip_vision_forward(cfg, w, pixel_values):
    """pixel_values [B, C, S, S] float64 -> hidden_states: num_hidden_layers + 1 tensors [B, N+1, D]
    (after pre_layrnorm, then after every encoder layer; post_layernorm is not part of them)."""
    v = "vision_model."
    eps, p, heads = cfg["layer_norm_eps"], cfg["patch_size"], cfg["num_attention_heads"]
    b, c, s, _ = pixel_values.shape
    g = s // p
    # Conv2d(kernel = stride = patch, no bias) as a matmul over flattened (c, ky, kx) patches, in
    # row-major patch order (what conv -> flatten(2) -> transpose(1, 2) yields).
    patches = pixel_values[:, :, :g * p, :g * p].reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, g * g, c * p * p)
    kernel = w[v + "embeddings.patch_embedding.weight"]
    x = patches @ kernel.reshape(kernel.shape[0], -1).t()
    cls = w[v + "embeddings.class_embedding"].expand(b, 1, -1)
    x = torch.cat([cls, x], dim=1) + w[v + "embeddings.position_embedding.weight"][None]
    x = layer_norm(x, w[v + "pre_layrnorm.weight"], w[v + "pre_layrnorm.bias"], eps)
    states = [x]
    t, d = x.shape[1], x.shape[2]
    hd = d // heads
    for i in range(cfg["num_hidden_layers"]):
        pre = v + "encoder.layers.%d." % i
        y = layer_norm(x, w[pre + "layer_norm1.weight"], w[pre + "layer_norm1.bias"], eps)
        q = linear(y, w[pre + "self_attn.q_proj.weight"], w[pre + "self_attn.q_proj.bias"]) * hd ** -0.5
        k = linear(y, w[pre + "self_attn.k_proj.weight"], w[pre + "self_attn.k_proj.bias"])
        vv = linear(y, w[pre + "self_attn.v_proj.weight"], w[pre + "self_attn.v_proj.bias"])
        split = lambda z: z.reshape(b, t, heads, hd).transpose(1, 2)
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2), dim=-1) @ split(vv)
        att = att.transpose(1, 2).reshape(b, t, d)
        x = x + linear(att, w[pre + "self_attn.out_proj.weight"], w[pre + "self_attn.out_proj.bias"])
        y = layer_norm(x, w[pre + "layer_norm2.weight"], w[pre + "layer_norm2.bias"], eps)
        y = activation(linear(y, w[pre + "mlp.fc1.weight"], w[pre + "mlp.fc1.bias"]), cfg["hidden_act"])
        x = x + linear(y, w[pre + "mlp.fc2.weight"], w[pre + "mlp.fc2.bias"])
        states.append(x)
    return states


# --- inputs ------------------------------------------------------------------------------------

def make_image(gen, b, h, w):
    """[b, 3, h, w] float32 in [-1, 1]: smooth colour gradients, saturated hard-edged blocks (bicubic
    overshoots there, so the clamp matters) and noise."""
    yy = torch.linspace(-1.0, 1.0, h, dtype=torch.float64)[:, None]
    xx = torch.linspace(-1.0, 1.0, w, dtype=torch.float64)[None, :]
    out = torch.empty(b, 3, h, w, dtype=torch.float64)
    for i in range(b):
        for ch in range(3):
            f = 1.0 + i + 0.7 * ch
            img = 0.6 * torch.sin(math.pi * f * xx + 0.3 * ch) * torch.cos(math.pi * (f - 0.5) * yy)
            blocks = ((torch.arange(h)[:, None] // 9 + torch.arange(w)[None, :] // 11 + i + ch) % 3 == 0)
            img = torch.where(blocks, torch.full_like(img, 1.0 if (i + ch) % 2 == 0 else -1.0), img)
            out[i, ch] = img + 0.05 * torch.randn(h, w, generator=gen, dtype=torch.float64)
    return out.clamp(-1.0, 1.0).float()


# --- main --------------------------------------------------------------------------------------

def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden", "clip_vision")
    gen = torch.Generator().manual_seed(SEED)
    weights32 = make_weights(CONFIG, gen)
    w = {k: t.double() for k, t in weights32.items()}
    images = {name: make_image(gen, b, h, wd) for name, (b, h, wd) in IMAGES.items()}

    outputs = {}
    quick = dict(CONFIG, hidden_act="quick_gelu")
    for name, img in images.items():
        pixel_values = preprocess(img, PROCESSOR)
        outputs[name + ".pixel_values"] = pixel_values.float()
        # The model sees the float32 pixel values the C++ preprocessing test compares against.
        states = clip_vision_forward(CONFIG, w, pixel_values.float().double())
        outputs[name + ".penultimate"] = states[-2].float()  # Wan: hidden_states[-2]
        if name == "landscape":
            for i, s in enumerate(states):
                outputs["%s.hidden_states.%d" % (name, i)] = s.float()
            quick_states = clip_vision_forward(quick, w, pixel_values.float().double())
            outputs[name + ".penultimate.quick_gelu"] = quick_states[-2].float()
        print("%s: %s -> pixel_values %s -> penultimate %s (|x| max %.3f)" % (
            name, list(img.shape), list(pixel_values.shape), list(states[-2].shape),
            states[-2].abs().max().item()))

    model_dir = os.path.join(out_dir, "image_encoder")
    proc_dir = os.path.join(out_dir, "image_processor")
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(proc_dir, exist_ok=True)
    save_safetensors(os.path.join(model_dir, "model.safetensors"), weights32, {"format": "pt"})
    save_safetensors(os.path.join(out_dir, "inputs.safetensors"), images)
    save_safetensors(os.path.join(out_dir, "outputs.safetensors"), outputs)
    for path, doc in ((os.path.join(model_dir, "config.json"), CONFIG),
                      (os.path.join(proc_dir, "preprocessor_config.json"), PROCESSOR)):
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
