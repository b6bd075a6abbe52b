"""The `lineup` command: one sub-command per job or tool, each `--conf FILE [--set key.sub=value ...]`.

Bad input ends with a one-line message on stderr and exit status 2; success prints one JSON line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from jobs.common.config import LineupConfig, load_config
from jobs.common.errors import UserError
from jobs.common.logs import configure_logging, emit_summary

log = logging.getLogger("lineup")

EXIT_USER_ERROR = 2


def add_config_flags(parser: argparse.ArgumentParser, default_conf: str | None = None) -> None:
    parser.add_argument("--conf", default=default_conf, help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE", help="override a key"
    )


def _doctor(args: argparse.Namespace) -> int:
    from jobs.doctor import run_doctor

    config = load_config(LineupConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    emit_summary(run_doctor(config))
    return 0


def _setup(args: argparse.Namespace) -> int:
    from jobs.setup import run_setup

    config = load_config(LineupConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    emit_summary(run_setup(config))
    return 0


def _submit_args(args: argparse.Namespace) -> int:
    from jobs.common.spark import submit_args

    config = load_config(LineupConfig, args.conf, args.overrides)
    sys.stdout.write(" ".join(submit_args(config.spark)) + "\n")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "setup": ("stage the Delta jars (and build the default model pack)", _setup),
    "doctor": ("check the installation; print versions and the SparkSession start time", _doctor),
    "submit-args": ("print the spark-submit flags that give a cluster job Delta Lake", _submit_args),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, handler) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_config_flags(sub)
        sub.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return int(args.handler(args))
    except UserError as error:
        sys.stderr.write(f"lineup {args.command}: error: {error}\n")
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
