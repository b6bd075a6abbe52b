"""A small job submitted to a real standalone cluster by test_standalone_cluster.py.

It goes through the same SparkSession factory as every Lineup job, writes a Delta table, MERGEs into it,
reads version 0 back by time travel and prints one JSON line with what it saw.
"""

import json
import os
import sys

from jobs.common.config import SparkSettings
from jobs.common.spark import get_spark

table_path = sys.argv[1]
spark = get_spark(SparkSettings(shuffle_partitions=2))
spark.createDataFrame([(1, "a"), (2, "b")], "face_id long, subject_id string").write.format("delta").save(table_path)

from delta.tables import DeltaTable  # noqa: E402  (needs the session's JVM)

updates = spark.createDataFrame([(2, "B"), (3, "c")], "face_id long, subject_id string")
(
    DeltaTable.forPath(spark, table_path)
    .alias("t")
    .merge(updates.alias("u"), "t.face_id = u.face_id")
    .whenMatchedUpdateAll()
    .whenNotMatchedInsertAll()
    .execute()
)
latest = sorted(tuple(row) for row in spark.read.format("delta").load(table_path).collect())
version_0 = sorted(tuple(row) for row in spark.read.format("delta").option("versionAsOf", 0).load(table_path).collect())
history = DeltaTable.forPath(spark, table_path).history().select("version", "operation").collect()
# Executors of a standalone worker run inside its work dir: proof the tasks left the driver.
task_dirs = sorted(set(spark.sparkContext.parallelize(range(4), 2).map(lambda _: os.getcwd()).collect()))
print(
    json.dumps(
        {
            "master": spark.sparkContext.master,
            "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"),
            "latest": latest,
            "version_0": version_0,
            "operations": sorted((row.version, row.operation) for row in history),
            "task_dirs": task_dirs,
        }
    )
)
spark.stop()
