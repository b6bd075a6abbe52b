"""Derive where YuNet's five landmarks sit in dlib's 150x150 face chip (padding 0.25).

dlib's ResNet was trained on chips cut by `get_face_chip` from its own 5-point shape predictor (eye
corners and the base of the nose). YuNet gives other points (eye centres, nose tip, mouth corners), so
the default pack needs their positions in that same chip frame. For seeded-random LFW images this
script runs dlib's reference pipeline (HOG + 5-point predictor + get_face_chip_details), takes the
exact chip-to-image map dlib samples with (the rotated rectangle's corners onto chip pixels (0,0),
(149,0), (149,149)), runs the default pack's YuNet on the same image and maps its landmarks into chip
pixels. The per-point median is committed in `jobs/models/templates.py`.

Usage: .venv/bin/python -m bench.derive_chip_template [--images 3000]   (needs dlib-bin and ../shared/data)
"""

from __future__ import annotations

import argparse
import json
import logging
import random

import numpy as np

from bench.common import data_root, default_pack_sources
from bench.reference import DlibReference
from jobs.models.build import build_default_pack
from jobs.models.pipeline import FacePipeline

log = logging.getLogger("derive_chip_template")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    import cv2

    reference = DlibReference(default_pack_sources())
    pipeline = FacePipeline(build_default_pack())
    files = sorted((data_root() / "lfw" / "images").glob("*/*.jpg"))
    random.Random(args.seed).shuffle(files)
    points = []
    for path in files[: args.images]:
        rgb = cv2.imread(str(path))[:, :, ::-1].copy()
        chip_to_image = reference.chip_to_image(rgb)
        found = pipeline.detect(rgb)
        if chip_to_image is None or not len(found):
            continue
        image_to_chip = cv2.invertAffineTransform(chip_to_image)
        centre = np.array([rgb.shape[1] / 2, rgb.shape[0] / 2])
        nearest = int(np.argmin(np.linalg.norm(found.landmarks[:, 2] - centre, axis=1)))
        marks = found.landmarks[nearest].astype(np.float64)
        points.append(marks @ image_to_chip[:, :2].T + image_to_chip[:, 2])
    stack = np.stack(points)
    result = {
        "measured_on": f"{len(points)} of {args.images} seeded-random LFW images (seed {args.seed}) "
        "where both dlib's HOG and YuNet found the face",
        "template_median": np.round(np.median(stack, axis=0), 3).tolist(),
        "template_mean": np.round(stack.mean(axis=0), 3).tolist(),
        "spread_std": np.round(stack.std(axis=0), 3).tolist(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
