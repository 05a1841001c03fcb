"""Request items -> model inputs for the REST server: numbers, feature maps, base64 images and
recordings, texts and interaction histories, each checked before anything is decoded (HTTP 4xx
naming what was expected)."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import torch
from fastapi import HTTPException

from ember.errors import EmberError

__all__ = ["PixelBudget", "parse_item"]


def _image_pixels(raw: bytes) -> int:
    """Width x height from the image header alone (nothing decoded); 413 for a bomb."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        raise HTTPException(413, "image dimensions over the decoder's limit; resize it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise HTTPException(400, "'image' is not a PNG or JPEG image") from None
    return width * height


class PixelBudget:
    """Pixels left to decode in one request; each image also has its own cap."""

    def __init__(self, per_image: int, per_request: int) -> None:
        self.per_image = per_image
        self.left = per_request

    def take(self, pixels: int) -> None:
        if pixels > self.per_image:
            raise HTTPException(413, f"image of {pixels} pixels; the limit is {self.per_image} per image")
        if pixels > self.left:
            raise HTTPException(413, "images in this request exceed its pixel budget; send fewer or smaller")
        self.left -= pixels


def _numbers(item: list[Any]) -> torch.Tensor:
    values = []
    for v in item:
        try:
            values.append(float(v))
        except OverflowError:
            raise HTTPException(400, f"value {str(v)[:20]}... is too large for a float") from None
    return torch.tensor(values, dtype=torch.float32)


def _base64_field(item: Any, key: str, formats: str) -> bytes:
    """`{key: "<base64>"}` (or the bare string) decoded, or HTTP 400 saying what was expected."""
    data = item.get(key) if isinstance(item, dict) else item
    if not isinstance(data, str):
        raise HTTPException(400, f"{key} models take {{'{key}': '<base64 {formats}>'}} items")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"'{key}' is not valid base64") from None


def parse_item(item: Any, loaded: Any, tokenizer: Any, budget: PixelBudget) -> torch.Tensor:
    """One request item -> a (1, ...) input tensor, or HTTP 4xx saying what was expected."""
    info = loaded.info
    kind = info.input_kind
    if kind == "interactions":
        from ember.recommend.topk import interaction_input

        try:
            return interaction_input(item, info)
        except EmberError as exc:
            raise HTTPException(400, str(exc)) from None
    if kind == "audio":  # {"audio": "<base64 WAV or FLAC>"}
        raw = _base64_field(item, "audio", "WAV or FLAC")
        from ember.data.audio import clip_input

        try:
            return clip_input(io.BytesIO(raw), info, name="upload")
        except EmberError as exc:
            raise HTTPException(400, str(exc)) from None
    if kind == "image":
        raw = _base64_field(item, "image", "PNG or JPEG")
        pixels = _image_pixels(raw)
        budget.take(pixels)
        from ember.data.images import read_image

        try:
            return read_image(io.BytesIO(raw), info, max_pixels=budget.per_image)[None]
        except EmberError as exc:
            raise HTTPException(400, str(exc)) from None
    if kind == "tokens":
        if not isinstance(item, str):
            raise HTTPException(400, "text models take strings")
        from ember.inputs import encode_text

        return encode_text(item, info, tokenizer)
    if isinstance(item, dict) and kind == "tabular":
        missing = [f for f in info.feature_names if f not in item]
        if missing:
            raise HTTPException(400, f"missing features {missing}; expected {list(info.feature_names)}")
        item = [item[f] for f in info.feature_names]
    if not isinstance(item, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item):
        raise HTTPException(400, f"{kind} models take lists of numbers")
    values = _numbers(item)
    if not torch.isfinite(values).all():
        raise HTTPException(400, "values must be finite numbers within float32 range")
    if kind == "tabular":
        if len(values) != info.input_shape[0]:
            raise HTTPException(400, f"expected {info.input_shape[0]} numbers ({', '.join(info.feature_names)}), got {len(values)}")
        mean, std = torch.tensor(info.mean), torch.tensor(info.std)
        scaled = ((values - mean) / std)[None] if len(info.mean) else values[None]
        if not torch.isfinite(scaled).all():  # finite but huge (3e38) overflows once standardised
            raise HTTPException(422, "inputs: values overflow once standardised; use numbers near the training range")
        return scaled
    window = int(info.input_shape[0])
    if len(values) < window:
        raise HTTPException(400, f"expected at least {window} values, got {len(values)}")
    from ember.inputs import series_window

    return series_window(values, info)
