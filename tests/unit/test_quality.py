"""Quality components on synthetic faces with known answers, and on a real LFW face made worse in known
ways (blurred, darkened, turned): each component must move the way its definition says."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.models import quality_fit
from jobs.models.build import build_default_pack
from jobs.models.pipeline import FacePipeline
from jobs.models.quality import (
    EXTREME_POSE,
    LOW_BRIGHTNESS,
    LOW_SHARPNESS,
    SMALL_BOUNDING_BOX,
    QualityComponents,
    chip_exposure_and_sharpness,
    head_pose,
)
from jobs.models.quality_model import assess, floor_of, model_for, reasons, resolved_level

# The default pack's template (dlib's 150 px chip frame): left eye, right eye, nose tip, mouth corners.
TEMPLATE = np.array([[45.855, 44.66], [102.468, 44.903], [73.723, 77.956], [49.827, 103.323], [97.987, 103.929]])


def _face_3d() -> np.ndarray:
    """The template as a 3-D face: the nose tip half an eye distance in front of the eyes and mouth."""
    centred = TEMPLATE - (TEMPLATE[0] + TEMPLATE[1]) / 2
    depth = np.zeros(5)
    depth[2] = 0.5 * np.hypot(*(TEMPLATE[1] - TEMPLATE[0]))
    return np.c_[centred, depth]


def _turned(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, scale: float = 2.0) -> np.ndarray:
    """The 3-D face turned and seen in weak perspective, as landmarks in pixels."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    about_vertical = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    about_across = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    in_plane = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    points = _face_3d() @ (in_plane @ about_across @ about_vertical).T
    return points[:, :2] * scale + 300.0


@pytest.mark.parametrize("yaw", [-50, -20, 0, 15, 40])
def test_yaw_is_recovered(yaw: float) -> None:
    measured, pitch, roll = head_pose(_turned(yaw=yaw), TEMPLATE)
    assert measured == pytest.approx(yaw, abs=0.5)
    assert abs(pitch) < 1 and abs(roll) < 1


@pytest.mark.parametrize("pitch", [-25, -10, 10, 25])
def test_pitch_is_recovered(pitch: float) -> None:
    yaw, measured, roll = head_pose(_turned(pitch=pitch), TEMPLATE)
    assert measured == pytest.approx(pitch, abs=0.5)
    assert abs(yaw) < 1 and abs(roll) < 1


@pytest.mark.parametrize("roll", [-60, -15, 20, 90])
def test_roll_is_recovered_whatever_the_scale(roll: float) -> None:
    for scale in (0.3, 1.0, 4.0):
        yaw, pitch, measured = head_pose(_turned(roll=roll, scale=scale), TEMPLATE)
        assert measured == pytest.approx(roll, abs=0.5)
        assert abs(yaw) < 1 and abs(pitch) < 1


