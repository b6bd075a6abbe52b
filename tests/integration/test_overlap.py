"""Jobs that overlap, as a scheduler runs them: separate `lineup` processes on real LFW faces, the second
started (or the first frozen with SIGSTOP and thawed) when the first reaches a stated point: a Delta
commit or a log line, never a fixed sleep. The invariant is checked after both end.

- an embed committing beside `lineup forget`: the person is in no table row and no data file afterwards,
  nor after the embed is rerun;
- a query that pinned an index generation while `lineup index --set index.update=true` publishes the next
  one finishes on its own generation (exit 0); while `lineup forget` purges it, it exits 3 and a rerun
  succeeds;
- a build killed at five points leaves the previous manifest in force or a fully measured new one;
- a full disk during embed is exit 3 with one sentence naming the location, and a rerun resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from jobs.common.config import load_config
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.shards.files import verify_index
from tests.fixtures.manifests import named_files
from tests.fixtures.processes import commit_exists, finish, start_lineup, stderr_of, wait_for
from tests.fixtures.worlds import copy_world, raw_rows

pytestmark = [pytest.mark.slow, pytest.mark.heavy, pytest.mark.data]

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET = "George_W_Bush"
SUBJECT = "embed.labels.subject_from_path=([^/]+)/[^/]+$"


def lineup(job: str, root: Path, *settings: str) -> subprocess.Popen:
    """`lineup JOB` as its own process, on a small local Spark, with this world's shared tables."""
    shared = [f"spark.data_root={root / 'data'}", "spark.master=local[2]", "spark.shuffle_partitions=2",
              f"runs_table={root / 't' / 'runs'}", f"erasures_table={root / 't' / 'erasures'}"]  # fmt: skip
    flags = [part for setting in [*shared, *settings] for part in ("--set", setting)]
    return start_lineup(job, "--conf", str(REPO_ROOT / "conf" / f"{job}.yaml"), *flags)


def ended(process: subprocess.Popen) -> tuple[int, dict]:
    """(exit status, the JSON line) of a finished process."""
    out = finish(process).strip().splitlines()
    return process.returncode, json.loads(out[-1]) if out else {}


def freeze(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGSTOP)  # the job, its JVM and its Python workers: one session


def thaw(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGCONT)


def logged(process: subprocess.Popen, text: str):
    return lambda: text in stderr_of(process)


def copy_people(lfw: Path, target: Path, people: dict[str, int]) -> set[str]:
    """The first N photos of each person into target/<person>/; the sha256 of the target's photos."""
    import hashlib

    digests = set()
    for person, count in people.items():
        (target / person).mkdir(parents=True, exist_ok=True)
        for photo in sorted((lfw / person).glob("*.jpg"))[:count]:
            shutil.copy(photo, target / person / photo.name)
            if person == TARGET:
                digests.add(hashlib.sha256(photo.read_bytes()).hexdigest())
    return digests


