"""Executor side of the index job: add one shard's vectors with their face_ids and write the shard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jobs.common.schema import ddl_of
from jobs.common.storage import upath
from jobs.index import build
from jobs.index.shards import sha256_bytes, write_atomically

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


def make_shard_runner(base_path: str, out: str, existing: dict[int, str], shard_count: int, generation: int):
    """mapInArrow over (face_id BIGINT, embedding ARRAY<FLOAT>, shard INT) rows, partitioned by shard ->
    one SHARD_ROWS row per shard written. Each shard starts from its existing file (update) or the trained
    empty base, gets its rows with `add_with_ids(face_id)`, and is written to a temp name then renamed.
    Nothing is cached between tasks."""

    def run(batches):
        groups: dict[int, list] = {}
        for batch in batches:
            shard_keys = batch.column("shard").to_numpy()
            ids = batch.column("face_id").to_numpy()
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            vectors = flat.astype(np.float32).reshape(len(ids), -1) if len(ids) else flat.reshape(0, 0)
            for shard in np.unique(shard_keys):
                mask = shard_keys == shard
                groups.setdefault(int(shard), []).append((ids[mask], vectors[mask]))
        rows = []
        for shard, parts in groups.items():
            start = upath(out) / existing[shard] if shard in existing else upath(base_path)
            shard_ids = np.concatenate([p[0] for p in parts])
            data = build.add_to_shard(start.read_bytes(), shard_ids, np.concatenate([p[1] for p in parts]))
            name = shard_file(shard, generation)
            write_atomically(upath(out) / name, data)
            rows.append(
                {
                    "shard": shard,
                    "file": name,
                    "sha256": sha256_bytes(data),
                    "vectors": int(build.deserialize(data).ntotal),
                    "added_min_id": int(shard_ids.min()),
                    "added_max_id": int(shard_ids.max()),
                }
            )
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=SHARD_ROWS_ARROW)

    return run
