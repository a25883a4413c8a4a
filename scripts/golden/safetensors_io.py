"""A stdlib safetensors writer for the golden-value generators (the `safetensors` package is not
installed here): 8-byte little-endian header length, the JSON header padded to 8 bytes, raw data in
name order. Shared by wav2vec2_reference.py and clip_vision_reference.py."""

import json
import struct

import torch


def save_safetensors(path, tensors, metadata=None):
    kinds = {torch.float32: ("F32", "f"), torch.float64: ("F64", "d"), torch.int64: ("I64", "q")}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        dtype, fmt = kinds[t.dtype]
        flat = t.reshape(-1).tolist()
        blob = struct.pack("<%d%s" % (len(flat), fmt), *flat)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