def test_a_more_turned_face_has_larger_yaw_also_when_it_nods() -> None:
    yaws = [abs(head_pose(_turned(yaw=v, pitch=12), TEMPLATE)[0]) for v in (0, 15, 30, 45, 60)]
    assert yaws == sorted(yaws) and yaws[-1] > 50


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(build_default_pack())


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> np.ndarray:
    """A frontal LFW face, RGB."""
    return cv2.imread(str(shared_data / "lfw" / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"))[
        :, :, ::-1
    ].copy()


@pytest.fixture(scope="module")
def chip(pipeline: FacePipeline, photo: np.ndarray) -> np.ndarray:
    return pipeline.cut_chip(photo, pipeline.detect(photo).landmarks[0])


def test_a_blurred_chip_is_less_sharp(chip: np.ndarray) -> None:
    sharpness = [chip_exposure_and_sharpness(cv2.GaussianBlur(chip, (0, 0), sigma))[0] for sigma in (0.5, 1, 2, 4)]
    original = chip_exposure_and_sharpness(chip)[0]
    assert original > sharpness[0] > sharpness[1] > sharpness[2] > sharpness[3]
    assert sharpness[-1] < original / 4


def test_a_darkened_chip_is_darker_and_flatter(chip: np.ndarray) -> None:
    _, brightness, contrast = chip_exposure_and_sharpness(chip)
    dark = (chip.astype(np.float32) * 0.3).astype(np.uint8)
    _, dark_brightness, dark_contrast = chip_exposure_and_sharpness(dark)
    assert dark_brightness == pytest.approx(brightness * 0.3, rel=0.05)
    assert dark_contrast < contrast * 0.4


def test_a_rotated_photo_has_larger_roll(pipeline: FacePipeline, photo: np.ndarray) -> None:
    """The photograph turned in its own plane: the roll moves the same way, by most of the turn (the
    detector's landmarks lag a turn it was not trained on; the exact geometry is tested above)."""
    canvas = cv2.copyMakeBorder(photo, 60, 60, 60, 60, cv2.BORDER_REPLICATE)
    centre = (canvas.shape[1] / 2, canvas.shape[0] / 2)
    rolls = {}
    for degrees in (-20, 0, 20, 35):
        # OpenCV's positive angle turns the picture counter-clockwise: the eye line then rises to the right
        turned = cv2.warpAffine(canvas, cv2.getRotationMatrix2D(centre, degrees, 1.0), canvas.shape[1::-1])
        face = pipeline.process_images([turned])[0].faces[0]
        assert face.components is not None
        rolls[degrees] = face.components.roll_deg
    assert rolls[-20] > rolls[0] + 10 > rolls[20] + 20 > rolls[35] + 25


def _components(**changes: float) -> QualityComponents:
    base = {
        "inter_eye_px": 30.0,
        "yaw_deg": 2.0,
        "pitch_deg": 1.0,
        "roll_deg": 0.0,
        "sharpness": 60.0,
        "brightness": 0.5,
        "contrast": 0.2,
        "det_score": 0.92,
        "embedding_norm": 1.45,
    }
    return QualityComponents(**(base | changes))


def test_reasons_name_each_component_beyond_its_limit() -> None:
    assert reasons(_components()) == ()
    assert reasons(_components(yaw_deg=-70.0)) == (EXTREME_POSE,)
    assert reasons(_components(brightness=0.02, sharpness=0.5)) == (LOW_BRIGHTNESS, LOW_SHARPNESS)
    assert SMALL_BOUNDING_BOX in reasons(_components(inter_eye_px=6.0))


@pytest.mark.parametrize("model_id", ["a-pack-nobody-fitted", *quality_fit.MODELS])
def test_unified_quality_never_rises_as_a_component_worsens(model_id: str) -> None:
    """Each weight is held to the direction its component's definition implies (a fit on LFW must not
    reward a more turned or darker face): worse components never raise the score."""
    good, _ = assess(_components(), model_id)
    worse_ones = (
        {"yaw_deg": 60.0},
        {"pitch_deg": -40.0},
        {"roll_deg": 50.0},
        {"sharpness": 1.0},
        {"brightness": 0.05},
        {"brightness": 0.95},
        {"contrast": 0.02},
        {"inter_eye_px": 8.0},
        {"det_score": 0.5},
    )
    for worse in worse_ones:
        assert assess(_components(**worse), model_id)[0] <= good, worse
    assert assess(_components(det_score=0.5, inter_eye_px=8.0), model_id)[0] < good
    assert 0.0 < good < 1.0


def test_levels_have_rising_floors_and_auto_is_one_of_them() -> None:
    floors = [floor_of(level) for level in ("LOW", "MEDIUM", "HIGH")]
    assert floor_of("NONE") is None
    assert floors == sorted(floors) and len(set(floors)) == 3
    assert resolved_level("AUTO") in ("LOW", "MEDIUM", "HIGH")
    assert floor_of("AUTO") == floor_of(resolved_level("AUTO"))  # type: ignore[arg-type]


def test_a_pack_without_a_fitted_model_gets_the_one_that_ignores_the_embedder() -> None:
    generic = model_for("a-pack-nobody-fitted")
    assert "embedding_norm" not in generic.features
    changed_norm = assess(_components(embedding_norm=9.0), "a-pack-nobody-fitted")[0]
    assert changed_norm == assess(_components(), "a-pack-nobody-fitted")[0]


def test_the_accuracy_first_pack_embeds_each_chip_with_its_mirror(chip: np.ndarray, tmp_path: Path) -> None:
    """`lineup setup`'s accurate pack: the same files as the default pack, and each embedding the unit mean
    of the chip's and its mirror image's (so its model_id differs and its faces never mix with the default's)."""
    plain = FacePipeline(build_default_pack())
    accurate_pack = build_default_pack(tmp_path / "default-flip", flip_average=True)  # as `lineup setup` does
    assert accurate_pack.model_id != plain.pack.model_id
    both = plain.embed_chips(np.stack([chip, np.ascontiguousarray(chip[:, ::-1])]))
    expected = both.sum(axis=0) / np.linalg.norm(both.sum(axis=0))
    assert np.allclose(FacePipeline(accurate_pack).embed_chips(chip[None])[0], expected, atol=1e-5)


def test_a_floor_that_discards_one_group_more_says_so_wherever_it_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.faces import quality_filter

    floor = quality_filter.quality_floor("HIGH")
    assert floor is not None
    note = "on utkface-dev it discards 9 of 400 race Asian faces (2.2%) against 1 of 400 race Others (0.2%)"
    monkeypatch.setitem(quality_filter.DISPARITY, "HIGH", note)
    assert floor.disparity == note and note in floor.describe()
    assert floor.as_dict()["quality_floor_disparity"] == note


def test_group_by_takes_intersections_as_lists() -> None:
    from jobs.audit.config import AuditSettings

    settings = AuditSettings.model_validate(
        {"labelled": {"faces_table": "/t"}, "group_by": [["race", "gender"], "race"]}
    )
    assert settings.group_by == ["race+gender", "race"]
