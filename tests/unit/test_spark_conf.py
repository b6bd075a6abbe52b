import sys
from pathlib import Path

import pytest

from jobs.common.config import SparkSettings
from jobs.common.errors import UserError
from jobs.common.spark import DELTA_CATALOG, DELTA_EXTENSION, local_session_conf, submitted_session_conf


def test_local_conf_has_delta_jars_and_this_python(tmp_path: Path) -> None:
    settings = SparkSettings(data_root=str(tmp_path), extra_conf={"spark.executor.memory": "1g"})
    conf = local_session_conf(settings, [tmp_path / "a.jar", tmp_path / "b.jar"])
    assert conf["spark.sql.extensions"] == DELTA_EXTENSION
    assert conf["spark.sql.catalog.spark_catalog"] == DELTA_CATALOG
    assert conf["spark.jars"] == f"{tmp_path / 'a.jar'},{tmp_path / 'b.jar'}"
    assert conf["spark.sql.warehouse.dir"] == str(tmp_path / "warehouse")
    assert conf["spark.pyspark.python"] == sys.executable
    assert conf["spark.executor.memory"] == "1g"
    assert not any("packages" in key for key in conf), "nothing may be resolved at session start"


def test_submitted_conf_keeps_what_the_submitter_gave() -> None:
    given = {
        "spark.master": "spark://h:7077",
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.shuffle.partitions": "400",
    }
    added = submitted_session_conf(SparkSettings(shuffle_partitions=8), given)
    assert "spark.sql.shuffle.partitions" not in added
    assert "spark.master" not in added
    assert added == {"spark.sql.catalog.spark_catalog": DELTA_CATALOG}


def test_submitted_conf_without_delta_says_what_to_pass() -> None:
    with pytest.raises(UserError, match="lineup submit-args"):
        submitted_session_conf(SparkSettings(), {"spark.master": "yarn"})
