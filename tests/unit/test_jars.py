import json
from pathlib import Path

import pytest

from jobs.common import jars as jars_module
from jobs.common.hashing import sha256_file
from jobs.common.jars import JarLock, JarsNotStaged, stage_jars, staged_jars, verify_staged


def make_staged(folder: Path, contents: dict[str, bytes]) -> JarLock:
    folder.mkdir(parents=True)
    entries = []
    for name, data in contents.items():
        (folder / name).write_bytes(data)
        entries.append({"file": name, "bytes": len(data), "sha256": sha256_file(folder / name)})
    (folder / "manifest.json").write_text(json.dumps({"coordinates": "g:a:1", "jars": entries}))
    return JarLock("g:a:1", {entry["file"]: entry["sha256"] for entry in entries})


def test_unstaged_folder_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(JarsNotStaged, match="lineup setup"):
        staged_jars(tmp_path / "jars")


def test_verify_accepts_the_locked_set(tmp_path: Path) -> None:
    lock = make_staged(tmp_path / "jars", {"a.jar": b"aaa", "b.jar": b"bb"})
    assert [p.name for p in verify_staged(tmp_path / "jars", lock)] == ["a.jar", "b.jar"]


def test_verify_refuses_a_changed_byte(tmp_path: Path) -> None:
    lock = make_staged(tmp_path / "jars", {"a.jar": b"aaa"})
    (tmp_path / "jars" / "a.jar").write_bytes(b"aab")  # same size: only the hash can tell
    with pytest.raises(JarsNotStaged, match="sha256"):
        verify_staged(tmp_path / "jars", lock)


def test_verify_refuses_a_different_set(tmp_path: Path) -> None:
    lock = make_staged(tmp_path / "jars", {"a.jar": b"aaa"})
    with pytest.raises(JarsNotStaged, match="locked set"):
        verify_staged(tmp_path / "jars", JarLock(lock.coordinates, {**lock.sha256_by_file, "c.jar": "0" * 64}))


def test_stage_skips_resolution_when_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = make_staged(tmp_path / "jars", {"a.jar": b"aaa"})

    def no_network(*_args: object) -> list[Path]:
        raise AssertionError("must not resolve when the staged set verifies")

    monkeypatch.setattr(jars_module, "_resolve_with_spark_ivy", no_network)
    assert [p.name for p in stage_jars(tmp_path / "jars", lock)] == ["a.jar"]


def test_stage_refuses_downloads_that_miss_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    download = tmp_path / "ivy" / "jars"
    download.mkdir(parents=True)
    (download / "a.jar").write_bytes(b"evil")
    monkeypatch.setattr(jars_module, "_resolve_with_spark_ivy", lambda *_: [download / "a.jar"])
    lock = JarLock("g:a:1", {"a.jar": "0" * 64})
    with pytest.raises(JarsNotStaged, match="does not match its locked sha256"):
        stage_jars(tmp_path / "staged", lock)
    assert not (tmp_path / "staged").exists(), "a refused download must not be staged"


def test_committed_lock_pins_delta_spark() -> None:
    lock = jars_module.load_lock()
    assert lock.coordinates.startswith("io.delta:delta-spark_2.13:")
    assert f"io.delta_delta-spark_2.13-{lock.delta_version}.jar" in lock.sha256_by_file


def test_s3_lock_matches_the_hadoop_inside_pyspark() -> None:
    """hadoop-aws must be the exact Hadoop version pyspark bundles, or S3A fails with linkage errors."""
    from pathlib import Path

    import pyspark

    bundled = {p.name for p in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar")}
    lock = jars_module.load_lock(jars_module.S3_LOCK)
    hadoop = lock.coordinates.rsplit(":", 1)[-1]
    assert lock.coordinates.startswith("org.apache.hadoop:hadoop-aws:")
    assert bundled == {f"hadoop-client-api-{hadoop}.jar"}
    assert f"org.apache.hadoop_hadoop-aws-{hadoop}.jar" in lock.sha256_by_file
    assert any(name.startswith("software.amazon.awssdk_bundle-") for name in lock.sha256_by_file)
    assert all(len(digest) == 64 for digest in lock.sha256_by_file.values())
