"""Start-up time of the CLI: `workbench --help` and `workbench validate` against `python -c pass`.

Each command runs several times in a fresh interpreter; the table gives the median wall
time and the median above `python -c pass`, measured in the same run. The target is
`workbench validate` under 0.5 s above `python -c pass`, without importing TensorFlow.

    python benchmarks/cli_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("WORKBENCH_DATA", str(ROOT.parent / "shared" / "data"))
    recipes = [str(path) for path in sorted((ROOT / "recipes").glob("*.yaml"))]
    cli = [sys.executable, "-m", "workbench"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "workbench --help": [*cli, "--help"],
        f"workbench validate ({len(recipes)} recipes)": [*cli, "validate", *recipes],
    }
    baseline = None
    summary = {}
    print(f"{'command':<34} {'median s':>9} {'above python':>13}")
    for name, command in commands.items():
        seconds = median_seconds(command, args.repeats)
        baseline = seconds if baseline is None else baseline
        print(f"{name:<34} {seconds:>9.3f} {seconds - baseline:>13.3f}")
        key = name.split(" (")[0].replace("workbench ", "").replace("python -c pass", "python").replace("--", "").strip()
        summary[f"{key}_s"] = round(seconds, 3)
    summary["validate_above_python_s"] = round(summary["validate_s"] - summary["python_s"], 3)
    print("summary: " + " ".join(f"{key}={value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
