"""Wall time per stage of `cervirad run-all` (default: the demo config, as `make demo` runs it).

Runs the pipeline cold into a fresh temporary run directory and prints each stage's wall time
(``seconds`` of its record in run.json's ``stages``) and the total. Then reruns it warm in the
same run directory, where every stage is up to date and the orchestrator only checks keys and
output hashes ("nothing to redo"), and prints the warm wall time next to the cold baseline
measured in the same run: the saving a user gets from skipping finished stages. A warm rerun
that redoes any stage is a failure (exit 1), not a measurement.

    .venv/bin/python scripts/bench/run_all.py [--config demo] [--set key=value ...]
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


def run_all(config: str, run_dir: Path, overrides: list[str]) -> tuple[float, str, list[str]]:
    """Wall time of one `cervirad run-all` (start-up included), its stdout and the orchestrator's
    log lines saying why a stage runs."""
    cmd = [sys.executable, "-m", "cervirad.cli", "run-all", "--config", config, "--run-dir", str(run_dir)]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.exit(f"run-all failed (exit {res.returncode}): {last}")
    reasons = [" ".join(ln.split(": ", 1)[-1].split()) for ln in res.stderr.splitlines()
               if "cervirad.pipeline" in ln and " runs: " in ln]
    return wall, res.stdout, reasons


def stage_records(run_dir: Path) -> dict[str, dict]:
    """run.json's one record of what ran: stage name -> {status, key, started, seconds, outputs, ...}."""
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    return info.get("stages", {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"),
                    help="config file or packaged preset name (default: configs/demo.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        run_dir = Path(d) / "run"
        cold, _, _ = run_all(args.config, run_dir, args.overrides)
        stages = stage_records(run_dir)
        unfinished = [name for name, rec in stages.items() if rec.get("status") != "done"]
        if not stages or unfinished:
            sys.exit(f"cold run-all left stage(s) unfinished: {', '.join(unfinished) or 'no stage records'}")
        print(f"bench/run_all: {Path(args.config).name} {' '.join(args.overrides)}".rstrip())
        for name, rec in stages.items():
            print(f"  {name:<20s} {rec['seconds']:8.1f} s")
        staged = sum(rec["seconds"] for rec in stages.values())
        print(f"  {'stages total':<20s} {staged:8.1f} s   (cold run incl. start-up, demo cohort and hashing: "
              f"{cold:.1f} s)")

        warm, out, reasons = run_all(args.config, run_dir, args.overrides)
        after = stage_records(run_dir)
        redone = [name for name, rec in after.items() if rec.get("started") != stages.get(name, {}).get("started")]
        if redone or "nothing to redo" not in out:
            sys.exit(f"warm rerun redid stage(s) {', '.join(redone) or '?'}; expected every stage up to date:\n  "
                     + "\n  ".join(reasons or [out.strip()]))
        print(f"warm rerun (nothing to redo, {len(after)} stages up to date): {warm:.1f} s; "
              f"cold/warm ratio x{cold / warm:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
