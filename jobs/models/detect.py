"""Face detectors with five landmarks, run by onnxruntime: YuNet (default pack) and SCRFD (InsightFace-style).

Both return, per image, boxes (x1, y1, x2, y2), a detection score and five landmarks in one order:
image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

STRIDES = (8, 16, 32)


@dataclass
class Detections:
    """Faces found in one image, best score first."""

    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2 in image pixels
    scores: np.ndarray  # (n,) float32
    landmarks: np.ndarray  # (n, 5, 2) float32

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)  # np.clip's wrapper costs more than the work
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def letterbox(image: np.ndarray, max_side: int, multiple: int = 32) -> tuple[np.ndarray, float]:
    """The detector's input: `image` (H x W x 3, any dtype) scaled down so its longer side is at most
    `max_side`, as a float32 NCHW tensor of one image padded with zeros at the bottom/right to a multiple
    of 32. Returns the tensor and the factor that maps its pixels back to the original (divide by it).

    The padding, the channel transpose and the float conversion are one copy into a zeroed tensor (three
    passes over the pixels before): the detector runs once per image and once more per face.
    """
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        image = cv2.resize(
            image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        )
    height, width = image.shape[:2]
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    tensor = np.zeros((1, 3, padded_h, padded_w), np.float32)
    tensor[0, :, :height, :width] = image.transpose(2, 0, 1)
    return tensor, scale


@functools.lru_cache(maxsize=64)
def _grid(rows: int, cols: int, anchors: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cell coordinates (x, y) of a feature map, repeated per anchor; cached since sizes repeat."""
    ys, xs = np.mgrid[0:rows, 0:cols]
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    if anchors > 1:
        xs, ys = np.repeat(xs, anchors), np.repeat(ys, anchors)
    return xs.astype(np.float32), ys.astype(np.float32)


def finish(
    boxes: np.ndarray,
    scores: np.ndarray,
    landmarks: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    scale: float,
) -> Detections:
    """Threshold, suppress overlaps and map back to original-image pixels."""
    keep = scores >= score_threshold
    boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]
    if not len(scores):
        return Detections.empty()
    kept = nms(boxes, scores, iou_threshold)
    return Detections(
        (boxes[kept] / scale).astype(np.float32),
        scores[kept].astype(np.float32),
        (landmarks[kept] / scale).astype(np.float32),
    )


@functools.lru_cache(maxsize=64)
def _yunet_cells(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell x, y and stride of every YuNet output row of an input size, strides 8, 16, 32 in order."""
    xs, ys, strides = [], [], []
    for stride in STRIDES:
        cell_xs, cell_ys = _grid(height // stride, width // stride)
        xs.append(cell_xs)
        ys.append(cell_ys)
        strides.append(np.full(len(cell_xs), stride, np.float32))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(strides)


def decode_yunet(
    outputs: dict[str, np.ndarray], height: int, width: int, min_score: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet (2023mar) outputs of one image -> boxes, scores, landmarks in input pixels (anchor-free).

    The three strides are joined first and only cells that can pass `min_score` are decoded: a few dozen
    numpy calls per image instead of a few dozen per stride (the detector runs twice per face).
    """

    def joined(name: str, columns: int) -> np.ndarray:
        return np.concatenate([outputs[f"{name}_{stride}"].reshape(-1, columns) for stride in STRIDES])

    xs, ys, strides = _yunet_cells(height, width)
    scores = np.sqrt(np.clip(joined("cls", 1)[:, 0], 0, 1) * np.clip(joined("obj", 1)[:, 0], 0, 1))
    keep = np.flatnonzero(scores >= min_score)  # decode only candidates that can pass the threshold
    xs, ys, strides, scores = xs[keep], ys[keep], strides[keep], scores[keep]
    bbox = joined("bbox", 4)[keep]
    kps = joined("kps", 10)[keep].reshape(-1, 5, 2)
    cx, cy = (xs + bbox[:, 0]) * strides, (ys + bbox[:, 1]) * strides
    w, h = np.exp(bbox[:, 2]) * strides, np.exp(bbox[:, 3]) * strides
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    marks = (kps + np.stack([xs, ys], axis=1)[:, None, :]) * strides[:, None, None]
    return boxes, scores, marks


def decode_scrfd(
    outputs: list[np.ndarray], height: int, width: int, anchors: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SCRFD (with keypoints) outputs of one image -> boxes, scores, landmarks in input pixels.

    Outputs come as scores for strides 8/16/32, then box distances, then keypoint offsets, all in units
    of the stride, relative to anchor centres at (col, row) * stride with `anchors` anchors per cell.
    """
    count = len(STRIDES)
    all_boxes, all_scores, all_marks = [], [], []
    for level, stride in enumerate(STRIDES):
        rows, cols = height // stride, width // stride
        xs, ys = _grid(rows, cols, anchors)
        centres = np.stack([xs, ys], axis=1) * stride
        scores = outputs[level].reshape(-1)
        distances = outputs[level + count].reshape(-1, 4) * stride
        kps = outputs[level + 2 * count].reshape(-1, 5, 2) * stride
        all_boxes.append(np.concatenate([centres - distances[:, :2], centres + distances[:, 2:]], axis=1))
        all_scores.append(scores)
        all_marks.append(kps + centres[:, None, :])
    return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_marks)
