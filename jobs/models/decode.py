"""Bytes -> RGB image, or a status saying why not. Never raises on bad input.

The header is read first (Pillow parses it without decoding pixels), so a file claiming 30000x30000 is
refused before any memory is spent on it. JPEGs are decoded by libjpeg-turbo through simplejpeg, which
reports a scan that stops before the image is complete; the EXIF orientation is applied after. Other
formats, and the JPEGs libjpeg-turbo only decodes with another complaint, are decoded by OpenCV, which
applies EXIF orientation, turns grey, 16-bit, CMYK and alpha images into 8-bit colour; Pillow decodes
what OpenCV cannot (GIF, AVIF with Pillow's own libavif, HEIC/HEIF with the optional pillow-heif), EXIF
orientation applied. Both decoders give the same pixels for a JPEG (checked on 3,000 of the evaluation
photos and every orientation).

A JPEG's end is found by walking its segments to the end-of-image marker, so data appended after it (an
Android motion photo's video, maker data) is left out and the photo decodes exactly as the JPEG alone.
A JPEG whose stream stops before that marker is refused; so is one whose scan stops early and is closed
by an end-of-image marker anyway (a cut-short file "repaired" by appending one, or cut short where the
bytes that follow happen to hold one): the walk cannot tell those from a whole image, the decoder can.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

OK = "ok"
DECODE_ERROR = "decode_error"
UNSUPPORTED_FORMAT = "unsupported_format"
TOO_LARGE = "too_large"

SUPPORTED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF", "MPO", "AVIF", "HEIF"}
JPEG_FORMATS = {"JPEG", "MPO"}  # MPO: a JPEG followed by more pictures (some cameras' stereo or depth shots)
# How a HEIC/HEIF file starts (the `ftyp` box's brands), to name it when pillow-heif is not installed.
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
HEIF_MISSING = (
    "HEIC/HEIF images need the optional pillow-heif package: pip install 'lineup[heif]' (its binary wheels "
    "are GPLv2, as they bundle the x265 encoder)"
)


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
    image_format, width, height, orientation = header
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
    if image_format in JPEG_FORMATS:
        end = jpeg_end(data)
        if end is None:
            return DecodedImage(
                DECODE_ERROR, "truncated JPEG (its stream stops before the end-of-image marker)", None,
                image_format, width, height,
            )  # fmt: skip
        data = data[:end]  # what follows the image (a motion photo's video) is not part of it
        jpeg = _decode_jpeg(data, orientation)
        if isinstance(jpeg, str):
            return DecodedImage(DECODE_ERROR, f"truncated JPEG ({jpeg})", None, image_format, width, height)
        rgb = jpeg if jpeg is not None else _decode_pixels(data)
    else:
        rgb = _decode_pixels(data)
    if rgb is None:
        return DecodedImage(
            DECODE_ERROR, f"could not decode the {image_format} data", None, image_format, width, height
        )
    return DecodedImage(OK, None, rgb, image_format, rgb.shape[1], rgb.shape[0])


def _read_header(data: bytes) -> tuple[str, int, int, int] | DecodedImage:
    """(format, width, height, EXIF orientation 1-8), or the status saying why the header is unreadable."""
    # Pillow's own decompression-bomb guard would override `max_pixels` either way; the limit that
    # applies is ours, checked right after this header read and before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = None
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS and not _heif_registered():
        return DecodedImage(UNSUPPORTED_FORMAT, HEIF_MISSING, None, "HEIF")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                orientation = image.getexif().get(ORIENTATION_TAG, 1) if image.format in JPEG_FORMATS else 1
                return str(image.format), int(image.width), int(image.height), int(orientation)
    except UnidentifiedImageError:
        return DecodedImage(UNSUPPORTED_FORMAT, "not a recognised image format")
    except Exception as error:  # noqa: BLE001 - a broken header must become a status row, whatever Pillow raised
        return DecodedImage(DECODE_ERROR, f"unreadable header: {type(error).__name__}: {error}")


_HEIF: list[bool] = []  # whether pillow-heif's opener is registered with Pillow (decided once per process)


def _heif_registered() -> bool:
    if not _HEIF:
        try:
            from pillow_heif import register_heif_opener  # optional: `lineup[heif]`
        except ImportError:
            _HEIF.append(False)
        else:
            register_heif_opener(thumbnails=False)  # the primary image, never an embedded thumbnail
            _HEIF.append(True)
    return _HEIF[0]


# In a JPEG's entropy-coded data, 0xFF is followed by 0x00 (a stuffed byte), a restart marker (0xD0-0xD7)
# or fill (0xFF): anything else is the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# The markers a JPEG stream holds between its start and end: frames (SOF0-15 but JPG, DHT, DAC), tables
# (DQT, DRI, DNL), scans (SOS), application and comment segments. Anything else is not a JPEG any more:
# the stream stopped (cut short) and what follows is other data.
_SEGMENT_MARKERS = frozenset(range(0xC0, 0xC8)) | frozenset(range(0xC9, 0xD0)) | {0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}
_SEGMENT_MARKERS |= frozenset(range(0xE0, 0xF0)) | {0xFE}


def jpeg_end(data: bytes) -> int | None:
    r"""The offset just past a JPEG stream's end-of-image marker (segments walked by their lengths, scans
    to the next marker), or None when the stream stops before it (what follows is then not a JPEG's).

    >>> body = b"\xff\xd8" + b"\xff\xe0\x00\x04ab" + b"\xff\xda\x00\x02" + b"\x12\xff\x00\x34"
    >>> jpeg_end(body + b"\xff\xd9" + b"trailer: a motion photo's video"), jpeg_end(body)
    (18, None)
    >>> jpeg_end(body + b"\xff\x12 a stream cut short, then other data \xff\xd9")
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while True:
        if at >= len(data) or data[at] != 0xFF:
            return None
        while at < len(data) and data[at] == 0xFF:  # fill bytes before a marker
            at += 1
        if at >= len(data):
            return None
        marker, at = data[at], at + 1
        if marker == 0xD9:
            return at
        if 0xD0 <= marker <= 0xD7:  # a restart marker: no length
            continue
        if marker not in _SEGMENT_MARKERS or at + 2 > len(data):
            return None
        length = int.from_bytes(data[at : at + 2], "big")
        if length < 2 or at + length > len(data):
            return None
        at += length
        if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            found = _NEXT_MARKER.search(data, at)
            if found is None:
                return None
            at = found.start()


ORIENTATION_TAG = 0x0112
# libjpeg's warnings when a scan ends before every block of the image is decoded (the rest is filled in
# grey): JWRN_HIT_MARKER and JWRN_JPEG_EOF.
_SCAN_STOPPED = ("premature end of data segment", "premature end of jpeg file")


def _decode_jpeg(data: bytes, orientation: int) -> np.ndarray | str | None:
    """RGB pixels, upright; a reason (str) when the scan stops before the image is complete; None when
    libjpeg-turbo complains of something else (extraneous bytes, say), for OpenCV to decode as before."""
    try:
        # strict: the first recoverable fault raises, so a scan cut short is not quietly filled in
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as error:
        if any(warning in str(error).lower() for warning in _SCAN_STOPPED):
            return "its scan data stops before the image is complete"
        log.debug("libjpeg-turbo: %s; decoding with OpenCV", error)
        return None
    return np.ascontiguousarray(upright(rgb, orientation))


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The image as a viewer shows it, given its EXIF orientation (1-8; anything else is left as is).

    >>> stored = np.arange(6).reshape(2, 3)
    >>> upright(stored, 6).tolist()  # stored sideways: turned 90 degrees clockwise
    [[3, 0], [4, 1], [5, 2]]
    >>> upright(stored, 8).tolist(), upright(stored, 2).tolist()
    ([[2, 5], [1, 4], [0, 3]], [[2, 1, 0], [5, 4, 3]])
    """
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


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
