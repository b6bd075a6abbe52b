import numpy as np
import pytest

from jobs.models.decode import DECODE_ERROR, OK, TOO_LARGE, UNSUPPORTED_FORMAT, decode_image
from tests.fixtures.images import bad_input_corpus, png_claiming

CORPUS = bad_input_corpus()
EXPECTED = {
    "empty": DECODE_ERROR,
    "truncated_jpeg": DECODE_ERROR,
    "random_bytes": UNSUPPORTED_FORMAT,
    "one_pixel": OK,
    "greyscale_jpeg": OK,
    "rgba_png": OK,
    "png_16bit": OK,
    "cmyk_jpeg": OK,
    "exif_rotated_jpeg": OK,
    "claims_30000x30000": TOO_LARGE,
    "gif": OK,
    "webp": OK,
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_bad_input_gets_a_status(name: str) -> None:
    result = decode_image(CORPUS[name])
    assert result.status == EXPECTED[name], result.error
    if result.status == OK:
        assert result.rgb is not None and result.rgb.dtype == np.uint8 and result.rgb.ndim == 3
        assert result.rgb.shape[2] == 3
    else:
        assert result.rgb is None and result.error


def test_exif_rotation_is_applied() -> None:
    result = decode_image(CORPUS["exif_rotated_jpeg"])
    assert result.rgb.shape[:2] == (64, 48)  # stored 64 wide x 48 high, shown rotated


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    rgb = decode_image(CORPUS["png_16bit"]).rgb
    # stored as BGR (65535, 0, 32768) by OpenCV: red 32768 -> 128, blue 65535 -> 255
    assert abs(int(rgb[0, 0, 0]) - 128) <= 1 and rgb[0, 0, 1] == 0 and rgb[0, 0, 2] == 255


def test_cmyk_colours_survive() -> None:
    rgb = decode_image(CORPUS["cmyk_jpeg"]).rgb
    original = decode_image(CORPUS["webp"]).rgb
    assert np.abs(rgb.astype(int) - original.astype(int)).mean() < 20


def test_pixel_limit_is_configurable_and_checked_before_decoding() -> None:
    assert decode_image(png_claiming(300, 300), max_pixels=200 * 200).status == TOO_LARGE
    allowed = decode_image(png_claiming(3000, 3000), max_pixels=10**7)
    assert allowed.status == DECODE_ERROR  # passes the limit, then the missing pixel data is a decode error


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_shown_as_opencv_shows_it(orientation: int) -> None:
    import cv2
    from PIL import Image

    from tests.fixtures.images import pil_bytes

    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = np.random.default_rng(orientation).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = pil_bytes(Image.fromarray(stored), "JPEG", exif=exif.tobytes())
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]  # applies EXIF itself
    assert np.array_equal(decode_image(data).rgb, reference)


def test_a_jpeg_libjpeg_turbo_complains_of_is_still_decoded() -> None:
    """Bytes between the scan and the end marker: libjpeg-turbo warns (not a short scan), OpenCV decodes."""
    import cv2

    good = CORPUS["exif_rotated_jpeg"]
    padded = good[:-2] + b"\x12" * 16 + b"\xff\xd9"
    result = decode_image(padded)
    assert result.status == OK, result.error
    assert np.array_equal(result.rgb, cv2.imdecode(np.frombuffer(padded, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_a_scan_closed_early_by_an_end_marker_is_refused() -> None:
    good = CORPUS["exif_rotated_jpeg"]
    result = decode_image(good[: len(good) * 3 // 4] + b"\xff\xd9")
    assert result.status == DECODE_ERROR and "scan data stops" in (result.error or "")
