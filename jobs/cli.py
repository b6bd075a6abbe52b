"""The `lineup` command: one sub-command per job or tool, each `--conf FILE [--set key.sub=value ...]`.

stdout carries exactly one line, the JSON summary, also when a command fails (`"status": "failed"`); logs,
progress and tracebacks go to stderr. Exit status: 0 done, 2 bad input (a one-line reason; do not retry),
3 transient infrastructure failure (retry), 1 a bug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from jobs.commands import (
    add_audit_commands,
    add_config_flags,
    add_models_commands,
    command_parser,
    demo_command,
    package_command,
    submit_args_command,
)
from jobs.common.config import load_config
from jobs.common.errors import TransientError, UserError, is_transient
from jobs.common.logs import configure_logging, emit_summary, error_line
from jobs.common.storage import redact

log = logging.getLogger("lineup")

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_TRANSIENT = 3


def _config_job(config_name: str, runner_name: str) -> Callable[[argparse.Namespace], int]:
    """A handler that loads the job's config (validated), sets logging, runs it and prints its summary.

    Names, not objects, so that `lineup --help` imports neither pyspark nor onnxruntime.
    """

    def handler(args: argparse.Namespace) -> int:
        config_module, config_class = config_name.rsplit(".", 1)
        runner_module, runner_function = runner_name.rsplit(".", 1)
        config = load_config(getattr(importlib.import_module(config_module), config_class), args.conf, args.overrides)
        configure_logging(config.log_level)
        emit_summary(getattr(importlib.import_module(runner_module), runner_function)(config))
        return 0

    return handler


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "index": (
        "build (or update) the sharded FAISS index of a faces table",
        _config_job("jobs.index.config.IndexConfig", "lineup.api.index"),
    ),
    "embed": (
        "embed an image archive (folder, tars, or a table of bytes) into the faces table",
        _config_job("jobs.embed.config.EmbedConfig", "lineup.api.embed"),
    ),
    "query": (
        "search probes (an archive or a faces table) against an index; write matches, identities, runs",
        _config_job("jobs.query.config.QueryConfig", "lineup.api.query"),
    ),
    "compare": (
        "score pairs (two image paths or two face ids per row) into a pair scores table",
        _config_job("jobs.compare.config.CompareConfig", "lineup.api.compare"),
    ),
    "forget": (
        "erase a person's faces, matches and index vectors; purge history; record and verify the erasure",
        _config_job("jobs.forget.config.ForgetConfig", "lineup.api.forget"),
    ),
    "setup": (
        "stage the Delta jars and build the default model pack",
        _config_job("jobs.common.config.LineupConfig", "jobs.staging.run_setup"),
    ),
    "doctor": (
        "check the installation; print versions and the SparkSession start time",
        _config_job("jobs.common.config.LineupConfig", "jobs.doctor.run_doctor"),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, handler) in COMMANDS.items():
        sub = command_parser(commands, name, help_text)
        add_config_flags(sub)
        sub.set_defaults(handler=handler)
    add_models_commands(commands)
    add_audit_commands(commands)
    submit = command_parser(
        commands,
        "submit-args",
        "print the spark-submit flags that give a cluster job Delta Lake (and, with --cluster, Lineup)",
    )
    submit.add_argument("--cluster", action="store_true", help="also ship `lineup package`'s archives to executors")
    submit.add_argument("--package-dir", help="where `lineup package` wrote them (default $LINEUP_HOME/package)")
    submit.add_argument("--json", action="store_true", help="one JSON list of arguments instead of a shell line")
    add_config_flags(submit)
    submit.set_defaults(handler=submit_args_command)
    package = command_parser(
        commands, "package", "build the environment and model-pack archives executors without Lineup need"
    )
    package.add_argument("--out", help="output folder (default $LINEUP_HOME/package)")
    package.add_argument("--pack", help="model pack to ship (default: the default pack)")
    add_config_flags(package)
    package.set_defaults(handler=package_command)
    demo = commands.add_parser(
        "demo",
        help="the whole chain on LFW (embed, index, calibrate, query, audit): the 2018 test replayed",
        description="embed LFW, index a gallery, calibrate on other people, search 535 non-mated people and "
        "the mated probes, audit, and print false matches at a fixed 0.80 threshold beside the calibrated one",
    )
    demo.add_argument("--data", help="folder holding lfw/ (default: $LINEUP_DATA_DIR or ../shared/data)")
    demo.add_argument("--people", type=int, help="a seeded subset of LFW identities, for a quick run")
    add_config_flags(demo)
    demo.set_defaults(handler=demo_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Whatever happens, stdout gets exactly one JSON line (the summary, or
    `"status": "failed"` with the error) and the exit status says what kind of ending it was."""
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return int(args.handler(args))
    except UserError as error:
        error_line(f"lineup {args.command}: error: {error}")
        return _failed(args.command, error, EXIT_USER_ERROR)
    except TransientError as error:
        error_line(f"lineup {args.command}: transient failure, retry later: {error}")
        return _failed(args.command, error, EXIT_TRANSIENT)
    except Exception as error:  # a bug: its traceback goes to stderr, the JSON line still comes
        if is_transient(error):
            log.exception("lineup %s: transient infrastructure failure", args.command)
            return _failed(args.command, error, EXIT_TRANSIENT)
        log.exception("lineup %s failed with an unexpected error (a bug: please report it)", args.command)
        return _failed(args.command, error, EXIT_BUG)


def _failed(command: str, error: BaseException, exit_code: int) -> int:
    # An object store's error may quote a credential: the JSON line never carries one.
    first_line = redact((str(error).splitlines() or [type(error).__name__])[0][:2000])
    emit_summary(
        {
            "job": command,
            "run_id": getattr(error, "run_id", None),
            "status": "failed",
            "exit_code": exit_code,
            "error": first_line if exit_code != EXIT_BUG else f"{type(error).__name__}: {first_line}",
        }
    )
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
