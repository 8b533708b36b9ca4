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
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
