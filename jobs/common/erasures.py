"""The erasure register: what `lineup forget` erased, kept as sha256 digests in the erasures table and
consulted by every job that embeds (embed, a query's probe archive, compare's images), so an erasure
lasts: content or a subject erased once is written as a status row `erased` (no embedding, box,
landmarks or subject id) instead of being embedded again, however often the archive is embedded.

What is kept: `id_digest(image_id)` of each erased image's content hash and `id_digest(subject_id)` of
each erased subject, per model (or for every model). An erasure is in force from the moment forget
registers it (before it deletes anything: an embed committing meanwhile must already see it) until an
explicit, recorded lift (`forget.lift`: new consent) names its erasure id.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import pyarrow as pa

from jobs.common.delta import delta_rs_options, delta_rs_uri
from jobs.common.errors import TransientError
from jobs.common.schema import ERASURES_ARROW

log = logging.getLogger(__name__)

ERASED = "erased"  # the status of a row the register kept from being embedded again


def id_digest(value: object) -> str:
    """What the register keeps of a personal identifier: its sha256, never the value.

    >>> id_digest("Colin_Powell") == id_digest("Colin_Powell"), len(id_digest(7))
    (True, 64)
    """
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ErasureRegister:
    """The erasures in force for one model: digests of erased image contents and subjects, each with
    the erasure that erased it. `version` is the erasures table's version it was read at (-1: no table
    yet), so a job can tell it changed."""

    version: int = -1
    images: dict[str, str] = field(default_factory=dict)  # id_digest(image_id) -> erasure_id
    subjects: dict[str, str] = field(default_factory=dict)  # id_digest(subject_id) -> erasure_id
    faces: dict[str, str] = field(default_factory=dict)  # id_digest(face_id) -> erasure_id (face_ids selectors)

    def __bool__(self) -> bool:
        return bool(self.images or self.subjects or self.faces)

    def erasure_of_face(self, face_id: int | None) -> str | None:
        """The erasure that erased this one face (a face of a group photo: the others stay), or None."""
        return self.faces.get(id_digest(face_id)) if face_id is not None else None

    def erasure_of(self, image_id: str | None, subject_id: str | None) -> str | None:
        """The erasure that erased an image with this content hash (or labelled with this subject), or None.

        >>> register = ErasureRegister(3, {id_digest("ab" * 32): "e-1"}, {id_digest("Ann"): "e-2"})
        >>> of = register.erasure_of
        >>> of("ab" * 32, None), of("cd" * 32, "Ann"), of("cd" * 32, "Bo")
        ('e-1', 'e-2', None)
        """
        if image_id is not None and id_digest(image_id) in self.images:
            return self.images[id_digest(image_id)]
        return self.subjects.get(id_digest(subject_id)) if subject_id is not None else None

    def erases(self, image_id: str | None, subject_id: str | None) -> bool:
        return self.erasure_of(image_id, subject_id) is not None


def erased_reason(erasure_id: str) -> str:
    """The `error` of an `erased` row: which erasure keeps it out (a lift removes the rows naming it)."""
    return f"erased by {erasure_id} (lineup forget): not embedded again unless that erasure is lifted"


def register_from_rows(rows: pa.Table, model_id: str | None, version: int) -> ErasureRegister:
    """The register in force for `model_id` from the erasures table's rows (any layout since the first:
    rows written before `phase` existed are completed erasures).

    A subject or image selector's own digests count as erased subjects or images; an erasure scoped to
    one model erases nothing of another model."""
    data = rows.to_pylist()
    lifted = {row.get("lifts") for row in data if row.get("phase") == "lifted"}
    images: dict[str, str] = {}
    subjects: dict[str, str] = {}
    faces: dict[str, str] = {}
    for row in data:
        erasure_id = row.get("erasure_id")
        if row.get("phase") == "lifted" or erasure_id in lifted:
            continue
        if row.get("model_id") and model_id and row["model_id"] != model_id:
            continue
        selector = row.get("selector_sha256") or []
        if row.get("selector_kind") == "subject_ids":
            subjects.update(dict.fromkeys(selector, erasure_id))
        elif row.get("selector_kind") == "image_ids":
            images.update(dict.fromkeys(selector, erasure_id))
        elif row.get("selector_kind") == "face_ids":  # one face, not the photo it is in
            faces.update(dict.fromkeys(selector, erasure_id))
        images.update(dict.fromkeys(row.get("image_sha256") or [], erasure_id))
        subjects.update(dict.fromkeys(row.get("subject_sha256") or [], erasure_id))
    return ErasureRegister(version, images, subjects, faces)


def read_register(erasures_table: str, model_id: str | None) -> ErasureRegister:
    """The register in force for `model_id`, read on the driver by delta-rs (no JVM: it is read at the
    start and before every commit of an embed). No erasures table yet: an empty register."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        table = DeltaTable(delta_rs_uri(erasures_table), storage_options=delta_rs_options(erasures_table))
    except TableNotFoundError:
        return ErasureRegister()
    try:
        wanted = [c for c in ERASURES_ARROW.names if c in set(pa.schema(table.schema().to_arrow()).names)]
        columns = [c for c in wanted if c not in ("tables", "indexes", "findings")]
        rows = pa.table(table.to_pyarrow_dataset().to_table(columns=columns))
    except (DeltaError, OSError) as error:
        # An erasure that cannot be checked must not be bypassed: the run stops, a retry may read it.
        raise TransientError(
            f"the erasures table {erasures_table} could not be read ({str(error).splitlines()[0][:200]}); "
            "retry when it is readable"
        ) from None
    return register_from_rows(rows, model_id, int(table.version()))
