"""Hand-built TIFFs for the hostile-input tests: any tag with any type and value, which
tifffile's writer (rightly) refuses to produce. Classic little-endian TIFF, uncompressed
RGB uint8 in strips or tiles; tile or strip offsets of 0 make a sparse file."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SHORT, LONG, RATIONAL, DOUBLE = 3, 4, 5, 12
FORMATS = {SHORT: "H", LONG: "I", RATIONAL: "II", DOUBLE: "d"}


def write_tiff(
    path: Path,
    width: int,
    height: int,
    pixels: np.ndarray | None = None,
    tile: int | None = None,
    extra: dict[int, tuple[int, list]] | None = None,
    resolution: tuple[int, list] | None = (RATIONAL, [(40000, 1)]),
    unit: int | None = 3,
) -> Path:
    """An RGB TIFF of width x height. `pixels` (height, width, 3) uint8 are stored; without
    them every tile or strip is missing (offset and byte count 0). `resolution` is the
    (type, values) of both XResolution and YResolution, unless `extra` overrides one."""
    chunks: list[bytes] = []
    if tile:
        rows, cols = -(-height // tile), -(-width // tile)
        n = rows * cols
        if pixels is not None:
            padded = np.zeros((rows * tile, cols * tile, 3), np.uint8)
            padded[:height, :width] = pixels
            chunks = [padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile].tobytes() for r in range(rows) for c in range(cols)]
    else:
        n = 1
        if pixels is not None:
            chunks = [np.ascontiguousarray(pixels).tobytes()]
    tags: dict[int, tuple[int, list]] = {
        256: (LONG, [width]),
        257: (LONG, [height]),
        258: (SHORT, [8, 8, 8]),
        259: (SHORT, [1]),
        262: (SHORT, [2]),
        277: (SHORT, [3]),
        284: (SHORT, [1]),
    }
    if resolution is not None:
        tags[282] = tags[283] = resolution
    if unit is not None:
        tags[296] = (SHORT, [unit])
    if tile:
        tags[322] = tags[323] = (LONG, [tile])
    else:
        tags[278] = (LONG, [height])
    offsets_tag, counts_tag = (324, 325) if tile else (273, 279)
    tags[offsets_tag] = (LONG, [0] * n)
    tags[counts_tag] = (LONG, [len(c) for c in chunks] if chunks else [0] * n)
    tags.update(extra or {})

    entries = sorted(tags.items())
    ifd_size = 2 + 12 * len(entries) + 4
    data_start = 8 + ifd_size
    blobs, layout = bytearray(), []
    # Out-of-line values first, then the pixel data, whose offsets are then known.
    for code, (kind, values) in entries:
        packed = b"".join(struct.pack("<" + FORMATS[kind], *(v if isinstance(v, tuple) else (v,))) for v in values)
        layout.append((code, kind, len(values), packed))
    value_offsets = {}
    for code, kind, count, packed in layout:
        if len(packed) > 4:
            value_offsets[code] = data_start + len(blobs)
            blobs += packed + b"\0" * (len(packed) % 2)
    pixel_start = data_start + len(blobs)
    if chunks:
        offsets, pos = [], pixel_start
        for c in chunks:
            offsets.append(pos)
            pos += len(c)
        packed = struct.pack(f"<{n}I", *offsets)
        if offsets_tag in value_offsets:
            start = value_offsets[offsets_tag] - data_start
            blobs[start : start + len(packed)] = packed
        else:
            layout = [(c, k, cnt, packed if c == offsets_tag else p) for c, k, cnt, p in layout]
    out = bytearray(b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(layout)))
    for code, kind, count, packed in layout:
        field = struct.pack("<I", value_offsets[code]) if code in value_offsets else packed.ljust(4, b"\0")
        out += struct.pack("<HHI", code, kind, count) + field
    out += struct.pack("<I", 0) + blobs + b"".join(chunks)
    path.write_bytes(bytes(out))
    return path
