"""Hashing throughput of the forensics agent against the machine's ``sha256sum``, printed as JSON.

    .venv/bin/python scripts/bench_forensics.py --size-mib 512

Writes a file of random bytes (deleted afterwards unless --keep), then times, best of --repeat
runs each: ``sha256sum`` (and ``md5sum`` for reference) in a subprocess, and the agent's
``hash_file`` with sha256 alone, sha256+md5, and the full pass the agent makes per file
(sha256 + md5 + byte entropy). The file is read once before timing so every run reads from
the page cache: both sides measure hashing, not the disk. Exits non-zero if any digest
disagrees with the coreutils tools, or if --min-ratio is given and sha256 alone falls short.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agents.forensics import hash_file

MIB = 1 << 20


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 16 * MIB))
            out.write(block)
            remaining -= len(block)


def best_of(repeat: int, run: Callable[[], str]) -> tuple[float, str]:
    best, result = float("inf"), ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def coreutils(tool: str, path: Path) -> Callable[[], str]:
    exe = shutil.which(tool)
    if exe is None:
        raise SystemExit(f"{tool} not found on PATH")
    return lambda: subprocess.run([exe, str(path)], check=True, capture_output=True, text=True).stdout.split()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="size of the random test file (MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the test file (default: temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the test file")
    parser.add_argument("--min-ratio", type=float, default=None,
                        help="exit 1 if agent sha256 MB/s / sha256sum MB/s is below this")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.repeat < 1:
        parser.error("--size-mib and --repeat must be at least 1")

    size = args.size_mib * MIB
    handle, name = tempfile.mkstemp(prefix="amas-bench-forensics-", suffix=".bin", dir=args.dir)
    os.close(handle)
    path = Path(name)
    try:
        write_random(path, size)
        hash_file(path, md5=False, entropy=False)  # warm the page cache
        seconds: dict[str, float] = {}
        digests: dict[str, str] = {}
        seconds["sha256sum"], digests["sha256sum"] = best_of(args.repeat, coreutils("sha256sum", path))
        seconds["md5sum"], digests["md5sum"] = best_of(args.repeat, coreutils("md5sum", path))
        seconds["agent_sha256"], digests["agent_sha256"] = best_of(
            args.repeat, lambda: hash_file(path, md5=False, entropy=False).sha256)
        seconds["agent_sha256_md5"], pair = best_of(
            args.repeat, lambda: "{0.sha256} {0.md5}".format(hash_file(path, md5=True, entropy=False)))
        digests["agent_sha256_md5"], digests["agent_md5"] = pair.split()
        seconds["agent_full_pass"], full = best_of(
            args.repeat, lambda: "{0.sha256} {0.md5}".format(hash_file(path, md5=True, entropy=True)))
        digests["agent_full_pass"], digests["agent_full_pass_md5"] = full.split()
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)

    mb = size / 1e6
    rate = {name: round(mb / secs, 1) for name, secs in seconds.items()}
    match = (digests["sha256sum"] == digests["agent_sha256"] == digests["agent_sha256_md5"]
             == digests["agent_full_pass"] and digests["md5sum"] == digests["agent_md5"]
             == digests["agent_full_pass_md5"])
    report = {
        "size_bytes": size,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "mb_per_s": rate,
        "ratio_sha256": round(rate["agent_sha256"] / rate["sha256sum"], 3),
        "ratio_sha256_md5": round(rate["agent_sha256_md5"] / rate["sha256sum"], 3),
        "ratio_full_pass": round(rate["agent_full_pass"] / rate["sha256sum"], 3),
        "digests_match": match,
        "file": str(path) if args.keep else None,
    }
    print(json.dumps(report, indent=2))
    if not match:
        print("digest mismatch between the agent and coreutils", file=sys.stderr)
        return 1
    if args.min_ratio is not None and report["ratio_sha256"] < args.min_ratio:
        print(f"ratio_sha256 {report['ratio_sha256']} is below --min-ratio {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
