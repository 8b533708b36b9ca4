"""Synthesize page: DSVs from the model alone (DeepKKT, paper Sec. 4), run as a background job with a
live preview, Stop, a run history and side-by-side comparison, and a student retrained on the DSVs."""
from __future__ import annotations

import datetime
from typing import Any

import streamlit as st

from app import charts, common, live
from app.jobs import Job
from dsvlib.export import export_zip, run_meta, synthesis_rows
from dsvlib.synthesize import (PRESETS, SynthResult, config_for, default_config, defaults_explained, longest_run,
                               partial_config, partial_recipe_text, soft_targets, synthesize, trust_strength)
from dsvlib.train import predict

KIND = "synthesize"
CUSTOM = "custom"

HOW_TO_READ = """
* **Each tile is one candidate**, optimised from noise until the model classifies it as its class
  *and* a weighted sum of the candidates' gradients points like the model's weights
  (θ = -Σ λᵢ ∇θ L(xᵢ), paper Eq. 8). Columns are classes.
* **λ** is the candidate's multiplier: how much it is needed to explain the weights. A candidate whose
  λ turned negative is **dropped**: it is not a support vector (dual feasibility, λ ≥ 0).
* **p** is the model's probability of the candidate's class. DSVs sit near the decision boundary, so
  p is often well below 1.
* **The trust reading** is the best stationarity cosine the run reached: *strong* means the DSVs
  explain most of the weights' direction; *weak* means read them as class visualisations only
  (see the Help page).
* **The entropy curve** (left chart) is the candidates' predictive entropy: it falls as they become
  their class, then rises again as stationarity pulls them toward the boundary (paper Fig. 2a).
"""


def synthesize_page() -> None:
    st.title("Synthesize deep support vectors")
    active = common.model_sidebar()
    if active is None:
        return
    common.how_to_read(HOW_TO_READ)
    names = list(active.class_names)

    presets = [*PRESETS, CUSTOM]
    preset = st.radio("Preset", presets, horizontal=True, key="synth_preset",
                      format_func=lambda p: PRESETS[p].label if p in PRESETS else "Custom",
                      captions=[PRESETS[p].description for p in PRESETS] + ["your own numbers"])
    # Class widgets are keyed by model: another model's class names are not valid options here.
    chosen = st.multiselect("Classes", names, default=names, key=f"synth_classes:{active.label}")
    c1, c2, c3 = st.columns(3)
    if preset == CUSTOM:
        per_class = int(c1.number_input("Images per class", 1, 50, 10, key="synth_per_class"))
        steps = int(c2.number_input("Steps", 1, 5000, default_config(active.kind).steps, step=10, key="synth_steps",
                                    help="300 is the benchmarked recipe (BENCHMARKS.md); short runs give rougher "
                                         "DSVs and a weaker trust reading."))
    else:
        per_class, steps = PRESETS[preset].per_class, PRESETS[preset].steps
        c1.metric("Images per class", per_class)
        c2.metric("Steps", steps)
    seed = int(c3.number_input("Seed", 0, 2**31 - 1, 0, key="synth_seed"))
    with st.expander("Advanced"):
        a1, a2 = st.columns(2)
        params = a1.selectbox(
            "Stationarity on", ["auto", "all", "last"], key="synth_params",
            format_func=lambda p: {"auto": "parameters it can hold for (benchmarked default)", "all": "all parameters",
                                   "last": "last layer only (paper Fig. 4)"}[p],
            help="auto leaves out weights in front of a normalisation layer: they are scale invariant, so no "
                 "weighted sum of gradients can reproduce them.")
        distance = a2.selectbox("Stationarity distance", ["cos", "l1", "l2", "none"], key="synth_distance",
                                help="cos: scale-free (default); l1: the paper's Eq. 8; l2: Alg. 1; "
                                     "none: class maximisation only, no stationarity.")
        st.caption("Defaults for this model: " + "; ".join(defaults_explained(active.model, active.spec)) + ".")
    n = len(chosen) * per_class
    # a preset's own settings (Quick look never extends its run), or the custom step count
    size = PRESETS[preset].overrides() if preset in PRESETS else {"steps": steps}
    cfg = config_for(active.model, active.spec, **size, params=params, stationarity=distance)
    _estimate_caption(active, n, cfg)

    def start() -> None:
        targets = [names.index(c) for c in chosen for _ in range(per_class)]
        _submit_synthesis(active, targets, cfg, seed, names, preset, per_class, len(chosen))

    last = live.job_area(KIND, "Generate", start, key="synth_run", disabled=n == 0, ncol=len(chosen) or 10,
                         tile=common.tile,
                         help="Runs in the background: you can switch pages or change settings while it runs.")
    if last is not None:
        _show_result(last, active)
    _history()
    with st.expander("Soft-label mixing: between two classes (paper Fig. 6)"):
        _mixing(active, names)


