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
        parts += ["## The user's own model: a zoo of teachers (`bench/bench_zoo.py`)", "",
                  "Teachers trained the way users train them (`bench/zoo.py`), 10 candidates per class from "
                  "noise, zero real images, with the defaults the app and the CLI pick for each model "
                  "(`dsvlib.synthesize.config_for`). Student: a fresh ConvNet trained on the kept DSVs only; "
                  "in brackets the same protocol on 10 random real images per class. Judges: mnist LeNet / MLP, "
                  "shapes LeNet / plain ConvNet, all trained on real data only.", "",
                  (RES / "zoo.md").read_text().strip(), ""]
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
