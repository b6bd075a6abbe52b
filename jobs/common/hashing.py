"""Content hashes shared by everything that pins files (staged jars, model sources, packs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from upath import UPath


def sha256_file(path: Path | UPath, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large jars and models are not held in memory."""
    digest = hashlib.sha256()
    with (path if hasattr(path, "fs") else Path(path)).open("rb") as handle:  # a UPath streams from its store
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