def _steps_text(result: SynthResult, planned: int) -> str:
    """'300', '120 of 300', or '600 (extended past 300)' for a run planned at ``planned`` steps."""
    if result.trust.get("extended_at"):
        return f"{result.steps_run} (extended past {result.trust['extended_at']})"
    return str(result.steps_run) if result.steps_run >= planned else f"{result.steps_run} of {planned}"


def _coarse_when(cfg: Any) -> str:
    """When the second round asks for the coarse view, in words; a partial reading restarts instead
    where the config has a partial recipe, and the restarted run may have its own cosine line."""
    reads = f"where the model then reads at least {100 * cfg.coarse_read:.0f} % of its candidates from a coarse copy of each"
    if cfg.partial_priors:
        below = partial_config(cfg).coarse_below
        if below != cfg.coarse_below:
            return f"Under {below:.2f} in a run that started again (see below), or {reads}"
    return f"Under {cfg.coarse_below:.1f}, or {reads}"


def _estimate_caption(active: common.ActiveModel, n: int, cfg: Any) -> None:
    text = f"{n} candidates x {cfg.steps} steps on {active.device}"
    if n == 0:
        st.caption(text + ".")
        return
    try:
        cost = common.step_cost(active, n, cfg)
    except Exception as e:  # noqa: BLE001 - an estimate is a nicety; say why there is none
        st.caption(f"{text} (no time estimate: {common.error_message(e, 'measuring a step')}).")
        return
    extra = cfg.extra_steps
    longer = (f" If the stationarity cosine after {cfg.steps} steps lies between {cfg.extend_from:.1f} and "
              f"{cfg.extend_below:.1f}, the run goes on for {extra} more steps (about "
              f"{cost.estimate(cfg.steps + extra):.0f} s in all): such models gained from them."
              + (f" {_coarse_when(cfg)}, those steps also ask that the class show in that copy, "
                 "so that fragments and textures only this model reads become shapes a person reads (one more pass "
                 "through the model a step, not in this estimate)."
                 if cfg.coarse > 0 else "")
              + (f" A run whose cosine there is under {cfg.coarse_below:.1f} (a partial reading) instead starts again "
                 f"from the same noise with the partial recipe ({partial_recipe_text(cfg)}): up to "
                 f"{longest_run(cfg)} steps, about {cost.estimate(longest_run(cfg)):.0f} s in all."
                 if cfg.partial_priors else "")
              if extra > 0 else "")
    st.caption(f"{text}. Estimated time: about {cost.estimate(cfg.steps):.0f} s (measured here: "
               f"{1000 * cost.step_seconds:.0f} ms a step after {cost.setup_seconds:.1f} s of set-up; other "
               "users' runs share the machine and can make it longer)." + longer)


