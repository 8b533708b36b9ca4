"""Benchmark: are DSVs near the decision boundary?  Two dimensions, where it can be measured (dsvlib.toy).

For each toy set (moons, blobs, circles, XOR; 200 points, noise 0.1) and model (the MLP on every
set; the linear SVM on blobs and moons), over seeds: the mean Euclidean distance to the model's
decision boundary (:func:`dsvlib.toy.boundary_distance`) of

* the synthesised DSVs (8 per class, 200 steps of :func:`dsvlib.synthesize`, the toy recipe:
  l2 stationarity with lambda held at 1) and their random starting points;
* the same synthesis with lambda free (``lr_lambda=0.05``, the image recipe's choice);
* the top-lambda training points (8 per class, :func:`dsvlib.fit_lambdas`), the top-alpha ones;
* random training points (8 per class).

It also times the Classroom page's default demo end to end (``pages.classroom.build_run``: data,
training, lambda, synthesis, distances; then the page's plotly figures).

    python bench/bench_toy.py                 # ~1-2 min on 2 shared CPU cores
    python bench/bench_toy.py --seeds 1       # quicker

Writes bench/results/toy.json and bench/results/toy.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from dsvlib import toy  # noqa: E402
from dsvlib.select import top_per_class  # noqa: E402

OUT = ROOT / "bench" / "results"
CASES = (("mlp", "moons"), ("mlp", "blobs"), ("mlp", "circles"), ("mlp", "xor"), ("linear", "blobs"),
         ("linear", "moons"))
SETS = ("dsv", "dsv_start", "dsv_lambda_free", "top_lambda", "top_alpha", "random")
SET_TEXT = {
    "dsv": "synthesised DSVs (end)",
    "dsv_start": "their random starts",
    "dsv_lambda_free": "DSVs, lambda free",
    "top_lambda": "top-lambda points",
    "top_alpha": "top-alpha points",
    "random": "random training points",
}


def _mean(d: torch.Tensor) -> float:
    d = d[torch.isfinite(d)]
    return float(d.mean()) if len(d) else float("nan")


def one_case(kind: str, name: str, seed: int, per_class: int, steps: int) -> dict:
    data = toy.make_toy(name, 200, 0.1, seed)
    demo = toy.run_demo(data, kind, per_class=per_class, steps=steps, seed=seed)
    free = toy.synthesize_points(demo.model, per_class, steps=steps, seed=seed,
                                 config=toy.toy_synth_config(steps, lr_lambda=0.05))
    sel = demo.selection
    g = torch.Generator().manual_seed(1000 + seed)
    rand = torch.cat([torch.nonzero(data.labels == c).flatten()[torch.randperm(int((data.labels == c).sum()), generator=g)[:per_class]]
                      for c in (0, 1)])
    idx = {"top_lambda": top_per_class(sel, per_class, by="lambda"), "top_alpha": top_per_class(sel, per_class, by="alpha"),
           "random": rand}
    synth = demo.synthesis
    t0 = time.perf_counter()
    dist = {"dsv": _mean(toy.boundary_distance(demo.model, synth.points[synth.kept])),
            "dsv_start": _mean(toy.boundary_distance(demo.model, synth.trajectory[0])),
            "dsv_lambda_free": _mean(toy.boundary_distance(demo.model, free.points[free.kept]))}
    all_d = toy.boundary_distance(demo.model, data.points)
    for k, i in idx.items():
        dist[k] = _mean(all_d[i])
    t_dist = time.perf_counter() - t0
    ent = synth.entropy.mean(1)
    out = {"kind": kind, "data": name, "seed": seed, "train_accuracy": demo.train_accuracy,
           "distance": dist, "all_points_distance": _mean(all_d),
           "entropy_start": float(ent[0]), "entropy_end": float(ent[-1]),
           "synth_best_cosine": synth.result.trust.get("best_cosine"), "kept": int(synth.kept.sum()),
           "selection_cosine": sel.cosine, "selection_uniform_cosine": sel.uniform_cosine,
           "support": int((sel.lambdas > 0).sum()), "timings": {**demo.timings, "distances": t_dist}}
    if demo.comparison is not None:
        c = demo.comparison
        out["svc"] = {"C": c.svc.C, "support": len(c.svc.support), "lambda_support": len(c.lambda_support),
                      "both": len(set(c.svc.support.tolist()) & set(c.lambda_support.tolist())), "agree": c.agree,
                      "on_margin": len(c.on_margin),
                      "lambda_inside_margin": len(set(c.lambda_support.tolist()) & set(c.on_margin.tolist())),
                      "unique": c.unique}
    return out


def time_default_demo() -> dict:
    """The Classroom page's default demo (MLP on moons, 200 points, noise 0.1, 8 DSVs per class,
    200 steps), end to end, twice: in a fresh process the first run also pays one-off imports."""
    from app import toy_charts
    from pages.classroom import build_run

    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        run = build_run("moons", 200, 0.1, 0, "mlp", 8, 200)
        t_run = time.perf_counter() - t0
        d = run.demo
        figs = [toy_charts.lambda_map(d.data, run.grid, d.selection.lambdas, title="λ"),
                toy_charts.trajectories(d.data, run.grid, d.synthesis, title="DSVs"),
                toy_charts.entropy_curve(d.synthesis),
                toy_charts.distance_bars(list(run.distances), list(run.distances.values()), title="d")]
        for f in figs:
            f.to_json()
        runs.append({"compute_s": t_run, "with_figures_s": time.perf_counter() - t0,
                     "timings": d.timings})
    return {"runs": runs, "load_after": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    command = "python bench/bench_toy.py" + " ".join(f" {a}" for a in sys.argv[1:])
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    rows = []
    for kind, name in CASES:
        for seed in range(args.seeds):
            r = one_case(kind, name, seed, args.per_class, args.steps)
            rows.append(r)
            print(f"{kind:6s} {name:8s} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["distance"].items()),
                  flush=True)
    demo_time = time_default_demo()
    out = {"command": command, "machine": machine(), "load_before": load_before, "seconds": time.perf_counter() - t0,
           "seeds": args.seeds, "per_class": args.per_class, "steps": args.steps, "rows": rows,
           "default_demo": demo_time}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "toy.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.out / "toy.md").write_text(render(out))
    print(f"wrote {args.out / 'toy.md'} in {out['seconds']:.0f} s")


def _ms(vals: list[float]) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "-"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def render(o: dict) -> str:
    L = ["# Toy 2-D sets: distance of DSVs to the decision boundary", "",
         f"Command: `{o['command']}`  ",
         f"Machine: {o['machine']}; load average before {o['load_before'][0]:.2f}; total {o['seconds']:.0f} s.  ",
         f"Data: 200 points per set, noise 0.1, scaled into [0.05, 0.95]; {o['seeds']} seeds (data, model, "
         f"synthesis); {o['per_class']} DSVs / selected / random points per class; {o['steps']} synthesis steps.  ",
         "Models: MLP 2-32-32-2 (cross-entropy, weight decay 1e-3 on every parameter) and the linear SVM "
         "(hinge, weight decay 1e-2 on the weights, C = 1/(n wd) = 0.5), both full-batch GD with momentum, "
         "1,500 steps, cosine-decayed.  Distance: `dsvlib.toy.boundary_distance` (analytic for the linear "
         "model, 64 rays + bisection for the MLP). Mean ± std over seeds of each set's mean distance.", "",
         "| model | data | train acc | " + " | ".join(SET_TEXT[s] for s in SETS) + " | all training points | "
         "DSV entropy start → end | synth best cos |",
         "| --- | --- | --- | " + " | ".join("---" for _ in SETS) + " | --- | --- | --- |"]
    cases = []
    for r in o["rows"]:
        if (r["kind"], r["data"]) not in cases:
            cases.append((r["kind"], r["data"]))
    for kind, name in cases:
        rs = [r for r in o["rows"] if r["kind"] == kind and r["data"] == name]
        cells = [_ms([r["distance"][s] for r in rs]) for s in SETS]
        dsv = statistics.mean(r["distance"]["dsv"] for r in rs)
        rnd = statistics.mean(r["distance"]["random"] for r in rs)
        cells[0] = f"**{cells[0]}**" if dsv < rnd else cells[0]
        L.append(f"| {kind} | {name} | {statistics.mean(r['train_accuracy'] for r in rs):.0%} | " + " | ".join(cells)
                 + f" | {_ms([r['all_points_distance'] for r in rs])} | "
                 f"{statistics.mean(r['entropy_start'] for r in rs):.2f} → {statistics.mean(r['entropy_end'] for r in rs):.2f} | "
                 f"{statistics.mean(r['synth_best_cosine'] for r in rs):.3f} |")
    L += ["", "Bold: the DSVs' mean distance is below the random training points'.", ""]
    svc = [r for r in o["rows"] if "svc" in r]
    if svc:
        L += ["## Linear model: SVC support vectors vs DeepKKT lambda > 0", "",
              "| data | seed | SVC support vectors | points on or inside the margin | lambda > 0 | in both | "
              "lambda > 0 on or inside the margin | identical sets | multipliers unique |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in svc:
            s = r["svc"]
            L.append(f"| {r['data']} | {r['seed']} | {s['support']} | {s['on_margin']} | {s['lambda_support']} | "
                     f"{s['both']} | {s['lambda_inside_margin']} | {s['agree']} | {s['unique']} |")
        L += ["", "The selection runs on the SVC's own (w, b) (shrunk by 1e-3 so that the hinge is decided on "
              "purpose on the margin), stationarity on the weights only (METHOD-NOTES). With more points on the "
              "margin than the 2 weights the multipliers are not unique, and the selection returns one solution: "
              "then lambda > 0 can miss some support vectors, and can include a point that lies on the margin "
              "(y f within 1e-3 of 1) but that the SVC gave alpha = 0. Every lambda > 0 point is on or inside the "
              "margin (a point outside it has no hinge gradient).", ""]
    dd = o["default_demo"]
    L += ["## The Classroom page's default demo", "",
          "MLP on two moons, 200 points, noise 0.1, 8 DSVs per class, 200 steps: data, training, lambda, synthesis, "
          "the decision grid and the distances (`pages.classroom.build_run`), then the page's four plotly figures.", "",
          "| run | compute | with figures | training | lambda | synthesis |", "| --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(dd["runs"]):
        t = r["timings"]
        L.append(f"| {i + 1}{' (fresh process)' if i == 0 else ''} | {r['compute_s']:.1f} s | {r['with_figures_s']:.1f} s | "
                 f"{t['train']:.1f} s | {t['select']:.1f} s | {t['synthesize']:.1f} s |")
    L += ["", f"Load average after: {dd['load_after'][0]:.2f} (2 cores shared with other jobs).", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
