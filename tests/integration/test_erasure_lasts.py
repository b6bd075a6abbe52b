"""An erasure lasts (real LFW faces): the same embed rerun over the same folder, a query's probe archive
and compare's images write `erased` rows for the forgotten person instead of embedding them again; no
data file holds their vectors or name; the Delta logs do not name them; lifting the erasure is an
explicit, recorded act after which the person is embedded again."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from jobs.common.config import load_config
from jobs.common.runs import RunRecord
from jobs.compare.config import CompareConfig
from jobs.compare.job import run_compare
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.forget.config import ForgetConfig
from jobs.forget.job import run_forget
from jobs.query.config import QueryConfig
from jobs.query.probes import probe_frame  # a query's probe archive, embedded by the query's own code
from tests.fixtures.manifests import manifest_of
from tests.fixtures.worlds import raw_rows

pytestmark = [pytest.mark.slow, pytest.mark.data]

TARGET, OTHER = "Colin_Powell", "Tony_Blair"
PHOTOS = 12  # of each of the two people in the gallery


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two people's photos in a folder, as an archive the schedule embeds every day; a spare photo of
    each for probes and pairs."""
    root = tmp_path_factory.mktemp("erasure-lasts")
    for person in (TARGET, OTHER):
        photos = sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))
        (root / "gallery" / person).mkdir(parents=True)
        (root / "spare" / person).mkdir(parents=True)
        for photo in photos[:PHOTOS]:
            shutil.copy(photo, root / "gallery" / person / photo.name)
        shutil.copy(photos[PHOTOS], root / "spare" / person / photos[PHOTOS].name)
    return root


def shared(root: Path) -> list[str]:
    t = root / "t"
    return [f"spark.data_root={root / 'data'}", f"runs_table={t / 'runs'}", f"erasures_table={t / 'erasures'}"]


def embed(spark, root: Path) -> dict:
    flags = [f"embed.input.path={root / 'gallery'}", f"embed.table_path={root / 't' / 'faces'}",
             "embed.labels.subject_from_path=([^/]+)/[^/]+$"]  # fmt: skip
    return run_embed(load_config(EmbedConfig, None, [*shared(root), *flags]), spark)


def forget(spark, root: Path, *extra: str) -> dict:
    flags = [f"forget.faces_tables=[{root / 't' / 'faces'}]", f"forget.probe_tables=[{root / 't' / 'probe_faces'}]"]
    return run_forget(load_config(ForgetConfig, None, [*shared(root), *flags, *extra]), spark)


def rows(spark, table: Path) -> list:
    return spark.read.format("delta").load(str(table)).collect()


def test_an_erasure_lasts_through_reruns_probes_and_pairs_until_lifted(spark, folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "w"
    shutil.copytree(folder, root)
    target_images = {sha256_of(p) for p in (root / "gallery" / TARGET).iterdir()}
    first = embed(spark, root)
    assert first["faces"] >= 2 * PHOTOS - 2
    assert sum(r.subject_id == TARGET for r in rows(spark, root / "t" / "faces")) >= PHOTOS - 1

    erased = forget(spark, root, "forget.selector.kind=subject_ids", f"forget.selector.values=[{TARGET}]",
                    "forget.purge_history=true", "forget.retention_hours=0")  # fmt: skip
    assert erased["changed"] and erased["verification"]["history_files_with_erased_data"] == []
    others = sorted(r.face_id for r in rows(spark, root / "t" / "faces"))

    # Tomorrow's schedule: the same embed over the same folder.
    again = embed(spark, root)
    faces = rows(spark, root / "t" / "faces")
    assert again["by_status"].get("erased") == PHOTOS and again["faces"] == 0, again
    assert not [r for r in faces if r.subject_id == TARGET]
    marked = [r for r in faces if r.status == "erased"]
    assert {r.image_id for r in marked} == target_images and len(marked) == PHOTOS
    assert all(r.embedding is None and r.bbox is None and r.landmarks is None and r.attributes is None for r in marked)
    assert all(TARGET not in (r.source_path or "") and erased["erasure_id"] in r.error for r in marked)
    assert sorted(r.face_id for r in faces if r.status != "erased") == others  # everyone else as before
    # No data file, current or history, holds the person's vector or name; the Delta logs do not name them.
    for row in raw_rows(root / "t" / "faces"):
        if row["image_id"] in target_images:
            assert row["status"] == "erased" and row["embedding"] is None, row["source_path"]
        assert TARGET not in json.dumps(row, default=str)
    for log_file in (root / "t").rglob("_delta_log/*.json"):
        assert TARGET not in log_file.read_text(), log_file
    personal = {"subject_id", "source_path", "source_path_raw", "attributes", "error", "embedding"}
    for log_file in (root / "t" / "faces").glob("_delta_log/*.json"):
        for line in log_file.read_text().splitlines():
            action = json.loads(line)
            if "add" in action and action["add"].get("stats"):  # Spark's writer too (forget's DELETE rewrote)
                assert not personal & set(json.loads(action["add"]["stats"]).get("minValues", {})), log_file
    # A third run finds every image known: nothing read twice, nothing duplicated.
    third = embed(spark, root)
    assert third["files_skipped_known"] == 2 * PHOTOS and third["rows_written"] == 0

    # A query's probe archive and compare's images consult the same register.
    query = load_config(QueryConfig, None, [
        *shared(root), "query.probes.kind=archive", "query.probes.archive.kind=dir",
        f"query.probes.archive.path={root / 'spare'}", "query.probes.labels.subject_from_path=([^/]+)/[^/]+$",
        f"query.probes.probe_table={root / 't' / 'probe_faces'}", f"query.index_dir={root / 'index'}",
    ])  # fmt: skip
    manifest = manifest_of(model_id=first["model_id"], dim=128)
    probes, _ = probe_frame(query, spark, manifest, RunRecord("query", {}))
    by_subject = {Path(r.source_path).parent.name if r.status != "erased" else "erased": r for r in probes.collect()}
    assert "erased" in by_subject and OTHER in by_subject and TARGET not in by_subject
    # compare has no subject labels: content the erasure found (a gallery photo) is what it can know.
    spare = {p.parent.name: p for p in (root / "spare").rglob("*.jpg")}
    known = sorted((root / "gallery" / TARGET).iterdir())[0]
    (root / "pairs.csv").write_text(f"a,b\n{known},{spare[OTHER]}\n{spare[OTHER]},{spare[OTHER]}\n")
    compare = load_config(CompareConfig, None, [*shared(root), f"compare.pairs.path={root / 'pairs.csv'}",
                                                f"compare.scores_table={root / 't' / 'pairs'}"])  # fmt: skip
    run_compare(compare, spark)
    statuses = sorted(r.status for r in rows(spark, root / "t" / "pairs"))
    assert statuses == ["a_erased", "ok"]

    # New consent: lifting is its own recorded act, after which the person is embedded again.
    lifted = forget(spark, root, f"forget.lift=[{erased['erasure_id']}]", "forget.lift_reason=consent ref 42")
    assert lifted["lifted"] == [erased["erasure_id"]] and lifted["erased_rows_removed"] >= PHOTOS
    records = [r for r in rows(spark, root / "t" / "erasures") if r.phase == "lifted"]
    assert [(r.lifts, r.reason) for r in records] == [(erased["erasure_id"], "consent ref 42")]
    back = embed(spark, root)
    assert back["faces"] >= PHOTOS - 1
    assert sum(r.subject_id == TARGET for r in rows(spark, root / "t" / "faces")) >= PHOTOS - 1