def _submit_synthesis(active: common.ActiveModel, targets: list[int], cfg: Any, seed: int, names: list[str],
                      preset: str, per_class: int, n_classes: int) -> None:
    # the cached model itself: synthesis reads it functionally (no flag toggled, no .grad written), so
    # concurrent runs from several browser sessions can share it
    model = active.model
    label, device = active.label, active.device
    classes = sorted(set(targets))

    def work(job: Job) -> SynthResult:
        result = synthesize(model, targets, cfg, seed=seed, device=device, callback=live.StepReporter(job))
        common.record_step_cost(label, device, len(targets), cfg, result)
        job.params["rows"] = synthesis_rows(model, result, names)
        job.params["meta"] = run_meta(model, model_name=label, config=cfg, seed=seed, device=device,
                                      preset=preset, targets=targets, steps_run=result.steps_run,
                                      stopped=job.stop_requested, trust=result.trust)
        return result

    preset_name = PRESETS[preset].label if preset in PRESETS else "Custom"
    title = f"{preset_name}: {n_classes} classes x {per_class} on {label}"
    live.submit(KIND, title, work, device=device, params={
        "model": label, "names": names, "classes": classes, "preset": preset_name, "per_class": per_class,
        "seed": seed, "steps": cfg.steps, "card_cosine": common.card_cosine(active.card), "family": active.data_family,
        "spec": active.spec,
    })


# --------------------------------------------------------------------------- the result


def _ordered(result: SynthResult) -> list[int]:
    """Indices in display order: one column per class, one row per repetition."""
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(result.labels.tolist()):
        groups.setdefault(label, []).append(i)
    classes = sorted(groups)
    return [groups[c][r] for r in range(max(map(len, groups.values()))) for c in classes if r < len(groups[c])]


def _show_result(job: Job, active: common.ActiveModel) -> None:
    st.subheader("Result")
    p = job.params
    if job.result is None:
        st.error(common.error_message(job.exception, "Synthesis") if job.exception else live.status_line(job),
                 icon=":material/error:")
        return
    result: SynthResult = job.result
    names: list[str] = p["names"]
    n = len(result.labels)
    stopped = job.status == "stopped"
    st.caption(f"Run #{job.id} on **{p['model']}**: {n} candidates, {_steps_text(result, p['steps'])} steps in "
               f"{result.seconds:.1f} s on {job.device}; {int(result.kept.sum())}/{n} kept (λ ≥ 0); "
               f"{live.status_line(job)}.")
    if stopped:
        st.warning(f"Stopped after {_steps_text(result, p['steps'])} steps: this is a partial result.",
                   icon=":material/stop_circle:")
    if p["model"] != active.label:
        st.info(f"This run was made with {p['model']}; the model selected now is {active.label}.",
                icon=":material/info:")
    reading = result.trust.get("reading", "")
    common.strength_box(trust_strength(result.trust_cosine), f"**Trust reading:** {reading}")
    card_cos = p.get("card_cosine")
    if result.trust.get("best_cosine") is not None:
        st.caption("The reading uses the best stationarity cosine this run reached (over every parameter "
                   "stationarity can hold for, when the run held it on fewer); it rises with more steps "
                   "and candidates." + (f" For comparison, the model's training data reach {card_cos:.2f} "
                                        "(Model page)." if isinstance(card_cos, (int, float)) else ""))
    rows = p.get("rows") or []
    order = _ordered(result)
    captions = []
    for i in order:
        prob = rows[i]["probability"] if i < len(rows) else float("nan")
        cap = f"{names[int(result.labels[i])]} · λ={float(result.lambdas[i]):.2f} · p={prob:.2f}"
        captions.append(cap if bool(result.kept[i]) else cap + " · dropped")
    common.show_images(result.images[order], captions, per_row=min(len(p["classes"]), 10))
    st.plotly_chart(charts.synthesis_history(result.history), key=f"chart_synth_{job.id}")
    if p["model"] == active.label:
        _why(result, names, active)
    if rows:
        if "zip" not in p:  # built once per run: reruns reuse it
            p["zip"] = export_zip(result.images, rows, p.get("meta", {}), grid_ncol=min(len(p["classes"]), 10))
        data = p["zip"]
        st.download_button("Download the DSVs (.zip: PNGs, metrics.csv, metrics.json)", data,
                           file_name=f"dsvs_run{job.id}.zip", mime="application/zip", key=f"synth_download_{job.id}",
                           icon=":material/download:")
    _distill_section(job, result)


