"""Model packs: a folder with `pack.json` and the ONNX files it names, every file pinned by sha256.

`pack.json` states everything the pipeline needs to use the files the way they were trained: detector
kind and input settings, the landmark template and chip size, the embedder's input size, mean, std,
colour order and output size, and the metric. `model_id` is derived from all of it (file hashes
included), so two packs with the same id produce the same embeddings, and any edit to a file or a
setting is caught at load time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.common import storage
from jobs.common.errors import UserError
from jobs.common.hashing import sha256_file

PACK_FORMAT = "lineup-pack/1"
PACK_FILE = "pack.json"


class PackError(UserError):
    """A pack that is missing, malformed or fails its checksums."""


def derive_model_id(manifest: dict[str, Any]) -> str:
    """`<name>-<16 hex>`: a hash of the canonical JSON of everything in the manifest but the id itself."""
    content = {key: value for key, value in manifest.items() if key != "model_id"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return f"{manifest['name']}-{hashlib.sha256(canonical).hexdigest()[:16]}"


@dataclass(frozen=True)
class Pack:
    """A loaded, verified pack. `path` is a local folder; `source` is where it was configured (a remote
    pack is copied into the local cache, keyed by model_id, and verified there)."""

    path: Path
    manifest: dict[str, Any]
    source: str = ""

    @property
    def location(self) -> str:
        """What executors are told to load: the configured location (each fetches a remote one once)."""
        return self.source or str(self.path)

    @property
    def model_id(self) -> str:
        return str(self.manifest["model_id"])

    @property
    def detector(self) -> dict[str, Any]:
        return dict(self.manifest["detector"])

    @property
    def alignment(self) -> dict[str, Any]:
        return dict(self.manifest["alignment"])

    @property
    def embedder(self) -> dict[str, Any]:
        return dict(self.manifest["embedder"])

    @property
    def dim(self) -> int:
        return int(self.manifest["embedder"]["output_dim"])

    def file_path(self, section: str) -> Path:
        return self.path / self.manifest[section]["file"]


def load_pack(pack_dir: storage.AnyPath | str) -> Pack:
    """Read `pack.json`, check its model_id and every file's sha256; `PackError` naming the fix otherwise.
    A remote pack (`s3a://...`) is fetched into the local cache first (once per machine)."""
    if storage.is_remote(str(pack_dir)):
        return _load_remote(str(pack_dir))
    pack_dir = Path(str(pack_dir)).expanduser().resolve()
    manifest_path = pack_dir / PACK_FILE
    if not manifest_path.is_file():
        raise PackError(
            f"{pack_dir} is not a model pack (no {PACK_FILE}); build one with `lineup models build-default`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackError(f"{manifest_path} is not valid JSON ({error}); rebuild the pack") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise PackError(f"{manifest_path}: not a {PACK_FORMAT} manifest; rebuild the pack")
    if manifest.get("model_id") != derive_model_id(manifest):
        raise PackError(f"{manifest_path}: model_id does not match the manifest's content (edited?); rebuild the pack")
    for section in ("detector", "embedder"):
        entry = manifest[section]
        if not _inside_pack(pack_dir, entry.get("file")):
            raise PackError(
                f"{manifest_path}: {section}.file {entry.get('file')!r} is not a file inside the pack folder; "
                "refusing the pack"
            )
        path = pack_dir / entry["file"]
        if not path.is_file():
            raise PackError(f"{path} named by {manifest_path} is missing; rebuild the pack")
        if sha256_file(path) != entry["sha256"]:
            raise PackError(f"{path} fails its sha256 check against {manifest_path}; refusing the pack, rebuild it")
    return Pack(pack_dir, manifest)


def _load_remote(location: str) -> Pack:
    remote = storage.upath(location)
    try:
        manifest = json.loads((remote / PACK_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackError(
            f"{location} is not a model pack (no {PACK_FILE}); upload a pack folder built by `lineup setup`"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackError(f"{location}/{PACK_FILE} is not valid JSON ({error}); upload the pack again") from None
    if not isinstance(manifest, dict) or manifest.get("model_id") != derive_model_id(manifest):
        raise PackError(
            f"{location}/{PACK_FILE}: not a {PACK_FORMAT} manifest with a matching model_id; upload it again"
        )
    local = storage.cache_dir() / "packs" / str(manifest["model_id"])
    if not (local / PACK_FILE).is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{local.name}-", dir=local.parent))
        try:
            for section in ("detector", "embedder"):
                name = manifest[section].get("file")
                if not _inside_pack(scratch, name):
                    raise PackError(
                        f"{location}/{PACK_FILE}: {section}.file {name!r} is not inside the pack; refusing it"
                    )
                blob = storage.cached_copy(remote / name, manifest[section]["sha256"])
                if blob is None:
                    raise PackError(f"{location}/{name} fails its sha256 check against {PACK_FILE}; refusing the pack")
                shutil.copyfile(blob, scratch / name)
            (scratch / PACK_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            try:
                os.replace(scratch, local)
            except OSError:  # another worker on this machine placed it first: theirs is verified below
                pass
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    pack = load_pack(local)
    if pack.model_id != manifest["model_id"]:
        raise PackError(f"the cached copy of {location} is {pack.model_id}; remove {local} and rerun")
    return Pack(pack.path, pack.manifest, source=location)


def _inside_pack(pack_dir: Path, name: object) -> bool:
    """A relative name that stays inside the pack folder (no absolute path, no `..`, no symlink out)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return False
    return (pack_dir / name).resolve().is_relative_to(pack_dir.resolve())


