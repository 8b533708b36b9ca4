"""The synthesis defaults on teachers trained the way users train them (issue #9).

    python bench/bench_zoo.py                       # every zoo teacher, default settings
    python bench/bench_zoo.py --teachers zoo_mlp --set bn_prior=0 --tag no_bn_prior
    python bench/bench_zoo.py --adopt bench/results/screens/zoo_T.json   # a screen of today's defaults

Per teacher: 10 candidates per class from noise (zero real images) with the defaults the app
uses for that model (``dsvlib.synthesize.config_for``); kept of 100 (lambda >= 0), the trust
reading, a fresh ConvNet student trained on the kept DSVs only (``dsvlib.evaluate.distill``,
the engine's protocol) next to the same protocol on 10 random real images per class, two judges
of other architectures trained on real data, and diversity (mean within-class L2 distance) next
to real images'.  Zoo teachers are trained by ``bench/zoo.py`` (cached).  Writes
bench/results/zoo[_TAG].json and .md and the grids docs/zoo_<teacher>.png (default tag only).
"""
from __future__ import annotations

import argparse
import ast
import fcntl
import importlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import zoo  # noqa: E402
from bench.machine import machine  # noqa: E402
from dsvlib import load_model  # noqa: E402
from dsvlib.data import load_dataset  # noqa: E402
from dsvlib.evaluate import distill, diversity, judge_accuracy  # noqa: E402
from dsvlib.export import save_grid  # noqa: E402
from dsvlib.kkt import dataset_gradient_cosine  # noqa: E402
from dsvlib.synthesize import synthesize, trust_strength  # noqa: E402

try:  # the defaults the app picks for a model (this session's API); older code: per data kind
    from dsvlib.synthesize import config_for  # noqa: E402
except ImportError:  # pragma: no cover - used to measure the code before issue #9
    from dsvlib.synthesize import default_config  # noqa: E402

    def config_for(model, spec, **overrides):
        return default_config("digits" if spec.in_channels == 1 else "natural", **overrides)

RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
PER_CLASS = 10
FAMILY = {  # student architecture (the shipped ConvNet's spec), judges, test split per data family
    "mnist": ("mnist_convnet", [ROOT / "assets/judges/mnist_lenet_judge.safetensors",
                                ROOT / "assets/judges/mnist_mlp_judge.safetensors"]),
    "shortcut": ("shortcut_convnet", [ROOT / "assets/judges/shortcut_lenet_judge.safetensors",
                                      zoo.path("zoo_colour_convnet_judge")]),
}


def _literal(v: str):
    """A Python literal, or a name in dsvlib.synthesize (e.g. ``jitter=PAPER_AUGMENT``)."""
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        module = importlib.import_module("dsvlib.synthesize")  # the module, not the function dsvlib exports
        return getattr(module, v) if v.isidentifier() and hasattr(module, v) else v


def baseline(fam: str, student_seeds) -> dict:
    """The same protocol on 10 random real images per class."""
    _, spec = load_model(FAMILY[fam][0])
    real = load_dataset(f"{fam}:train").per_class(PER_CLASS, seed=0)
    st = distill(real.images, real.labels, spec, load_dataset(f"{fam}:test"), seeds=student_seeds)
    judges = {Path(p).stem: load_model(p)[0] for p in FAMILY[fam][1]}
    return {"student_mean": st.mean, "student_std": st.std, "diversity": diversity(real.images, real.labels),
            "judges": {k: judge_accuracy(j, real.images, real.labels) for k, j in judges.items()}}


def _train(fam: str) -> tuple[torch.Tensor, torch.Tensor]:
    d = load_dataset(f"{fam}:train")
    return d.images, d.labels


def config_record(cfg) -> dict:
    """A config as a results row stores it (JSON values; the rest by repr)."""
    return {k: (repr(v) if not isinstance(v, (int, float, str, bool, type(None))) else v) for k, v in vars(cfg).items()}


def _teacher(name: str):
    shipped = name not in zoo.TEACHERS  # a shipped default model, for reference
    return (*load_model(name if shipped else zoo.path(name)), shipped)


