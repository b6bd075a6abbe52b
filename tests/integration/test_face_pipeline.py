"""The default pack end to end: statuses for bad input, faces for good input, parity with dlib."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.models.pipeline import FacePipeline, PipelineSettings
from tests.fixtures.images import bad_input_corpus, jpeg

DECODED_WITHOUT_FACE = {"greyscale_jpeg", "rgba_png", "png_16bit", "cmyk_jpeg", "exif_rotated_jpeg", "gif", "webp"}


def test_bad_inputs_become_status_rows(face_pipeline) -> None:
    corpus = bad_input_corpus()
    names = sorted(corpus)
    results = face_pipeline.process_bytes([corpus[name] for name in names])
    statuses = {name: result.status for name, result in zip(names, results)}
    assert len(results) == len(names)
    assert statuses["empty"] == "decode_error" and statuses["truncated_jpeg"] == "decode_error"
    assert statuses["random_bytes"] == "unsupported_format"
    assert statuses["claims_30000x30000"] == "too_large"
    assert statuses["one_pixel"] == "too_small"
    for name in DECODED_WITHOUT_FACE:
        assert statuses[name] == "no_face", (name, statuses[name])
    assert all(result.error for result in results)


def lfw_image(shared_data: Path, name: str = "Aaron_Peirsol/Aaron_Peirsol_0001.jpg") -> bytes:
    return (shared_data / "lfw" / "images" / name).read_bytes()


@pytest.mark.data
def test_a_face_has_box_landmarks_quality_and_unit_embedding(face_pipeline, shared_data: Path) -> None:
    (result,) = face_pipeline.process_bytes([lfw_image(shared_data)])
    assert result.status == "ok" and len(result.faces) >= 1
    face = result.faces[0]
    x1, y1, x2, y2 = face.bbox
    assert 0 <= x1 < x2 <= 150 and 0 <= y1 < y2 <= 150
    assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))
    assert 0.5 < face.det_score <= 1 and 0 < face.quality <= 1
    assert face.embedding.shape == (128,) and abs(np.linalg.norm(face.embedding) - 1) < 1e-5


@pytest.mark.data
def test_face_below_minimum_size_is_too_small(default_pack, shared_data: Path) -> None:
    rgb = cv2.imdecode(np.frombuffer(lfw_image(shared_data), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    canvas = np.full((600, 600, 3), 40, np.uint8)
    canvas[225:375, 225:375] = rgb  # the face is about 60 px wide
    pipeline = FacePipeline(default_pack, PipelineSettings(min_face_px=120))
    (result,) = pipeline.process_bytes([jpeg(canvas)])
    assert result.status == "too_small" and "smaller than 120 px" in result.error


@pytest.mark.data
def test_several_faces_in_one_photo(face_pipeline, shared_data: Path) -> None:
    (result,) = face_pipeline.process_bytes([(shared_data / "deepface-pairs" / "couple.jpg").read_bytes()])
    assert result.status == "ok" and len(result.faces) >= 2
    assert [face.face_index for face in result.faces] == list(range(len(result.faces)))


@pytest.mark.data
def test_same_person_scores_above_different_people(face_pipeline, shared_data: Path) -> None:
    names = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", "AJ_Cook/AJ_Cook_0001.jpg"]
    faces = [r.faces[0].embedding for r in face_pipeline.process_bytes([lfw_image(shared_data, n) for n in names])]
    assert float(faces[0] @ faces[1]) > float(faces[0] @ faces[2]) + 0.03
