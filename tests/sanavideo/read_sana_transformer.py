#!/usr/bin/python3
"""Independent reader of a Sana Video transformer folder written by st (tests/sanavideo/
test_train_sanavideo.cpp): config.json + diffusion_pytorch_model.safetensors as diffusers'
SanaVideoTransformer3DModel.from_pretrained reads them. Standard library only; shares no code with st.

The expected state dict is derived here from the config alone, following diffusers
transformer_sana_video.py's module tree (patch_embedding, time_embed = AdaLayerNormSingle,
caption_projection = PixArtAlphaTextProjection, caption_norm = RMSNorm, transformer_blocks.N with
attn1 (bias-free q/k/v, rms qk-norm, to_out.0), attn2 (biased q/k/v), ff = GLUMBTempConv,
scale_shift_table [6, D]; the model's scale_shift_table [2, D] and proj_out).

  read_sana_transformer.py DIR   prints "OK <n> tensors" or exits 2 naming the first difference.
"""
import json
import struct
import sys


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(2)


def expected(cfg):
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    cross = cfg["cross_attention_dim"]
    hid = int(cfg["mlp_ratio"] * d)
    pt, ph, pw = cfg["patch_size"]
    cin = cfg["in_channels"]
    cout = cfg["out_channels"] or cin
    e = {
        "patch_embedding.weight": [d, cin, pt, ph, pw],
        "patch_embedding.bias": [d],
        "time_embed.emb.timestep_embedder.linear_1.weight": [d, 256],
        "time_embed.emb.timestep_embedder.linear_1.bias": [d],
        "time_embed.emb.timestep_embedder.linear_2.weight": [d, d],
        "time_embed.emb.timestep_embedder.linear_2.bias": [d],
        "time_embed.linear.weight": [6 * d, d],
        "time_embed.linear.bias": [6 * d],
        "caption_projection.linear_1.weight": [d, cfg["caption_channels"]],
        "caption_projection.linear_1.bias": [d],
        "caption_projection.linear_2.weight": [d, d],
        "caption_projection.linear_2.bias": [d],
        "caption_norm.weight": [d],
        "scale_shift_table": [2, d],
        "proj_out.weight": [pt * ph * pw * cout, d],
        "proj_out.bias": [pt * ph * pw * cout],
    }
    for i in range(cfg["num_layers"]):
        b = "transformer_blocks.%d." % i
        e[b + "scale_shift_table"] = [6, d]
        for n in ("to_q", "to_k", "to_v"):
            e[b + "attn1.%s.weight" % n] = [d, d]
            if cfg.get("attention_bias"):
                e[b + "attn1.%s.bias" % n] = [d]
        e[b + "attn1.norm_q.weight"] = [d]
        e[b + "attn1.norm_k.weight"] = [d]
        e[b + "attn1.to_out.0.weight"] = [d, d]
        e[b + "attn1.to_out.0.bias"] = [d]
        e[b + "attn2.to_q.weight"] = [d, d]
        e[b + "attn2.to_q.bias"] = [d]
        for n in ("to_k", "to_v"):
            e[b + "attn2.%s.weight" % n] = [d, cross]
            e[b + "attn2.%s.bias" % n] = [d]
        e[b + "attn2.norm_q.weight"] = [d]
        e[b + "attn2.norm_k.weight"] = [d]
        e[b + "attn2.to_out.0.weight"] = [d, d]
        e[b + "attn2.to_out.0.bias"] = [d]
        e[b + "ff.conv_inverted.weight"] = [2 * hid, d, 1, 1]
        e[b + "ff.conv_inverted.bias"] = [2 * hid]
        e[b + "ff.conv_depth.weight"] = [2 * hid, 1, 3, 3]
        e[b + "ff.conv_depth.bias"] = [2 * hid]
        e[b + "ff.conv_point.weight"] = [d, hid, 1, 1]
        e[b + "ff.conv_temp.weight"] = [d, d, 3, 1]
    return e


def main():
    if len(sys.argv) != 2:
        fail(__doc__)
    folder = sys.argv[1]
    cfg = json.load(open(folder + "/config.json"))
    if cfg.get("_class_name") != "SanaVideoTransformer3DModel":
        fail("config.json _class_name is %r" % cfg.get("_class_name"))
    for key, value in (("qk_norm", "rms_norm_across_heads"), ("guidance_embeds", False),
                       ("norm_elementwise_affine", False)):
        if cfg.get(key) != value:
            fail("config.json %s is %r, expected %r" % (key, cfg.get(key), value))
    with open(folder + "/diffusion_pytorch_model.safetensors", "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    want = expected(cfg)
    got = {k: v["shape"] for k, v in header.items()}
    for k in sorted(set(want) | set(got)):
        if k not in got:
            fail("missing tensor %s" % k)
        if k not in want:
            fail("unexpected tensor %s" % k)
        if got[k] != want[k]:
            fail("%s has shape %s, expected %s" % (k, got[k], want[k]))
    size = len(data) - 8 - n
    end = max(v["data_offsets"][1] for v in header.values())
    if end != size:
        fail("tensor data ends at %d but the buffer holds %d bytes" % (end, size))
    print("OK %d tensors" % len(got))


main()
