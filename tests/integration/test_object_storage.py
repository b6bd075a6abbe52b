"""Every location on s3a:// against a real S3-compatible endpoint (moto's server on 127.0.0.1): the same
face_ids, top-k and metrics as the same chain on local disk; remote tars with an oversized member; a
missing bucket and refused credentials as exit 2 naming the location, never the secret."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.audit.config import AuditConfig
from jobs.audit.job import run_audit
from jobs.common.config import load_config
from jobs.compare.config import CompareConfig
from jobs.compare.job import run_compare
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query
from tests.fixtures.processes import CEILING_S
from tests.fixtures.s3 import SECRET_KEY, moto_server

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "subject_from_path=^([^/]+)/"


def put_tree(s3_server, local: Path, remote: str) -> None:
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True, client_kwargs={"endpoint_url": s3_server.endpoint})
    fs.put(str(local), remote.replace("s3a://", "s3://"), recursive=True)


@pytest.fixture(scope="module")
def lfw_world(tmp_path_factory, shared_data: Path) -> Path:
    """A gallery of 16 people (first photo each) and probes (their second photos, and 4 strangers)."""
    root = tmp_path_factory.mktemp("s3-world")
    people = [p for p in sorted((shared_data / "lfw" / "images").iterdir()) if len(list(p.glob("*.jpg"))) >= 2]
    for index, person in enumerate(people[:20]):
        photos = sorted(person.glob("*.jpg"))
        if index < 16:
            (root / "gallery" / person.name).mkdir(parents=True)
            shutil.copy(photos[0], root / "gallery" / person.name / photos[0].name)
        (root / "probes" / person.name).mkdir(parents=True)
        shutil.copy(photos[1], root / "probes" / person.name / photos[1].name)
    first, second = [p for p in sorted((root / "gallery").glob("*/*.jpg"))][:2]
    probe = sorted((root / "probes" / first.parent.name).glob("*.jpg"))[0]
    pairs = [(first, probe), (first, second), (second, root / "gallery" / "missing.jpg")]
    (root / "pairs.csv").write_text(
        "a,b\n" + "".join(f"{a.relative_to(root)},{b.relative_to(root)}\n" for a, b in pairs)
    )
    return root


def gallery_config(inputs: str, out: str, pack_dir: str) -> EmbedConfig:
    return load_config(
        EmbedConfig,
        None,
        [
            f"spark.data_root={out}/data",
            f"runs_table={out}/runs",
            f"embed.input.path={inputs}/gallery",
            f"embed.table_path={out}/faces",
            f"embed.pack_dir={pack_dir}",
            f"embed.labels.{SUBJECT}",
            "embed.files_per_task=4",
        ],
    )


def chain(spark, inputs: str, out: str, pack_dir: str) -> dict:
    """embed -> index -> query -> audit with every location under `out`, images under `inputs`."""
    common = [f"spark.data_root={out}/data", f"runs_table={out}/runs"]
    embed = run_embed(gallery_config(inputs, out, pack_dir), spark)
    index = run_index(
        load_config(IndexConfig, None, [*common, f"index.faces_table={out}/faces", f"index.index_dir={out}/index"]),
        spark,
    )
    query = run_query(
        load_config(
            QueryConfig,
            None,
            [
                *common,
                "query.probes.kind=archive",
                f"query.probes.archive={{path: '{inputs}/probes', kind: dir}}",
                f"query.probes.probe_table={out}/probe_faces",
                f"query.probes.pack_dir={pack_dir}",
                f"query.probes.labels.{SUBJECT}",
                f"query.index_dir={out}/index",
                f"query.matches_table={out}/matches",
                "query.k=3",
            ],
        ),
        spark,
    )
    audit = run_audit(
        load_config(
            AuditConfig,
            None,
            [
                *common,
                f"audit.labelled.faces_table={out}/faces",
                "audit.labelled.name=LFW 16 people",
                f"audit.identification.matches_table={query['outputs']['matches_table']}",
                f"audit.metrics_table={out}/metrics",
                f"audit.report_dir={out}/reports",
                "audit.bootstrap_rounds=50",
            ],
        ),
        spark,
    )
    compare = run_compare(
        load_config(
            CompareConfig,
            None,
            [
                *common,
                f"compare.pairs.path={inputs}/pairs.csv",
                f"compare.scores_table={out}/scores",
                f"compare.pack_dir={pack_dir}",
            ],
        ),
        spark,
    )
    scores = spark.read.format("delta").load(f"{out}/scores").collect()
    faces = spark.read.format("delta").load(f"{out}/faces")
    matches = spark.read.format("delta").load(query["outputs"]["matches_table"])
    return {
        "summaries": (embed, index, query, audit),
        "faces": sorted((r.face_id, r.status, r.subject_id) for r in faces.collect()),
        "top_k": sorted((r.probe_face_id, r.rank, r.gallery_face_id, round(r.score, 6)) for r in matches.collect()),
        "one_to_n": {k: v for k, v in audit["one_to_n"].items() if isinstance(v, int | float)},
        "report": audit["outputs"]["report"],
        "compare": (compare["pairs"], sorted((r.pair_index, r.status, r.score) for r in scores)),
    }


@pytest.mark.data
def test_every_location_on_s3_gives_the_local_results(spark, s3_server, lfw_world: Path, default_pack, tmp_path):
    bucket = s3_server.new_bucket()
    put_tree(s3_server, lfw_world, f"{bucket}/images")
    put_tree(s3_server, default_pack.path, f"{bucket}/packs/default")

    local = chain(spark, str(lfw_world), str(tmp_path / "local"), str(default_pack.path))
    remote = chain(spark, f"{bucket}/images", f"{bucket}/lake", f"{bucket}/packs/default")

    assert remote["faces"] == local["faces"] and len(local["faces"]) >= 16
    assert remote["top_k"] == local["top_k"] and local["top_k"]
    assert remote["one_to_n"] == local["one_to_n"] and local["one_to_n"]["searches"] >= 16
    assert remote["compare"] == local["compare"] and local["compare"][0] == 3
    assert [status for _, status, _ in local["compare"][1]] == ["ok", "ok", "b_read_error"]
    embed, index, query, audit = remote["summaries"]
    assert embed["outputs"]["faces_table"] == f"{bucket}/lake/faces"
    # a rerun finds every image known, the table on S3 read by delta-rs on the driver (no Spark job)
    again = run_embed(gallery_config(f"{bucket}/images", f"{bucket}/lake", f"{bucket}/packs/default"), spark)
    assert again["known_searched_by"] == "driver" and again["files_skipped_known"] == embed["files_seen"] >= 16
    assert again["outputs"]["faces_table_version"] == embed["outputs"]["faces_table_version"]
    assert index["outputs"]["index_dir"] == f"{bucket}/lake/index"
    assert str(audit["outputs"]["report"]).startswith(f"{bucket}/lake/reports/")

    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True, client_kwargs={"endpoint_url": s3_server.endpoint})
    lake = bucket.replace("s3a://", "") + "/lake"
    manifest = json.loads(fs.cat(f"{lake}/index/manifest.json"))
    assert {p.rsplit("/", 1)[-1] for p in fs.ls(f"{lake}/index")} >= {e["file"] for e in manifest["shards"]}
    assert fs.exists(f"{lake}/faces/_delta_log/00000000000000000000.json")
    report = fs.cat(str(audit["outputs"]["report"]).replace("s3a://", ""))
    assert b"<html" in report[:200].lower()
    runs = str(spark.read.format("delta").load(f"{bucket}/lake/runs").toPandas().to_dict())
    assert "s3a://" in runs and SECRET_KEY not in runs and SECRET_KEY.encode() not in report

    from deltalake import DeltaTable  # the no-JVM reader of docs/jobs/query.md, on the same bucket

    options = {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    matches = DeltaTable(query["outputs"]["matches_table"].replace("s3a://", "s3://"), storage_options=options)
    assert matches.to_pyarrow_table().num_rows == len(remote["top_k"])


def test_remote_tar_member_over_the_limit_is_a_status_row(spark, s3_server, tmp_path: Path) -> None:
    import io
    import tarfile

    from tests.fixtures.images import jpeg

    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("small.jpg", jpeg()), ("huge.jpg", b"\xff" * 300_000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bucket = s3_server.new_bucket()
    put_tree(s3_server, archive, f"{bucket}/in/photos.tar.gz")
    summary = run_embed(
        load_config(
            EmbedConfig,
            None,
            [
                f"spark.data_root={tmp_path / 'data'}",
                "embed.input.kind=tar",
                f"embed.input.path={bucket}/in",
                "embed.input.max_file_bytes=100000",
                f"embed.table_path={bucket}/faces",
            ],
        ),
        spark,
    )
    rows = {r.source_path: (r.status, r.error) for r in spark.read.format("delta").load(f"{bucket}/faces").collect()}
    huge = rows[f"{bucket}/in/photos.tar.gz!huge.jpg"]
    assert huge[0] == "too_large" and "300000 bytes" in huge[1]
    assert rows[f"{bucket}/in/photos.tar.gz!small.jpg"][0] != "too_large"
    assert summary["files_seen"] == 2


def embed_cli(input_path: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`lineup embed` from `input_path` into a local faces table, as a separate process."""
    command = ["embed", "--set", f"embed.input.path={input_path}", "--set", f"embed.table_path={tmp_path / 'faces'}"]
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *command], capture_output=True, text=True, env=env, timeout=CEILING_S
    )


