"""PNG files of 8-bit RGBA pixels, written and read with the standard library only.

The package needs two small icons and must check what it ships; Pillow is not among the project's
dependencies, and PNG's RGBA subset is a few lines of ``zlib`` and ``struct``. The reader accepts
what this writer produces and any other non-interlaced 8-bit RGBA or RGB PNG (all five filter
types), which is what the checks of a package built elsewhere need.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPE_RGB = 2
COLOR_TYPE_RGBA = 6

Pixel = tuple[int, int, int, int]


class PngError(ValueError):
    """The bytes are not a PNG this module can read; the message says what is wrong."""


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    pixels: tuple[Pixel, ...]  # row by row, (r, g, b, a)

    def pixel(self, x: int, y: int) -> Pixel:
        return self.pixels[y * self.width + x]


def _chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def encode(image: Image) -> bytes:
    """The PNG of an RGBA image (filter type 0 on every row; zlib does the compression)."""
    if len(image.pixels) != image.width * image.height:
        raise ValueError("pixel count does not match width x height")
    rows = bytearray()
    for y in range(image.height):
        rows.append(0)
        for r, g, b, a in image.pixels[y * image.width : (y + 1) * image.width]:
            rows.extend((r, g, b, a))
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, COLOR_TYPE_RGBA, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _chunk(b"IEND", b"")
    )


def _paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
    return (left, up, up_left)[distances.index(min(distances))]


def _unfilter(data: bytes, width: int, height: int, channels: int) -> bytes:
    stride = width * channels
    out = bytearray()
    previous = bytes(stride)
    offset = 0
    for _ in range(height):
        if offset + 1 + stride > len(data):
            raise PngError("image data is shorter than its header says")
        kind = data[offset]
        row = bytearray(data[offset + 1 : offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = row[i - channels] if i >= channels else 0
            up = previous[i]
            up_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                row[i] = (row[i] + _paeth(left, up, up_left)) & 0xFF
            elif kind != 0:
                raise PngError(f"unknown row filter type {kind}")
        out.extend(row)
        previous = bytes(row)
    return bytes(out)


def decode(data: bytes) -> Image:
    """The pixels of an 8-bit RGB or RGBA, non-interlaced PNG (RGB gets alpha 255)."""
    if not data.startswith(SIGNATURE):
        raise PngError("not a PNG file (signature missing)")
    offset = len(SIGNATURE)
    header: tuple[int, ...] | None = None
    compressed = bytearray()
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (checksum,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != checksum:
            raise PngError(f"chunk {kind!r} has a bad checksum")
        offset += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.extend(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise PngError("no IHDR chunk")
    width, height, depth, color_type, _, _, interlace = header
    if depth != 8 or color_type not in (COLOR_TYPE_RGB, COLOR_TYPE_RGBA) or interlace:
        raise PngError(
            f"only 8-bit, non-interlaced RGB/RGBA is read here (bit depth {depth}, "
            f"color type {color_type}, interlace {interlace})"
        )
    channels = 4 if color_type == COLOR_TYPE_RGBA else 3
    raw = _unfilter(zlib.decompress(bytes(compressed)), width, height, channels)
    pixels: list[Pixel] = []
    for i in range(0, len(raw), channels):
        r, g, b = raw[i], raw[i + 1], raw[i + 2]
        pixels.append((r, g, b, raw[i + 3] if channels == 4 else 255))
    return Image(width, height, tuple(pixels))
