"""Hand-drawn digits for the browser tests: each digit is the pen strokes a person makes, as
curves (arcs, loops, bends) sampled densely, placed at its own position and size on the 280x280
canvas. Shapes are written from how the digits are commonly drawn, not from any model's output."""

from __future__ import annotations

import math

Stroke = list[tuple[float, float]]

__all__ = ["DIGITS", "PLACES", "strokes_on_canvas"]


def _arc(cx: float, cy: float, rx: float, ry: float, start_deg: float, end_deg: float, n: int = 24) -> Stroke:
    """Points on an ellipse from `start_deg` to `end_deg` (0 = right, 90 = down: canvas y grows down)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in (start_deg + (end_deg - start_deg) * i / (n - 1) for i in range(n))]


def _line(x0: float, y0: float, x1: float, y1: float, n: int = 10) -> Stroke:
    return [(x0 + (x1 - x0) * i / (n - 1), y0 + (y1 - y0) * i / (n - 1)) for i in range(n)]


def _eight() -> Stroke:
    # One pen movement: down the right of the top loop, across the waist, round the bottom loop,
    # back up across the waist and round the top again; the top loop narrower, as most people draw.
    pts = []
    for i in range(61):
        t = 2 * math.pi * i / 60
        y = 0.5 - 0.46 * math.cos(t)
        width = 0.26 if math.cos(t) > 0 else 0.34  # upper half narrower
        pts.append((0.5 + width * math.sin(2 * t) * 0.9, y))
    return pts


# Unit-box strokes (x right, y down, both 0..1); several strokes where a person lifts the pen.
DIGITS: dict[str, list[Stroke]] = {
    "0": [_arc(0.5, 0.5, 0.32, 0.46, -100, 275, 40)],  # one loop from the top, closing a little over
    "1": [_line(0.42, 0.16, 0.58, 0.03, 4)[:-1] + _line(0.58, 0.03, 0.5, 0.97, 14)],  # small flag, then down
    "2": [_arc(0.5, 0.3, 0.3, 0.25, 200, 370, 18) + _line(0.79, 0.36, 0.18, 0.95, 12)
          + _line(0.18, 0.95, 0.86, 0.93, 8)],
    "3": [_arc(0.47, 0.27, 0.3, 0.23, 210, 450, 20) + _arc(0.47, 0.72, 0.33, 0.24, 270, 510, 20)[1:]],
    "4": [_line(0.6, 0.03, 0.14, 0.63, 10) + _line(0.14, 0.63, 0.9, 0.6, 10),  # down-left, then across
          _line(0.66, 0.28, 0.63, 0.98, 12)],  # the upright, a second stroke
    "5": [_line(0.3, 0.05, 0.26, 0.45, 6) + _arc(0.48, 0.67, 0.32, 0.27, 235, 480, 22),  # neck and belly
          _line(0.3, 0.05, 0.82, 0.04, 8)],  # the top bar, added after
    "6": [_arc(0.8, 0.55, 0.55, 0.52, 255, 175, 14) + _arc(0.52, 0.7, 0.28, 0.26, 180, -170, 28)],
    "7": [_line(0.12, 0.08, 0.88, 0.06, 8) + _line(0.88, 0.06, 0.42, 0.97, 14),
          _line(0.42, 0.5, 0.82, 0.5, 6)],  # the bar across the middle
    "8": [_eight()],
    "9": [_arc(0.5, 0.3, 0.27, 0.25, 0, -360, 30) + _line(0.77, 0.3, 0.7, 0.97, 12)],  # loop, then the tail
}

# Where each digit goes on the canvas: (left, top, height) in canvas pixels; width is 0.7 x height.
# Different places and sizes, none centred.
PLACES: dict[str, tuple[float, float, float]] = {
    "0": (40, 30, 170), "1": (150, 60, 190), "2": (70, 90, 150), "3": (30, 20, 200), "4": (110, 50, 170),
    "5": (60, 100, 160), "6": (120, 40, 180), "7": (20, 70, 190), "8": (90, 15, 210), "9": (130, 95, 150),
}


def strokes_on_canvas(digit: str) -> list[Stroke]:
    """The digit's strokes in canvas pixels (relative to the canvas' top-left corner)."""
    left, top, height = PLACES[digit]
    width = 0.7 * height
    return [[(left + x * width, top + y * height) for x, y in stroke] for stroke in DIGITS[digit]]
