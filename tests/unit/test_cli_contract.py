"""The orchestration contract without Spark: one JSON line on stdout whatever happens, and an exit status
an orchestrator can act on (0 done, 2 do not retry, 3 retry, 1 bug)."""

from __future__ import annotations

import json

import pytest

from jobs import cli
from jobs.common.config import apply_overrides, load_config, read_yaml
from jobs.common.errors import TransientError, UserError
from jobs.query.config import QueryConfig
from tests.unit.test_shipped_confs import CONF


def run_with(monkeypatch: pytest.MonkeyPatch, capsys, error: BaseException) -> tuple[int, dict, str]:
    def handler(args) -> int:
        raise error

    monkeypatch.setitem(cli.COMMANDS, "index", ("index", handler))
    code = cli.main(["index"])
    out, err = capsys.readouterr()
    [line] = out.splitlines()
    return code, json.loads(line), err


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UserError("index.faces_table /x is not a Delta table"), 2),
        (TransientError("/t: the commit still conflicted"), 3),
        (RuntimeError("Job aborted due to stage failure: ExecutorLostFailure (executor 1 exited)"), 3),
        (ValueError("an unexpected bug"), 1),
    ],
)
def test_every_ending_prints_one_json_line(monkeypatch, capsys, error: BaseException, code: int) -> None:
    exit_code, line, err = run_with(monkeypatch, capsys, error)
    assert exit_code == code and line["status"] == "failed" and line["exit_code"] == code
    assert line["job"] == "index" and str(error).splitlines()[0] in line["error"]
    assert ("Traceback" in err) == (code in (1, 3) and not isinstance(error, TransientError))


def test_a_failed_run_names_its_run_id(monkeypatch, capsys) -> None:
    error = UserError("bad")
    error.run_id = "index-20261128T000000Z-abcd1234"  # type: ignore[attr-defined]  # as run_recorded sets it
    _, line, _ = run_with(monkeypatch, capsys, error)
    assert line["run_id"] == "index-20261128T000000Z-abcd1234"


def test_a_null_section_of_the_shipped_conf_can_be_filled_with_set() -> None:
    merged, _ = apply_overrides(read_yaml(CONF / "query.yaml"), ["query.probes.archive.kind=dir"])
    assert merged["query"]["probes"]["archive"] == {"kind": "dir"}
    config = load_config(
        QueryConfig,
        CONF / "query.yaml",
        ["query.probes.kind=archive", "query.probes.archive.kind=dir", "query.probes.archive.path=/photos"],
    )
    assert config.query.probes.archive is not None and config.query.probes.archive.path == "/photos"
