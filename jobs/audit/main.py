"""Entry point of the audit job: `lineup audit ...` or, unchanged, `spark-submit jobs/audit/main.py ...`
(also `... jobs/audit/main.py calibrate --target-fmr 1e-4 --conf conf/audit.yaml`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobs.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["audit", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
