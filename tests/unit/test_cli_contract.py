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


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "lfw", "--lfw-dir", "{tmp}/no-lfw", "--pack", "{tmp}/no-pack"],
        ["package", "--out", "{tmp}/out", "--pack", "{tmp}/no-pack"],
        ["models", "build-insightface", "--detector", "{tmp}/d.onnx", "--embedder", "{tmp}/e.onnx", "--out", "{tmp}/p"],
    ],
)
def test_commands_that_are_not_jobs_read_the_shared_config_and_refuse_bad_input(
    capsys, tmp_path, argv: list[str]
) -> None:
    """Each reads the shared settings (`--set` works: a bad key is refused first) and then refuses a
    missing input with exit 2 and one JSON line, never a traceback."""
    args = [part.format(tmp=tmp_path) for part in argv]
    assert cli.main([*args, "--set", "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert cli.main(args) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["status"] == "failed"
