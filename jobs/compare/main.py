"""Entry point of the compare job: `lineup compare ...` or, unchanged, `spark-submit jobs/compare/main.py ...`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobs.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["compare", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
