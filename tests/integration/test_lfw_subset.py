"""CI's fast accuracy check: two LFW folds (each threshold learnt on the other), with floors.

The full ten-fold protocol and the speed comparison are benchmarks (bench/bench_packs.py).
"""

from pathlib import Path

import pytest

from jobs.audit.lfw import run_lfw_audit

pytestmark = [pytest.mark.data, pytest.mark.slow]

ACCURACY_FLOOR = 0.985  # full protocol measures 98.9%; two folds have ~0.3 points of noise


def test_default_pack_lfw_two_folds(default_pack, shared_data: Path) -> None:
    summary = run_lfw_audit(default_pack.path, shared_data / "lfw", [1, 2], "none", 2)
    assert summary["detect_fail"] == 0
    assert summary["accuracy_mean"] >= ACCURACY_FLOOR, summary
    assert summary["auc"] >= 0.995


def test_insightface_style_pack_builds_and_verifies(tmp_path: Path, shared_data: Path) -> None:
    from jobs.models.build import build_insightface_pack

    models = shared_data.parent / "models" / "insightface-style"
    if not models.is_dir():
        pytest.skip(f"InsightFace-style test models not found at {models}")
    pack = build_insightface_pack(
        tmp_path / "pack", models / "det_scrfd_2.5g_kps.onnx", models / "rec_mobilefacenet_128.onnx"
    )
    assert pack.dim == 128 and pack.model_id.startswith("insightface-style-")
    summary = run_lfw_audit(pack.path, shared_data / "lfw", [1, 2], "none", 2)
    assert summary["detect_fail"] == 0 and summary["auc"] >= 0.995
    assert summary["accuracy_mean"] >= ACCURACY_FLOOR, summary
