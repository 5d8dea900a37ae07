"""Wall time per stage of `cervirad run-all` (default: the demo config, as `make demo` runs it).

Runs the pipeline cold into a fresh temporary run directory, prints each stage's wall time
(from run.json's ``pipeline_seconds``) and the total, then reruns it warm in the same run
directory, where every stage is skipped, and prints the cold/warm ratio: the saving a user
gets from resumability.

    .venv/bin/python scripts/bench/run_all.py [--config configs/demo.yaml] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_all(config: Path, run_dir: Path, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "cervirad.cli", "run-all", "--config", str(config), "--run-dir", str(run_dir)]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
    if res.returncode != 0:
        sys.exit(f"run-all failed (exit {res.returncode}): {res.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        run_dir = Path(d) / "run"
        cold = run_all(args.config, run_dir, args.overrides)
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        print(f"bench/run_all: {args.config.name} {' '.join(args.overrides)}".rstrip())
        for stage, seconds in info["pipeline_seconds"].items():
            print(f"  {stage:<20s} {seconds:8.1f} s")
        staged = sum(info["pipeline_seconds"].values())
        print(f"  {'stages total':<20s} {staged:8.1f} s   (cold run incl. start-up and demo cohort: {cold:.1f} s)")
        warm = run_all(args.config, run_dir, args.overrides)
        print(f"warm rerun (every stage unchanged, skipped): {warm:.1f} s; cold/warm ratio x{cold / warm:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
