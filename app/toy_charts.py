"""Plotly figures of the Classroom page (2-D support vectors): pure functions from dsvlib.toy results
to figures, sized for a projector (fonts 18+, Okabe-Ito colours, every axis labelled)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from dsvlib.toy import ToyData, ToySynthesis

# Okabe-Ito: distinguishable with every common colour-vision deficiency
OKABE_ITO = {"orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442", "blue": "#0072B2",
             "vermillion": "#D55E00", "purple": "#CC79A7", "black": "#000000", "grey": "#999999"}
CLASS_COLOURS = (OKABE_ITO["blue"], OKABE_ITO["orange"])
CLASS_SYMBOLS = ("circle", "diamond")
FONT = 18
HEIGHT = 620


def _layout(fig: go.Figure, title: str, *, x_title: str = "x₁", y_title: str = "x₂", square: bool = True,
            height: int = HEIGHT) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=FONT + 4)), font=dict(size=FONT), height=height,
                      margin=dict(l=70, r=20, t=70, b=70), legend=dict(orientation="h", y=-0.14, font=dict(size=FONT - 2)),
                      plot_bgcolor="white")
    fig.update_xaxes(title_text=x_title, title_font=dict(size=FONT), tickfont=dict(size=FONT - 2), showgrid=False)
    fig.update_yaxes(title_text=y_title, title_font=dict(size=FONT), tickfont=dict(size=FONT - 2), showgrid=False)
    if square:
        fig.update_xaxes(range=[0, 1], constrain="domain")
        fig.update_yaxes(range=[0, 1], scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def _regions(fig: go.Figure, grid: dict[str, torch.Tensor]) -> None:
    """Decision regions (light class colours) and the boundary p = 0.5 (a black line)."""
    xs, prob = grid["xs"].numpy(), grid["prob"].numpy()
    fig.add_trace(go.Heatmap(x=xs, y=xs, z=prob, zmin=0, zmax=1, showscale=False, hoverinfo="skip", opacity=0.35,
                             colorscale=[[0, CLASS_COLOURS[0]], [0.5, "#ffffff"], [1, CLASS_COLOURS[1]]],
                             name="regions"))
    fig.add_trace(go.Contour(x=xs, y=xs, z=prob, contours=dict(start=0.5, end=0.5, size=1, coloring="none"),
                             line=dict(color="black", width=3), showscale=False, hoverinfo="skip",
                             name="decision boundary", showlegend=True))


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def _regions_image(fig: go.Figure, grid: dict[str, torch.Tensor]) -> None:
    """The same regions and boundary as :func:`_regions`, drawn so that an animation keeps them:
    plotly.js drops heatmap and contour traces while it animates, so the regions are a background
    image and the boundary is a trace of the grid cells where the predicted class changes."""
    from PIL import Image

    xs, prob = grid["xs"].numpy(), grid["prob"].numpy().astype(float)
    t = np.clip(np.abs(prob - 0.5) * 2, 0, 1)[..., None] * 0.35  # the heatmap's opacity, by confidence
    colour = np.where((prob >= 0.5)[..., None], _rgb(CLASS_COLOURS[1]), _rgb(CLASS_COLOURS[0]))
    rgb = (255 * (1 - t) + colour * t).clip(0, 255).astype(np.uint8)[::-1]  # image rows run top-down
    lo, hi = float(xs[0]), float(xs[-1])
    fig.add_layout_image(dict(source=Image.fromarray(rgb), xref="x", yref="y", x=lo, y=hi, sizex=hi - lo,
                              sizey=hi - lo, sizing="stretch", layer="below"))
    cls = grid["cls"].numpy()
    step = float(xs[1] - xs[0]) if len(xs) > 1 else 0.0
    right = np.argwhere(cls[:, 1:] != cls[:, :-1])  # (row, col) pairs: change between col and col + 1
    up = np.argwhere(cls[1:, :] != cls[:-1, :])
    bx = np.r_[xs[right[:, 1]] + step / 2, xs[up[:, 1]]]
    by = np.r_[xs[right[:, 0]], xs[up[:, 0]] + step / 2]
    fig.add_trace(go.Scatter(x=bx, y=by, mode="markers", name="decision boundary", hoverinfo="skip",
                             marker=dict(color="black", size=4, symbol="square")))


def _points(fig: go.Figure, data: ToyData, *, size: Sequence[float] | float = 9, opacity: float = 0.8,
            names: tuple[str, str] = ("class 0", "class 1")) -> None:
    pts, lab = data.points.numpy(), data.labels.numpy()
    size_arr = np.broadcast_to(np.asarray(size, dtype=float), (len(lab),))
    for c in (0, 1):
        m = lab == c
        fig.add_trace(go.Scatter(x=pts[m, 0], y=pts[m, 1], mode="markers", name=names[c],
                                 marker=dict(color=CLASS_COLOURS[c], symbol=CLASS_SYMBOLS[c], size=size_arr[m],
                                             opacity=opacity, line=dict(color="white", width=0.5))))


def _line(w: torch.Tensor, b: float, offset: float = 0.0) -> tuple[list[float], list[float]]:
    """Points of w.x + b = offset across the unit square (for the SVC's boundary and margins)."""
    w0, w1 = float(w[0]), float(w[1])
    if abs(w1) >= abs(w0):
        xs = [0.0, 1.0]
        return xs, [(offset - b - w0 * x) / w1 for x in xs]
    ys = [0.0, 1.0]
    return [(offset - b - w1 * y) / w0 for y in ys], ys


def linear_support(data: ToyData, grid: dict[str, torch.Tensor], svc_support: Sequence[int],
                   lambda_support: Sequence[int], svc_w: torch.Tensor, svc_b: float, *, title: str) -> go.Figure:
    """The linear model's regions, the SVC's boundary and margins (dashed), SVC support vectors
    (large open circles) and the lambda > 0 points (crosses) overlaid."""
    fig = go.Figure()
    _regions(fig, grid)
    for off, dash, name in ((0.0, "dash", "SVC boundary"), (1.0, "dot", "SVC margin"), (-1.0, "dot", None)):
        x, y = _line(svc_w, svc_b, off)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name or "SVC margin", showlegend=name is not None,
                                 line=dict(color=OKABE_ITO["green"], width=3, dash=dash), hoverinfo="skip"))
    _points(fig, data, size=8, opacity=0.55)
    pts = data.points.numpy()
    sv = list(svc_support)
    lam = list(lambda_support)
    fig.add_trace(go.Scatter(x=pts[sv, 0], y=pts[sv, 1], mode="markers", name=f"SVC support vectors ({len(sv)})",
                             marker=dict(symbol="circle-open", size=22, color=OKABE_ITO["vermillion"],
                                         line=dict(width=3))))
    fig.add_trace(go.Scatter(x=pts[lam, 0], y=pts[lam, 1], mode="markers", name=f"DeepKKT λ > 0 ({len(lam)})",
                             marker=dict(symbol="x-thin", size=14, color=OKABE_ITO["black"], line=dict(width=3))))
    return _layout(fig, title)


