"""The INT8 pack: the default pack's embedder statically quantized by onnxruntime, its detector unchanged.

Static quantization needs each activation's range. Those were measured once on face chips (deepface-pairs
and their mirror images, not an evaluation set) and are committed in `jobs/resources/int8-ranges.json`
with the sha256 of the embedder they belong to, so `lineup setup` builds the same INT8 network on any
machine without images. `bench/bench_quantized.py` measures it against the default pack (LFW View 2
accuracy, per-race FMR on utkface-dev, faces per CPU-second) and rewrites the ranges with
`--recalibrate`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from jobs.common.paths import models_dir
from jobs.models.build import write_if_changed
from jobs.models.pack import PACK_FILE, Pack, PackError

log = logging.getLogger(__name__)

INT8_PACK_NAME = "default-int8"
RANGES_RESOURCE = "int8-ranges.json"
# QOperator (QLinearConv) rather than QDQ: onnxruntime's CPU kernels run it directly; per-channel int8
# weights keep dlib's narrow filters apart; uint8 activations are what its x86 kernels are fastest with.
# Weights in 7 bits (`reduce_range`): x86 CPUs without VNNI (AVX2 only) multiply uint8 by int8 with an
# instruction that saturates 16-bit sums, so full 8-bit weights gave different embeddings there than on a
# VNNI CPU from the same pack (200 LFW images on an AVX2-only EPYC: mean cosine to the default pack 0.9958,
# min 0.946; with 7-bit weights 0.9989, min 0.990). One pack must embed alike on every host.
SETTINGS = {
    "quant_format": "QOperator",
    "per_channel": True,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "reduce_range": True,
}


def int8_pack_dir() -> Path:
    return models_dir() / INT8_PACK_NAME


def _quantize(
    embedder: Path, out: Path, ranges_cache: Path | None, chips: Iterable[np.ndarray] | None, name: str
) -> None:
    """onnxruntime's shape inference and static quantization of `embedder` into `out`, with activation
    ranges read from (or, given `chips`, measured into) the onnxruntime calibration cache `ranges_cache`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Chips(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(chips or ())

        def get_next(self) -> dict | None:
            chip = next(self.remaining, None)
            return None if chip is None else {name: chip}

    prepared = out.with_suffix(".prepared.onnx")
    quant_pre_process(str(embedder), str(prepared))
    quantize_static(
        str(prepared),
        str(out),
        Chips() if chips is not None else None,
        quant_format=QuantFormat[SETTINGS["quant_format"]],
        per_channel=SETTINGS["per_channel"],
        activation_type=QuantType[SETTINGS["activation_type"]],
        weight_type=QuantType[SETTINGS["weight_type"]],
        reduce_range=SETTINGS["reduce_range"],
        calibration_cache_path=str(ranges_cache) if ranges_cache else None,
    )


def measure_ranges(default: Pack, chips: list[np.ndarray], source: str) -> dict[str, Any]:
    """Activation ranges of the default embedder over `chips` (its NCHW input tensors): the content of
    the ranges resource, tied to that embedder by its sha256."""
    with tempfile.TemporaryDirectory(prefix="lineup-int8-") as work:
        cache = Path(work) / "ranges.json"
        _quantize(default.file_path("embedder"), Path(work) / "out.onnx", cache, chips, default.embedder["input_name"])
        return {
            "embedder_sha256": default.embedder["sha256"],
            "calibration": f"MinMax over {len(chips)} chips: {source}",
            "settings": SETTINGS,
            "onnxruntime_cache": json.loads(cache.read_text()),
        }


def shipped_ranges() -> dict[str, Any]:
    return json.loads(resources.files("jobs.resources").joinpath(RANGES_RESOURCE).read_text(encoding="utf-8"))


def build_int8_pack(default: Pack, pack_dir: Path | None = None, ranges: dict[str, Any] | None = None) -> Pack:
    """The INT8 copy of `default` in `pack_dir` (default: next to the default pack). Idempotent."""
    ranges = ranges or shipped_ranges()
    embedder_sha = default.embedder["sha256"]  # checked against the file when the pack was loaded
    if ranges["embedder_sha256"] != embedder_sha or ranges["settings"] != SETTINGS:
        raise PackError(
            f"the INT8 activation ranges were measured for embedder {ranges['embedder_sha256'][:12]}, not this "
            f"pack's {embedder_sha[:12]} ({default.path}): rerun `python -m bench.bench_quantized --recalibrate`"
        )
    with tempfile.TemporaryDirectory(prefix="lineup-int8-") as work:
        cache, out = Path(work) / "ranges.json", Path(work) / "embedder.int8.onnx"
        cache.write_text(json.dumps(ranges["onnxruntime_cache"]))
        _quantize(default.file_path("embedder"), out, cache, None, default.embedder["input_name"])
        files = {"detector": default.file_path("detector").read_bytes(), "embedder": out.read_bytes()}
    manifest = json.loads((default.path / PACK_FILE).read_text())
    manifest = {key: value for key, value in manifest.items() if key not in ("model_id", "format")}
    manifest["name"] += "-int8"
    manifest["provenance"]["quantization"] = {
        "tool": "onnxruntime quantize_static",
        **SETTINGS,
        "ranges": ranges["calibration"],
        "from_model_id": default.model_id,
    }
    pack = write_if_changed(pack_dir or int8_pack_dir(), manifest, files)
    log.info("INT8 pack %s in %s", pack.model_id, pack.path)
    return pack
