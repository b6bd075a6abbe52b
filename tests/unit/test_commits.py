"""Commit-conflict retries: conflicts are retried with bounded, growing waits; other errors pass through;
conflicts that outlast the retries become a TransientError, which the CLI turns into exit 3."""

from __future__ import annotations

import pytest

from jobs.common.commits import with_commit_retries
from jobs.common.errors import TransientError

CONFLICT = RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added ... Please try again.")


def flaky(failures: list[BaseException]):
    calls = []

    def write() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "committed"

    return write, calls


def test_conflicts_are_retried_until_the_commit_lands() -> None:
    waits: list[float] = []
    write, calls = flaky([CONFLICT, CONFLICT])
    assert with_commit_retries(write, "/t", sleep=waits.append) == "committed"
    assert len(calls) == 3 and len(waits) == 2 and 0 < waits[0] and waits[1] <= 20.0


def test_other_errors_are_not_retried() -> None:
    write, calls = flaky([ValueError("Path does not exist: /t")])
    with pytest.raises(ValueError, match="does not exist"):
        with_commit_retries(write, "/t", sleep=lambda s: None)
    assert len(calls) == 1


def test_endless_conflicts_become_a_transient_error_naming_the_table() -> None:
    waits: list[float] = []
    write, calls = flaky([CONFLICT] * 10)
    with pytest.raises(TransientError, match="/tables/faces.*rerun") as error:
        with_commit_retries(write, "/tables/faces", attempts=4, sleep=waits.append)
    assert len(calls) == 4 and len(waits) == 3 and "\n" not in str(error.value)


def test_cli_exit_code_3_for_transient_failures(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from jobs import cli

    def conflicted(args) -> int:
        raise TransientError("/t: the commit still conflicted")

    monkeypatch.setitem(cli.COMMANDS, "embed", ("embed", conflicted))
    assert cli.main(["embed"]) == 3
    assert "retry later" in capsys.readouterr().err
