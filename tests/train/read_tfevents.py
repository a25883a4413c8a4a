#!/usr/bin/env python3
"""Independent reader of TensorBoard event files (tests of st's writer; no TensorFlow needed).

Checks the TFRecord framing (u64 length, masked CRC-32C of the length, data, masked CRC-32C of the
data) with a bitwise CRC-32C written here, decodes each record as a tensorflow.Event protobuf with a
generic wire-format decoder, and prints one JSON object per event:
{"wall_time", "step", "file_version"?, "session_status"?, "scalars": {tag: value}, "images": [...]}.
Exits 1 with a message on any framing, CRC or protobuf error.
"""
import json
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def fields(buf):
    """Yields (field number, wire type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("field runs past the end")
        yield field, wire, value


def decode_event(data):
    event = {"wall_time": None, "step": 0, "scalars": {}, "images": []}
    for field, wire, value in fields(data):
        if field == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2 and wire == 0:
            event["step"] = value
        elif field == 3 and wire == 2:
            event["file_version"] = value.decode()
        elif field == 7 and wire == 2:
            for f, _, v in fields(value):
                if f == 1:
                    event["session_status"] = v
        elif field == 5 and wire == 2:
            for f, _, value_msg in fields(value):
                if f != 1:
                    raise ValueError(f"unexpected Summary field {f}")
                tag, scalar, image = None, None, None
                for vf, vw, vv in fields(value_msg):
                    if vf == 1:
                        tag = vv.decode()
                    elif vf == 2 and vw == 5:
                        scalar = struct.unpack("<f", vv)[0]
                    elif vf == 4:
                        image = {}
                        for imf, _, imv in fields(vv):
                            name = {1: "height", 2: "width", 3: "colorspace"}.get(imf)
                            if name:
                                image[name] = imv
                            elif imf == 4:
                                image["png_bytes"] = len(imv)
                                image["png_signature"] = imv[:8] == b"\x89PNG\r\n\x1a\n"
                if scalar is not None:
                    event["scalars"][tag] = scalar
                if image is not None:
                    image["tag"] = tag
                    event["images"].append(image)
        else:
            raise ValueError(f"unexpected Event field {field} (wire type {wire})")
    return event


def main(path):
    data = open(path, "rb").read()
    pos, events = 0, []
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"record header cut at byte {pos}")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if length_crc != masked(header):
            raise ValueError(f"length CRC mismatch at byte {pos}")
        body = data[pos + 12:pos + 12 + length]
        if len(body) != length or pos + 16 + length > len(data):
            raise ValueError(f"record at byte {pos} is cut")
        (data_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if data_crc != masked(body):
            raise ValueError(f"data CRC mismatch at byte {pos}")
        events.append(decode_event(body))
        pos += 16 + length
    print(json.dumps(events))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except (ValueError, OSError, UnicodeDecodeError) as e:
        print(f"read_tfevents: {sys.argv[1]}: {e}", file=sys.stderr)
        sys.exit(1)
