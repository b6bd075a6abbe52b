"""What benchmarks and derivation scripts share: data location, pinned source files, sessions."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Path(os.environ.get("LINEUP_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()
    if not (root / "lfw").is_dir():
        raise SystemExit(f"evaluation data not found at {root}: set LINEUP_DATA_DIR")
    return root


def default_pack_sources() -> dict[str, Path]:
    from jobs.models.sources import SOURCES, source_path

    return {name: source_path(name) for name in SOURCES}


def yunet_session(threads: int = 1):
    import onnxruntime as ort

    from jobs.models.onnx_edit import make_spatial_dims_dynamic
    from jobs.models.sources import source_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = make_spatial_dims_dynamic(source_path("yunet").read_bytes())
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session, [output.name for output in session.get_outputs()]
