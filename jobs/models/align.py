"""Face alignment: the similarity that puts a pack's landmark template on detected landmarks, and the warp.

A pack states its template as five points in chip pixels (see `jobs/models/templates.py` for where each
template comes from); the chip is cut out by bilinear sampling through that similarity.
"""

from __future__ import annotations

import cv2
import numpy as np


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping source->target.

    Returns a 2x3 matrix. In 2-D, Umeyama's solution (also dlib's find_similarity_transform) has a closed
    form: with centred points, [[a, -b], [b, a]] where a = sum(s . t) / |s|^2 and b = sum(s x t) / |s|^2.
    No LAPACK call, so no BLAS thread pool wakes up for five points.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mean_s, target - mean_t
    norm = float((s**2).sum())
    if norm == 0.0:
        return np.hstack([np.eye(2), (mean_t - mean_s)[:, None]])
    a = float((s[:, 0] * t[:, 0] + s[:, 1] * t[:, 1]).sum()) / norm
    b = float((s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]).sum()) / norm
    linear = np.array([[a, -b], [b, a]])
    return np.hstack([linear, (mean_t - linear @ mean_s)[:, None]])


def template_chip_to_image(template: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """2x3 map from chip pixels to image pixels: the similarity that best puts `template` on `landmarks`."""
    return similarity_transform(template, landmarks)


def warp_chip(image: np.ndarray, chip_to_image: np.ndarray, size: int) -> np.ndarray:
    """Cut the chip out of `image` (H x W x 3 uint8) by bilinear sampling, as dlib does.

    When the face is much larger than the chip, dlib samples from an image pyramid so that the chip is
    not aliased; downscaling the image by area first does the same job.
    """
    scale = float(np.hypot(chip_to_image[0, 0], chip_to_image[1, 0]))
    matrix = chip_to_image
    if scale > 2.0:
        factor = scale / 1.5
        small = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
        # cv2.resize maps pixel centres: x_small = (x + 0.5) / factor - 0.5
        matrix = chip_to_image / factor
        matrix[:, 2] += 0.5 / factor - 0.5
        image = small
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT
    )
