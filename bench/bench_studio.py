"""The live studio's speed in a real browser: runs the browser tests that measure it several times
(each a fresh server and chromium) and collects their timings in bench/results/studio.json.

    python bench/bench_studio.py [--repeats 3]

Then `python bench/write_benchmarks_md.py` puts them in BENCHMARKS.md.  What is timed: Generate to
the first live preview (benchmarked recipe), Quick look end to end (default model and an uploaded
ONNX model of an unregistered architecture), and Stop (request to the end of the run, and click to
the partial result on screen).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "studio.json"
TESTS = "generate_survives or quick_look_end_to_end or onnx_upload"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    RESULT.unlink(missing_ok=True)
    env = {**os.environ, "DSV_TIMINGS_APPEND": "1",
           "DSV_TIMINGS_COMMAND": f"python bench/bench_studio.py --repeats {args.repeats}"}
    for i in range(args.repeats):
        print(f"== run {i + 1}/{args.repeats}", flush=True)
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "e2e", "tests/test_e2e_browser.py",
                              "-k", TESTS], cwd=ROOT, env=env)
        if rc != 0:
            return rc
    print(RESULT.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
