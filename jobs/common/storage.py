"""Files at any location: local paths, `file://`, `s3a://` (`s3://`), `gs://`, `abfss://`, `hdfs://`.

Tables go through Spark's Hadoop file systems; every other file (input images and tars, index shards,
packs, reports, calibration records) goes through fsspec, as `UPath` objects (universal-pathlib: pathlib's
API over fsspec; a local location is a plain `pathlib.Path` subclass, so local behaviour is unchanged).

Endpoint and credentials come from the standard places: AWS_* environment variables (and instance
roles), the Hadoop configuration, and the non-secret `storage:` config section (endpoint, region, path
style). Secrets are never read into a config, so they cannot reach a log, a JSON line or the runs table.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from upath import UPath

from jobs.common.errors import UserError
from jobs.common.paths import lineup_home

log = logging.getLogger(__name__)

# A local or remote location as jobs hold it (local UPaths are pathlib paths).
AnyPath = Path | UPath

# Spark knows S3 as s3a:// (Hadoop's S3A connector); s3:// is what users paste from the AWS console.
_SPARK_SCHEMES = {"s3": "s3a"}
_PROVIDER_OF = {"s3a": "s3", "s3": "s3", "gs": "gcs", "gcs": "gcs", "abfs": "azure", "abfss": "azure", "az": "azure"}
_EXTRA_OF = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs", "hdfs": "pyarrow (with libhdfs)"}


def scheme_of(location: str) -> str:
    """The URI scheme, or "" for a local path.

    >>> scheme_of("s3a://bucket/x"), scheme_of("/data/x"), scheme_of("file:///data/x")
    ('s3a', '', 'file')
    """
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", location)
    return match.group(1).lower() if match else ""


def is_remote(location: object) -> bool:
    """True for object stores and HDFS (no rename, no local path), false for local paths and file://."""
    return scheme_of(str(location)) not in ("", "file", "local")


def spark_uri(location: str) -> str:
    """The location as Spark's Hadoop file systems name it (`s3://` becomes `s3a://`).

    >>> spark_uri("s3://bucket/faces"), spark_uri("gs://b/x"), spark_uri("/data/x")
    ('s3a://bucket/faces', 'gs://b/x', '/data/x')
    """
    scheme = scheme_of(location)
    if scheme in _SPARK_SCHEMES:
        return _SPARK_SCHEMES[scheme] + location[len(scheme) :]
    return location


def bucket_of(location: str) -> str:
    """The bucket (or container, or host) part of a remote URI.

    >>> bucket_of("s3a://my-bucket/faces/x")
    'my-bucket'
    """
    rest = location.split("://", 1)[1]
    return rest.split("/", 1)[0].split("@")[-1]


def upath(location: str | os.PathLike[str] | UPath) -> UPath:
    """A path object for any location (local ones are pathlib paths)."""
    if isinstance(location, UPath):
        return location
    text = str(location)
    if not is_remote(text):
        return UPath(text[len("file://") :] if text.startswith("file://") else text)
    try:
        return UPath(text)
    except (ImportError, ValueError) as error:
        provider = _PROVIDER_OF.get(scheme_of(text), scheme_of(text))
        raise UserError(
            f"{text}: no file system for {scheme_of(text)}:// here ({error}); install {_EXTRA_OF.get(provider, 'its')} "
            f"(pip install 'lineup[{provider}]')"
        ) from None


def write_atomically(path: AnyPath, data: bytes | memoryview) -> None:
    """Write a whole file so readers see the old bytes or the new, never a part: a rename locally, one
    PUT on an object store (an object appears whole or not at all)."""
    path = upath(path)
    if is_remote(str(path)):
        with path.open("wb") as stream:
            stream.write(data)
        return
    scratch = Path(str(path)).with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    scratch.write_bytes(data)
    os.replace(scratch, str(path))


def cache_dir() -> Path:
    """Where executors and drivers keep downloaded shards and packs, keyed by sha256."""

    return Path(os.environ.get("LINEUP_CACHE_DIR", str(lineup_home() / "cache")))


def cached_copy(location: AnyPath, expected_sha256: str) -> Path | None:
    """A local copy of a remote file, downloaded once per machine (the cache is keyed by its sha256, so a
    changed file is a new entry), or None when the downloaded bytes do not have that sha256. A local file
    is returned as it is (the caller checks it)."""
    if not is_remote(str(location)):
        return Path(str(location))
    target = cache_dir() / "blobs" / expected_sha256[:2] / expected_sha256
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}")
    digest = hashlib.sha256()
    with upath(location).open("rb") as source, open(scratch, "wb") as sink:
        while block := source.read(8 << 20):
            digest.update(block)
            sink.write(block)
    if digest.hexdigest() != expected_sha256:
        scratch.unlink()
        return None
    os.replace(scratch, target)
    return target


