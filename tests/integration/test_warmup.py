"""With `embed.warmup=true` a fresh process (what a scheduled run is) starts its Python workers, and
builds their face pipelines, in a warm-up job while the driver plans (jobs/faces/warmup.py), so no
embedding task has to build one. The same run without the warm-up shows the measure can tell."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.processes import CEILING_S

pytestmark = [pytest.mark.slow, pytest.mark.data]

REPO_ROOT = Path(__file__).resolve().parents[2]


def fresh_embed(archive: Path, root: Path, warmup: bool) -> tuple[dict, str]:
    """`lineup embed` in its own process (a new JVM, as every spark-submit is): its summary and stderr."""
    settings = [
        f"embed.input.path={archive}",
        f"embed.table_path={root / 'faces'}",
        f"spark.data_root={root / 'data'}",
        "spark.master=local[2]",
        "spark.shuffle_partitions=2",
        "embed.files_per_task=4",
        f"embed.warmup={str(warmup).lower()}",
    ]
    command = [sys.executable, "-m", "jobs.cli", "embed", "--conf", str(REPO_ROOT / "conf" / "embed.yaml")]
    command += [part for setting in settings for part in ("--set", setting)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CEILING_S, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


def test_a_fresh_run_embeds_with_the_pipelines_its_warmup_built(tmp_path: Path, shared_data: Path) -> None:
    archive = tmp_path / "archive"
    for person in sorted((shared_data / "lfw" / "images").iterdir())[:16]:
        (archive / person.name).mkdir(parents=True)
        for image in sorted(person.glob("*.jpg"))[:1]:
            shutil.copy(image, archive / person.name / image.name)

    warmed, log = fresh_embed(archive, tmp_path / "warm", warmup=True)
    assert warmed["files_processed"] == 16
    assert "warm-up: 2 Python workers ready" in log
    assert warmed["pipelines_built_by_tasks"] == 0

    cold, log = fresh_embed(archive, tmp_path / "cold", warmup=False)
    assert cold["files_processed"] == 16 and "warm-up" not in log
    assert cold["pipelines_built_by_tasks"] == 2  # one per Python worker of local[2]