def _why(result: SynthResult, names: list[str], active: common.ActiveModel) -> None:
    """"Why is this DSV its class": attribution maps of a class's DSVs toward that class."""
    with st.expander("Why is this DSV its class? (attribution maps)"):
        classes = sorted(set(result.labels.tolist()))
        c = st.selectbox("Class", classes, format_func=lambda k: names[k], key="synth_why_class")
        idx = [i for i, label in enumerate(result.labels.tolist()) if label == c][:8]
        with common.shown_errors("Attribution"):
            common.attribution_row(active.model, result.images[idx], c,
                                   [f"{names[c]} · λ={float(result.lambdas[i]):.2f}" for i in idx],
                                   key="synth_attribution", px=110)


def _distill_section(synth: Job, result: SynthResult) -> None:
    """Retrain a fresh student on the kept DSVs only (paper Table 2) as its own job."""
    family = synth.params.get("family")
    st.markdown("**Does the model's knowledge survive in the DSVs?** Train a fresh model of the same "
                "architecture on the kept DSVs alone, then test it on real data it never saw.")
    kept = int(result.kept.sum())
    mine = live.current_job()
    if family is None:
        st.caption("No bundled test set fits this model, so a student cannot be tested here.")
        return
    if st.button(f"Retrain a student on the {kept} kept DSVs", key=f"distill_{synth.id}",
                 disabled=kept == 0 or mine is not None):
        _submit_distill(synth, result, family)  # reruns the page
    if mine is not None and mine.kind == "distill" and mine.params.get("source") == synth.id:
        live.progress_panel(mine)
    done = [j for j in live.history("distill") if j.params.get("source") == synth.id and not j.active]
    if done:
        j = done[-1]
        if j.result is not None:
            acc, n_test, epochs = j.result
            st.metric(f"Student test accuracy ({n_test} real test images)", f"{acc:.1%}",
                      help=f"A fresh {synth.params['spec'].arch} trained {epochs} epochs on the kept DSVs only "
                           "(the benchmarks' student protocol, one seed).")
            st.caption(f"Student run #{j.id}: {live.status_line(j)}.")
        else:
            st.error(common.error_message(j.exception, "Training the student") if j.exception else live.status_line(j))