def run_teacher(name: str, overrides: dict, synth_seed: int, student_seeds, grid: Path | None,
                save_to: Path | None = None) -> dict:
    model, spec, shipped = _teacher(name)
    fam = "mnist" if spec.in_channels == 1 else "shortcut"
    cfg = config_for(model, spec, **overrides)
    targets = torch.arange(spec.num_classes).repeat_interleave(PER_CLASS)
    res = synthesize(model, targets, cfg, seed=synth_seed)
    x, y = res.kept_images()
    if save_to is not None:  # every candidate, its target, whether it was kept and its lambda: for offline diagnostics
        save_to.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": res.images, "targets": targets, "kept": res.kept, "lambdas": res.lambdas}, save_to)
    if grid is not None:
        save_grid(res.images, grid, ncol=PER_CLASS)
    _, student_spec = load_model(FAMILY[fam][0])
    st = distill(x, y, student_spec, load_dataset(f"{fam}:test"), seeds=student_seeds) if len(x) else None
    judges = {Path(p).stem: load_model(p)[0] for p in FAMILY[fam][1]}
    card = json.loads(((ROOT / "assets/models" if shipped else zoo.ZOO_DIR) / f"{name}.card.json").read_text())
    with torch.no_grad():
        feasible = float((model(x).argmax(1) == y).float().mean()) if len(x) else float("nan")
    row = {
        "teacher": name, "notes": "shipped default model" if shipped else zoo.TEACHERS[name].notes, "family": fam, "synth_seed": synth_seed,
        "test_accuracy": card["test_accuracy"], "training_data_cosine": dataset_gradient_cosine(model, *_train(fam), params="auto"),
        "kept": int(res.kept.sum()), "candidates": len(targets),
        "best_cosine": res.trust["best_cosine"], "trust_cosine": res.trust.get("cosine", res.trust["best_cosine"]),
        "trust": trust_strength(res.trust.get("cosine", res.trust["best_cosine"])),
        "student_mean": st.mean if st else 0.0, "student_std": st.std if st else 0.0,
        "student_runs": list(st.runs) if st else [],
        "judges": {k: judge_accuracy(j, x, y) if len(x) else 0.0 for k, j in judges.items()},
        "diversity": diversity(x, y), "primal_feasible": feasible, "seconds": res.seconds,
        "steps_run": res.steps_run, "extended_at": res.trust.get("extended_at"),
        "coarse_at": res.trust.get("coarse_at"), "coarse_read": res.trust.get("coarse_read"),
        "dropped_at_steps": sorted(res.trust["dropped"].values()),
        "reseeded": sum(len(v) for v in res.trust["reseeded"].values()),
        "config": config_record(cfg),
        "grid": (str(grid.relative_to(ROOT)) if grid.is_relative_to(ROOT) else str(grid)) if grid else None,
    }
    print(json.dumps({k: v for k, v in row.items() if k not in ("config", "student_runs", "dropped_at_steps")}), flush=True)
    return row


