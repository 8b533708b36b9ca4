"""One reading of the library's progress records, for every front end (the app, the CLI, the benches).

:func:`~dsvlib.synthesize.synthesize` reports a ``StepInfo`` per step, :func:`~dsvlib.select.fit_lambdas`
a ``SelectStep`` per gradient batch and per solver step; :func:`describe` turns either into a
:class:`Progress` with the same wording everywhere.  Front ends only draw it (a progress bar, a
terminal line).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Progress", "describe"]


@dataclass(frozen=True)
class Progress:
    step: int  # steps done (1-based)
    steps: int
    text: str  # "step 12/300 · stationarity cos 0.41 · 98 kept"
    phase: str = "synthesize"
    cosine: float | None = None
    kept: int | None = None
    elapsed: float | None = None

    @property
    def fraction(self) -> float:
        return min(max(self.step / max(self.steps, 1), 0.0), 1.0)


def _finite(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if x == x and abs(x) != float("inf") else None


def describe(info: Any) -> Progress:
    """A :class:`Progress` for a ``StepInfo`` (synthesis, 0-based ``step``) or a ``SelectStep``
    (selection: ``phase`` "gradients" or "solve", 1-based ``step``)."""
    phase = getattr(info, "phase", None)
    elapsed = _finite(getattr(info, "elapsed", None))
    cos = _finite(getattr(info, "cosine", None))
    if phase is None:  # synthesis
        step, steps = int(info.step) + 1, int(info.steps)
        kept = getattr(info, "kept", None)
        parts = [f"step {step}/{steps}"]
        if cos is not None:
            parts.append(f"stationarity cos {cos:.2f}")
        if kept is not None:
            parts.append(f"{int(kept)} kept")
        return Progress(step, steps, " · ".join(parts), "synthesize", cos, None if kept is None else int(kept), elapsed)
    step, steps = int(info.step), int(info.steps)
    if phase == "gradients":
        return Progress(step, steps, f"per-sample gradients: batch {step}/{steps}", phase, None, None, elapsed)
    support = getattr(info, "support", None)
    text = f"fitting λ: step {step}/{steps}"
    if cos is not None:
        text += f" · stationarity cos {cos:.3f}"
    if support is not None:
        text += f" · {int(support)} images with λ > 0"
    return Progress(step, steps, text, phase, cos, None if support is None else int(support), elapsed)
