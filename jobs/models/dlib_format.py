"""Reader for dlib's binary serialization (the `.dat` files of dlib's DNN models).

dlib writes integers packed (a control byte holding the byte count and the sign, then little-endian
bytes), standalone floats as a packed int64 mantissa and int16 exponent, strings as a packed length and
raw bytes, bools as the characters '0'/'1', and tensors as a version, four packed dimensions and raw
little-endian float32 values. This module reads those primitives and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002


class DlibFormatError(ValueError):
    """The bytes do not follow dlib's serialization where the reader expected them to."""


@dataclass
class DlibReader:
    """A cursor over the bytes of one serialized dlib object."""

    data: bytes
    offset: int = 0

    def _take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise DlibFormatError(f"unexpected end of data at byte {self.offset} (wanted {count} more)")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def read_int(self) -> int:
        """A packed integer (signed or unsigned: the sign bit is 0 for unsigned values)."""
        control = self._take(1)[0]
        size, negative = control & 0x0F, bool(control & 0x80)
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte 0x{control:02x} at byte {self.offset - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if negative else value

    def read_float(self) -> float:
        """A standalone float/double, stored as mantissa * 2**exponent."""
        if self.offset < len(self.data) and self.data[self.offset] & 0x70:
            raise DlibFormatError(f"old ASCII float format at byte {self.offset} is not supported")
        mantissa, exponent = self.read_int(), self.read_int()
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent == _FLOAT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def read_string(self) -> str:
        length = self.read_int()
        if length < 0 or length > 1 << 20:
            raise DlibFormatError(f"implausible string length {length} at byte {self.offset}")
        return self._take(length).decode("latin-1")

    def read_bool(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {char!r} at byte {self.offset - 1}")
        return char == b"1"

    def read_tensor(self) -> np.ndarray:
        """A `resizable_tensor`: returns float32 of shape (num_samples, k, nr, nc)."""
        version = self.read_int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.offset} (expected 2)")
        shape = tuple(self.read_int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        """An `alias_tensor`: only a shape that views part of a layer's parameter tensor."""
        version = self.read_int()
        if version != 1:
            raise DlibFormatError(f"alias_tensor version {version} at byte {self.offset} (expected 1)")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]

    def expect_string(self, *allowed: str) -> str:
        at = self.offset
        value = self.read_string()
        if value not in allowed:
            raise DlibFormatError(f"found {value!r} at byte {at}, expected one of {allowed}")
        return value
