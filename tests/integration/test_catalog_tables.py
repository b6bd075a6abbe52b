"""Tables by name: a job registers its outputs in the catalog (here a local Derby Hive metastore), and a
later, separate Spark session reads `lineup.faces` and `lineup.runs` by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.processes import CEILING_S

pytestmark = [pytest.mark.slow, pytest.mark.data]

READER = """
import json, sys
from jobs.common.config import SparkSettings
from jobs.common.spark import get_spark
spark = get_spark(SparkSettings(master="local[1]", metastore_dir=sys.argv[1], data_root=sys.argv[2]))
tables = sorted(row.tableName for row in spark.sql("SHOW TABLES IN lineup").collect())
faces = spark.sql("SELECT count(*) AS n FROM lineup.faces WHERE status = 'ok'").first().n
runs = [row.job for row in spark.sql("SELECT job FROM lineup.runs").collect()]
print(json.dumps({"tables": tables, "faces": faces, "runs": runs}))
"""


def test_output_tables_are_readable_by_name_from_another_session(tmp_path: Path, shared_data: Path) -> None:
    photos = tmp_path / "photos" / "Zico"
    photos.mkdir(parents=True)
    for image in sorted((shared_data / "lfw" / "images" / "Zico").glob("*.jpg"))[:2]:
        shutil.copy(image, photos)
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    common = [f"--set=spark.metastore_dir={tmp_path / 'meta'}", f"--set=spark.data_root={tmp_path / 'data'}"]
    embed = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "embed", *common, "--set=spark.master=local[1]",
         "--set=catalog_database=lineup", f"--set=embed.input.path={tmp_path / 'photos'}"],
        capture_output=True, text=True, env=env, timeout=CEILING_S,
    )  # fmt: skip
    assert embed.returncode == 0, embed.stderr[-3000:]
    summary = json.loads(embed.stdout)
    assert summary["catalog_tables"] == ["lineup.faces", "lineup.runs"]

    read = subprocess.run(
        [sys.executable, "-c", READER, str(tmp_path / "meta"), str(tmp_path / "data")],
        capture_output=True, text=True, env=env, timeout=CEILING_S,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-3000:]
    seen = json.loads(read.stdout.strip().splitlines()[-1])
    assert seen == {"tables": ["faces", "runs"], "faces": summary["faces"], "runs": ["embed"]}
