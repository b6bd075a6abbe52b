"""Face quality components, measured from what the pipeline already has for each face: the box and five
landmarks in source pixels, the aligned chip, the detector's score and the embedder's raw output.

Numpy and OpenCV only, no model: a pure function a test calls on synthetic faces with known answers.
How they combine into one `quality` (and why those weights) is `jobs.models.quality_model`.

- `inter_eye_px`: distance between the eye landmarks in source pixels (ISO/IEC 29794-5 reads face size
  this way). A small face has little detail however sharp the photo.
- `yaw_deg`, `pitch_deg`, `roll_deg`: head pose from the five landmarks against the pack's frontal
  template, under weak perspective with an average face's depth (the nose tip about half the inter-eye
  distance in front of the eyes and mouth). Roll is the eye line's angle; yaw the nose tip's sideways
  shift from the eyes-mouth midline; pitch its shift along the face.
- `sharpness`: variance of the Laplacian of the chip's central region, grey levels squared.
- `brightness`, `contrast`: mean and standard deviation of that region's grey levels, 0-1.
- `det_score`: the detector's confidence.
- `embedding_norm`: length of the embedder's output before it is made unit length (a model-specific
  utility measure; what it means depends on the model, which is why the unified score is fitted per model).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

# Rekognition's vocabulary for why a face is not indexed.
EXTREME_POSE = "EXTREME_POSE"
LOW_BRIGHTNESS = "LOW_BRIGHTNESS"
LOW_SHARPNESS = "LOW_SHARPNESS"
LOW_CONFIDENCE = "LOW_CONFIDENCE"
SMALL_BOUNDING_BOX = "SMALL_BOUNDING_BOX"
LOW_FACE_QUALITY = "LOW_FACE_QUALITY"

# The nose tip's depth in front of the eyes' and mouth's plane, as a share of the inter-eye distance
# (anthropometric averages: ~30 mm before the eyes at ~63 mm between the pupils).
NOSE_DEPTH_PER_EYE_DISTANCE = 0.5
# The central share of the chip that sharpness and exposure read: the face, without the background.
CENTRAL_SHARE = 0.6


@dataclass(frozen=True)
class QualityComponents:
    inter_eye_px: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    sharpness: float
    brightness: float
    contrast: float
    det_score: float
    embedding_norm: float | None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def head_pose(landmarks: np.ndarray, template: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from five landmarks (left eye, right eye, nose tip, left and right
    mouth corners, as the image shows them) against a frontal template in the same order.

    Positive yaw: the nose points to the image's right; positive pitch: the nose tip lower on the face
    than the template's (head bowed); positive roll: the eye line turns clockwise in the image.

    >>> template = np.array([[45.9, 44.7], [102.5, 44.9], [73.7, 78.0], [49.8, 103.3], [98.0, 103.9]])
    >>> [round(v, 1) for v in head_pose(template, template)]
    [0.0, 0.0, 0.0]
    """
    points, reference = np.asarray(landmarks, np.float64), np.asarray(template, np.float64)
    roll = _eye_angle(points) - _eye_angle(reference)
    yaw_shift, pitch_shift, eye_distance, mouth_drop = _frontal_frame(points)
    ref_yaw, ref_pitch, ref_eyes, ref_mouth = _frontal_frame(reference)
    depth = NOSE_DEPTH_PER_EYE_DISTANCE * max(eye_distance, 1e-6)
    # Weak perspective. A turn (yaw) by angle a moves the nose tip sideways by depth * sin(a) while the
    # eye distance shrinks by cos(a): offset / (observed eye distance * depth share) = tan(a). A nod
    # (pitch) by b moves it along the face by true depth * sin(b), against where the template puts it.
    yaw = math.degrees(math.atan2(yaw_shift - ref_yaw * eye_distance / max(ref_eyes, 1e-6), depth))
    true_depth = depth / max(math.cos(math.radians(yaw)), 1e-6)
    pitch_offset = pitch_shift - ref_pitch / max(ref_mouth, 1e-6) * mouth_drop
    pitch = math.degrees(math.asin(float(np.clip(pitch_offset / true_depth, -1.0, 1.0))))
    return yaw, pitch, _wrap(roll)


def _eye_angle(points: np.ndarray) -> float:
    dx, dy = points[1] - points[0]
    return math.degrees(math.atan2(dy, dx))


def _frontal_frame(points: np.ndarray) -> tuple[float, float, float, float]:
    """In the frame of the eye line: the nose tip's sideways offset from the eyes-mouth midline, its
    drop below the eyes, the eye distance, and the mouth's drop below the eyes."""
    eyes_mid = (points[0] + points[1]) / 2
    axis = points[1] - points[0]
    eye_distance = float(np.hypot(*axis))
    across = axis / max(eye_distance, 1e-9)
    down = np.array([-across[1], across[0]])
    mouth_mid = (points[3] + points[4]) / 2
    nose = points[2] - eyes_mid
    mouth = mouth_mid - eyes_mid
    mouth_drop = float(mouth @ down)
    midline = float(mouth @ across) * float(nose @ down) / max(mouth_drop, 1e-9)
    return float(nose @ across) - midline, float(nose @ down), eye_distance, mouth_drop


def _wrap(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


def chip_exposure_and_sharpness(chip: np.ndarray) -> tuple[float, float, float]:
    """(sharpness, brightness, contrast) of an aligned RGB uint8 chip's central region."""
    size = chip.shape[0]
    margin = int(round(size * (1 - CENTRAL_SHARE) / 2))
    central = chip[margin : size - margin, margin : size - margin]
    grey = cv2.cvtColor(np.ascontiguousarray(central), cv2.COLOR_RGB2GRAY)
    laplacian = cv2.Laplacian(grey, cv2.CV_32F)
    mean, std = cv2.meanStdDev(grey)
    return float(laplacian.var()), float(mean[0, 0]) / 255.0, float(std[0, 0]) / 255.0


def components(
    landmarks: np.ndarray,
    template: np.ndarray,
    chip: np.ndarray,
    det_score: float,
    embedding_norm: float | None,
) -> QualityComponents:
    """Every component of one face."""
    yaw, pitch, roll = head_pose(landmarks, template)
    sharpness, brightness, contrast = chip_exposure_and_sharpness(chip)
    return QualityComponents(
        inter_eye_px=float(np.hypot(*(np.asarray(landmarks[1], float) - np.asarray(landmarks[0], float)))),
        yaw_deg=yaw,
        pitch_deg=pitch,
        roll_deg=roll,
        sharpness=sharpness,
        brightness=brightness,
        contrast=contrast,
        det_score=float(det_score),
        embedding_norm=embedding_norm,
    )
