"""Image ids already embedded with a model: skipped before decoding, so reruns and copies cost a hash."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class KnownImages:
    """Image ids already embedded with this model: a sorted array of 64-bit prefixes (8 bytes each),
    small enough to broadcast for tens of millions of images."""

    def __init__(self, image_ids: Iterable[str]) -> None:
        self.prefixes = np.unique(np.array([int(i[:16], 16) for i in image_ids], dtype=np.uint64))

    def __contains__(self, image_id: str) -> bool:
        key = np.uint64(int(image_id[:16], 16))
        position = int(np.searchsorted(self.prefixes, key))
        return position < len(self.prefixes) and self.prefixes[position] == key

    def __len__(self) -> int:
        return len(self.prefixes)
