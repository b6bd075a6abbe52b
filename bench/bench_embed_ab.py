"""Did a change slow the embed job? This checkout's embed throughput against an earlier commit's, in one
run, rounds alternating between the two. Prints one JSON line; exits 1 when the change is slower than
the stated tolerance.

Each round runs `bench.bench_embed --only-throughput` (this checkout's benchmark script, over each
tree's own `jobs` package) once for the baseline and once for this checkout, in fresh processes, in
alternating order. Compared: the job's images/s and its ratio to the process pool timed beside it in the
same process (the ratio carries less of this VM's drift). The verdict takes the median over rounds of
the ratio's change.

Usage: .venv/bin/python -m bench.bench_embed_ab --baseline 09fdf74 [--rounds 3] [--images 2000]
       [--tolerance 0.03]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worktree(ref: str, scratch: Path, name: str) -> Path:
    """A commit's tree (a detached git worktree) with this checkout's benchmark script beside it."""
    tree = scratch / name
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
    shutil.copy(ROOT / "bench" / "bench_embed.py", tree / "bench" / "bench_embed.py")
    return tree


def one_run(tree: Path, images: int) -> dict:
    from bench.common import data_root

    # this tree's `jobs`, in the driver and in Spark's workers; the same data for both trees
    env = dict(os.environ, PYTHONPATH=str(tree), LINEUP_DATA_DIR=str(data_root()))
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_embed", "--only-throughput", "--throughput-images", str(images)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench_embed in {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    throughput = report["throughput"]
    rate = next(v for k, v in throughput.items() if k.startswith("spark_local_"))
    return {
        "images_per_s": rate,
        "ratio_vs_process_pool": throughput["ratio_vs_process_pool"],
        "job_wall_s": throughput["job_wall_s"],
        "load_average": throughput["load_average"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare with")
    parser.add_argument("--head", help="the commit to judge; default this checkout as it is (edits included)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--tolerance", type=float, default=0.03, help="largest slowdown accepted (0.03 = 3%%)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-embed-ab-"))
    try:
        baseline_tree = worktree(args.baseline, scratch, "baseline")
        head_tree = worktree(args.head, scratch, "head") if args.head else ROOT
        rounds = []
        for number in range(args.rounds):
            order = [("baseline", baseline_tree), ("head", head_tree)]
            if number % 2:
                order.reverse()
            result = {name: one_run(tree, args.images) for name, tree in order}
            result["order"] = [name for name, _ in order]
            result["ratio_change"] = round(
                result["head"]["ratio_vs_process_pool"] / result["baseline"]["ratio_vs_process_pool"] - 1, 4
            )
            result["rate_change"] = round(result["head"]["images_per_s"] / result["baseline"]["images_per_s"] - 1, 4)
            print(json.dumps({"round": number, **result}), file=sys.stderr, flush=True)
            rounds.append(result)
    finally:
        for name in ("baseline", "head"):
            if (scratch / name).exists():
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(scratch / name)], check=False
                )
        shutil.rmtree(scratch, ignore_errors=True)
    median_ratio_change = statistics.median(r["ratio_change"] for r in rounds)
    median_rate_change = statistics.median(r["rate_change"] for r in rounds)
    holds = median_ratio_change >= -args.tolerance
    head_ref = args.head or "HEAD"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", head_ref], capture_output=True, text=True)
    print(
        json.dumps(
            {
                "bench": "embed_ab",
                "baseline": args.baseline,
                "head": head.stdout.strip() + ("" if args.head else " and this checkout's edits"),
                "images": args.images,
                "rounds": rounds,
                "median_ratio_change": median_ratio_change,
                "median_rate_change": median_rate_change,
                "tolerance": args.tolerance,
                "holds": holds,
            }
        )
    )
    sys.exit(0 if holds else 1)


if __name__ == "__main__":
    main()
