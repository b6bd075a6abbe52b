"""Bytes -> RGB image, or a status saying why not. Never raises on bad input.

The header is read first (Pillow parses it without decoding pixels), so a file claiming 30000x30000 is
refused before any memory is spent on it. Pixels are decoded by OpenCV, which applies EXIF orientation,
turns grey, 16-bit, CMYK and alpha images into 8-bit colour; Pillow decodes what OpenCV cannot (GIF).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

OK = "ok"
DECODE_ERROR = "decode_error"
UNSUPPORTED_FORMAT = "unsupported_format"
TOO_LARGE = "too_large"

SUPPORTED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF", "MPO"}


@dataclass
class DecodedImage:
    """An RGB uint8 image (H x W x 3) with status `ok`, or `rgb=None` and a status with its reason."""

    status: str
    error: str | None = None
    rgb: np.ndarray | None = None
    image_format: str | None = None
    width: int | None = None
    height: int | None = None


def decode_image(data: bytes, max_pixels: int = 50_000_000) -> DecodedImage:
    """Decode one image file's bytes; `max_pixels` bounds width x height, checked from the header."""
    if not data:
        return DecodedImage(DECODE_ERROR, "empty file")
    header = _read_header(data)
    if isinstance(header, DecodedImage):
        return header
    image_format, width, height = header
    if image_format not in SUPPORTED_FORMATS:
        return DecodedImage(UNSUPPORTED_FORMAT, f"{image_format} images are not supported", None, image_format)
    if width * height > max_pixels:
        return DecodedImage(
            TOO_LARGE,
            f"{width}x{height} exceeds the {max_pixels}-pixel limit (raise embed.max_pixels)",
            None,
            image_format,
            width,
            height,
        )
    if image_format == "JPEG" and b"\xff\xd9" not in data[-65536:]:
        return DecodedImage(DECODE_ERROR, "truncated JPEG (no end-of-image marker)", None, image_format, width, height)
    rgb = _decode_pixels(data)
    if rgb is None:
        return DecodedImage(
            DECODE_ERROR, f"could not decode the {image_format} data", None, image_format, width, height
        )
    return DecodedImage(OK, None, rgb, image_format, rgb.shape[1], rgb.shape[0])


def _read_header(data: bytes) -> tuple[str, int, int] | DecodedImage:
    # Pillow's own decompression-bomb guard would override `max_pixels` either way; the limit that
    # applies is ours, checked right after this header read and before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return str(image.format), int(image.width), int(image.height)
    except UnidentifiedImageError:
        return DecodedImage(UNSUPPORTED_FORMAT, "not a recognised image format")
    except Exception as error:  # noqa: BLE001 - a broken header must become a status row, whatever Pillow raised
        return DecodedImage(DECODE_ERROR, f"unreadable header: {type(error).__name__}: {error}")


def _decode_pixels(data: bytes) -> np.ndarray | None:
    import cv2

    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is not None and bgr.size:
        return np.ascontiguousarray(bgr[:, :, ::-1])
    return _decode_with_pillow(data)


def _decode_with_pillow(data: bytes) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)  # first frame of an animation
            upright = ImageOps.exif_transpose(image)
            if upright.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(upright, dtype=np.uint32) >> 8
                grey = np.clip(array, 0, 255).astype(np.uint8)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.ascontiguousarray(np.asarray(upright.convert("RGB"), dtype=np.uint8))
    except Exception as error:  # noqa: BLE001 - any decoder failure is a status, not a crash
        log.debug("Pillow could not decode: %s", error)
        return None