def test_missing_bucket_is_exit_2_naming_the_location(s3_server, tmp_path: Path) -> None:
    import os

    env = dict(os.environ, **s3_server.env)
    result = embed_cli("s3a://no-such-bucket-lineup/photos", tmp_path, env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout.count("\n") == 1 and json.loads(result.stdout)["status"] == "failed"
    assert "s3a://no-such-bucket-lineup/photos" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr and SECRET_KEY not in result.stderr + result.stdout


def test_refused_credentials_are_exit_2_without_the_secret(tmp_path: Path) -> None:
    import os

    import boto3

    # A second server that checks signatures (moto's IAM auth after the first calls set up a user).
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as endpoint:
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        iam.create_user(UserName="lineup")
        key = iam.create_access_key(UserName="lineup")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="lineup", PolicyName="all", PolicyDocument=json.dumps(policy))
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        s3.create_bucket(Bucket="guarded")
        env = dict(
            os.environ,
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID=key["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,  # the wrong secret for this key
            AWS_DEFAULT_REGION="us-east-1",
        )
        result = embed_cli("s3a://guarded/photos", tmp_path, env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "s3a://guarded/photos" in result.stderr and "access denied" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET_KEY not in result.stderr + result.stdout


@pytest.mark.slow
@pytest.mark.data
def test_killed_run_resumes_with_the_faces_table_on_s3(spark, s3_server, tmp_path: Path, shared_data: Path) -> None:
    import os
    import signal

    import fsspec

    from tests.integration.test_embed_crash import FILES_PER_COMMIT, job_flags, lineup, rows

    archive = tmp_path / "archive"
    for person in sorted((shared_data / "lfw" / "images").iterdir())[:24]:
        (archive / person.name).mkdir(parents=True)
        first = sorted(person.glob("*.jpg"))[0]
        shutil.copy(first, archive / person.name / first.name)
    bucket = s3_server.new_bucket()
    put_tree(s3_server, archive, f"{bucket}/archive")
    clean, crashed = tmp_path / "clean", f"{bucket}/crashed"

    clean_run = lineup(*job_flags(archive, clean, tmp_path / "d1"))
    _, clean_err = clean_run.communicate(timeout=CEILING_S)
    assert clean_run.returncode == 0, clean_err[-3000:]

    fs = fsspec.filesystem("s3", skip_instance_cache=True, client_kwargs={"endpoint_url": s3_server.endpoint})
    second_commit = crashed.replace("s3a://", "") + f"/_delta_log/{2:020d}.json"
    victim = lineup(*job_flags(f"{bucket}/archive", crashed, tmp_path / "d2"))
    deadline = time.monotonic() + CEILING_S
    while not fs.exists(second_commit):  # the table created and two chunks committed on S3
        assert victim.poll() is None, victim.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no second commit"
        time.sleep(0.2)
        fs.invalidate_cache()
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=CEILING_S)
    partial = spark.read.format("delta").load(crashed).count()
    assert 0 < partial < len(rows(spark, clean)), "the kill must land midway"

    resumed = lineup(*job_flags(f"{bucket}/archive", crashed, tmp_path / "d2"))
    out, err = resumed.communicate(timeout=CEILING_S)
    assert resumed.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["files_skipped_known"] >= 2 * FILES_PER_COMMIT

    def content(table) -> list:
        return sorted((face_id, status, vector) for face_id, _, status, vector in rows(spark, table))

    assert content(crashed) == content(clean)


def test_an_endpoint_given_as_hadoop_settings_reaches_the_store(s3_server, tmp_path: Path, shared_data: Path) -> None:
    """The S3 endpoint given only the Hadoop way (`spark.extra_conf`, as EMR and MinIO users do; no
    AWS_ENDPOINT_URL, no `storage:` section): the preflight does not take it for a location, and the
    job's own clients (fsspec, delta-rs) reach the same store as Spark's S3A."""
    import os

    bucket = s3_server.new_bucket()
    photos = tmp_path / "photos"
    for person in sorted((shared_data / "lfw" / "images").iterdir())[:3]:
        (photos / person.name).mkdir(parents=True)
        shutil.copy(sorted(person.glob("*.jpg"))[0], photos / person.name)
    env = {k: v for k, v in dict(os.environ, **s3_server.env).items() if not k.startswith("AWS_ENDPOINT_URL")}
    hadoop = {"spark.hadoop.fs.s3a.endpoint": s3_server.endpoint, "spark.hadoop.fs.s3a.path.style.access": "true",
              "spark.hadoop.fs.s3a.connection.ssl.enabled": "false"}  # fmt: skip
    command = ["embed", "--set", f"embed.input.path={photos}", "--set", f"embed.table_path={bucket}/faces",
               "--set", f"runs_table={bucket}/runs", "--set", f"spark.extra_conf={json.dumps(hadoop)}"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *command], capture_output=True, text=True, env=env, timeout=CEILING_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["files_processed"] == 3 and summary["outputs"]["faces_table"] == f"{bucket}/faces"
