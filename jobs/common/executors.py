"""Before a job's work: can the executors run the packaged environment `lineup submit-args --cluster`
shipped? A Python the archive cannot start, or a Python or PySpark version that differs from the
driver's, is the user's setup to fix (exit 2), said in one line instead of a failed stage later."""

from __future__ import annotations

import platform
import sys
from typing import TYPE_CHECKING

from jobs.common.errors import UserError, mentions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The names `lineup package`'s archives are unpacked under on executors (`--archives FILE#ALIAS`).
ENV_ALIAS, PACK_ALIAS = "lineup_env", "lineup_pack"


def _executor_versions(_: object) -> tuple[str, str]:
    import pyspark

    return platform.python_version(), pyspark.__version__


def check_packaged_executors(spark: SparkSession) -> None:
    """No-op unless executors run `./lineup_env/bin/python`; then one tiny task compares versions."""
    python = spark.sparkContext.getConf().get("spark.pyspark.python", "")
    if not python.startswith(f"./{ENV_ALIAS}/"):
        return

    import pyspark

    try:
        executor_python, executor_pyspark = spark.sparkContext.parallelize([0], 1).map(_executor_versions).first()
    except Exception as error:
        if mentions(error, ("Cannot run program", "No such file or directory", "error=2")):
            raise UserError(
                f"the executors cannot start {python} from the {ENV_ALIAS} archive: its Python is a link to "
                f"{sys.base_prefix} on the machine that ran `lineup package`; build the package on a machine "
                "with the cluster's Python at the same path"
            ) from None
        raise
    driver_python = platform.python_version()
    if executor_python.rsplit(".", 1)[0] != driver_python.rsplit(".", 1)[0]:
        raise UserError(f"executors run Python {executor_python}, the driver {driver_python}: they must match")
    if executor_pyspark != pyspark.__version__:
        raise UserError(
            f"the cluster's PySpark is {executor_pyspark}, this Lineup needs {pyspark.__version__}: "
            "submit with a matching Spark"
        )
