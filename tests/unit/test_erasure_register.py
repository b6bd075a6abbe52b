"""The erasure register as every embedding job reads it: which erasures are in force (lifts, model scope,
rows of older layouts), and the rows an erased image or an erased face of a group photo becomes, with
the real default pack on a real two-person photo."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.common.erasures import ErasureRegister, id_digest, register_from_rows
from jobs.common.ids import face_id_of
from jobs.common.schema import ERASURES_ARROW
from jobs.faces.labels import Labeller
from jobs.faces.read import Loaded
from jobs.faces.rows import RowContext, embed_loaded


def erasure(erasure_id: str, kind: str, values: list[str], phase: str = "registered", **more) -> dict:
    return {"erasure_id": erasure_id, "phase": phase, "selector_kind": kind,
            "selector_sha256": [id_digest(v) for v in values], **more}  # fmt: skip


def test_lifts_model_scope_and_older_rows() -> None:
    rows = [
        erasure("e-1", "subject_ids", ["Ann"]),
        erasure("e-1", "subject_ids", ["Ann"], phase="completed", image_sha256=[id_digest("aa" * 32)]),
        erasure("e-2", "image_ids", ["bb" * 32], model_id="other-model"),
        erasure("e-3", "face_ids", ["12345"]),
        {"erasure_id": "e-4", "selector_kind": "subject_ids", "selector_sha256": [id_digest("Old")]},  # no phase
        erasure("e-5", "subject_ids", ["Bo"]),
        {"erasure_id": "lift-1", "phase": "lifted", "lifts": "e-5"},
    ]
    register = register_from_rows(pa.Table.from_pylist(rows, schema=ERASURES_ARROW), "m-1", 7)
    assert register.version == 7
    assert register.erasure_of(None, "Ann") == "e-1" and register.erasure_of("aa" * 32, None) == "e-1"
    assert register.erasure_of("bb" * 32, None) is None  # another model's erasure
    assert register.erasure_of(None, "Old") == "e-4"  # a row written before `phase` existed
    assert register.erasure_of(None, "Bo") is None  # lifted
    assert register.erasure_of_face(12345) == "e-3" and register.erasure_of("cc" * 32, None) is None
    assert not ErasureRegister() and register


@pytest.fixture(scope="module")
def group_photo(shared_data: Path) -> bytes:
    """Two LFW people side by side in one JPEG, written by Pillow."""
    from PIL import Image

    lfw = shared_data / "lfw" / "images"
    left = Image.open(sorted((lfw / "Tony_Blair").glob("*.jpg"))[0]).convert("RGB")
    right = Image.open(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]).convert("RGB")
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=95)
    return out.getvalue()


def rows_of(photo: bytes, pipeline, model_id: str, register: ErasureRegister, name: str = "p/group.jpg") -> list:
    context = RowContext(model_id, "r-1", Labeller(r"([^/]+)/[^/]+$"), dt.datetime(2026, 1, 1), register)
    return list(embed_loaded([Loaded(f"/archive/{name}", name, photo)], pipeline, context, 8))


@pytest.mark.data
def test_an_erased_face_leaves_the_rest_of_its_group_photo(face_pipeline, default_pack, group_photo) -> None:
    model_id = default_pack.model_id
    plain = rows_of(group_photo, face_pipeline, model_id, ErasureRegister())
    faces = [r for r in plain if r["status"] == "ok"]
    assert len(faces) >= 2, [r["status"] for r in plain]  # LFW photos hold background faces too
    gone = faces[1]["face_id"]
    register = ErasureRegister(1, faces={id_digest(gone): "e-9"})
    rows = rows_of(group_photo, face_pipeline, model_id, register)
    assert [r["face_id"] for r in rows if r["status"] == "ok"] == [f["face_id"] for f in faces if f["face_id"] != gone]
    [marker] = [r for r in rows if r["status"] == "erased"]
    assert marker["embedding"] is None and "e-9" in marker["error"] and marker["subject_id"] is None
    assert marker["face_id"] == face_id_of(faces[0]["image_id"], model_id, -1)

    # The whole photo by content, or its subject: one `erased` row, nothing decoded of it.
    by_content = ErasureRegister(1, images={id_digest(faces[0]["image_id"]): "e-1"})
    by_subject = ErasureRegister(1, subjects={id_digest("p"): "e-2"})
    for register, erasure_id in ((by_content, "e-1"), (by_subject, "e-2")):
        [row] = rows_of(group_photo, face_pipeline, model_id, register)
        assert row["status"] == "erased" and erasure_id in row["error"] and row["embedding"] is None
        assert row["source_path"].startswith("/archive/erased-") and "group" not in row["source_path"]
