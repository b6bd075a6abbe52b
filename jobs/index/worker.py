"""Executor side of the index job: add one shard's vectors with their face_ids and write the shard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from jobs.common.schema import ddl_of
from jobs.common.storage import upath
from jobs.shards import build
from jobs.shards.files import deserialize, sha256_bytes, write_atomically

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SHARD_ROWS_ARROW = pa.schema(
    [
        ("shard", pa.int32()),
        ("file", pa.string()),
        ("sha256", pa.string()),
        ("vectors", pa.int64()),
        ("added_min_id", pa.int64()),
        ("added_max_id", pa.int64()),
    ]
)
SHARD_ROWS_DDL = ddl_of(SHARD_ROWS_ARROW)


def shard_file(shard: int, generation: int) -> str:
    return f"shard-{shard:04d}.g{generation}.faiss"


def make_shard_runner(
    base_path: str, out: str, existing: dict[int, str], shard_count: int, generation: int
) -> Callable[[Iterator], Iterator]:
    """mapInArrow over (face_id BIGINT, embedding ARRAY<FLOAT>, shard INT) rows, partitioned by shard ->
    one SHARD_ROWS row per shard written. Each shard starts from its existing file (update) or the trained
    empty base and gets each Arrow batch's rows with `add_with_ids(face_id)` as it arrives, so a task holds
    its index and one batch, never the shard's vectors beside them (2.5M x 128 floats is 1.3 GB). The
    file is written to a temp name then renamed. Nothing is cached between tasks."""

    def run(batches: Iterator) -> Iterator:
        filling: dict[int, Any] = {}
        added_ids: dict[int, tuple[int, int]] = {}
        for batch in batches:
            if batch.num_rows == 0:
                continue
            shard_keys = batch.column("shard").to_numpy()
            ids = batch.column("face_id").to_numpy().astype(np.int64)
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            vectors = flat.astype(np.float32, copy=False).reshape(len(ids), -1)
            for shard in np.unique(shard_keys).tolist():
                if shard not in filling:
                    start = upath(out) / existing[shard] if shard in existing else upath(base_path)
                    filling[shard] = deserialize(start.read_bytes())
                mask = shard_keys == shard
                chosen = ids[mask]
                build.add_vectors(filling[shard], chosen, vectors[mask])
                low, high = int(chosen.min()), int(chosen.max())
                if shard in added_ids:
                    low, high = min(low, added_ids[shard][0]), max(high, added_ids[shard][1])
                added_ids[shard] = (low, high)
        rows = []
        for shard in sorted(filling):
            index = filling.pop(shard)
            vectors_held = int(index.ntotal)
            data = build.serialized_view(index)
            del index  # the file's bytes replace the index in memory, they do not add to it
            name = shard_file(shard, generation)
            write_atomically(upath(out) / name, data)
            rows.append(
                {
                    "shard": shard,
                    "file": name,
                    "sha256": sha256_bytes(data),
                    "vectors": vectors_held,
                    "added_min_id": added_ids[shard][0],
                    "added_max_id": added_ids[shard][1],
                }
            )
            del data
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=SHARD_ROWS_ARROW)

    return run
