"""Faces-table rows from loaded images (plain Python, no Spark): one row per face, or one status row per
image without a usable face."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.common.erasures import ERASED, ErasureRegister, erased_reason, id_digest
from jobs.common.ids import STATUS_ROW_INDEX, face_id_of, image_id_of
from jobs.common.schema import FACES_ARROW, QUALITY_COMPONENTS_ARROW
from jobs.faces.labels import Labeller
from jobs.faces.read import Loaded
from jobs.faces.refs import READ_ERROR

if TYPE_CHECKING:
    from jobs.models.pipeline import FacePipeline
    from jobs.models.quality import QualityComponents


@dataclass(frozen=True)
class RowContext:
    model_id: str
    run_id: str
    labeller: Labeller
    embedded_at: dt.datetime
    register: ErasureRegister = ErasureRegister()


def embed_loaded(
    items: Iterable[Loaded], pipeline: FacePipeline, context: RowContext, batch_images: int
) -> Iterator[dict[str, Any]]:
    """Rows for every loaded input (images the table already holds were left out by the driver)."""
    batch: list[tuple[Loaded, str]] = []
    for item in items:
        if item.data is None:
            # A file that cannot be read has no content id: key its row by path so reruns replace it.
            yield _status_row(item, None, context, item.status or READ_ERROR, item.error)
            continue
        image_id = image_id_of(item.data)
        erasure_id = (
            context.register.erasure_of(image_id, context.labeller.subject(item.label_name))
            if context.register
            else None
        )
        if erasure_id is not None:
            path = erased_path(item.ref_name, item.label_name)
            yield erased_row(image_id, path, erasure_id, context.model_id, context.run_id, context.embedded_at)
            continue
        batch.append((item, image_id))
        if len(batch) >= batch_images:
            yield from _process_batch(batch, pipeline, context)
            batch = []
    if batch:
        yield from _process_batch(batch, pipeline, context)


def _process_batch(
    batch: list[tuple[Loaded, str]], pipeline: FacePipeline, context: RowContext
) -> Iterator[dict[str, Any]]:
    results = pipeline.process_bytes([item.data or b"" for item, _ in batch])  # unread items never reach a batch
    for (item, image_id), result in zip(batch, results):
        if result.status != "ok":
            yield _status_row(item, image_id, context, result.status, result.error, result.width, result.height)
            continue
        erasure_id = None
        for face in result.faces:
            face_id = face_id_of(image_id, context.model_id, face.face_index)
            face_erasure = context.register.erasure_of_face(face_id)
            if face_erasure is not None:  # one face erased: the photo's others stay
                erasure_id = face_erasure
                continue
            row = _base_row(item, image_id, context, "ok", None, result.width, result.height)
            x1, y1, x2, y2 = (float(v) for v in face.bbox)
            row.update(
                face_id=face_id,
                face_index=face.face_index,
                bbox={"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                landmarks=[float(v) for v in face.landmarks.reshape(-1)],
                det_score=float(face.det_score),
                embedding=face.embedding.astype(np.float32).tolist(),
                rotation=result.rotation,
                quality=face.quality,
                quality_components=_components_of(face.components),
                quality_reasons=None if face.quality_reasons is None else list(face.quality_reasons),
            )
            yield row
        if erasure_id is not None:
            path = erased_path(item.ref_name, item.label_name)
            yield erased_row(image_id, path, erasure_id, context.model_id, context.run_id, context.embedded_at)


def _components_of(components: QualityComponents | None) -> dict[str, float | None] | None:
    if components is None:
        return None
    values = components.as_dict()
    return {field.name: values[field.name] for field in QUALITY_COMPONENTS_ARROW}


# Every faces column null: a row sets what it has, and a column added to the layout is null in rows
# that do not know it.
_NO_FACE: dict[str, Any] = dict.fromkeys(FACES_ARROW.names)


def _base_row(
    item: Loaded,
    image_id: str | None,
    context: RowContext,
    status: str,
    error: str | None,
    width: int | None = None,
    height: int | None = None,
) -> dict[str, Any]:
    return _NO_FACE | {
        "image_id": image_id,
        "source_path": item.ref_name,
        "source_path_raw": item.raw_path,
        "face_index": STATUS_ROW_INDEX,
        "model_id": context.model_id,
        "status": status,
        "error": error,
        "subject_id": context.labeller.subject(item.label_name),
        "attributes": context.labeller.attributes(item.label_name),
        "image_width": width,
        "image_height": height,
        "run_id": context.run_id,
        "embedded_at": context.embedded_at,
    }


def _status_row(
    item: Loaded,
    image_id: str | None,
    context: RowContext,
    status: str,
    error: str | None,
    width: int | None = None,
    height: int | None = None,
) -> dict[str, Any]:
    row = _base_row(item, image_id, context, status, error, width, height)
    row["face_id"] = face_id_of(image_id or f"path:{item.ref_name}", context.model_id, STATUS_ROW_INDEX)
    return row


def erased_path(source_path: str, name: str) -> str:
    """An erased image's `source_path`: the archive's part (its folder, tar or table, which names no one)
    kept, so a query still finds the row among its archive's, and the image's own name (which often
    names the person) replaced by its sha256.

    >>> erased_path("/data/lfw/Ann_Lee/Ann_Lee_0001.jpg", "Ann_Lee/Ann_Lee_0001.jpg")[:25]
    '/data/lfw/erased-5c739a12'
    """
    prefix = source_path[: len(source_path) - len(name)] if name and source_path.endswith(name) else ""
    return f"{prefix}erased-{id_digest(name or source_path)[:32]}"


def erased_row(
    image_id: str, source_path: str, erasure_id: str, model_id: str, run_id: str, embedded_at: dt.datetime
) -> dict[str, Any]:
    """The row an erased image gets instead of its faces: its content id (so reruns skip it as known)
    and nothing of the person: no embedding, box, landmarks, subject, attributes or readable name
    (`source_path` is already `erased_path`'s).

    >>> row = erased_row("ab" * 32, "/d/erased-00", "e-1", "m-1", "r", dt.datetime(2026, 1, 1))
    >>> row["status"], row["embedding"], row["subject_id"], row["error"].startswith("erased by e-1")
    ('erased', None, None, True)
    """
    return _NO_FACE | {
        "face_id": face_id_of(image_id, model_id, STATUS_ROW_INDEX),
        "image_id": image_id,
        "source_path": source_path,
        "face_index": STATUS_ROW_INDEX,
        "model_id": model_id,
        "status": ERASED,
        "error": erased_reason(erasure_id),
        "run_id": run_id,
        "embedded_at": embedded_at,
    }
