"""The Teams app's two icons, drawn here: a white microphone.

Teams wants a full-colour 192x192 icon and a 32x32 outline icon that is white on a transparent
background (Microsoft's app manifest reference; the schema cannot check either). The microphone
is described once in unit coordinates and rasterised with 4x4 supersampling, so both sizes come
from the same drawing and the edges are anti-aliased (white with partial alpha in the outline).
"""

from __future__ import annotations

import math

from devtools.teams_app.png import Image, Pixel

COLOR_SIZE = 192
OUTLINE_SIZE = 32
ACCENT_COLOR = "#0F6CBD"
WHITE = (255, 255, 255)
SUPERSAMPLING = 4


def _segment_distance(u: float, v: float, top: float, bottom: float) -> float:
    """Distance from (u, v) to the vertical segment x = 0.5, top <= y <= bottom."""
    nearest = min(max(v, top), bottom)
    return math.hypot(u - 0.5, v - nearest)


def microphone(u: float, v: float) -> bool:
    """Whether the unit-square point (u, v) (v downwards) is inside the microphone glyph."""
    head = _segment_distance(u, v, 0.28, 0.44) <= 0.13
    ring = abs(math.hypot(u - 0.5, v - 0.44) - 0.22) <= 0.035 and v >= 0.44
    stem = abs(u - 0.5) <= 0.035 and 0.64 <= v <= 0.80
    base = abs(u - 0.5) <= 0.15 and 0.78 <= v <= 0.84
    return head or ring or stem or base


def coverage(size: int, x: int, y: int, scale: float) -> float:
    """Share of pixel (x, y) covered by the glyph, drawn at ``scale`` around the centre."""
    inside = 0
    for i in range(SUPERSAMPLING):
        for j in range(SUPERSAMPLING):
            u = (x + (i + 0.5) / SUPERSAMPLING) / size
            v = (y + (j + 0.5) / SUPERSAMPLING) / size
            inside += microphone(0.5 + (u - 0.5) / scale, 0.5 + (v - 0.5) / scale)
    return inside / SUPERSAMPLING**2


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    value = color.removeprefix("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def color_icon(size: int = COLOR_SIZE, accent: str = ACCENT_COLOR) -> Image:
    """Opaque: the white microphone on the accent colour, with a margin around the glyph."""
    background = hex_to_rgb(accent)
    pixels: list[Pixel] = []
    for y in range(size):
        for x in range(size):
            share = coverage(size, x, y, scale=0.72)
            r, g, b = (
                round(fg * share + bg * (1 - share))
                for fg, bg in zip(WHITE, background, strict=True)
            )
            pixels.append((r, g, b, 255))
    return Image(size, size, tuple(pixels))


def outline_icon(size: int = OUTLINE_SIZE) -> Image:
    """White on transparent: every pixel is white, only its alpha varies."""
    pixels: list[Pixel] = []
    for y in range(size):
        for x in range(size):
            alpha = round(255 * coverage(size, x, y, scale=1.0))
            pixels.append((*WHITE, alpha) if alpha else (0, 0, 0, 0))
    return Image(size, size, tuple(pixels))
