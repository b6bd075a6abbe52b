"""The converted ResNet against dlib itself (dlib-bin, test-only): same chips, same descriptors."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from jobs.models.sources import source_path

TOLERANCE = 1e-4


def dlib_chips(shared_data: Path | None) -> np.ndarray:
    chips = list(np.random.default_rng(7).integers(0, 256, (3, 150, 150, 3), dtype=np.uint8))
    if shared_data is not None:
        import cv2
        import dlib

        detector = dlib.get_frontal_face_detector()
        predictor = dlib.shape_predictor(str(source_path("shape_predictor_5", fetch=False)))
        for name in ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "AJ_Cook/AJ_Cook_0001.jpg", "Zico/Zico_0001.jpg"]:
            rgb = cv2.imread(str(shared_data / "lfw" / "images" / name))[:, :, ::-1].copy()
            shape = predictor(rgb, detector(rgb, 1)[0])
            chips.append(np.asarray(dlib.get_face_chip(rgb, shape, size=150, padding=0.25)))
    return np.stack(chips)


def test_onnx_descriptor_matches_dlib(default_pack, request: pytest.FixtureRequest) -> None:
    dlib = pytest.importorskip("dlib", reason="dlib-bin is a test dependency: pip install -e '.[test]'")
    try:
        shared_data = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        shared_data = None  # random chips still exercise every layer
    chips = dlib_chips(shared_data)
    recogniser = dlib.face_recognition_model_v1(str(source_path("dlib_resnet", fetch=False)))
    expected = np.stack([np.asarray(recogniser.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips])

    embedder = default_pack.embedder
    session = ort.InferenceSession(str(default_pack.file_path("embedder")), providers=["CPUExecutionProvider"])
    tensor = ((chips.astype(np.float32) - np.float32(embedder["mean"])) / np.float32(embedder["std"])).transpose(
        0, 3, 1, 2
    )
    actual = session.run(None, {embedder["input_name"]: np.ascontiguousarray(tensor)})[0]
    assert actual.shape == expected.shape == (len(chips), 128)
    assert np.abs(actual - expected).max() <= TOLERANCE
