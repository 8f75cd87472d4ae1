"""How fast every command says no: the wall time of each argument error of tests/test_cli_contract.py (and of
--help), a fresh `python cli.py ...` process each, the median of --repeat runs. The goal: every one under 1 s,
which holds only while the checks run before torch, torchvision, albumentations and OpenCV are imported.

    python bench/cli_errors.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_cli_contract import CASES  # noqa: E402  (one list of cases for the test and the benchmark)

HELP = [["--help"], ["train", "phase5", "--help"], ["evaluate", "--help"], ["build-shards", "--help"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for case in [a for a, _ in CASES] + HELP:
        times, code = [], None
        for _ in range(args.repeat):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, case)], capture_output=True,
                                  text=True, cwd=ROOT)
            times.append(time.perf_counter() - started)
            code = done.returncode
        rows.append((" ".join(map(str, case)).replace(str(ROOT) + "/", ""), code, statistics.median(times)))
    width = max(len(r[0]) for r in rows)
    for text, code, seconds in rows:
        print(f"{text:<{width}}  exit {code}  {seconds:.2f} s")
    slowest = max(r[2] for r in rows)
    print(f"slowest: {slowest:.2f} s ({'under' if slowest < 1 else 'NOT under'} 1 s)")
    return 0 if slowest < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
