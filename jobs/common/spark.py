"""The one place that builds SparkSessions (and the only module of `jobs.common` that imports pyspark).

Locally it starts `local[*]` with Delta configured from the staged jars and the warehouse under the data
root. Under `spark-submit` the submitter owns the master and every setting they passed: this factory only
fills in the settings they left out, and says exactly what to add when Delta is missing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.common.config import SparkSettings, StorageSettings
from jobs.common.errors import UserError
from jobs.common.jars import MANIFEST_NAME, s3_jars_dir, staged_jars
from jobs.common.locations import resolve
from jobs.common.storage import hadoop_conf

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_CONF = {
    "spark.sql.extensions": DELTA_EXTENSION,
    "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
}


def under_spark_submit() -> bool:
    """True when this Python process was started by `spark-submit` (or a pyspark shell): a JVM already runs.

    spark-submit starts the JVM first and hands the Python driver its gateway through this variable.
    """
    return "PYSPARK_GATEWAY_PORT" in os.environ


def local_session_conf(settings: SparkSettings, jars: list[Path]) -> dict[str, str]:
    """Every setting a local session gets: Delta, staged jars, warehouse, quiet UI, this interpreter."""
    data_root = settings.resolved_data_root()
    conf = {
        **DELTA_CONF,
        "spark.jars": ",".join(str(path) for path in jars),
        "spark.sql.warehouse.dir": str(data_root / "warehouse"),
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        # Delta rebuilds table state with 50 tasks by default: seconds of overhead per read on a laptop;
        # one task per local core is enough for the logs of tables this size.
        "spark.databricks.delta.snapshotPartitions": str(
            min(settings.shuffle_partitions, local_cores(settings.master))
        ),
        "spark.ui.enabled": str(settings.ui_enabled).lower(),
        # Pools share the cores fairly: an embed chunk's commit runs while the next chunk embeds.
        "spark.scheduler.mode": "FAIR",
        # The console progress bar writes `\r[Stage ...]` to the terminal, which orchestrators capture
        # with stdout and glue onto the JSON line; our own phase logs on stderr say what is running.
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": settings.driver_memory,
        "spark.driver.extraJavaOptions": settings.driver_java_options,
        # Python workers must run this interpreter (the venv), not whatever `python3` is on PATH.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if settings.metastore_dir:  # a persistent local catalog (on a cluster the submitter's metastore is used)
        metastore = resolve(settings.metastore_dir)
        conf["spark.sql.catalogImplementation"] = "hive"
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={metastore}/metastore_db;create=true"
        )
        conf["spark.driver.extraJavaOptions"] += f" -Dderby.system.home={metastore}"
    conf.update(settings.extra_conf)
    return conf


def submitted_session_conf(settings: SparkSettings, given: dict[str, str]) -> dict[str, str]:
    """Settings to add under spark-submit: only session-level ones the submitter did not give.

    Static settings (master, jars, memory, extensions) are fixed once the JVM runs, so they are never
    touched here; a missing Delta extension is an error telling the submitter what to pass.
    """
    if given.get("spark.sql.extensions", "").find(DELTA_EXTENSION) < 0:
        raise UserError(
            "spark-submit did not configure Delta Lake: pass the flags printed by `lineup submit-args` "
            f"(--jars <staged jars> --conf spark.sql.extensions={DELTA_EXTENSION} ...)"
        )
    wanted = {
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        **settings.extra_conf,
    }
    return {key: value for key, value in wanted.items() if key not in given}


def local_cores(master: str) -> int:
    """Cores a local master runs tasks on (other masters: this machine's).

    >>> local_cores("local[3]"), local_cores("local[2,4]"), local_cores("local")
    (3, 2, 1)
    """
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master.strip())
    if match and match.group(1) not in (None, "*"):
        return int(match.group(1))
    if match and match.group(1) is None:
        return 1
    return len(os.sched_getaffinity(0))


LOCAL_TASK_TRIES = 4  # Spark's own default on a cluster (spark.task.maxFailures)


def with_task_retries(master: str, tries: int = LOCAL_TASK_TRIES) -> str:
    """A local master that retries a failed task like a cluster does (plain `local[N]` gives up at the
    first failure: one crashed Python worker would fail the run). Other masters are returned unchanged.

    >>> with_task_retries("local[*]"), with_task_retries("local[2]"), with_task_retries("local")
    ('local[*,4]', 'local[2,4]', 'local[1,4]')
    >>> with_task_retries("local[2,1]"), with_task_retries("spark://host:7077")
    ('local[2,1]', 'spark://host:7077')
    """
    match = re.fullmatch(r"local(?:\[(\*|\d+)\])?", master.strip())
    if not match:
        return master
    return f"local[{match.group(1) or 1},{tries}]"


def submit_args(settings: SparkSettings) -> list[str]:
    """The spark-submit flags that give a cluster job the staged Delta jars and Delta's settings."""
    jars = staged_jars(settings.resolved_jars_dir())
    args = ["--jars", ",".join(str(path) for path in jars)]
    submitted = {
        **DELTA_CONF,
        "spark.ui.showConsoleProgress": "false",
        "spark.scheduler.mode": "FAIR",
        # Delta's table-state rebuild: one task per shuffle partition, not 50 tasks per read.
        "spark.databricks.delta.snapshotPartitions": str(settings.shuffle_partitions),
    }
    for key, value in submitted.items():
        args += ["--conf", f"{key}={value}"]
    return args


def session_jars(settings: SparkSettings) -> list[Path]:
    """The staged Delta jars, and the S3A connector's where `lineup setup` staged them."""
    jars = staged_jars(settings.resolved_jars_dir())
    s3_dir = s3_jars_dir(settings.resolved_jars_dir())
    if (s3_dir / MANIFEST_NAME).is_file():
        jars += staged_jars(s3_dir)
    else:
        log.info("S3A jars not staged in %s: s3a:// tables are not readable (run `lineup setup`)", s3_dir)
    return jars


HADOOP_S3_ENDPOINT = "spark.hadoop.fs.s3a.endpoint"


def use_storage(storage: StorageSettings | None, extra_conf: dict[str, str] | None = None) -> dict[str, str]:
    """The session settings of a `storage:` section; its endpoint also becomes AWS_ENDPOINT_URL for this
    process (and the local Python workers it starts), where fsspec, Arrow and delta-rs read it. An
    endpoint given the Hadoop way (`spark.extra_conf`'s `spark.hadoop.fs.s3a.endpoint`, as on EMR or
    with MinIO) serves the same purpose when `storage.s3_endpoint` is not set."""
    storage = storage or StorageSettings()
    endpoint = storage.s3_endpoint or (extra_conf or {}).get(HADOOP_S3_ENDPOINT)
    if endpoint and "://" not in endpoint:
        endpoint = f"https://{endpoint}"  # S3A takes a bare host; the AWS variables want a URL
    if endpoint and not os.environ.get("AWS_ENDPOINT_URL"):
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    conf = hadoop_conf(storage.s3_endpoint, storage.s3_region, storage.s3_path_style)
    if endpoint and not storage.s3_endpoint:  # executors elsewhere read the same endpoint
        conf["spark.executorEnv.AWS_ENDPOINT_URL"] = endpoint
    return conf


def get_spark(
    settings: SparkSettings, app_name: str | None = None, storage: StorageSettings | None = None
) -> SparkSession:
    """Return the SparkSession for a job: a local Delta-enabled one, or the submitter's under spark-submit.

    >>> spark = get_spark(SparkSettings(master="local[2]"))  # doctest: +SKIP
    >>> spark.range(3).count()  # doctest: +SKIP
    3
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    started = time.perf_counter()
    if under_spark_submit():
        context = SparkContext.getOrCreate()
        given = dict(context.getConf().getAll())
        builder = SparkSession.builder
        for key, value in submitted_session_conf(settings, given).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    else:
        jars = session_jars(settings)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # PySpark reads the worker interpreter from this variable in local mode, not from the conf.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        master = with_task_retries(settings.master)
        builder = SparkSession.builder.master(master).appName(app_name or settings.app_name)
        for key, value in {**use_storage(storage), **local_session_conf(settings, jars)}.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
    log.info("SparkSession ready in %.1f s (master %s)", time.perf_counter() - started, spark.sparkContext.master)
    return spark


def local_frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    """A DataFrame of the driver's rows (a `pyarrow.Table`) as a local relation in the plan. A frame made
    from a Python list goes through a Python RDD: every use runs a stage of Python workers, and the first
    in a fresh JVM costs 3.7-4.2 s against Arrow's 2.0 s (16 rows, a 2-vCPU VM)."""
    return spark.createDataFrame(table)


def jvm_of(spark: SparkSession) -> Any:
    """The session's JVM gateway (py4j's view of the JVM's packages); it exists once a session runs."""
    jvm = spark.sparkContext._jvm
    if jvm is None:
        raise RuntimeError("the SparkSession has no JVM gateway (stopped?): a bug, please report it")
    return jvm
