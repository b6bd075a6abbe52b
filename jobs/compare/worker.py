"""Executor side of compare: one embedding per image, its most prominent (largest) face."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from jobs.common.erasures import ERASED, ErasureRegister, erased_reason
from jobs.common.ids import face_id_of, image_id_of
from jobs.common.schema import ddl_of
from jobs.common.storage import upath
from jobs.models.cache import PipelineRef

if TYPE_CHECKING:
    from jobs.models.pipeline import FacePipeline

IMAGE_ARROW = pa.schema(
    [
        ("path", pa.string()),
        ("image_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("face_id", pa.int64()),
        ("faces", pa.int32()),
        ("embedding", pa.list_(pa.float32())),
        ("quality", pa.float32()),
        ("quality_reasons", pa.list_(pa.string())),
    ]
)
IMAGE_DDL = ddl_of(IMAGE_ARROW)
NOTHING_ERASED = ErasureRegister()


def largest_face(faces: list) -> Any:
    """The face a person comparing two photos means: the biggest one (ties: the first detected)."""
    return max(faces, key=lambda f: ((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]), -f.face_index))


def embed_images(
    paths: list[str], pipeline: FacePipeline, model_id: str, register: ErasureRegister = NOTHING_ERASED
) -> Iterator[dict[str, Any]]:
    """A row per path: status `ok` with the largest face's embedding, or the status that stopped it
    (`erased`: the register holds its content)."""
    blobs: dict[str, bytes] = {}
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            data = upath(path).read_bytes()
        except OSError as error:
            rows[path] = _row(path, None, "read_error", f"{type(error).__name__}: {error.strerror or error}")
            continue
        erasure_id = register.erasure_of(image_id_of(data), None)
        if erasure_id is not None:
            rows[path] = _row(path, image_id_of(data), ERASED, erased_reason(erasure_id))
        else:
            blobs[path] = data
    readable = list(blobs)
    for path, result in zip(readable, pipeline.process_bytes([blobs[p] for p in readable])):
        image_id = image_id_of(blobs[path])
        if result.status != "ok":
            rows[path] = _row(path, image_id, result.status, result.error)
            continue
        face = largest_face(result.faces)
        rows[path] = _row(path, image_id, "ok", None)
        rows[path].update(
            face_id=face_id_of(image_id, model_id, face.face_index),
            faces=len(result.faces),
            embedding=face.embedding.astype(np.float32).tolist(),
            quality=face.quality,
            quality_reasons=None if face.quality_reasons is None else list(face.quality_reasons),
        )
    for path in paths:
        yield rows[path]


def _row(path: str, image_id: str | None, status: str, error: str | None) -> dict[str, Any]:
    return {
        "path": path,
        "image_id": image_id,
        "status": status,
        "error": error,
        "face_id": None,
        "faces": 0,
        "embedding": None,
        "quality": None,
        "quality_reasons": None,
    }


@dataclass(frozen=True)
class ImageContext:
    pipeline: PipelineRef
    register: ErasureRegister


def make_image_runner(context: ImageContext) -> Callable[[Iterator], Iterator]:
    """mapInArrow over `path STRING` rows -> IMAGE_ARROW rows (one per image, its largest face); the
    FacePipeline is built once per Python worker (`PipelineRef.pipeline`)."""

    def run(batches: Iterator) -> Iterator:
        pipeline = context.pipeline.pipeline()
        model_id = context.pipeline.model_id
        for batch in batches:
            paths = [str(p) for p in batch.column("path").to_pylist()]
            for start in range(0, len(paths), 16):
                rows = list(embed_images(paths[start : start + 16], pipeline, model_id, context.register))
                yield pa.RecordBatch.from_pylist(rows, schema=IMAGE_ARROW)

    return run
