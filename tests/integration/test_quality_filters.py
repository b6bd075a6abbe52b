"""Quality filters through the jobs, on real LFW photographs and copies made poor in known ways (blurred,
darkened, shrunk): the index leaves out exactly the gallery faces below the floor and counts them, a
query writes each probe below the floor as a `low_quality` row with its reasons and searches the rest,
compare says which side was too poor; every face is accounted for. With the filter at NONE (the default)
nothing changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import faiss
import numpy as np
import pytest

from jobs.common.config import load_config
from jobs.common.errors import UserError
from jobs.compare.config import CompareConfig
from jobs.compare.job import run_compare
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.models.quality import LOW_FACE_QUALITY
from jobs.models.quality_model import floor_of
from jobs.query.config import QueryConfig
from jobs.query.job import run_query
from jobs.shards.files import load_index
from tests.fixtures.faces import clustered, write_faces

pytestmark = pytest.mark.slow

PEOPLE = 6


def _poor(source: Path, target: Path) -> None:
    """A photograph made poor: shrunk to a third, blurred and darkened, then brought back to size."""
    image = cv2.imread(str(source))
    height, width = image.shape[:2]
    small = cv2.resize(image, (width // 3, height // 3), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.2)
    dark = (small.astype(np.float32) * 0.35).astype(np.uint8)
    cv2.imwrite(str(target), cv2.resize(dark, (width, height), interpolation=cv2.INTER_LINEAR))


@pytest.fixture(scope="module")
def world(shared_data: Path, spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("quality")
    images = shared_data / "lfw" / "images"
    people = [p for p in sorted(images.iterdir()) if len(list(p.glob("*.jpg"))) >= 3][:PEOPLE]
    for person in people:
        photos = sorted(person.glob("*.jpg"))
        for role, chosen in (("gallery", photos[:2]), ("probes", photos[2:3])):
            folder = root / role / person.name
            folder.mkdir(parents=True)
            for photo in chosen:
                shutil.copy(photo, folder / photo.name)
            _poor(chosen[0], folder / f"poor_{chosen[0].name}")
    tables = {}
    for role in ("gallery", "probes"):
        tables[role] = str(root / f"{role}_faces")
        config = load_config(
            EmbedConfig,
            None,
            [
                f"embed.input.path={root / role}",
                f"embed.table_path={tables[role]}",
                "embed.labels.subject_from_path=([^/]+)/[^/]+$",
                f"runs_table={root / 'runs'}",
            ],
        )
        run_embed(config, spark)
    return {"root": root, **tables}


def ok_faces(spark, table: str) -> list:
    return spark.read.format("delta").load(table).where("status = 'ok'").collect()


def level_splitting(rows: list) -> tuple[str, float]:
    """The lowest filter level whose floor has faces on both sides (the poor copies must fall below one)."""
    qualities = [row.quality for row in rows]
    for level in ("LOW", "MEDIUM", "HIGH"):
        floor = floor_of(level)  # type: ignore[arg-type]
        assert floor is not None
        if min(qualities) < floor <= max(qualities):
            return level, floor
    pytest.fail(f"no level's floor splits these faces' qualities {sorted(qualities)}")


def test_every_face_has_components_reasons_and_a_quality_in_0_1(spark, world: dict) -> None:
    rows = ok_faces(spark, world["gallery"])
    assert len(rows) >= 3 * PEOPLE
    for row in rows:
        assert 0.0 < row.quality < 1.0
        assert row.quality_reasons is not None
        assert row.quality_components.inter_eye_px > 0 and row.quality_components.embedding_norm > 0
    poor = [r.quality for r in rows if "poor_" in r.source_path]
    good = [r.quality for r in rows if "poor_" not in r.source_path]
    assert np.median(poor) < np.median(good)


def test_the_index_leaves_out_exactly_the_faces_below_the_floor(spark, world: dict) -> None:
    rows = ok_faces(spark, world["gallery"])
    level, floor = level_splitting(rows)
    index_dir = world["root"] / f"index-{level}"
    config = load_config(
        IndexConfig,
        None,
        [
            f"index.faces_table={world['gallery']}",
            f"index.index_dir={index_dir}",
            f"index.quality_filter={level}",
            "index.shards=2",
            f"runs_table={world['root'] / 'runs'}",
        ],
    )
    result = run_index(config, spark)
    below = {r.face_id for r in rows if r.quality < floor}
    kept = {r.face_id for r in rows if r.quality >= floor}
    assert result["faces_below_quality_floor"] == len(below) and result["quality_floor"] == floor
    assert result["quality_filter"] == level and result["vectors"] == len(kept)
    index = load_index(index_dir)
    indexed = {int(i) for shard in index.shards for i in faiss.vector_to_array(shard.id_map)}
    assert indexed == kept
    assert index.manifest.faces_below_quality_floor == len(below)
    # The faces table still holds every face: the filter only keeps them out of the index.
    assert len(ok_faces(spark, world["gallery"])) == len(rows)
    # An update under another filter would mix floors: refused, the index in force unchanged.
    with pytest.raises(UserError, match="rebuild it"):
        run_index(
            config.model_copy(
                update={"index": config.index.model_copy(update={"quality_filter": "NONE", "update": True})}
            ),
            spark,
        )


def test_a_query_searches_only_probes_above_the_floor_and_says_why_of_the_others(spark, world: dict) -> None:
    root = world["root"]
    index_dir = root / "index-all"
    run_index(
        load_config(
            IndexConfig,
            None,
            [f"index.faces_table={world['gallery']}", f"index.index_dir={index_dir}", f"runs_table={root / 'runs'}"],
        ),
        spark,
    )
    probes = ok_faces(spark, world["probes"])
    level, floor = level_splitting(probes)

    def query(filter_level: str, name: str):
        config = load_config(
            QueryConfig,
            None,
            [
                f"query.probes.faces_table={world['probes']}",
                f"query.index_dir={index_dir}",
                f"query.matches_table={root / name / 'matches'}",
                f"query.identities_table={root / name / 'identities'}",
                f"query.quality_filter={filter_level}",
                "query.k=3",
                f"runs_table={root / 'runs'}",
            ],
        )
        result = run_query(config, spark)
        return result, spark.read.format("delta").load(str(root / name / "matches")).collect()

    unfiltered, all_rows = query("NONE", "none")
    assert {r.probe_status for r in all_rows} == {"ok"}
    result, rows = query(level, "filtered")
    low = {p.face_id for p in probes if p.quality < floor}
    searched = {p.face_id for p in probes if p.quality >= floor}
    assert {r.probe_face_id for r in rows} == low | searched  # every probe accounted for
    assert {r.probe_face_id for r in rows if r.probe_status == "low_quality"} == low
    assert {r.probe_face_id for r in rows if r.rank is not None} == searched
    for row in rows:
        if row.probe_status == "low_quality":
            assert row.rank is None and row.probe_quality < floor
            assert row.probe_quality_reasons[-1] == LOW_FACE_QUALITY
            assert f"below the {level} floor" in row.probe_error
    assert result["probes_low_quality"] == len(low) and result["probes_searched"] == len(searched)
    assert result["quality_filter"] == level and result["quality_floor"] == floor
    # The probes searched get the same candidates as without the filter.
    before = sorted((r.probe_face_id, r.rank, r.gallery_face_id) for r in all_rows if r.probe_face_id in searched)
    after = sorted((r.probe_face_id, r.rank, r.gallery_face_id) for r in rows if r.rank is not None)
    assert before == after and unfiltered["probes_searched"] == len(probes)


def test_compare_says_which_side_is_below_the_floor(spark, world: dict) -> None:
    root = world["root"]
    rows = ok_faces(spark, world["gallery"])
    level, floor = level_splitting(rows)
    poor = next(r for r in rows if "poor_" in r.source_path and r.quality < floor)
    good = next(r for r in rows if r.quality >= floor)
    pairs = root / "pairs.csv"
    pairs.write_text(
        f"a,b\n{good.face_id},{poor.face_id}\n{poor.face_id},{good.face_id}\n{good.face_id},{good.face_id}\n"
    )
    config = load_config(
        CompareConfig,
        None,
        [
            f"compare.pairs.path={pairs}",
            "compare.pairs.kind=faces",
            f"compare.faces_table={world['gallery']}",
            f"compare.scores_table={root / 'scores'}",
            f"compare.quality_filter={level}",
            f"runs_table={root / 'runs'}",
        ],
    )
    result = run_compare(config, spark)
    scores = {r.pair_index: r for r in spark.read.format("delta").load(str(root / "scores")).collect()}
    statuses = [scores[i].status for i in sorted(scores)]
    assert statuses == ["b_low_quality", "a_low_quality", "ok"]
    assert scores[sorted(scores)[0]].score is None and scores[sorted(scores)[2]].score is not None
    assert scores[sorted(scores)[0]].b_quality == pytest.approx(poor.quality)
    assert result["pairs"] == 3


def test_a_table_whose_quality_was_never_measured_is_refused_by_a_filter(spark, world: dict) -> None:
    root = world["root"]
    write_faces(spark, root / "old_faces", np.arange(1, 41, dtype=np.int64), clustered(40, dim=16))
    config = load_config(
        IndexConfig,
        None,
        [
            f"index.faces_table={root / 'old_faces'}",
            f"index.index_dir={root / 'old-index'}",
            "index.quality_filter=LOW",
            f"runs_table={root / 'runs'}",
        ],
    )
    with pytest.raises(UserError, match="no measured quality"):
        run_index(config, spark)


def test_the_audit_reports_error_rates_per_quality_band(spark, world: dict) -> None:
    """1:1 per band of each pair's lower quality, and 1:N per probe quality band; bands account for every
    pair and every search."""
    from jobs.audit.config import AuditConfig
    from jobs.audit.job import run_audit
    from jobs.audit.quality_bands import QUALITY_BAND, band_names

    root = world["root"]
    config = load_config(
        AuditConfig,
        None,
        [
            f"audit.labelled.faces_table={world['gallery']}",
            "audit.labelled.face_per_image=all",
            f"audit.metrics_table={root / 'metrics'}",
            f"audit.report_dir={root / 'reports'}",
            "audit.bootstrap_rounds=50",
            f"runs_table={root / 'runs'}",
        ],
    )
    one = run_audit(config, spark)["one_to_one"]
    bands = one["groups"][QUALITY_BAND]
    rows = ok_faces(spark, world["gallery"])
    quality = {r.face_id: r.quality for r in rows}
    assert bands["cross_group_pairs_excluded"] == 0
    pairs = one["pairs"]
    assert sum(g["genuine_pairs"] for g in bands["groups"].values()) == pairs["genuine_pairs"]
    assert sum(g["impostor_pairs"] for g in bands["groups"].values()) == pairs["impostor_pairs"]
    lowest = band_names(np.array([min(quality.values())]))[0]
    assert lowest in bands["groups"]  # the poorest face's pairs sit in its band
    report = Path(run_audit(config, spark)["outputs"]["report"]).read_text()
    assert "Error rates by quality band" in report

    # 1:N: the probes (half of them mated) against half the people's gallery faces, per probe quality band.
    index_dir, half = root / "index-bands", root / "half_gallery"
    people = sorted({r.subject_id for r in rows})[: PEOPLE // 2]
    gallery = spark.read.format("delta").load(world["gallery"])
    gallery.where(gallery.subject_id.isin(people)).write.format("delta").save(str(half))
    run_index(load_config(IndexConfig, None, [f"index.faces_table={half}", f"index.index_dir={index_dir}"]), spark)
    searched = run_query(
        load_config(
            QueryConfig,
            None,
            [
                f"query.probes.faces_table={world['probes']}",
                f"query.index_dir={index_dir}",
                f"query.matches_table={root / 'bands' / 'matches'}",
                f"query.identities_table={root / 'bands' / 'identities'}",
                f"runs_table={root / 'runs'}",
            ],
        ),
        spark,
    )
    identification = config.audit.identification.model_copy(
        update={
            "matches_table": str(root / "bands" / "matches"),
            "run_id": searched["run_id"],
            "index_dir": str(index_dir),
        }
    )
    labelled_off = config.audit.labelled.model_copy(update={"faces_table": None})
    many_config = config.model_copy(
        update={"audit": config.audit.model_copy(update={"identification": identification, "labelled": labelled_off})}
    )
    many = run_audit(many_config, spark)["one_to_n"]
    bands_1n = many["quality_bands"]
    assert bands_1n
    for target in config.audit.fpir_targets:
        at = [b for b in bands_1n if b["target_fpir"] == target]
        if at:
            assert sum(b["mated_searches"] + b["non_mated_searches"] for b in at) == many["searches"]
