"""``python -m amas.pipeline stage NAME``: one stage, as ``dvc.yaml``'s commands run it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from amas.errors import AmasError


def main(argv: Sequence[str] | None = None) -> int:
    from amas.pipeline.stages import STAGES

    parser = argparse.ArgumentParser(prog="python -m amas.pipeline",
                                     description="Run one data-pipeline stage (dvc.yaml calls this).")
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage", help="run one stage in the current directory")
    stage.add_argument("name", choices=list(STAGES))
    args = parser.parse_args(argv)

    from amas.config import get_settings
    from amas.lineage import LineageEmitter
    from amas.pipeline.runner import run_stage
    from amas.quality import ValidationFailed

    try:
        emitter = LineageEmitter.from_settings(get_settings())
        try:
            outcome = run_stage(args.name, Path.cwd(), emitter=emitter)
        finally:
            emitter.close()
    except ValidationFailed as failed:
        print(f"error: stage {args.name}: {failed}", file=sys.stderr)
        for report in failed.reports:
            if not report.success:
                print(report.to_markdown(), file=sys.stderr)
        return failed.exit_code
    except AmasError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"{args.name}: {outcome.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
