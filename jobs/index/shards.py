"""Writing an index's shards on the executors and the manifest that names them (a build and an update
both add vectors this way)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from upath import UPath

from jobs.common.errors import UserError
from jobs.index.worker import SHARD_ROWS_DDL, make_shard_runner, shard_file
from jobs.shards import build
from jobs.shards.choose import IndexChoice
from jobs.shards.files import (
    deserialize,
    sha256_bytes,
    write_atomically,
)
from jobs.shards.manifest import Manifest, ShardEntry

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def new_manifest(
    model_id: str,
    dim: int,
    table_path: str,
    version: int,
    choice: IndexChoice,
    shard_count: int,
    shards: list[ShardEntry],
    vectors: int,
) -> Manifest:
    """A fresh build's manifest (recall and build time are added once measured)."""
    return Manifest.model_validate(
        {
            "index_id": f"index-{uuid.uuid4().hex[:12]}",
            "model_id": model_id,
            "dim": dim,
            "metric": "inner_product",
            "faces_table": table_path,
            "faces_version": version,
            "built_version": version,
            "factory": choice.factory,
            "exact": choice.exact,
            "choice_reason": choice.reason,
            "search_param": choice.search_param,
            "search_candidates": list(choice.candidates),
            "search_value": None,
            "shard_count": shard_count,
            "shards": shards,
            "vectors": vectors,
            "vectors_at_build": vectors,
            "added_since_build": 0,
            "removed_file": None,
            "removed_sha256": None,
            "removed": 0,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }
    )


def _add_shards(
    spark: SparkSession,
    frame: DataFrame,
    base: bytes,
    shard_count: int,
    existing: dict[int, str],
    out: UPath,
    generation: int,
    previous_entries: list[ShardEntry] | None = None,
) -> list[ShardEntry]:
    """Add the frame's rows to shards on the executors; returns the manifest entries of every shard."""
    from pyspark.sql import functions as F

    previous_entries = previous_entries or []
    base_path = out / f".base.g{generation}.faiss"
    write_atomically(base_path, base)
    keyed = frame.withColumn("shard", F.pmod(F.col("face_id"), F.lit(shard_count)))
    runner = make_shard_runner(str(base_path), str(out), existing, shard_count, generation)
    try:
        written = {
            row.shard: row.asDict()
            for row in keyed.repartition(shard_count, "shard").mapInArrow(runner, SHARD_ROWS_DDL).collect()
        }
    except Exception as error:  # an executor's refusal reaches us as text inside Spark's wrapper
        marker = f"{build.NotUnitVectors.__name__}: "
        lines = [line for line in str(error).splitlines() if marker in line]
        if not lines:
            raise
        raise UserError(f"index.faces_table: {lines[0].split(marker, 1)[1].strip()}") from None
    entries = []
    for shard in range(shard_count):
        if shard not in written:  # no new rows for this shard: keep it, or start it empty
            source = out / existing[shard] if shard in existing else base_path
            data = source.read_bytes()
            name = existing.get(shard) or shard_file(shard, generation)
            if shard not in existing:
                write_atomically(out / name, data)
            written[shard] = {
                "shard": shard,
                "file": name,
                "sha256": sha256_bytes(data),
                "vectors": int(deserialize(data).ntotal),
            }
        entry = written[shard]
        previous = next((e for e in previous_entries if e.shard == shard), None)
        # id range over everything the shard holds: this pass's rows and what it held before
        held = (previous.min_id, previous.max_id) if previous is not None else (None, None)
        lows = [v for v in (entry.pop("added_min_id", None), held[0]) if v is not None]
        highs = [v for v in (entry.pop("added_max_id", None), held[1]) if v is not None]
        entry.update(
            shard_key=f"face_id % {shard_count} == {shard}",
            min_id=min(lows, default=None),
            max_id=max(highs, default=None),
        )
        entries.append(ShardEntry.model_validate(entry))
    base_path.unlink()
    return entries


def _emptied(index: Any) -> Any:
    """A copy of a shard with its vectors removed: the trained state new shards start from."""
    index.reset()
    return index
