"""Cosine and kept count over a 600-step run per zoo teacher (issue #9: how long should a run be?).

    python bench/zoo_history.py mnist_convnet zoo_bn_convnet zoo_convnet_shifts zoo_mlp zoo_lenet_adam

Default settings (``config_for``) with 600 steps and no extension, 10 candidates per class, seed 0,
one torch thread.  Writes bench/results/screens/zoo_history600.json: the history's steps, the
stationarity cosine and the kept count, recorded every 5 steps.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import zoo  # noqa: E402
from dsvlib import load_model  # noqa: E402
from dsvlib.synthesize import config_for, synthesize  # noqa: E402

OUT = ROOT / "bench" / "results" / "screens" / "zoo_history600.json"


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    out = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in names:
        model, spec = load_model(name if name == "mnist_convnet" else str(zoo.path(name)))
        cfg = config_for(model, spec, steps=600, extend=0.0)
        res = synthesize(model, torch.arange(spec.num_classes).repeat_interleave(10), cfg)
        h = res.history
        out[name] = {"step": h["step"], "cosine": h["cosine"], "kept": h["kept"], "seconds": res.seconds}
        OUT.write_text(json.dumps(out) + "\n")
        best = max(c for s, c in zip(h["step"], h["cosine"]) if s < 300 and c == c)
        print(f"{name}: best cos by step 300 {best:.3f}, by 600 {res.trust['best_cosine']:.3f}; kept at 300 "
              f"{h['kept'][h['step'].index(300)]}, at 600 {int(res.kept.sum())}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["mnist_convnet", "zoo_bn_convnet", "zoo_convnet_shifts", "zoo_mlp", "zoo_lenet_adam"])