def write_markdown(res: dict, path: Path) -> None:
    cmds = res.get("commands", [res["command"]])
    machines: dict[str, list[str]] = {}
    for r in res["rows"]:
        machines.setdefault(r.get("machine", res["machine"]), []).append(r["teacher"])
    where = (f"Machine: {next(iter(machines))}" if len(machines) <= 1 else
             "Machines (each teacher trained and run on one): "
             + "; ".join(f"{m} ({', '.join(ts)})" for m, ts in machines.items()))
    lines = [("Command: " if len(cmds) == 1 else "Commands (each replaced its teachers' rows): ")
             + "; ".join(f"`{c}`" for c in cmds) + "  ", where, ""]
    lines += ["| teacher | test acc | training-data cos | trust (best cos) | kept | student (real 10/class) | ratio | judges | "
              "diversity (real) | steps | time |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        b = r.get("baseline", res["baselines"][r["family"]])
        judges = " / ".join(f"{100 * v:.0f} %" for v in r["judges"].values())
        lines.append(
            f"| {r['teacher']} ({r['notes']}) | {100 * r['test_accuracy']:.1f} % | {r['training_data_cosine']:.2f} | {r['trust']} ({r.get('trust_cosine', r['best_cosine']):.2f}) "
            f"| {r['kept']} of {r['candidates']} | {100 * r['student_mean']:.1f} +- {100 * r['student_std']:.1f} % "
            f"({100 * b['student_mean']:.1f} %) | {r['student_mean'] / b['student_mean']:.2f} | {judges} "
            f"| {r['diversity']:.2f} ({b['diversity']:.2f}) | {r.get('steps_run', r['config'].get('steps', '-'))} "
            f"| {r['seconds']:.0f} s |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", nargs="*", default=list(zoo.TEACHERS))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--tag", default="")
    ap.add_argument("--synth-seed", type=int, default=0)
    ap.add_argument("--student-seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--grid-dir", default=None, help="also save grids of a tagged run here")
    ap.add_argument("--save-dsvs", default=None, metavar="DIR",
                    help="also save each teacher's candidates, targets, kept mask and lambdas to DIR/<tag>_<teacher>.pt")
    ap.add_argument("--update", action="store_true",
                    help="replace only these teachers' rows in the existing results file (the others stay; "
                         "the file lists every command); runs in parallel may update one file")
    ap.add_argument("--adopt", nargs="+", default=None, metavar="FILE",
                    help="merge the rows of these tagged results files (screens) into zoo.json (noise seed 0) or "
                         "zoo_seedS.json, each with its own command; only rows whose config is exactly the one "
                         "the bench would use for that teacher today: a screen of what became the default")
    args = ap.parse_args()
    if args.adopt:
        adopt([Path(f) for f in args.adopt])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: _literal(v) for k, v in (s.split("=", 1) for s in args.set)}
    teachers = [t for t in args.teachers if t in zoo.TEACHERS]
    fams = sorted({zoo.family(t) for t in teachers} | ({"mnist"} if len(teachers) < len(args.teachers) else set()))
    zoo.ensure([*teachers, *(j for j in zoo.JUDGES if zoo.family(j) in fams)])
    seeds = tuple(range(args.student_seeds))
    t0 = time.perf_counter()
    res = {"command": "python bench/bench_zoo.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "overrides": args.set, "baselines": {f: baseline(f, seeds) for f in fams}, "rows": []}
    stem = "zoo" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.teachers:
        grid = (DOCS / f"zoo_{name}.png" if not args.tag else
                Path(args.grid_dir) / f"zoo_{args.tag}_{name}.png" if args.grid_dir else None)
        save_to = Path(args.save_dsvs) / f"{args.tag or 'zoo'}_{name}.pt" if args.save_dsvs else None
        row = run_teacher(name, overrides, args.synth_seed, seeds, grid, save_to)
        # each row keeps the machine that trained its teacher and ran it, with that run's real baseline:
        # --update may merge rows measured on different machines into one file
        row.update(machine=res["machine"], baseline=res["baselines"][row["family"]])
        res["rows"].append(row)
        res["seconds"] = time.perf_counter() - t0
        # after every teacher: an interrupted run keeps what it measured
        save(res, stem, update=args.update)
    print((RESULTS / f"{stem}.md").read_text())


def adopt(files: list[Path]) -> None:
    """Merge screen rows that ran today's defaults into the tables' files (see ``--adopt``).

    Every row of every file is checked before any is merged: a row is refused, with the settings
    that differ, unless its stored config equals ``config_for`` on its teacher today.  Its grid
    (seed 0) is copied to docs/zoo_<teacher>.png."""
    today: dict[str, dict] = {}
    screens = [(f, json.loads(f.read_text())) for f in files]
    for f, screen in screens:
        for row in screen["rows"]:
            if row["teacher"] not in today:
                model, spec, _ = _teacher(row["teacher"])
                today[row["teacher"]] = config_record(config_for(model, spec))
            now = today[row["teacher"]]
            differ = sorted(k for k in now.keys() | row["config"].keys() if now.get(k) != row["config"].get(k))
            if differ:
                raise SystemExit(f"{f}: {row['teacher']} ran other settings than today's defaults: "
                                 + ", ".join(f"{k} {row['config'].get(k)!r} (today {now.get(k)!r})" for k in differ))
    for f, screen in screens:
        for row in screen["rows"]:
            seed = row["synth_seed"]
            row = dict(row)
            if seed == 0 and row.get("grid") and Path(row["grid"]).exists():
                dest = DOCS / f"zoo_{row['teacher']}.png"
                dest.write_bytes(Path(row["grid"]).read_bytes())
                row["grid"] = str(dest.relative_to(ROOT))
            res = {"command": screen["command"], "machine": row.get("machine", screen["machine"]),
                   "overrides": screen.get("overrides", []), "baselines": screen["baselines"], "rows": [row]}
            save(res, "zoo" if seed == 0 else f"zoo_seed{seed}", update=True)
            print(f"{f.name}: {row['teacher']} (noise seed {seed}) merged")


def save(res: dict, stem: str, *, update: bool) -> None:
    """Write results; with ``update``, merge this run's rows into the file's (under a lock)."""
    path = RESULTS / f"{stem}.json"
    with open(RESULTS / f".{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = res
        if update and path.exists():
            old = json.loads(path.read_text())
            mine = {r["teacher"]: r for r in res["rows"]}
            rows = [mine.pop(r["teacher"], r) for r in old["rows"]] + list(mine.values())
            cmds = old.get("commands", [old["command"]])
            out = {**old, "rows": rows, "commands": cmds + ([res["command"]] if res["command"] not in cmds else [])}
        path.write_text(json.dumps(out, indent=1) + "\n")
        write_markdown(out, RESULTS / f"{stem}.md")


if __name__ == "__main__":
    main()
