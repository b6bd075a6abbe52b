"""Errors a user can fix. The CLI prints their message as one line and exits with status 2."""


class UserError(Exception):
    """Bad input or a missing setup step; the message names the input and the fix."""
