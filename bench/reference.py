"""dlib's own reference pipeline (dlib-bin, a test/benchmark-only dependency): HOG detector, 5-point
shape predictor, get_face_chip (size 150, padding 0.25) and the ResNet run by dlib itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DlibReference:
    def __init__(self, sources: dict[str, Path], upsample: int = 1) -> None:
        import dlib

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(sources["shape_predictor_5"]))
        self.recogniser = dlib.face_recognition_model_v1(str(sources["dlib_resnet"]))
        self.upsample = upsample

    def shape(self, rgb: np.ndarray):
        """The 5-point shape of the most central HOG detection, or None when HOG finds nothing."""
        faces = self.detector(rgb, self.upsample)
        if not faces:
            return None
        centre = np.array([rgb.shape[1] / 2, rgb.shape[0] / 2])
        best = min(
            faces,
            key=lambda r: np.hypot((r.left() + r.right()) / 2 - centre[0], (r.top() + r.bottom()) / 2 - centre[1]),
        )
        return self.predictor(rgb, best)

    def all_shapes(self, rgb: np.ndarray) -> list:
        """The 5-point shape of every HOG detection."""
        return [self.predictor(rgb, rect) for rect in self.detector(rgb, self.upsample)]

    def chip(self, rgb: np.ndarray, shape) -> np.ndarray:
        return self.dlib.get_face_chip(rgb, shape, size=150, padding=0.25)

    def chip_to_image(self, rgb: np.ndarray) -> np.ndarray | None:
        """dlib's exact sampling map from chip pixels to image pixels (2x3), or None without a face."""
        import cv2

        shape = self.shape(rgb)
        if shape is None:
            return None
        details = self.dlib.get_face_chip_details(shape, 150, 0.25)
        rect, angle = details.rect, details.angle
        centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()], [rect.right(), rect.bottom()]])
        image_points = (corners - centre) @ rotation.T + centre
        chip_points = np.array([[0, 0], [149, 0], [149, 149]], np.float32)
        return cv2.getAffineTransform(chip_points, image_points.astype(np.float32)).astype(np.float64)

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        return np.asarray(self.recogniser.compute_face_descriptor(np.ascontiguousarray(chip)), dtype=np.float32)