def lambda_map(data: ToyData, grid: dict[str, torch.Tensor], lambdas: torch.Tensor, *, title: str,
               symbol: str = "λ") -> go.Figure:
    """Regions and boundary; every training point sized and coloured by its multiplier."""
    fig = go.Figure()
    _regions(fig, grid)
    lam = lambdas.double().numpy()
    top = float(lam.max()) if lam.size and lam.max() > 0 else 1.0
    size = 6 + 24 * np.sqrt(np.clip(lam / top, 0, 1))
    pts, lab = data.points.numpy(), data.labels.numpy()
    for c in (0, 1):
        m = lab == c
        fig.add_trace(go.Scatter(
            x=pts[m, 0], y=pts[m, 1], mode="markers", name=f"class {c} (size: {symbol})",
            marker=dict(size=size[m], symbol=CLASS_SYMBOLS[c], color=lam[m], cmin=0, cmax=top,
                        colorscale="Viridis", line=dict(color=CLASS_COLOURS[c], width=2),
                        colorbar=dict(title=dict(text=symbol, font=dict(size=FONT)), tickfont=dict(size=FONT - 2))
                        if c == 0 else None, showscale=c == 0),
            text=[f"{symbol} = {v:.3g}" for v in lam[m]], hovertemplate="%{text}<extra></extra>"))
    return _layout(fig, title)