def _submit_distill(synth: Job, result: SynthResult, family: str) -> None:
    import torch

    from dsvlib.evaluate import STUDENT_FIT
    from dsvlib.models import build_classifier
    from dsvlib.train import accuracy, fit

    spec = synth.params["spec"]
    images, labels = result.kept_images()
    test = common.bundled_dataset(f"{family}:test")
    steps_per_epoch = max(1, -(-len(images) // STUDENT_FIT.batch_size))
    epochs = max(STUDENT_FIT.epochs, -(-STUDENT_FIT.min_steps // steps_per_epoch))

    def work(job: Job):
        torch.manual_seed(1000)
        student = build_classifier(spec)

        def on_epoch(epoch: int, loss: float) -> None:
            job.report(step=epoch + 1, steps=epochs, text=f"epoch {epoch + 1}/{epochs} · loss {loss:.3f}")
            job.check_stop()

        fit(student, images, labels, STUDENT_FIT, seed=0, on_epoch=on_epoch)
        return accuracy(student, test.images, test.labels), len(test), epochs

    live.submit("distill", f"student on {len(images)} DSVs of run #{synth.id}", work, device="cpu",
                params={"source": synth.id})


# --------------------------------------------------------------------------- history and comparison


def _history() -> None:
    runs = [j for j in live.history(KIND) if not j.active and j.result is not None]
    if not runs:
        return
    st.subheader("Run history (this browser session)")
    table = []
    for j in runs:
        r: SynthResult = j.result
        cos = r.trust_cosine
        table.append({"run": f"#{j.id}", "time": datetime.datetime.fromtimestamp(j.created).strftime("%H:%M:%S"),
                      "model": j.params["model"], "preset": j.params["preset"],
                      "candidates": len(r.labels), "steps": _steps_text(r, j.params["steps"]),
                      "status": j.status, "trust": f"{trust_strength(cos)} ({cos:.2f})" if cos is not None else "-",
                      "kept": f"{int(r.kept.sum())}/{len(r.kept)}", "seconds": round(r.seconds, 1)})
    st.dataframe(table, hide_index=True, width="stretch")
    if len(runs) < 2:
        st.caption("Generate again (another preset, seed or model) to compare two runs side by side.")
        return
    labels = {f"#{j.id} · {j.params['model']} · {j.params['preset']}": j for j in runs}
    keys = list(labels)
    c1, c2 = st.columns(2)
    for col, default, key in ((c1, len(keys) - 2, "cmp_a"), (c2, len(keys) - 1, "cmp_b")):
        pick = col.selectbox("Compare run", keys, index=default, key=key)
        j = labels[pick]
        r = j.result
        cos = r.trust_cosine
        col.caption(f"trust {trust_strength(cos)}" + (f" (cos {cos:.2f})" if cos is not None else "") +
                    f" · kept {int(r.kept.sum())}/{len(r.kept)} · {r.steps_run} steps · {r.seconds:.1f} s")
        col.image(common.tile(r.images[_ordered(r)], min(len(j.params["classes"]), 10), px=40),
                  caption=f"run #{j.id}", width="stretch")


# --------------------------------------------------------------------------- soft-label mixing


def _mixing(active: common.ActiveModel, names: list[str]) -> None:
    st.caption("Target y = (1 - δ) e_a + δ e_b: the class becomes a continuous latent.")
    c1, c2, c3, c4 = st.columns(4)
    a = c1.selectbox("Class a", names, index=0, key=f"mix_a:{active.label}")
    b = c2.selectbox("Class b", names, index=min(1, len(names) - 1), key=f"mix_b:{active.label}")
    delta = float(c3.slider("δ (share of b)", 0.0, 1.0, 0.5, 0.05, key="mix_delta"))
    count = int(c4.number_input("Images", 1, 20, 2, key="mix_count"))
    steps = int(st.number_input("Mixing steps", 1, 5000, 150, step=10, key="mix_steps"))

    def start() -> None:
        ia, ib = names.index(a), names.index(b)
        targets = soft_targets([ia] * count, [ib] * count, delta, len(names))
        model, cfg, device = active.model, config_for(active.model, active.spec, steps=steps, extend=0.0), active.device

        def work(job: Job):
            res = synthesize(model, targets, cfg, seed=0, device=device, callback=live.StepReporter(job))
            return res, predict(model, res.images)

        live.submit("mix", f"mixing {a} → {b} at δ = {delta:.2f}", work, device=device,
                    params={"model": active.label, "a": ia, "b": ib, "delta": delta})

    mixed = live.job_area("mix", "Run mixing", start, key="mix_run", primary=False, ncol=count, tile=common.tile)
    if mixed is None:
        return
    if mixed.result is None:
        st.error(common.error_message(mixed.exception, "Mixing") if mixed.exception else live.status_line(mixed))
        return
    res, probs = mixed.result
    mp = mixed.params
    na, nb = names[mp["a"]] if mp["a"] < len(names) else mp["a"], names[mp["b"]] if mp["b"] < len(names) else mp["b"]
    st.markdown(f"**{na} → {nb}, δ = {mp['delta']:.2f}** on {mp['model']}: the model's probabilities of the results")
    captions = [f"p({na})={float(q[mp['a']]):.2f} · p({nb})={float(q[mp['b']]):.2f}" for q in probs]
    common.show_images(res.images, captions, per_row=min(len(probs), 10))

