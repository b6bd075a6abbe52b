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


def is_transient(error: BaseException) -> bool:
    """Infrastructure failures a retry may not meet: a lost executor, a storage or network timeout.

    >>> is_transient(RuntimeError("Job aborted due to stage failure: ExecutorLostFailure (executor 3 exited)"))
    True
    >>> is_transient(ValueError("could not convert string to float"))
    False
    """
    return mentions(error, TRANSIENT_MARKERS)
