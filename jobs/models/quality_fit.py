"""Written by `python -m bench.bench_quality --write`: the unified quality models, the limits behind
`quality_reasons`, the filter levels' floors and who each floor discards. Do not edit by hand; rerun
the benchmark."""

# ruff: noqa: E501 - generated data: the provenance strings stay whole

from typing import Any

MEASURED_ON = (
    "LFW (4281 people of View 2's ten folds, all their photographs), default pack dlib-resnet-v1-yunet-e6abb3e487eb1ee1"
)
GENERIC: dict[str, Any] = {
    "features": (
        "log2_inter_eye_px",
        "abs_yaw_deg",
        "abs_pitch_deg",
        "abs_roll_deg",
        "log_sharpness",
        "brightness_offset",
        "contrast",
        "det_score",
    ),
    "mean": (4.762285, 12.098202, 3.149847, 4.181388, 4.02176, 0.070009, 0.140183, 0.927685),
    "scale": (0.149529, 8.663548, 2.396665, 3.311157, 0.546826, 0.053206, 0.036082, 0.00802),
    "weights": (0.07787, -0.021519, -0.064436, 0.0, 0.006426, -0.063487, 0.0, 0.192376),
    "bias": 2.507011,
    "fitted_on": "LFW (4281 people of View 2's ten folds, all their photographs), default pack dlib-resnet-v1-yunet-e6abb3e487eb1ee1, without the embedder (any pack)",
}
MODELS: dict[str, dict[str, Any]] = {
    "dlib-resnet-v1-yunet-e6abb3e487eb1ee1": {
        "features": (
            "log2_inter_eye_px",
            "abs_yaw_deg",
            "abs_pitch_deg",
            "abs_roll_deg",
            "log_sharpness",
            "brightness_offset",
            "contrast",
            "det_score",
            "embedding_norm",
        ),
        "mean": (4.762285, 12.098202, 3.149847, 4.181388, 4.02176, 0.070009, 0.140183, 0.927685, 1.422313),
        "scale": (0.149529, 8.663548, 2.396665, 3.311157, 0.546826, 0.053206, 0.036082, 0.00802, 0.070376),
        "weights": (0.089053, 0.0, -0.069019, 0.0, 0.005669, -0.062745, 0.0, 0.191495, 0.026051),
        "bias": 2.513572,
        "fitted_on": "LFW (4281 people of View 2's ten folds, all their photographs), default pack dlib-resnet-v1-yunet-e6abb3e487eb1ee1, with the embedding norm",
    }
}
REASON_LIMITS = {
    "abs_yaw_deg": 45.0,
    "abs_pitch_deg": 30.0,
    "brightness": 0.3134,
    "sharpness": 16.6536,
    "det_score": 0.9081,
    "inter_eye_px": 16.0,
}
FLOORS: dict[str, Any] = {"LOW": 0.8874, "MEDIUM": 0.8979, "HIGH": 0.9097, "AUTO": "LOW"}
DISPARITY: dict[str, str] = {"LOW": "", "MEDIUM": "", "HIGH": ""}
