"""dsvlib.progress: one wording of the library's step records for the app, the CLI and the benches."""
from __future__ import annotations

import torch

from conftest import make_model
from dsvlib import default_config, fit_lambdas, synthesize
from dsvlib.progress import describe


def test_describe_a_synthesis_step() -> None:
    model, _ = make_model()
    seen = []
    synthesize(model, [0, 1], default_config("digits", steps=3), callback=lambda info: seen.append(describe(info)))
    assert [p.step for p in seen] == [1, 2, 3] and all(p.steps == 3 for p in seen)
    assert seen[-1].fraction == 1.0 and seen[0].fraction == 1 / 3
    assert seen[0].text.startswith("step 1/3 · stationarity cos ") and seen[0].text.endswith(" kept")
    assert seen[0].kept == 2 and seen[0].phase == "synthesize"


def test_describe_selection_steps() -> None:
    model, _ = make_model()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 1, 28, 28, generator=g), torch.arange(12) % 10
    seen = []
    fit_lambdas(model, x, y, steps=5, batch_size=4, cache=False, callback=lambda info: seen.append(describe(info)))
    phases = {p.phase for p in seen}
    assert phases == {"gradients", "solve"}
    grads = [p for p in seen if p.phase == "gradients"]
    assert grads[0].text == f"per-sample gradients: batch {grads[0].step}/{grads[0].steps}" and grads[0].cosine is None
    solve = [p for p in seen if p.phase == "solve"][-1]
    assert solve.text.startswith(f"fitting λ: step {solve.step}/{solve.steps} · stationarity cos ")
    assert solve.kept is not None and 0 <= solve.kept <= 12
