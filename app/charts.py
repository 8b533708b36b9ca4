"""Plotly figures of DSV Studio: pure functions from library results to figures."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dsvlib.synthesize import LOSS_TERMS


def synthesis_history(history: dict[str, list]) -> go.Figure:
    """Three panels over the recorded steps: mean predictive entropy (with min-max band),
    the loss terms that were switched on, and the stationarity cosine."""
    steps = history.get("step", [])
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Mean entropy of the candidates (nats)",
                                                        "Loss terms", "Stationarity cos(θ, -Σλ∇L)"))
    ent = [np.asarray(e, dtype=float) for e in history.get("entropy", [])]
    if ent and len(ent) == len(steps):
        lo = [float(e.min()) if e.size else np.nan for e in ent]
        hi = [float(e.max()) if e.size else np.nan for e in ent]
        fig.add_trace(go.Scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", line=dict(width=0),
                                 fillcolor="rgba(99,110,250,0.15)", name="entropy min-max", hoverinfo="skip"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[float(e.mean()) if e.size else np.nan for e in ent],
                                 name="mean entropy", line=dict(color="#636efa")), row=1, col=1)
    for term in LOSS_TERMS:
        vals = history.get(term, [])
        if len(vals) == len(steps) and any(abs(v) > 0 for v in vals):
            fig.add_trace(go.Scatter(x=steps, y=vals, name=term), row=1, col=2)
    cos = history.get("cosine", [])
    if len(cos) == len(steps) and any(c == c for c in cos):
        fig.add_trace(go.Scatter(x=steps, y=cos, name="cosine", line=dict(color="#00cc96")), row=1, col=3)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def probabilities_before_after(class_names: Sequence[str], before: Sequence[float],
                               after: Sequence[float]) -> go.Figure:
    """Grouped bars of the model's class probabilities before and after an edit."""
    names = [str(c) for c in class_names]
    fig = go.Figure([go.Bar(name="before", x=names, y=list(before), marker_color="#8c8c8c"),
                     go.Bar(name="after", x=names, y=list(after), marker_color="#ef553b")])
    fig.update_layout(barmode="group", height=300, yaxis=dict(title="probability", range=[0, 1]),
                      xaxis=dict(title="class", type="category"), margin=dict(l=10, r=10, t=30, b=10),
                      title="Model's prediction before and after the edit")
    return fig


def class_lambda_vs_accuracy(class_names: Sequence[str], lambda_sum: Sequence[float],
                             accuracy: Sequence[float] | None, *, symbol: str = "λ") -> go.Figure:
    """Classwise sum of λ (bars) against classwise test accuracy (line, right axis): paper Fig. 2b."""
    names = [str(c) for c in class_names]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=names, y=list(lambda_sum), name=f"Σ{symbol} of the class", marker_color="#636efa"),
                  secondary_y=False)
    if accuracy is not None:
        fig.add_trace(go.Scatter(x=names, y=list(accuracy), name="test accuracy", mode="lines+markers",
                                 line=dict(color="#ef553b")), secondary_y=True)
        fig.update_yaxes(title_text="test accuracy", tickformat=".1%", secondary_y=True)
    fig.update_yaxes(title_text=f"classwise Σ{symbol}", secondary_y=False)
    fig.update_xaxes(title_text="class", type="category")
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.3),
                      title=f"Classwise sum of {symbol} vs classwise test accuracy")
    return fig
