"""The Python API inside one SparkSession against the command line: embed -> index -> query write the same
tables either way, and the API returns typed results that chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lineup
from tests.fixtures.processes import finish, start_lineup

pytestmark = pytest.mark.data

MATCH_COLUMNS = ["probe_face_id", "rank", "gallery_face_id", "gallery_subject_id", "score"]


def _cli(*args: str) -> dict:
    process = start_lineup(*args)
    stdout = finish(process)
    assert process.returncode == 0, stdout
    return json.loads(stdout)


def _chain_settings(world, root: Path) -> dict[str, dict[str, str]]:
    return {
        "gallery": {
            "embed.input.path": world.gallery_photos,
            "embed.table_path": str(root / "gallery"),
            "embed.labels.subject_from_path": "([^/]+)/[^/]+$",
        },
        "probes": {"embed.input.path": world.probe_photos, "embed.table_path": str(root / "probes")},
        "index": {"index.faces_table": str(root / "gallery"), "index.index_dir": str(root / "index")},
        "query": {
            "query.probes.faces_table": str(root / "probes"),
            "query.index_dir": str(root / "index"),
            "query.k": "3",
            "query.threshold.value": "0.9",
            "query.matches_table": str(root / "matches"),
            "query.identities_table": str(root / "identities"),
        },
    }


def test_the_api_chain_writes_what_the_command_line_writes(api_world, spark, tmp_path: Path) -> None:
    api, cli = _chain_settings(api_world, tmp_path / "api"), _chain_settings(api_world, tmp_path / "cli")

    gallery = lineup.embed(spark=spark, **api["gallery"])
    probes = lineup.embed(spark=spark, **api["probes"])
    built = lineup.index(spark=spark, **{**api["index"], "index.faces_table": gallery.faces_table})
    found = lineup.query(
        spark=spark, **{**api["query"], "query.k": 3, "query.threshold.value": 0.9, "query.index_dir": built.index_dir}
    )
    assert isinstance(gallery, lineup.EmbedResult) and isinstance(found, lineup.QueryResult)
    assert gallery.faces_table_version >= 1 and gallery.by_status["ok"] == api_world.gallery_face_count
    assert json.loads(found.to_json())["run_id"] == found.run_id

    for step, command in (("gallery", "embed"), ("probes", "embed"), ("index", "index"), ("query", "query")):
        _cli(command, *[arg for key, value in cli[step].items() for arg in ("--set", f"{key}={value}")])

    def faces(root: str) -> list[tuple]:
        rows = spark.read.format("delta").load(root).select("face_id", "embedding", "subject_id").collect()
        return sorted((r.face_id, tuple(r.embedding or ()), r.subject_id) for r in rows)

    assert faces(gallery.faces_table) == faces(cli["gallery"]["embed.table_path"])
    assert faces(probes.faces_table) == faces(cli["probes"]["embed.table_path"])
    manifests = [
        json.loads((Path(d) / "manifest.json").read_text()) for d in (built.index_dir, cli["index"]["index.index_dir"])
    ]
    assert [m["vectors"] for m in manifests] == [api_world.gallery_face_count] * 2

    def matches(table: str) -> list[tuple]:
        rows = spark.read.format("delta").load(table).select(*MATCH_COLUMNS, "above_threshold").collect()
        return sorted(tuple(r) for r in rows)

    api_matches, cli_matches = matches(found.matches_table), matches(cli["query"]["query.matches_table"])
    assert api_matches == cli_matches and len(api_matches) == 3 * api_world.probe_face_count

    runs = spark.read.format("delta").load(found.runs_table).where(f"run_id = '{found.run_id}'").collect()
    assert [(r.job, r.status) for r in runs] == [("query", "ok")]