def check_reachable(location: str, setting: str) -> None:
    """Fail early, with one line naming the setting and the location, when a remote location's bucket
    is missing or the credentials are refused (instead of a stack trace from deep inside a job)."""
    if not is_remote(location):
        return
    path = upath(location)
    bucket = bucket_of(location)
    try:
        path.fs.ls(bucket, detail=False)
    except FileNotFoundError:
        raise UserError(
            f"{setting} {location}: the bucket {bucket!r} does not exist (or is not visible with these "
            "credentials); create it or fix the location"
        ) from None
    except PermissionError as error:
        raise UserError(
            f"{setting} {location}: access denied to {bucket!r} ({_reason(error)}); check the credentials "
            "(AWS_* environment variables, instance role, or Hadoop configuration)"
        ) from None
    except OSError as error:
        raise UserError(
            f"{setting} {location}: not reachable ({_reason(error)}); check the endpoint and the credentials"
        ) from None


def s3_endpoint() -> str | None:
    """The S3 endpoint of the standard AWS variables (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL), if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


_ARROW_S3: list[Any] = []  # one Arrow S3 client per process (it pools its connections)
_FETCH_THREADS = 8


def _arrow_s3() -> Any:
    """Arrow's S3 file system with the standard AWS configuration (credentials chain, region) and the
    endpoint of AWS_ENDPOINT_URL(_S3) where one is set."""
    if not _ARROW_S3:
        from pyarrow import fs as arrow_fs

        options: dict[str, Any] = {}
        endpoint = s3_endpoint()
        if endpoint:
            parsed = urlparse(endpoint)
            options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            options["region"] = region
        _ARROW_S3.append(arrow_fs.S3FileSystem(**options))
    return _ARROW_S3[0]


def s3_cat(uris: list[str]) -> dict[str, bytes | BaseException]:
    """Whole S3 objects (or each one's error), fetched on a few threads (Arrow releases the GIL)."""

    s3 = _arrow_s3()

    def one(uri: str) -> bytes | BaseException:
        try:
            with s3.open_input_stream(uri.split("://", 1)[1]) as stream:
                return bytes(stream.read())
        except (OSError, ValueError) as error:
            return error

    with ThreadPoolExecutor(min(_FETCH_THREADS, len(uris))) as pool:
        return dict(zip(uris, pool.map(one, uris)))


def check_locations(settings: Iterable[tuple[str, str]]) -> None:
    """`check_reachable` for every remote location of a job's config (`location_settings`: each bucket
    once), before any work: a wrong bucket or credentials is exit 2 naming the setting, not a failure
    deep in a job."""
    checked: set[str] = set()
    for key, value in settings:
        if is_remote(value) and bucket_of(value) not in checked:
            check_reachable(value, key)
            checked.add(bucket_of(value))


def _reason(error: BaseException) -> str:
    """An error's first line, with anything shaped like a secret removed."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return redact(text)[:200]


def redact(text: str) -> str:
    """Remove what looks like a credential (an AWS secret, an access key id, a signature or token).

    >>> redact("key AKIAIOSFODNN7EXAMPLE and Signature=abc123 ok")
    'key <redacted> and Signature=<redacted> ok'
    """
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if secret:
        text = text.replace(secret, "<redacted>")
    text = re.sub(r"\b(AKIA|ASIA)[A-Z0-9]{12,}\b", "<redacted>", text)
    return re.sub(r"(?i)(signature|x-amz-security-token|sig|token)=[^&\s]+", r"\1=<redacted>", text)


def hadoop_conf(endpoint: str | None, region: str | None, path_style: bool) -> dict[str, Any]:
    """The `spark.hadoop.fs.s3a.*` settings for a configured (or AWS_ENDPOINT_URL) endpoint; none for AWS.

    >>> hadoop_conf("http://127.0.0.1:9000", None, True)["spark.hadoop.fs.s3a.connection.ssl.enabled"]
    'false'
    """
    endpoint = endpoint or s3_endpoint()
    conf: dict[str, Any] = {}
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https")).lower()
        # The endpoint's URL is what executors' fsspec (botocore) reads too.
        conf["spark.executorEnv.AWS_ENDPOINT_URL"] = endpoint
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    # A server addressed by IP or as localhost cannot take the bucket in its host name.
    if path_style or (endpoint and re.match(r"^https?://(localhost|\d+\.\d+\.\d+\.\d+|\[)", endpoint)):
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    return conf
