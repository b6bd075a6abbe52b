"""Output tables by name: a job registers every table it wrote in the session's catalog, so analysts on
Spark SQL (or a shared Hive/Glue/Unity metastore) write `SELECT * FROM lineup.matches`, not a path."""

from __future__ import annotations

import logging
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from jobs.common.errors import UserError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def table_name(location: str) -> str:
    """The catalog name of a table: its folder's name, lower case, non-word characters as `_`.

    >>> table_name("/data/tables/faces"), table_name("s3a://bucket/tables/Probe-Faces/")
    ('faces', 'probe_faces')
    """
    return re.sub(r"\W", "_", PurePosixPath(location.rstrip("/")).name.lower())


def register_tables(spark: SparkSession, database: str, locations: list[str]) -> list[str]:
    """`CREATE TABLE IF NOT EXISTS database.name USING DELTA LOCATION ...` for each written table; a name
    already registered for another location is refused rather than silently pointing elsewhere."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise UserError(f"catalog_database {database!r} is not a valid database name (letters, digits, _)")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    registered = []
    for location in dict.fromkeys(locations):  # once each, in order
        name = f"`{database}`.`{table_name(location)}`"
        if spark.catalog.tableExists(f"{database}.{table_name(location)}"):
            detail = spark.sql(f"DESCRIBE DETAIL {name}").first()
            held = str(detail["location"] if detail is not None else "").rstrip("/")
            if held.replace("file:", "").rstrip("/") != location.rstrip("/"):
                raise UserError(
                    f"catalog table {database}.{table_name(location)} already points at {held}, not {location}: "
                    "use another catalog_database or rename the table folder"
                )
        else:
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{location}'")
        registered.append(f"{database}.{table_name(location)}")
    log.info("registered in the catalog: %s", ", ".join(registered))
    return registered
