"""Landmark templates: where a pack's five detector landmarks sit in its embedder's chip, in chip pixels.

Order everywhere: image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

import numpy as np

# YuNet's landmarks, found in the whole image, mapped into dlib's 150x150 face chip (get_face_chip,
# padding 0.25) through dlib's exact chip-to-image map: per-point median over the 2,984 of 3,000
# seeded-random LFW images where both dlib's HOG and YuNet found the face
# (`bench/derive_chip_template.py --pass image`). Used for the first cut.
YUNET_IN_DLIB_CHIP_150 = np.array(
    [
        [45.855, 44.660],
        [102.468, 44.903],
        [73.723, 77.956],
        [49.827, 103.323],
        [97.987, 103.929],
    ]
)

# YuNet's landmarks found on dlib's own chips (the face upright and at chip scale), per-point median
# over 2,984 chips from the same 3,000 images (`bench/derive_chip_template.py --pass chip`). Used for
# the second, refining cut, where YuNet looks at our first chip.
YUNET_ON_DLIB_CHIP_150 = np.array(
    [
        [46.267, 47.635],
        [106.298, 48.246],
        [76.381, 80.165],
        [50.188, 106.105],
        [102.078, 106.398],
    ]
)

# The standard ArcFace 112x112 template used by InsightFace-style recognisers.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
