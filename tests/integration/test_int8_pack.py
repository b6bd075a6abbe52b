"""The INT8 pack `lineup setup` builds from the default pack and the committed activation ranges: really
quantized, and embedding the same faces to nearly the same vectors (its accuracy and fairness are
measured by bench/bench_quantized.py); ranges measured for another embedder are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from jobs.models.pack import PackError
from jobs.models.pipeline import FacePipeline, PipelineSettings
from jobs.models.quantize import build_int8_pack, shipped_ranges


@pytest.mark.data
def test_the_int8_pack_embeds_like_the_default_pack(default_pack, shared_data: Path, tmp_path: Path) -> None:
    int8 = build_int8_pack(default_pack, tmp_path / "int8")
    assert int8.model_id != default_pack.model_id and int8.model_id.startswith(default_pack.manifest["name"])
    ops = {node.op_type for node in onnx.load(str(int8.file_path("embedder"))).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops
    assert int8.file_path("detector").read_bytes() == default_pack.file_path("detector").read_bytes()

    blobs = [path.read_bytes() for path in sorted((shared_data / "lfw" / "images").glob("*/*.jpg"))[:40]]
    settings = PipelineSettings(threads=1)
    fp32_results = FacePipeline(default_pack, settings).process_bytes(blobs)
    int8_results = FacePipeline(int8, settings).process_bytes(blobs)
    cosines = []
    for fp32, quantized in zip(fp32_results, int8_results, strict=True):
        assert [np.asarray(f.bbox).tolist() for f in fp32.faces] == [
            np.asarray(f.bbox).tolist() for f in quantized.faces
        ]
        cosines += [float(a.embedding @ b.embedding) for a, b in zip(fp32.faces, quantized.faces, strict=True)]
    assert len(cosines) >= 40
    assert min(cosines) > 0.98, f"INT8 embeddings drifted: min cosine {min(cosines):.4f}"
    assert np.mean(cosines) > 0.998


def test_ranges_of_another_embedder_are_refused(default_pack, tmp_path: Path) -> None:
    ranges = {**shipped_ranges(), "embedder_sha256": "0" * 64}
    with pytest.raises(PackError, match="bench.bench_quantized --recalibrate"):
        build_int8_pack(default_pack, tmp_path / "int8", ranges)