def complete_manifest(manifest: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """A copy of `manifest` with the format, every file's sha256 and the model_id filled in."""
    manifest = json.loads(json.dumps(manifest))
    manifest["format"] = PACK_FORMAT
    for section, data in files.items():
        manifest[section]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["model_id"] = derive_model_id(manifest)
    return manifest


def write_pack(pack_dir: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> Pack:
    """Write the files and a manifest (sha256s and model_id filled in) into `pack_dir`, atomically.

    The pack is assembled in a temporary sibling folder and renamed into place, so a reader never sees a
    half-written pack.
    """
    manifest = complete_manifest(manifest, files)
    pack_dir = Path(pack_dir).expanduser().resolve()
    pack_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{pack_dir.name}-", dir=pack_dir.parent))
    try:
        for section, data in files.items():
            (scratch / manifest[section]["file"]).write_bytes(data)
        (scratch / PACK_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if pack_dir.exists():
            old = pack_dir.with_name(f".{pack_dir.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(pack_dir, old)
            os.replace(scratch, pack_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(scratch, pack_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return load_pack(pack_dir)


SHIPPED_PACK = "lineup_pack"  # the alias `lineup submit-args --cluster` gives the pack archive


def locate_pack(pack_dir: str, model_id: str) -> Pack:
    """The pack as an executor sees it: the driver's folder where this node shares it, else the copy
    shipped with the job (`--archives lineup_pack.tar.gz#lineup_pack`: in the task's working directory
    or SparkFiles' root). Either way every file's sha256 is checked, and the model must be the driver's."""
    if storage.is_remote(pack_dir):
        pack = load_pack(pack_dir)
        if pack.model_id != model_id:
            raise PackError(f"the pack at {pack_dir} is now {pack.model_id}, the run uses {model_id}: rerun the job")
        return pack
    candidates = [Path(pack_dir)]
    candidates.append(Path(SHIPPED_PACK))
    try:
        from pyspark import SparkFiles

        candidates.append(Path(SparkFiles.getRootDirectory()) / SHIPPED_PACK)
    except Exception:  # noqa: BLE001 - outside a Spark task there is no SparkFiles root
        pass
    found = next((c for c in candidates if (c / PACK_FILE).is_file()), None)
    if found is None:
        raise PackError(
            f"no model pack on this executor: {pack_dir} does not exist here and no {SHIPPED_PACK} was shipped; "
            "submit with the flags of `lineup submit-args --cluster` (they ship the pack)"
        )
    pack = load_pack(found)
    if pack.model_id != model_id:
        raise PackError(f"the pack at {found} is {pack.model_id}, the run uses {model_id}: ship the driver's pack")
    return pack