def trajectories(data: ToyData, grid: dict[str, torch.Tensor], synth: ToySynthesis, *, upto: int | None = None,
                 title: str, frames: bool = True) -> go.Figure:
    """Regions, faint training points, and each DSV's path from its start (hollow) to the recorded
    frame ``upto`` (filled marker); with ``frames`` a Play button and a slider animate the paths."""
    traj = synth.trajectory.numpy()  # (T, N, 2)
    steps = synth.trajectory_steps.tolist()
    last = len(traj) - 1 if upto is None else max(0, min(int(upto), len(traj) - 1))
    lab = synth.labels.numpy()
    fig = go.Figure()
    (_regions_image if frames else _regions)(fig, grid)
    _points(fig, data, size=6, opacity=0.25, names=("training, class 0", "training, class 1"))
    fig.add_trace(go.Scatter(x=traj[0, :, 0], y=traj[0, :, 1], mode="markers", name="start (random)",
                             marker=dict(symbol="circle-open", size=12, color=OKABE_ITO["grey"], line=dict(width=2))))

    def dynamic(k: int) -> list[go.Scatter]:
        out = []
        for c in (0, 1):
            idx = np.flatnonzero(lab == c)
            xs: list[float | None] = []
            ys: list[float | None] = []
            for i in idx:
                xs += list(traj[:k + 1, i, 0]) + [None]
                ys += list(traj[:k + 1, i, 1]) + [None]
            out.append(go.Scatter(x=xs, y=ys, mode="lines", name=f"path, class {c}",
                                  line=dict(color=CLASS_COLOURS[c], width=2)))
            out.append(go.Scatter(x=traj[k, idx, 0], y=traj[k, idx, 1], mode="markers", name=f"DSV, class {c}",
                                  marker=dict(symbol=CLASS_SYMBOLS[c], size=16, color=CLASS_COLOURS[c],
                                              line=dict(color="black", width=2))))
        return out

    base = len(fig.data)
    for tr in dynamic(last):
        fig.add_trace(tr)
    _layout(fig, title)
    if frames and len(traj) > 1:
        picks = sorted(set(np.linspace(0, len(traj) - 1, min(len(traj), 41)).round().astype(int).tolist()))
        # every frame lists every trace, the static ones as empty updates: with a ``traces`` subset,
        # plotly.js dropped the heatmap and the contour from the plot while animating
        static = [{"type": tr.type} for tr in fig.data[:base]]
        fig.frames = [go.Frame(data=static + dynamic(k), name=str(steps[k])) for k in picks]
        fig.update_layout(
            height=HEIGHT + 120, margin=dict(l=70, r=20, t=70, b=190), legend=dict(y=-0.36),
            updatemenus=[dict(type="buttons", showactive=False, x=0.0, y=-0.12, xanchor="left", yanchor="top",
                              direction="right", pad=dict(t=0, r=10),
                              font=dict(size=FONT - 2),
                              buttons=[dict(label="▶ Play", method="animate",
                                            args=[None, dict(frame=dict(duration=120, redraw=True), fromcurrent=True,
                                                             transition=dict(duration=0))]),
                                       dict(label="❚❚ Pause", method="animate",
                                            args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])])],
            sliders=[dict(active=len(picks) - 1 if upto is None else int(np.argmin([abs(p - last) for p in picks])),
                          y=-0.12, x=0.3, len=0.7, yanchor="top", currentvalue=dict(prefix="step ", font=dict(size=FONT - 2)),
                          font=dict(size=FONT - 4),
                          steps=[dict(label=str(steps[k]), method="animate",
                                      args=[[str(steps[k])], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                                  transition=dict(duration=0))]) for k in picks])])
    return fig


def entropy_curve(synth: ToySynthesis, *, upto: int | None = None, title: str = "Entropy of the DSVs") -> go.Figure:
    """Mean predictive entropy of the candidates (with min-max band) over the recorded steps, and a
    marker at frame ``upto``."""
    ent = synth.entropy.numpy()
    steps = synth.trajectory_steps.numpy()
    last = len(ent) - 1 if upto is None else max(0, min(int(upto), len(ent) - 1))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=np.r_[steps, steps[::-1]], y=np.r_[ent.max(1), ent.min(1)[::-1]], fill="toself",
                             line=dict(width=0), fillcolor="rgba(0,114,178,0.15)", name="min-max", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=steps, y=ent.mean(1), mode="lines", name="mean entropy",
                             line=dict(color=OKABE_ITO["blue"], width=4)))
    fig.add_trace(go.Scatter(x=[steps[last]], y=[float(ent[last].mean())], mode="markers", name="shown step",
                             marker=dict(size=18, color=OKABE_ITO["vermillion"])))
    fig.add_hline(y=float(np.log(2)), line=dict(color=OKABE_ITO["grey"], dash="dot"),
                  annotation_text="ln 2: on the boundary", annotation_font_size=FONT - 2)
    return _layout(fig, title, x_title="synthesis step", y_title="predictive entropy (nats)", square=False,
                   height=HEIGHT)


def distance_bars(labels: Sequence[str], means: Sequence[float], *, title: str) -> go.Figure:
    """Mean distance to the boundary of a few point sets (bars)."""
    colours = [OKABE_ITO["vermillion"], OKABE_ITO["grey"], OKABE_ITO["green"], OKABE_ITO["purple"], OKABE_ITO["sky"]]
    ticks = [str(lab).replace(" ", "<br>", 1) for lab in labels]  # two lines: readable without tilting
    fig = go.Figure(go.Bar(x=ticks, y=list(means), marker_color=colours[:len(labels)],
                           text=[f"{m:.3f}" for m in means], textposition="outside", textfont=dict(size=FONT)))
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(tickangle=0)
    return _layout(fig, title, x_title="point set", y_title="mean distance to the boundary", square=False,
                   height=HEIGHT)
