"""`lineup package`: archives that let executors with a bare Python run Lineup's tasks.

- `lineup_env.tar.gz`: a virtual environment with a non-editable build of this project and the
  libraries its executor code imports, made relocatable by venv-pack. PySpark and Delta are left out
  (the cluster's Spark provides them), and so are driver-only libraries (plots, no-JVM readers).
  Everything is copied from this installation: building it downloads nothing.
- `lineup_pack.tar.gz`: the model pack; executors find it through SparkFiles and verify every file's
  sha256 before use (`jobs.models.pack.locate_pack`).

Shipped with `--archives lineup_env.tar.gz#lineup_env,lineup_pack.tar.gz#lineup_pack` and
`spark.pyspark.python=./lineup_env/bin/python` (`lineup submit-args --cluster` prints them all).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from jobs.common.errors import UserError
from jobs.common.executors import ENV_ALIAS, PACK_ALIAS
from jobs.common.paths import lineup_home
from jobs.models.pack import load_pack

log = logging.getLogger(__name__)

ENV_ARCHIVE, PACK_ARCHIVE = "lineup_env.tar.gz", "lineup_pack.tar.gz"
# The cluster provides Spark; the driver alone draws plots and serves no-JVM readers.
LEFT_OUT = {"pyspark", "delta-spark", "py4j", "matplotlib", "deltalake", "duckdb", "venv-pack", "wheel"}
# Optional extras go along where they are installed here: object-store file systems (`lineup[s3]`, ...)
# and HEIC decoding (`lineup[heif]`: executors decode the images).
SHIPPED_EXTRAS = ("s3", "gcs", "azure", "heif")


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


def executor_distributions(root: str = "lineup") -> list[metadata.Distribution]:
    """The installed distributions executors need: `root`'s requirements and theirs, minus LEFT_OUT."""
    seen: dict[str, metadata.Distribution] = {}
    pending = [Requirement(r) for r in metadata.requires(root) or []]
    while pending:
        requirement = pending.pop()
        extras = [
            e for e in ("", *SHIPPED_EXTRAS) if requirement.marker is None or requirement.marker.evaluate({"extra": e})
        ]
        if not extras:
            continue
        name = _key(requirement.name)
        if name in seen or name in LEFT_OUT:
            continue
        try:
            seen[name] = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            if "" in extras:
                raise
            continue  # an optional extra this installation does not have
        pending += [Requirement(r) for r in seen[name].requires or []]
    return sorted(seen.values(), key=lambda d: _key(d.metadata["Name"]))


def _copy_installed(distribution: metadata.Distribution, site_packages: Path) -> int:
    """Copy an installed distribution's files (its RECORD) into another environment's site-packages."""
    copied = 0
    for file in distribution.files or []:
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue  # console scripts and byte code: not needed by executors
        source = Path(str(distribution.locate_file(file)))
        if source.is_file():
            target = site_packages / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied += source.stat().st_size
    return copied


def _project_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise UserError(f"lineup package builds from a source checkout; none found at {root}")
    return root


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")


def build_env_archive(out_dir: Path) -> dict[str, Any]:
    import venv_pack

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lineup-package-") as scratch:
        wheels, env = Path(scratch) / "wheels", Path(scratch) / "env"
        # Non-editable: a wheel of the checkout, so the archive does not point back at it.
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
              str(_project_root())])  # fmt: skip
        _run([sys.executable, "-m", "venv", str(env)])
        _run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
              str(next(wheels.glob("lineup-*.whl")))])  # fmt: skip
        site_packages = env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        distributions = executor_distributions()
        copied = sum(_copy_installed(d, site_packages) for d in distributions)
        manifest = {
            "python": ".".join(map(str, sys.version_info[:3])),
            "pyspark_left_out": True,
            "distributions": {d.metadata["Name"]: d.version for d in distributions},
        }
        (env / "lineup_env.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        archive = out_dir / ENV_ARCHIVE
        venv_pack.pack(prefix=str(env), output=str(archive), force=True, compress_level=1)
    log.info(
        "environment archive %s: %d distributions (%.0f MB before packing)", archive, len(distributions), copied / 1e6
    )
    return {
        "env_archive": str(archive),
        "env_archive_bytes": archive.stat().st_size,
        "env_build_s": round(time.perf_counter() - started, 1),
        **manifest,
    }


def build_pack_archive(pack_dir: Path, out_dir: Path) -> dict[str, Any]:
    pack = load_pack(pack_dir)  # a broken pack is refused here, not on the executors
    archive = out_dir / PACK_ARCHIVE
    scratch = archive.with_suffix(".tmp")
    with tarfile.open(scratch, "w:gz", compresslevel=1) as tar:
        for path in sorted(pack.path.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
    scratch.replace(archive)
    return {"pack_archive": str(archive), "pack_archive_bytes": archive.stat().st_size, "model_id": pack.model_id}


def run_package(out_dir: Path, pack_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"job": "package", "status": "ok", "out_dir": str(out_dir)}
    summary.update(build_pack_archive(pack_dir, out_dir))
    summary.update(build_env_archive(out_dir))
    return summary


def default_package_dir() -> Path:
    return lineup_home() / "package"


def cluster_submit_args(base_args: list[str], package_dir: Path) -> list[str]:
    """`base_args` (Delta jars and settings) plus what runs Lineup on executors that lack it."""
    env, pack = package_dir / ENV_ARCHIVE, package_dir / PACK_ARCHIVE
    missing = [str(p) for p in (env, pack) if not p.is_file()]
    if missing:
        raise UserError(f"no {', '.join(missing)}: run `lineup package --out {package_dir}` first")
    return [
        *base_args,
        "--archives",
        f"{env}#{ENV_ALIAS},{pack}#{PACK_ALIAS}",
        "--conf",
        f"spark.pyspark.python=./{ENV_ALIAS}/bin/python",
        "--conf",
        f"spark.pyspark.driver.python={sys.executable}",  # the driver keeps this installation
    ]
