"""Errors the CLI turns into exit codes: a `UserError` exits 2 (fix the input, do not retry), a
`TransientError` exits 3 (infrastructure: retrying later is sensible). Anything else is a bug (exit 1)."""


class UserError(Exception):
    """Bad input or a missing setup step; the message names the input and the fix."""


class TransientError(Exception):
    """A failure a later retry may not meet (a commit conflict that outlasted our own retries, a lost
    executor, a storage timeout); the message names the location and says to retry."""
