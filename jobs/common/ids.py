"""Stable ids: the same image content, face index and model give the same face_id on every run."""

from __future__ import annotations

import hashlib

STATUS_ROW_INDEX = -1  # face_index of the one row an image without a usable face gets


def image_id_of(data: bytes) -> str:
    """The image's content sha256 (hex): two copies of one file are one image."""
    return hashlib.sha256(data).hexdigest()


def face_id_of(image_key: str, model_id: str, face_index: int) -> int:
    """A positive int64 from sha256(image key, model, face index): the FAISS id and the join key.

    `image_key` is the image_id, or for a file that could not even be read, its source path.

    >>> face_id_of("ab" * 32, "m-1", 0) == face_id_of("ab" * 32, "m-1", 0)
    True
    """
    digest = hashlib.sha256(f"{image_key}|{model_id}|{face_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF
