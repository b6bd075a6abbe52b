import re

"""Errors the CLI turns into exit codes: a `UserError` exits 2 (fix the input, do not retry), a
`TransientError` exits 3 (infrastructure: retrying later is sensible). Anything else is a bug (exit 1)."""


class UserError(Exception):
    """Bad input or a missing setup step; the message names the input and the fix."""


class TransientError(Exception):
    """A failure a later retry may not meet (a commit conflict that outlasted our own retries, a lost
    executor, a storage timeout); the message names the location and says to retry."""


def mentions(error: BaseException, markers: tuple[str, ...]) -> bool:
    """Whether an error's class name or message names one of `markers` (JVM exceptions reach Python as
    text inside py4j or PySpark wrappers, so their class names are matched in the message)."""
    text = f"{type(error).__name__}: {error}"
    return any(marker in text for marker in markers)


TRANSIENT_MARKERS = (
    "ExecutorLostFailure",
    "FetchFailed",
    "SocketTimeoutException",
    "ConnectException",
    "Connection refused",
    "Connection reset",
    "UnknownHostException",
    "SdkClientException",
    "Read timed out",
)


# An executor's error reaches the driver as text inside Spark's wrapper; these are matched in it.
INDEX_CHANGED = "IndexChangedError: "


def storage_fault(error: BaseException) -> str | None:
    """The kind of storage fault an error (or an executor's error inside it) reports, or None.

    >>> storage_fault(OSError(28, "No space left on device")), storage_fault(ValueError("bad value"))
    ('no space left on device', None)
    """
    text = f"{error}"
    if isinstance(error, OSError) and error.errno in (5, 28, 30, 122):
        text = f"[Errno {error.errno}] {error.strerror}"
    if "No space left" in text or "[Errno 28]" in text:
        return "no space left on device"
    if "Disk quota exceeded" in text or "[Errno 122]" in text:
        return "disk quota exceeded"
    if "Read-only file system" in text or "[Errno 30]" in text:
        return "read-only file system"
    if "Input/output error" in text or "[Errno 5]" in text:
        return "input/output error"
    return None


def faulted_path(error: BaseException) -> str | None:
    """The file an OSError's text names (`[Errno 28] No space left on device: '/data/x'`), if any.

    >>> faulted_path(RuntimeError("OSError: [Errno 28] No space left on device: '/t/faces/part-1.parquet'"))
    '/t/faces/part-1.parquet'
    """

    found = re.search(r"\[Errno \d+\] [^:'\n]+: '([^'\n]+)'", str(error))
    return found.group(1) if found else None


# Spark's words for a table's data file removed while a job read it (a VACUUM, an erasure's purge).
TABLE_FILE_GONE = (
    "DELTA_FILE_NOT_FOUND",
    "FAILED_READ_FILE.FILE_NOT_EXIST",
    "FileNotFoundException",
    "No such file or directory",  # the same read by pyarrow on the driver (delta-rs's file list)
)


def executor_message(error: BaseException, marker: str) -> str | None:
    """The message of an error an executor raised, found after `marker` (its class name and ': ')."""
    for line in str(error).splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return None


def is_transient(error: BaseException) -> bool:
    """Infrastructure failures a retry may not meet: a lost executor, a storage or network timeout.

    >>> is_transient(RuntimeError("Job aborted due to stage failure: ExecutorLostFailure (executor 3 exited)"))
    True
    >>> is_transient(ValueError("could not convert string to float"))
    False
    """
    return mentions(error, TRANSIENT_MARKERS)
