"""Scaling check for selection: fit_lambdas on a 50,000-image set.

The set is the 4,000 MNIST training digits plus seeded random translations/crops of them
(12.5 copies), so it has real-digit statistics at the size of CIFAR-10's training split.

    python bench/bench_select_scale.py [--n 50000] [--device cuda]

Appends its result to bench/results/select_scale.json and prints one line of JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from dsvlib import fit_lambdas, load_model  # noqa: E402
from dsvlib.augment import Augment  # noqa: E402
from dsvlib.data import load_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    train = load_dataset("mnist:train")
    g = torch.Generator().manual_seed(0)
    aug = Augment(translate=0.1, crop=0.1, cutout=0.0, flip=0.0, noise=0.0)
    xs, ys = [train.images], [train.labels]
    total = len(train)
    while total < args.n:
        xs.append(aug(train.images, g).clamp(0, 1))
        ys.append(train.labels)
        total += len(train)
    x, y = torch.cat(xs)[: args.n], torch.cat(ys)[: args.n]
    model, _ = load_model("mnist_convnet", device=args.device)
    t0 = time.perf_counter()
    res = fit_lambdas(model, x.to(args.device), y.to(args.device), steps=args.steps, device=args.device)
    seconds = time.perf_counter() - t0
    row = {"n": args.n, "device": args.device, "seconds": seconds, "steps_run": res.steps_run,
           "converged": res.converged, "cached": res.cached, "uniform_cosine": res.uniform_cosine,
           "cosine": res.cosine, "support": int((res.lambdas > 0).sum()),
           "machine": machine(),
           "command": "python bench/bench_select_scale.py" + (f" --n {args.n}" if args.n != 50000 else "")}
    print(json.dumps(row))
    out = ROOT / "bench" / "results" / "select_scale.json"
    rows = json.loads(out.read_text()) if out.exists() else []
    rows.append(row)
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