def test_an_erasure_converges_with_an_embed_committing_beside_it(spark, shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path
    target_images = copy_people(shared_data / "lfw" / "images", root / "archive", {TARGET: 96, "Tony_Blair": 8})
    faces = root / "t" / "faces"
    embed_settings = [f"embed.input.path={root / 'archive'}", f"embed.table_path={faces}", SUBJECT,
                      "embed.files_per_commit=8", "embed.files_per_task=2"]  # fmt: skip
    embed = lineup("embed", root, *embed_settings)
    wait_for(commit_exists(faces, 1), embed, "the embed's first chunk commit")
    freeze(embed)  # mid-run: chunks committed, others embedded but not committed, the rest to come
    try:
        forget = lineup("forget", root, "forget.selector.kind=subject_ids", f"forget.selector.values=[{TARGET}]",
                        f"forget.faces_tables=[{faces}]", "forget.purge_history=true",
                        "forget.retention_hours=0")  # fmt: skip
        wait_for(commit_exists(root / "t" / "erasures", 0), forget, "the erasure's registration")
    finally:
        thaw(embed)  # the embed now commits while forget deletes, purges and verifies
    (forget_rc, forgot), (embed_rc, embedded) = ended(forget), ended(embed)
    assert forget_rc == 0 and forgot["status"] == "ok", stderr_of(forget)[-3000:]
    assert embed_rc == 0, stderr_of(embed)[-3000:]
    # Both halves of the overlap happened: forget deleted rows committed before it registered, and the
    # embed committed after the registration (those rows became `erased` rows).
    assert sum(t["rows_deleted"] for t in forgot["tables"]) >= 1
    assert embedded["by_status"].get("erased", 0) >= 1, embedded

    rerun = run_embed(load_config(EmbedConfig, None, [
        f"spark.data_root={root / 'data'}", f"runs_table={root / 't' / 'runs'}",
        f"erasures_table={root / 't' / 'erasures'}", *embed_settings]), spark)  # fmt: skip
    assert rerun["faces"] == 0  # the target's deleted images come back as `erased` rows, nothing else
    current = spark.read.format("delta").load(str(faces)).collect()
    assert not [r for r in current if r.subject_id == TARGET]
    by_image: dict[str, list] = {}
    for r in current:
        by_image.setdefault(r.image_id, []).append(r)
    assert all([r.status for r in by_image[i]] == ["erased"] for i in target_images), "one erased row per image"
    assert sum(r.subject_id == "Tony_Blair" and r.status == "ok" for r in current) >= 7
    for row in raw_rows(faces):  # every data file, current or history
        if row["image_id"] in target_images:
            assert row["status"] == "erased" and row["embedding"] is None
        assert TARGET not in json.dumps(row, default=str)
    for log_file in faces.glob("_delta_log/*.json"):
        assert TARGET not in log_file.read_text(), log_file


@pytest.fixture(scope="module")
def gallery(spark, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 people embedded (one photo each) and indexed (exact, 2 shards); 20 more people's photos in
    `later/`, embedded into the same table afterwards so an index update has rows to add."""
    root = tmp_path_factory.mktemp("overlap-gallery")
    lfw = shared_data / "lfw" / "images"
    people = [p.name for p in sorted(lfw.iterdir()) if p.name != TARGET]
    copy_people(lfw, root / "first", dict.fromkeys([*people[:79], TARGET], 1))
    copy_people(lfw, root / "later", dict.fromkeys(people[79:99], 1))
    base = [f"spark.data_root={root / 'data'}", f"runs_table={root / 't' / 'runs'}",
            f"erasures_table={root / 't' / 'erasures'}"]  # fmt: skip
    run_embed(load_config(EmbedConfig, None, [*base, f"embed.input.path={root / 'first'}",
                                              f"embed.table_path={root / 't' / 'faces'}", SUBJECT]), spark)  # fmt: skip
    run_index(load_config(IndexConfig, None, [*base, f"index.faces_table={root / 't' / 'faces'}",
                                              f"index.index_dir={root / 'index'}", "index.shards=2"]),
              spark)  # fmt: skip
    return root


def query(root: Path, name: str) -> subprocess.Popen:
    t = root / "t"
    return lineup("query", root, f"query.probes.faces_table={t / 'faces'}", f"query.index_dir={root / 'index'}",
                  f"query.matches_table={t / name}", f"query.identities_table={t / (name + '_ids')}",
                  "query.k=5", "query.probe_partitions=4", "query.threshold.value=0.5")  # fmt: skip


def test_a_query_finishes_on_its_generation_while_an_update_publishes_the_next(
    spark, gallery: Path, tmp_path: Path
) -> None:
    root = copy_world(gallery, tmp_path / "w")
    pinned = json.loads((root / "index" / "manifest.json").read_text())
    faces_then = spark.read.format("delta").load(str(root / "t" / "faces")).collect()
    pinned_ids = {r.face_id for r in faces_then if r.status == "ok"}
    run_embed(load_config(EmbedConfig, None, [
        f"spark.data_root={root / 'data'}", f"runs_table={root / 't' / 'runs'}",
        f"erasures_table={root / 't' / 'erasures'}", f"embed.input.path={root / 'later'}",
        f"embed.table_path={root / 't' / 'faces'}", SUBJECT]), spark)  # fmt: skip

    reader = query(root, "matches")
    wait_for(logged(reader, "pinned ("), reader, "the query pinning its index generation")
    freeze(reader)
    try:
        update = lineup("index", root, f"index.index_dir={root / 'index'}", "index.update=true")
        update_rc, updated = ended(update)
    finally:
        thaw(reader)
    faces_now = spark.read.format("delta").load(str(root / "t" / "faces")).collect()
    assert update_rc == 0, stderr_of(update)[-3000:]
    assert updated["vectors"] == sum(r.status == "ok" for r in faces_now) > pinned["vectors"]
    assert not named_files(pinned) & named_files(json.loads((root / "index" / "manifest.json").read_text()))
    reader_rc, answered = ended(reader)
    assert reader_rc == 0, stderr_of(reader)[-3000:]
    matches = spark.read.format("delta").load(str(root / "t" / "matches")).collect()
    candidates = {r.gallery_face_id for r in matches if r.gallery_face_id is not None}
    assert candidates and candidates <= pinned_ids  # exactly the pinned generation: none of the faces added
    assert answered["index_id"] == pinned["index_id"] and answered["candidates"] == 5 * answered["probes_searched"]
    assert answered["probes_searched"] > len(pinned_ids)  # the probes include the faces added since

    # The superseded generation stays until an explicit vacuum past its retention removes it.
    old_files = named_files(pinned)
    assert all((root / "index" / name).is_file() for name in old_files)
    kept = lineup("index", root, f"index.index_dir={root / 'index'}", "index.vacuum=true")
    assert ended(kept)[1]["files_removed"] == [] and all((root / "index" / n).is_file() for n in old_files)
    vacuumed = lineup(
        "index", root, f"index.index_dir={root / 'index'}", "index.vacuum=true", "index.retention_hours=0"
    )
    rc, summary = ended(vacuumed)
    assert rc == 0 and sorted(summary["files_removed"]) == sorted(old_files)
    verify_index(root / "index")


def test_a_query_on_a_generation_an_erasure_purged_exits_3_and_a_rerun_succeeds(
    spark, gallery: Path, tmp_path: Path
) -> None:
    root = copy_world(gallery, tmp_path / "w")
    reader = query(root, "matches")
    wait_for(logged(reader, "pinned ("), reader, "the query pinning its index generation")
    freeze(reader)
    try:
        forget = lineup("forget", root, "forget.selector.kind=subject_ids", f"forget.selector.values=[{TARGET}]",
                        f"forget.faces_tables=[{root / 't' / 'faces'}]", f"forget.index_dirs=[{root / 'index'}]",
                        "forget.purge_history=true", "forget.retention_hours=0")  # fmt: skip
        forget_rc, forgot = ended(forget)
    finally:
        thaw(reader)
    assert forget_rc == 0 and forgot["indexes"][0]["superseded_files_purged"] >= 1, stderr_of(forget)[-3000:]
    reader_rc, failed = ended(reader)
    assert reader_rc == 3, stderr_of(reader)[-3000:]
    assert "rerun" in failed["error"] and "\n" not in failed["error"]
    rerun_rc, answered = ended(query(root, "matches"))
    faces_now = spark.read.format("delta").load(str(root / "t" / "faces")).collect()
    assert rerun_rc == 0 and answered["probes_searched"] == sum(r.status == "ok" for r in faces_now)
    assert not [r for r in faces_now if r.subject_id == TARGET]


KILL_POINTS = ("index: read ...", "index: train ...", "index: add (", "index: add done", "index: recall ...")


def test_a_build_killed_at_five_points_leaves_the_previous_manifest_or_a_measured_one(
    gallery: Path, tmp_path: Path
) -> None:
    root = copy_world(gallery, tmp_path / "w")
    manifest_path = root / "index" / "manifest.json"
    previous = manifest_path.read_bytes()
    for point in KILL_POINTS:
        build = lineup("index", root, f"index.faces_table={root / 't' / 'faces'}", f"index.index_dir={root / 'index'}",
                       "index.shards=2", "index.factory=IVF4,Flat", "index.accept_low_recall=true")  # fmt: skip
        wait_for(logged(build, point), build, f"the build reaching {point!r}")
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
        now = manifest_path.read_bytes()
        if now != previous:  # a new generation is in force only if it is complete and measured
            manifest = json.loads(now)
            assert manifest["recall_at_k"] is not None and manifest["search_value"] is not None, point
            previous = now
        verify_index(root / "index")  # whichever generation is in force is whole
    assert json.loads(manifest_path.read_bytes())["factory"] == "Flat", "no kill point is after the commit"
    rc, built = ended(lineup("index", root, f"index.faces_table={root / 't' / 'faces'}",
                             f"index.index_dir={root / 'index'}", "index.shards=2", "index.factory=IVF4,Flat",
                             "index.accept_low_recall=true"))  # fmt: skip
    assert rc == 0 and built["recall_at_k"] is not None and built["search_value"] is not None
    rc, vacuumed = ended(lineup("index", root, f"index.index_dir={root / 'index'}", "index.vacuum=true",
                                "index.retention_hours=0"))  # fmt: skip
    manifest = json.loads(manifest_path.read_text())
    leftover = {p.name for p in (root / "index").iterdir()} - named_files(manifest) - {"manifest.json"}
    assert rc == 0 and not {n for n in leftover if n.endswith((".faiss", ".bin"))}, leftover


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs with room for the table's first commits only (root and mount(8) needed: CI has both)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): run as root to test a full disk")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_embed_is_exit_3_in_one_sentence_and_a_rerun_resumes(
    spark, shared_data: Path, tmp_path: Path, small_disk: Path
) -> None:
    lfw = shared_data / "lfw" / "images"
    copy_people(lfw, tmp_path / "archive", dict.fromkeys([p.name for p in sorted(lfw.iterdir())[:400]], 1))
    table = small_disk / "faces"
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (4 * 2**20 - 96 * 2**10))  # ~96 KiB left: a few chunks' rows fit
    settings = [f"embed.input.path={tmp_path / 'archive'}", f"embed.table_path={table}", "embed.files_per_commit=32"]
    rc, failed = ended(lineup("embed", tmp_path, *settings))
    assert rc == 3, failed
    assert "no space left on device" in failed["error"] and str(small_disk) in failed["error"]
    assert "\n" not in failed["error"] and "Traceback" not in failed["error"]
    committed = spark.read.format("delta").load(str(table)).count()  # the table stays readable
    ballast.unlink()
    rc, resumed = ended(lineup("embed", tmp_path, *settings))
    assert rc == 0 and resumed["files_skipped_known"] + resumed["files_processed"] == 400
    rows = spark.read.format("delta").load(str(table)).collect()
    assert len(rows) >= committed and len({(r.face_id, r.source_path) for r in rows}) == len(rows)
    assert len({r.source_path for r in rows}) == 400
