#!/usr/bin/python3
"""Float64 reference for the Wan 2.2 S2V Wav2Vec2 audio encoder (tests/golden/wav2vec2).

Python `transformers` is not installable here, so this is an independent re-implementation of the
published architecture, written from transformers' models/wav2vec2/modeling_wav2vec2.py
(Wav2Vec2Model with feat_extract_norm="layer", do_stable_layer_norm=True), its
feature_extraction_wav2vec2.py (zero_mean_unit_var_norm) and Wan2.2's wan/modules/s2v/audio_encoder.py
(linear_interpolation, get_sample_indices, AudioEncoder.get_audio_embed_bucket_fps), sharing no code with
the C++ port (plugins/wan_s2v/core/wav2vec2*.cpp). Everything is computed in float64 from the
float32-stored weights and inputs, so a comparison measures only the C++ float32 arithmetic.

Run with Debian's interpreter (torch 1.13 + numpy; safetensors is written with json + struct):
    /usr/bin/python3 scripts/golden/wav2vec2_reference.py [OUT_DIR]     (default tests/golden/wav2vec2)
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from safetensors_io import save_safetensors

SEED = 20250924

# The tiny test config (= Wav2Vec2Config::tiny() in C++): hop 320 samples like the real model.
CONFIG = {
    "architectures": ["Wav2Vec2ForCTC"],
    "model_type": "wav2vec2",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_feat_extract_layers": 4,
    "conv_dim": [16, 16, 16, 16],
    "conv_kernel": [10, 4, 4, 4],
    "conv_stride": [5, 4, 4, 4],
    "conv_bias": True,
    "feat_extract_activation": "gelu",
    "num_conv_pos_embeddings": 8,
    "num_conv_pos_embedding_groups": 4,
    "vocab_size": 12,
    "activation_dropout": 0.05,
    "attention_dropout": 0.1,
    "hidden_dropout": 0.05,
    "feat_proj_dropout": 0.05,
    "layerdrop": 0.05,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
    "ctc_loss_reduction": "mean",
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# (waveform name, fps, video frames, out_frames): out_frames = 4 * T_latent = frames + 3.
ALIGN_CASES = [("wave_a", 16, 9, 12), ("wave_a", 25, 17, 20), ("wave_b", 16, 9, 12)]


# --- weights -----------------------------------------------------------------------------------

def make_weights(cfg, gen):
    """HF Wav2Vec2Model names -> float32 tensors; O(1)-effective so every branch matters."""
    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    w = {}
    dims = cfg["conv_dim"]
    for i, (c, k) in enumerate(zip(dims, cfg["conv_kernel"])):
        cin = 1 if i == 0 else dims[i - 1]
        p = "feature_extractor.conv_layers.%d." % i
        w[p + "conv.weight"] = randn(c, cin, k) / math.sqrt(cin * k)
        w[p + "conv.bias"] = 0.1 * randn(c)
        w[p + "layer_norm.weight"] = 1 + 0.1 * randn(c)
        w[p + "layer_norm.bias"] = 0.1 * randn(c)
    d, ff, kpos, groups = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_conv_pos_embeddings"], \
        cfg["num_conv_pos_embedding_groups"]
    w["feature_projection.layer_norm.weight"] = 1 + 0.1 * randn(dims[-1])
    w["feature_projection.layer_norm.bias"] = 0.1 * randn(dims[-1])
    w["feature_projection.projection.weight"] = randn(d, dims[-1]) / math.sqrt(dims[-1])
    w["feature_projection.projection.bias"] = 0.1 * randn(d)
    w["masked_spec_embed"] = torch.rand(d, generator=gen, dtype=torch.float64)
    w["encoder.pos_conv_embed.conv.weight_g"] = math.sqrt(d / kpos) * (1 + 0.1 * randn(1, 1, kpos))
    w["encoder.pos_conv_embed.conv.weight_v"] = randn(d, d // groups, kpos)
    w["encoder.pos_conv_embed.conv.bias"] = 0.1 * randn(d)
    w["encoder.layer_norm.weight"] = 1 + 0.1 * randn(d)
    w["encoder.layer_norm.bias"] = 0.1 * randn(d)
    for i in range(cfg["num_hidden_layers"]):
        p = "encoder.layers.%d." % i
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[p + "attention.%s.weight" % proj] = randn(d, d) / math.sqrt(d)
            w[p + "attention.%s.bias" % proj] = 0.1 * randn(d)
        for ln in ("layer_norm", "final_layer_norm"):
            w[p + ln + ".weight"] = 1 + 0.1 * randn(d)
            w[p + ln + ".bias"] = 0.1 * randn(d)
        w[p + "feed_forward.intermediate_dense.weight"] = randn(ff, d) / math.sqrt(d)
        w[p + "feed_forward.intermediate_dense.bias"] = 0.1 * randn(ff)
        w[p + "feed_forward.output_dense.weight"] = randn(d, ff) / math.sqrt(ff)
        w[p + "feed_forward.output_dense.bias"] = 0.1 * randn(d)
    return {k: v.float() for k, v in w.items()}


# --- forward (float64) -------------------------------------------------------------------------

def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as nn.LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu(x):  # transformers ACT2FN["gelu"] = exact erf GELU
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def linear(x, w, b):
    return x @ w.t() + b


def wav2vec2_forward(cfg, w, wave):
    """wave [B, N] float64 (normalised) -> list of num_hidden_layers + 1 states [B, T, hidden]."""
    eps = cfg["layer_norm_eps"]
    h = wave[:, None]
    for i, s in enumerate(cfg["conv_stride"]):
        p = "feature_extractor.conv_layers.%d." % i
        h = F.conv1d(h, w[p + "conv.weight"], w[p + "conv.bias"], stride=s)
        # Wav2Vec2LayerNormConvLayer: nn.LayerNorm(out_conv_dim) has the default eps 1e-5.
        h = layer_norm(h.transpose(1, 2), w[p + "layer_norm.weight"], w[p + "layer_norm.bias"], 1e-5)
        h = gelu(h).transpose(1, 2)
    h = h.transpose(1, 2)  # [B, T, C]
    h = layer_norm(h, w["feature_projection.layer_norm.weight"], w["feature_projection.layer_norm.bias"], eps)
    h = linear(h, w["feature_projection.projection.weight"], w["feature_projection.projection.bias"])

    # Wav2Vec2PositionalConvEmbedding: weight_norm(dim=2) -> norm over dims 0, 1 per kernel tap.
    g, v = w["encoder.pos_conv_embed.conv.weight_g"], w["encoder.pos_conv_embed.conv.weight_v"]
    kernel = cfg["num_conv_pos_embeddings"]
    weight = g * v / torch.sqrt((v ** 2).sum(dim=(0, 1), keepdim=True))
    pos = F.conv1d(h.transpose(1, 2), weight, w["encoder.pos_conv_embed.conv.bias"], padding=kernel // 2,
                   groups=cfg["num_conv_pos_embedding_groups"])
    if kernel % 2 == 0:  # Wav2Vec2SamePadLayer
        pos = pos[:, :, :-1]
    h = h + gelu(pos).transpose(1, 2)

    states = []
    b, t, d = h.shape
    heads = cfg["num_attention_heads"]
    hd = d // heads
    for i in range(cfg["num_hidden_layers"]):
        states.append(h)
        p = "encoder.layers.%d." % i
        x = layer_norm(h, w[p + "layer_norm.weight"], w[p + "layer_norm.bias"], eps)
        q = linear(x, w[p + "attention.q_proj.weight"], w[p + "attention.q_proj.bias"]) * hd ** -0.5
        k = linear(x, w[p + "attention.k_proj.weight"], w[p + "attention.k_proj.bias"])
        vv = linear(x, w[p + "attention.v_proj.weight"], w[p + "attention.v_proj.bias"])
        split = lambda y: y.view(b, t, heads, hd).transpose(1, 2)
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2), dim=-1) @ split(vv)
        att = linear(att.transpose(1, 2).reshape(b, t, d), w[p + "attention.out_proj.weight"],
                     w[p + "attention.out_proj.bias"])
        h = h + att
        x = layer_norm(h, w[p + "final_layer_norm.weight"], w[p + "final_layer_norm.bias"], eps)
        x = gelu(linear(x, w[p + "feed_forward.intermediate_dense.weight"],
                        w[p + "feed_forward.intermediate_dense.bias"]))
        h = h + linear(x, w[p + "feed_forward.output_dense.weight"], w[p + "feed_forward.output_dense.bias"])
    states.append(layer_norm(h, w["encoder.layer_norm.weight"], w["encoder.layer_norm.bias"], eps))
    return states


def normalize(x):
    """zero_mean_unit_var_norm: (x - mean) / sqrt(var + 1e-7), numpy var = population variance."""
    a = x.numpy()
    return torch.from_numpy((a - a.mean()) / np.sqrt(a.var() + 1e-7))


# --- upstream alignment (Wan2.2 wan/modules/s2v/audio_encoder.py, literally) --------------------

def linear_interpolation(features, input_fps, output_fps, output_len=None):
    features = features.transpose(1, 2)
    seq_len = features.shape[2] / float(input_fps)
    if output_len is None:
        output_len = int(seq_len * output_fps)
    output_features = F.interpolate(features, size=output_len, align_corners=True, mode="linear")
    return output_features.transpose(1, 2)


def get_sample_indices(original_fps, total_frames, target_fps, num_sample, fixed_start=None):
    required_duration = num_sample / target_fps
    assert fixed_start is not None and fixed_start >= 0
    start_time = fixed_start / original_fps
    end_time = start_time + required_duration
    time_points = np.linspace(start_time, end_time, num_sample, endpoint=False)
    frame_indices = np.round(np.array(time_points) * original_fps).astype(int)
    return np.clip(frame_indices, 0, total_frames - 1)


def get_audio_embed_bucket_fps(audio_embed, fps, batch_frames, m=0, video_rate=30):
    num_layers, audio_frame_num, audio_dim = audio_embed.shape
    scale = video_rate / fps
    min_batch_num = int(audio_frame_num / (batch_frames * scale)) + 1
    bucket_num = min_batch_num * batch_frames
    padd_audio_num = math.ceil(min_batch_num * batch_frames / fps * video_rate) - audio_frame_num
    batch_idx = get_sample_indices(original_fps=video_rate, total_frames=audio_frame_num + padd_audio_num,
                                   target_fps=fps, num_sample=bucket_num, fixed_start=0)
    out = []
    stride = int(video_rate / fps)
    for bi in batch_idx:
        if bi < audio_frame_num:
            chosen = [min(max(c, 0), audio_frame_num - 1) for c in range(bi - m * stride, bi + (m + 1) * stride, stride)]
            out.append(audio_embed[:, chosen].flatten(start_dim=-2, end_dim=-1))
        else:
            out.append(torch.zeros([num_layers, audio_dim * (2 * m + 1)], dtype=audio_embed.dtype))
    return torch.stack(out), min_batch_num  # [bucket_num, L, C]


def features_at_video_rate(states, fps, frames, out_frames):
    """states: list of [1, T, C] -> [L, C, out_frames] (frames >= `frames` repeat frame frames-1: ours)."""
    feat = torch.cat(states)  # AudioEncoder.extract_audio_feat(return_all_layers=True): [L, T, C]
    feat = linear_interpolation(feat, input_fps=50, output_fps=30)
    bucket, _ = get_audio_embed_bucket_fps(feat, fps=fps, batch_frames=frames, m=0)
    video = bucket[:frames].permute(1, 2, 0)  # [L, C, frames]
    pad = video[:, :, -1:].expand(-1, -1, out_frames - frames)
    return torch.cat([video, pad], dim=2)


# --- main --------------------------------------------------------------------------------------

def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden", "wav2vec2")
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)
    weights32 = make_weights(CONFIG, gen)
    w = {k: v.double() for k, v in weights32.items()}

    # Raw waveforms at 16 kHz: sines + noise with an offset and scale, so normalisation matters.
    def wave(n, f0):
        t = torch.arange(n, dtype=torch.float64) / 16000.0
        x = 0.3 * torch.sin(2 * math.pi * f0 * t) + 0.2 * torch.sin(2 * math.pi * 3.7 * f0 * t + 0.5)
        return (0.05 + x + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)).float()

    waves = {"wave_a": wave(10000, 220.0), "wave_b": wave(6000, 310.0)}

    outputs = {}
    states_of = {}
    for name, raw in waves.items():
        norm = normalize(raw.double())
        outputs[name + ".normalized"] = norm.float()
        states = wav2vec2_forward(CONFIG, w, norm[None])
        states_of[name] = states
        for i, s in enumerate(states):
            outputs["%s.hidden_states.%d" % (name, i)] = s[0].float()
    for name, fps, frames, out_frames in ALIGN_CASES:
        outputs["%s.video_rate.fps%d" % (name, fps)] = features_at_video_rate(states_of[name], fps, frames,
                                                                               out_frames).float()

    # The ForCTC layout (what the S2V repo ships): prefix + a small lm_head.
    ctc = {"wav2vec2." + k: v for k, v in weights32.items()}
    ctc["lm_head.weight"] = (torch.randn(CONFIG["vocab_size"], CONFIG["hidden_size"], generator=gen,
                                         dtype=torch.float64) / math.sqrt(CONFIG["hidden_size"])).float()
    ctc["lm_head.bias"] = (0.1 * torch.randn(CONFIG["vocab_size"], generator=gen, dtype=torch.float64)).float()
    model_dir = os.path.join(out_dir, "audio_encoder")
    os.makedirs(model_dir, exist_ok=True)
    save_safetensors(os.path.join(model_dir, "model.safetensors"), ctc, {"format": "pt"})
    save_safetensors(os.path.join(out_dir, "inputs.safetensors"), waves)
    case = {"align_cases": [{"wave": n, "fps": f, "frames": fr, "out_frames": o} for n, f, fr, o in ALIGN_CASES]}
    save_safetensors(os.path.join(out_dir, "outputs.safetensors"), outputs, {"case": json.dumps(case)})
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    for name, states in states_of.items():
        print("%s: %d samples -> T=%d, 30 Hz length %d" % (name, waves[name].numel(), states[0].shape[1],
                                                          int(states[0].shape[1] / 50.0 * 30)))


if __name__ == "__main__":
    main()
