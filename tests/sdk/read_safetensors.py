#!/usr/bin/python3
"""Independent safetensors reader/writer used by tests/sdk/test_safetensors.cpp.

Pure Python standard library (json + struct: no torch, so it starts in milliseconds), written from
the format description and sharing no code with sdk/src/safetensors.cpp, so the C++ reader and
writer are checked against a second implementation. BF16 and float8 are decoded by arithmetic.

  read_safetensors.py read FILE     prints a JSON summary of FILE: metadata, and for each tensor its
                                    dtype, shape and every value (ints as ints,
                                    floats as exact decimal doubles, non-finite as "nan"/"inf"/"-inf").
                                    Also asserts the layout rules of the reference writer
                                    (huggingface/safetensors `serialize`): header starts with '{',
                                    is padded with spaces to a multiple of 8, and the tensors tile the
                                    data buffer from 0 to its end without gaps.
  read_safetensors.py write FILE    writes a fixture the way the reference writer lays it out
                                    (`__metadata__` first, tensors ordered by dtype alignment then name)
                                    and prints the same JSON summary for it.
Exit status 0 on success; 2 with a message on stderr when the file breaks a rule.
"""
import json
import math
import random
import struct
import sys

# dtype -> (struct format of one element or None when decoded by hand, element size)
DTYPES = {
    "F64": ("d", 8),
    "F32": ("f", 4),
    "F16": ("e", 2),
    "BF16": (None, 2),
    "I64": ("q", 8),
    "I32": ("i", 4),
    "I16": ("h", 2),
    "I8": ("b", 1),
    "U8": ("B", 1),
    "BOOL": ("B", 1),
    "F8_E4M3": (None, 1),
    "F8_E5M2": (None, 1),
}


def fail(msg):
    sys.stderr.write("read_safetensors.py: " + msg + "\n")
    sys.exit(2)


def decode_f8(raw, exp_bits, man_bits, finite_only):
    """Decodes float8 bytes by arithmetic (no table shared with the C++ code)."""
    bias = (1 << (exp_bits - 1)) - 1
    out = []
    for b in raw:
        sign = -1.0 if b & 0x80 else 1.0
        e = (b >> man_bits) & ((1 << exp_bits) - 1)
        m = b & ((1 << man_bits) - 1)
        emax = (1 << exp_bits) - 1
        if finite_only and e == emax and m == (1 << man_bits) - 1:
            out.append(float("nan"))
        elif not finite_only and e == emax:
            out.append(sign * float("inf") if m == 0 else float("nan"))
        elif e == 0:
            out.append(sign * (m / (1 << man_bits)) * 2.0 ** (1 - bias))
        else:
            out.append(sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias))
    return out


def json_value(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def summarize(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail(f"{path}: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        fail(f"{path}: header length {n} past the end of the file")
    header_bytes = blob[8 : 8 + n]
    if not header_bytes.startswith(b"{"):
        fail(f"{path}: header does not start with '{{'")
    if n % 8 != 0:
        fail(f"{path}: header length {n} is not a multiple of 8")
    text = header_bytes.decode("utf-8")
    json_text = text.rstrip(" ")
    if not json_text.endswith("}") or len(text) - len(json_text) >= 8:
        fail(f"{path}: header is not the JSON object followed by fewer than 8 padding spaces")
    header = json.loads(text)
    buffer = blob[8 + n :]
    metadata = header.pop("__metadata__", {})
    spans = sorted((entry["data_offsets"][0], entry["data_offsets"][1], name) for name, entry in header.items())
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            fail(f"{path}: tensor {name} starts at {begin}, expected {pos} (gap or overlap)")
        pos = end
    if pos != len(buffer):
        fail(f"{path}: tensors end at {pos} but the data buffer has {len(buffer)} bytes")

    tensors = {}
    for name in sorted(header):
        entry = header[name]
        dtype, shape = entry["dtype"], entry["shape"]
        begin, end = entry["data_offsets"]
        fmt, size = DTYPES[dtype]
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * size:
            fail(f"{path}: tensor {name} spans {end - begin} bytes, expected {numel * size}")
        raw = buffer[begin:end]
        if dtype == "F8_E4M3":
            values = decode_f8(raw, 4, 3, True)
        elif dtype == "F8_E5M2":
            values = decode_f8(raw, 5, 2, False)
        elif dtype == "BF16":
            # bfloat16 is the top half of a float32
            halves = struct.unpack(f"<{numel}H", raw)
            values = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
        else:
            values = list(struct.unpack(f"<{numel}{fmt}", raw))
            if dtype == "BOOL" and any(v > 1 for v in values):
                fail(f"{path}: tensor {name} holds a BOOL byte other than 0 or 1")
        tensors[name] = {
            "dtype": dtype,
            "shape": shape,
            "values": [json_value(v) for v in values],
        }
    return {"metadata": metadata, "tensors": tensors}


def bf16_bytes(values):
    """Rounds float32 values to bfloat16 (round to nearest even) and packs them."""
    out = b""
    for v in values:
        (bits,) = struct.unpack("<I", struct.pack("<f", v))
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        out += struct.pack("<H", bits)
    return out


def write_fixture(path):
    """A small mixed-dtype file laid out like the reference writer (alignment-sorted, padded)."""
    rng = random.Random(1234)
    w = [rng.gauss(0, 1) for _ in range(24)]
    entries = [
        ("blocks.0.attn.to_q.weight", "BF16", [4, 6], bf16_bytes(w)),
        ("blocks.0.attn.to_q.bias", "BF16", [4], bf16_bytes([rng.gauss(0, 1) for _ in range(4)])),
        ("blocks.0.norm.weight", "F16", [6], struct.pack("<6e", *[1 + 0.1 * rng.gauss(0, 1) for _ in range(6)])),
        ("scale_shift_table", "F32", [1, 2, 6], struct.pack("<12f", *[rng.gauss(0, 1) for _ in range(12)])),
        ("pos_ids", "I64", [2, 4], struct.pack("<8q", *range(-3, 5))),
        ("counts", "I32", [3], struct.pack("<3i", -(2**31), 0, 2**31 - 1)),
        ("small", "I16", [2], struct.pack("<2h", -32768, 32767)),
        ("tiny", "I8", [3], struct.pack("<3b", -128, 0, 127)),
        ("mask", "BOOL", [3], bytes([1, 0, 1])),
        ("codes", "U8", [3], bytes([0, 7, 255])),
        ("f64", "F64", [2], struct.pack("<2d", 1.0 / 3.0, -2.5e-300)),
        ("empty", "F32", [0, 3], b""),
        ("fp8.e4m3", "F8_E4M3", [6], bytes([0x00, 0x38, 0x7E, 0xB8, 0x01, 0x7F])),
        ("fp8.e5m2", "F8_E5M2", [5], bytes([0x3C, 0x7B, 0x7C, 0xFC, 0x01])),
    ]
    entries.sort(key=lambda e: (-DTYPES[e[1]][1], e[0]))
    header = {"__metadata__": {"format": "pt", "producer": "read_safetensors.py", "note": "\u00e9t\u00e9 \u2713"}}
    offset = 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, data in entries:
            f.write(data)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("read", "write"):
        fail("usage: read_safetensors.py read|write FILE")
    if sys.argv[1] == "write":
        write_fixture(sys.argv[2])
    json.dump(summarize(sys.argv[2]), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
