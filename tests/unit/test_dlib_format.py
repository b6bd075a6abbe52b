import math
import struct

import numpy as np
import pytest

from jobs.models.dlib_format import DlibFormatError, DlibReader


def packed(value: int) -> bytes:
    """dlib's packed integer, written independently of the reader under test."""
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little") if magnitude else b""
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


@pytest.mark.parametrize("value", [0, 1, 2, 255, 256, 65535, -1, -300, 2**40, -(2**62)])
def test_packed_integers(value: int) -> None:
    assert DlibReader(packed(value)).read_int() == value


def test_float_is_mantissa_times_two_to_exponent() -> None:
    reader = DlibReader(packed(3) + packed(-1) + packed(10737418) + packed(-28))
    assert reader.read_float() == 1.5
    assert reader.read_float() == pytest.approx(0.04, abs=1e-8)  # loss_metric_2 margin in dlib's model


def test_special_floats() -> None:
    reader = DlibReader(packed(0) + packed(32000) + packed(0) + packed(32001) + packed(0) + packed(32002))
    assert reader.read_float() == math.inf and reader.read_float() == -math.inf and math.isnan(reader.read_float())


def test_string_bool_tensor() -> None:
    values = np.arange(6, dtype="<f4")
    data = (
        packed(5)
        + b"con_4"
        + b"1"
        + b"0"
        + packed(2)
        + packed(1)
        + packed(2)
        + packed(3)
        + packed(1)
        + values.tobytes()
    )
    reader = DlibReader(data)
    assert reader.read_string() == "con_4"
    assert reader.read_bool() is True and reader.read_bool() is False
    tensor = reader.read_tensor()
    assert tensor.shape == (1, 2, 3, 1) and tensor.reshape(-1).tolist() == values.tolist()
    assert reader.offset == len(data)


def test_errors_name_the_offset() -> None:
    with pytest.raises(DlibFormatError, match="end of data"):
        DlibReader(packed(5) + b"ab").read_string()
    with pytest.raises(DlibFormatError, match="bool"):
        DlibReader(b"x").read_bool()
    with pytest.raises(DlibFormatError, match="tensor version"):
        DlibReader(packed(3)).read_tensor()
    with pytest.raises(DlibFormatError, match="control byte"):
        DlibReader(struct.pack("B", 0x30)).read_int()
