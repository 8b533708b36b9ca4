"""Assemble BENCHMARKS.md from the bench results (bench/results/*.md|json) and the notes in
bench/NOTES.md, so that every number in it comes from a bench run.

    python bench/write_benchmarks_md.py
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RES = ROOT / "bench" / "results"


def main() -> None:
    parts = ["# Benchmarks", "",
             "Every number below is written by a script in `bench/`; this file is assembled by "
             "`python bench/write_benchmarks_md.py` from `bench/results/` and `bench/NOTES.md`.", ""]
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        parts += [notes.read_text().strip(), ""]
    if (RES / "synth.md").exists():
        parts += ["## Synthesis (`bench/bench_synth.py`)", "", (RES / "synth.md").read_text().strip(), ""]
    if (RES / "zoo.md").exists():
        parts += ["## Zoo results (`bench/bench_zoo.py`)", "",
                  "Teachers trained the way users train them (`bench/zoo.py`), 10 candidates per class from "
                  "noise, zero real images, with the defaults the app and the CLI pick for each model "
                  "(`dsvlib.synthesize.config_for`). Student: a fresh ConvNet trained on the kept DSVs only; "
                  "in brackets the same protocol on 10 random real images per class. Judges: mnist LeNet / MLP, "
                  "shapes LeNet / plain ConvNet, all trained on real data only.", "",
                  (RES / "zoo.md").read_text().strip(), ""]
        if (RES / "zoo_colour.md").exists():
            parts += ["The first run of the colour teacher with today's `natural` defaults (TV 3 with the jitter "
                      "view; the screens below moved them there; grid `docs/zoo_colour_zoo_colour_bn_convnet.png`):",
                      "", (RES / "zoo_colour.md").read_text().strip(), ""]
        parts += seeds_section()
        parts += shipped_section()
        screens = sorted((RES / "screens").glob("zoo_*.json"))
        if screens:
            parts += screens_section(screens)
        if (RES / "zoo_before.md").exists():
            parts += ["The same teachers with the code before BatchNorm handling (commit faa95b6, "
                      "one student seed):", "", (RES / "zoo_before.md").read_text().strip(), ""]
    if (RES / "select.md").exists():
        text = (RES / "select.md").read_text().strip().split("\n")
        if text and text[0].startswith("# "):
            text = text[1:]
        parts += ["## Selection (`bench/bench_select.py`)", "", "\n".join(text).strip(), ""]
    scale = RES / "select_scale.json"
    if scale.exists():
        parts += ["### Selection at 50,000 images (`bench/bench_select_scale.py`)", "",
                  "| n | device | wall time | solver steps | converged | cached gradients | cos equal lambda -> fitted | support | machine | command |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in json.loads(scale.read_text()):
            parts.append(f"| {r['n']:,} | {r['device']} | {r['seconds']:.1f} s | {r['steps_run']} | {r['converged']} | "
                         f"{r['cached']} | {r['uniform_cosine']:.3f} -> {r['cosine']:.3f} | {r['support']} | "
                         f"{r['machine']} | `{r['command']}` |")
        parts.append("")
    edit = RES / "edit.md"
    if edit.exists():
        text = edit.read_text().strip().split("\n")
        if text and text[0].startswith("# "):
            text = text[1:]
        parts += ["## Editing, interpolation and mixing (`bench/bench_edit.py`)", "", "\n".join(text).strip(), ""]
    toy = RES / "toy.md"
    if toy.exists():
        text = toy.read_text().strip().split("\n")
        if text and text[0].startswith("# "):
            text = text[1:]
        parts += ["## Classroom: toy 2-D sets, are DSVs on the boundary? (`bench/bench_toy.py`)", "",
                  "\n".join(text).strip(), ""]
    studio = RES / "studio.json"
    if studio.exists():
        parts += studio_section(json.loads(studio.read_text()))
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print("wrote BENCHMARKS.md")


def shipped_section() -> list[str]:
    """The shipped model under the current defaults over noise seeds 0-2 (zoo.json + zoo_shipped_seed*.json)."""
    rows = [r for r in json.loads((RES / "zoo.json").read_text())["rows"] if r["teacher"] == "mnist_convnet"]
    for p in sorted(RES.glob("zoo_shipped_seed*.json")):
        rows += [r for r in json.loads(p.read_text())["rows"] if r["teacher"] == "mnist_convnet"]
    if len(rows) < 2:
        return []
    runs = [a for r in rows for a in r["student_runs"]]
    mean = sum(runs) / len(runs)
    std = (sum((a - mean) ** 2 for a in runs) / (len(runs) - 1)) ** 0.5
    judges = rows[0]["judges"].keys()
    jm = {k: sum(r["judges"][k] for r in rows) / len(rows) for k in judges}
    jmin = {k: min(r["judges"][k] for r in rows) for k in judges}
    out = ["The shipped model (`mnist_convnet`) under the current defaults, noise seeds "
           f"{', '.join(str(r['synth_seed']) for r in rows)} (3 students each):", "",
           "| noise seed | kept | best cos | student | judges | diversity | time |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['synth_seed']} | {r['kept']} of {r['candidates']} | {r['best_cosine']:.2f} | "
                   f"{100 * r['student_mean']:.1f} +- {100 * r['student_std']:.1f} % | "
                   + " / ".join(f"{100 * v:.0f} %" for v in r["judges"].values())
                   + f" | {r['diversity']:.2f} | {r['seconds']:.0f} s |")
    out.append(f"| **pooled** | {sum(r['kept'] for r in rows) / len(rows):.1f} | - | **{100 * mean:.1f} +- {100 * std:.1f} %** "
               f"({len(runs)} students) | " + " / ".join(f"{100 * jm[k]:.1f} % (lowest {100 * jmin[k]:.0f} %)" for k in judges)
               + " | - | - |")
    return out + ["", "The time column is wall time on the shared cores (other benches ran beside it); the "
                  "speed figure on an idle machine is `bench/bench_synth.py --only speed`.", ""]


def seeds_section() -> list[str]:
    """Teachers measured again from other noise seeds (zoo_seed*.json), pooled with seed 0 (zoo.json)."""
    seed_files = sorted(RES.glob("zoo_seed*.json"))
    if not seed_files:
        return []
    base = json.loads((RES / "zoo.json").read_text())
    runs = [base] + [json.loads(p.read_text()) for p in seed_files]
    teachers = [r["teacher"] for r in base["rows"]
                if any(r["teacher"] == x["teacher"] for res in runs[1:] for x in res["rows"])]
    out = ["The teachers measured from noise seeds 0-2 (every teacher whose trust reading is not weak, and the held-out "
           "ones; 3 students each), pooled: "
           "`python bench/bench_zoo.py --teachers T ... --synth-seed S --tag seedS --threads 1` "
           f"({', '.join(f'`{p.name}`' for p in seed_files)}; seed 0 is the table above):", "",
           "| teacher | noise seeds | kept (each) | trust cos (each) | steps (each) | student, pooled | ratio to real 10/class "
           "| judges: mean (lowest) | diversity (mean) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in teachers:
        rows = [r for res in runs for r in res["rows"] if r["teacher"] == t]
        studs = [a for r in rows for a in r["student_runs"]]
        mean = sum(studs) / len(studs)
        std = (sum((a - mean) ** 2 for a in studs) / max(1, len(studs) - 1)) ** 0.5
        real = rows[0].get("baseline", base["baselines"][rows[0]["family"]])["student_mean"]
        judges = rows[0]["judges"].keys()
        jtext = " / ".join(f"{100 * sum(r['judges'][k] for r in rows) / len(rows):.1f} % "
                           f"({100 * min(r['judges'][k] for r in rows):.0f} %)" for k in judges)
        out.append(f"| {t} | {', '.join(str(r['synth_seed']) for r in rows)} | {', '.join(str(r['kept']) for r in rows)} "
                   f"| {', '.join(format(r.get('trust_cosine', r['best_cosine']), '.3f') for r in rows)} "
                   f"| {', '.join(str(r.get('steps_run', '-')) for r in rows)} "
                   f"| {100 * mean:.1f} +- {100 * std:.1f} % ({len(studs)} students) | {mean / real:.2f} | {jtext} "
                   f"| {sum(r['diversity'] for r in rows) / len(rows):.2f} |")
    return out + [""]


def screens_section(paths: list[Path]) -> list[str]:
    """Screening runs of bench_zoo.py (one synthesis seed, one student seed): the settings tried."""
    out = ["Screening runs behind the defaults (`python bench/bench_zoo.py --teachers T --student-seeds 1 "
           "--set KEY=VALUE ... --tag TAG`; one synthesis seed and one student seed each (the `zoo_e_` screens: "
           "three student seeds), so differences of a few points are noise; earlier screens ran before the defaults "
           "moved, their base is named; in the `zoo_f_` screens the coarse view acted from the first step of every run, "
           "`coarse_factor`, `coarse_hinge` and `coarse_until` / `coarse_from` chose its scale, its loss and its steps, "
           "options since removed, except `zoo_f_c1from1_resnet`, which is today's rule, and `zoo_f_cb08_*`, today's rule with the bound at 0.8):", "",
           "| run | settings on top of the defaults then | teacher | kept | best cos | student (students) | judges | diversity |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in paths:
        res = json.loads(p.read_text())
        for r in res.get("rows", []):  # (zoo_history600.json holds cosine histories, no rows)
            judges = " / ".join(f"{100 * v:.0f} %" for v in r["judges"].values())
            base = (f"lr_lambda {r['config'].get('lr_lambda')}, reseed {r['config'].get('reseed')}, "
                    f"bn_prior {r['config'].get('bn_prior', 'absent')}, extend {r['config'].get('extend', 'absent')}, "
                    f"mass_centre {r['config'].get('mass_centre', 'absent')}, coarse {r['config'].get('coarse', 'absent')}, "
                    f"steps run {r.get('steps_run', r['config'].get('steps'))}")
            out.append(f"| {p.stem} | {' '.join(res['overrides']) or '-'} ({base}) | {r['teacher']} | {r['kept']} of "
                       f"{r['candidates']} | {r['best_cosine']:.2f} | {100 * r['student_mean']:.1f} % ({len(r.get('student_runs', [])) or 1}) | {judges} | "
                       f"{r['diversity']:.2f} |")
    return out + [""]


STUDIO_ROWS = (  # (key in studio.json, what it measures, target)
    ("generate_to_first_preview_s", "Generate (benchmarked recipe, 100 candidates) to the first live preview", "< 3 s"),
    ("quick_look_click_to_result_s", "Quick look (20 candidates x 150 steps) from Generate to the finished grid", "< 15 s"),
    ("quick_look_onnx_click_to_result_s", "Quick look on an uploaded ONNX model of an unregistered architecture", "-"),
    ("stop_request_to_run_end_s", "Stop: from the request to the end of the run (partial result kept)", "< 1 s"),
    ("stop_click_to_partial_result_shown_s", "Stop: from the click to the partial result drawn in the browser", "-"),
)


def studio_section(data: dict) -> list[str]:
    """The live studio's timings, measured by the real-browser test (tests/test_e2e_browser.py)."""
    out = ["## The studio in a real browser (`bench/bench_studio.py`, `tests/test_e2e_browser.py`)", "",
           f"Measured by `{data['command']}` on {data['machine']}: the real server and Debian's chromium "
           "on the same 2 cores, default model. Each value is one run (a fresh "
           "server and browser each time); no test asserts on a time.", "",
           "| what | measured | target |", "| --- | --- | --- |"]
    timings = data.get("timings", {})
    for key, what, target in STUDIO_ROWS:
        values = timings.get(key)
        if values:
            shown = ", ".join(f"{v:.2f} s" for v in values)
            out.append(f"| {what} | {shown} | {target} |")
    return out + [""]


if __name__ == "__main__":
    main()
