"""Delta Lake's jars: resolved once at setup by Spark's own Ivy resolver, checked, staged, never fetched later.

`lineup setup` resolves `io.delta:delta-spark` and its dependencies from Maven Central into a scratch Ivy
folder, checks every jar against the sha256 values committed in `jobs/resources/delta-jars.json` (Ivy
itself checks Maven Central's sha1 files while downloading), and moves the set into the staging folder
with a `manifest.json`. Sessions then use `spark.jars` with those files only, so nothing is fetched at test
or run time and a machine without network runs the same code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jobs.common.errors import UserError
from jobs.common.hashing import sha256_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


class JarsNotStaged(UserError):
    """The Delta jars are missing or do not match their recorded checksums."""


@dataclass(frozen=True)
class JarLock:
    """The Maven coordinates to resolve and the sha256 of every jar they resolve to."""

    coordinates: str
    sha256_by_file: dict[str, str]

    @property
    def delta_version(self) -> str:
        return self.coordinates.rsplit(":", 1)[-1]


DELTA_LOCK = "delta-jars.json"
# Hadoop's S3A connector and the AWS SDK it was built against (pyspark ships no object-store connector).
S3_LOCK = "s3-jars.json"


def load_lock(name: str = DELTA_LOCK) -> JarLock:
    """Read a committed lock that pins the coordinates and every jar's checksum."""
    text = resources.files("jobs.resources").joinpath(name).read_text(encoding="utf-8")
    data = json.loads(text)
    return JarLock(coordinates=data["coordinates"], sha256_by_file=dict(data["sha256"]))


def s3_jars_dir(jars_dir: Path) -> Path:
    """Where the S3A jars are staged: beside the Delta jars (`<jars_dir>-s3`)."""
    return jars_dir.with_name(jars_dir.name + "-s3")


def staged_jars(staging_dir: Path) -> list[Path]:
    """The staged jar paths, from the manifest; raises `JarsNotStaged` naming the fix if any is missing.

    Only presence and size are checked here because this runs at every session start; `verify_staged`
    (used by `lineup setup` and `lineup doctor`) re-hashes every file.
    """
    manifest_path = staging_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise JarsNotStaged(f"Delta jars are not staged in {staging_dir}: run `lineup setup` (or `make install`)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    jars = []
    for entry in manifest["jars"]:
        path = staging_dir / entry["file"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise JarsNotStaged(f"staged jar {path} is missing or changed: run `lineup setup` to stage it again")
        jars.append(path)
    return jars


def verify_staged(staging_dir: Path, lock: JarLock) -> list[Path]:
    """Check that the staged set is exactly the locked set with matching sha256; return the jar paths."""
    jars = staged_jars(staging_dir)
    found = {path.name for path in jars}
    if found != set(lock.sha256_by_file):
        raise JarsNotStaged(
            f"staged jars in {staging_dir} are not the locked set for {lock.coordinates}: run `lineup setup`"
        )
    for path in jars:
        if sha256_file(path) != lock.sha256_by_file[path.name]:
            raise JarsNotStaged(f"staged jar {path} fails its sha256 check: run `lineup setup` to stage it again")
    return jars


def stage_jars(staging_dir: Path, lock: JarLock | None = None) -> list[Path]:
    """Make sure the locked Delta jars are staged in `staging_dir`, resolving them only when needed."""
    lock = lock or load_lock()
    try:
        jars = verify_staged(staging_dir, lock)
        log.info("%s jars already staged and verified in %s", lock.coordinates, staging_dir)
        return jars
    except JarsNotStaged as reason:
        log.info("staging %s jars: %s", lock.coordinates, reason)
    staging_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".jars-", dir=staging_dir.parent) as scratch:
        resolved = _resolve_with_spark_ivy(lock.coordinates, Path(scratch) / "ivy")
        _check_against_lock(resolved, lock)
        candidate = Path(scratch) / "staged"
        candidate.mkdir()
        entries = []
        for path in sorted(resolved, key=lambda p: p.name):
            shutil.copy2(path, candidate / path.name)
            entries.append({"file": path.name, "bytes": path.stat().st_size, "sha256": lock.sha256_by_file[path.name]})
        manifest = {"coordinates": lock.coordinates, "jars": entries}
        (candidate / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        # Swap the whole folder in one rename so a half-staged set is never visible.
        if staging_dir.exists():
            shutil.rmtree(staging_dir)
        os.replace(candidate, staging_dir)
    return staged_jars(staging_dir)


def _check_against_lock(resolved: list[Path], lock: JarLock) -> None:
    names = {path.name for path in resolved}
    missing, extra = set(lock.sha256_by_file) - names, names - set(lock.sha256_by_file)
    if missing or extra:
        raise JarsNotStaged(
            f"resolving {lock.coordinates} gave a different jar set than its lock in jobs/resources/ "
            f"(missing {sorted(missing)}, unexpected {sorted(extra)}); update the lock deliberately"
        )
    for path in resolved:
        if sha256_file(path) != lock.sha256_by_file[path.name]:
            raise JarsNotStaged(f"{path.name} from Maven Central does not match its locked sha256; refusing it")


_RESOLVE_SCRIPT = """
import sys
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").appName("lineup-stage-jars")
         .config("spark.jars.packages", sys.argv[1]).config("spark.jars.ivy", sys.argv[2])
         .config("spark.ui.enabled", "false").getOrCreate())
spark.stop()
"""


def _resolve_with_spark_ivy(coordinates: str, ivy_dir: Path) -> list[Path]:
    """Let Spark's own Ivy resolver fetch the package and its dependencies into `ivy_dir/jars`."""
    env = dict(os.environ, SPARK_LOCAL_IP=os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"))
    result = subprocess.run(
        [sys.executable, "-c", _RESOLVE_SCRIPT, coordinates, str(ivy_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    jars = sorted((ivy_dir / "jars").glob("*.jar"))
    if result.returncode != 0 or not jars:
        tail = " | ".join(result.stderr.strip().splitlines()[-5:])
        raise JarsNotStaged(f"could not resolve {coordinates} from Maven Central (is it reachable?): {tail}")
    return jars
