"""Command line: ``dsv info | synthesize | distill | rank``.

Progress goes to the terminal through the library's callbacks (the core never prints).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cards import card_cosine, card_training_data
from .data import data_family, data_kind
from .export import export_zip, run_meta, save_grid, synthesis_rows
from .io import ModelFileError, load_card, load_model
from .progress import describe


class _Bar:
    """A one-line terminal progress bar (stderr)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.t0 = max(1, total), label, time.perf_counter()

    def update(self, done: int, extra: str = "") -> None:
        frac = min(1.0, done / self.total)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{self.total} {time.perf_counter() - self.t0:5.1f}s {extra}   ")
        sys.stderr.flush()

    def progress(self, info: Any) -> None:
        """Draw a library step record (the same wording as the app: :func:`dsvlib.progress.describe`)."""
        p = describe(info)
        self.total = max(1, p.steps)
        self.update(p.step, p.text)

    def close(self) -> None:
        sys.stderr.write("\n")


def _load(model: str) -> tuple[Any, Any]:
    try:
        return load_model(model)
    except ModelFileError as e:
        raise SystemExit(f"dsv: error: {e}") from None


def cmd_info(args: argparse.Namespace) -> int:
    model, spec = _load(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model:        {args.model}")
    print(f"architecture: {spec.arch} {spec.arch_kwargs}")
    print(f"parameters:   {n_params:,}")
    print(f"input:        {spec.in_channels} x {spec.image_size[0]} x {spec.image_size[1]}, pixels in [0, 1]")
    print(f"normalise:    mean {list(spec.mean)}, std {list(spec.std)}")
    print(f"classes:      {spec.num_classes}: {', '.join(spec.class_names)}")
    card = load_card(args.model)
    if card is not None:
        print("model card:")
        print(json.dumps(card, indent=2))
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .synthesize import default_config, synthesize

    model, spec = _load(args.model)
    classes = args.classes if args.classes else list(range(spec.num_classes))
    for c in classes:
        if not 0 <= c < spec.num_classes:
            raise SystemExit(f"dsv: error: --classes must be in 0..{spec.num_classes - 1}, got {c}")
    targets = torch.tensor(classes).repeat_interleave(args.per_class)
    cfg = default_config(data_kind(spec))
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("dsv: error: --device cuda requested but CUDA is not available")
    bar = _Bar(cfg.steps, "synthesize")

    def cb(info) -> None:
        bar.progress(info)

    res = synthesize(model, targets, cfg, seed=args.seed, device=args.device, callback=cb)
    bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "images.npz", images=res.images.numpy().astype(np.float32), labels=res.labels.numpy(),
             lambdas=res.lambdas.numpy(), kept=res.kept.numpy())
    save_grid(res.images, out / "grid.png", ncol=args.per_class)
    (out / "history.json").write_text(json.dumps(res.history))
    rows = synthesis_rows(model, res, spec.class_names)
    metrics = {
        "model": args.model, "seconds": round(res.seconds, 2), "steps_run": res.steps_run, "seed": args.seed,
        "n": len(targets), "kept": int(res.kept.sum()),
        "primal_feasible": float(np.mean([r["predicted"] == r["label"] for r in rows])),
        "mean_entropy": float(np.mean([r["entropy"] for r in rows])),
        "trust": res.trust, "class_names": list(spec.class_names),
    }
    if args.real:
        from .kkt import dataset_gradient_cosine

        real = _dataset_for(args.real, spec)
        metrics["trust"]["real_data"] = args.real
        metrics["trust"]["real_data_cosine"] = dataset_gradient_cosine(model, real.images, real.labels)
    else:
        card = load_card(args.model)
        if card_cosine(card) is not None:
            metrics["trust"]["real_data"] = card_training_data(card)
            metrics["trust"]["real_data_cosine"] = card_cosine(card)
    meta = run_meta(model, model_name=args.model, config=cfg, seed=args.seed, device=args.device,
                    steps_run=res.steps_run, seconds=round(res.seconds, 2), trust=metrics["trust"],
                    class_names=list(spec.class_names))
    (out / "export.zip").write_bytes(export_zip(res.images, rows, meta, grid_ncol=args.per_class))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"wrote {out}/images.npz, grid.png, history.json, metrics.json, export.zip ({res.seconds:.1f} s)")
    print(f"primal feasible: {100 * metrics['primal_feasible']:.0f} %   kept: {metrics['kept']}/{metrics['n']}")
    print(f"trust: {res.trust['reading']}")
    if "real_data_cosine" in metrics["trust"]:
        print(f"       cos(-theta, sum of gradients) on real data {metrics['trust']['real_data']}: "
              f"{metrics['trust']['real_data_cosine']:.3f} (how well stationarity can hold for this model at all)")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .evaluate import distill

    dsv = Path(args.dsv)
    metrics = json.loads((dsv / "metrics.json").read_text())
    arr = np.load(dsv / "images.npz")
    images, labels = torch.from_numpy(arr["images"]), torch.from_numpy(arr["labels"]).long()
    teacher = args.model or metrics["model"]
    model, spec = _load(teacher)
    test_name = args.test or _family_split(spec, load_card(teacher), "test", "--test")
    test = load_dataset(test_name)
    seeds = tuple(range(args.seeds))
    res: dict[str, Any] = {"test": test_name, "n_images": len(images), "seeds": list(seeds)}
    bar = _Bar(len(seeds) * 2, "distill")
    done = [0]

    def tick(_s: int, _a: float) -> None:
        done[0] += 1
        bar.update(done[0])

    hard = distill(images, labels, spec, test, seeds=seeds, on_run=tick)
    with torch.no_grad():
        soft_t = torch.softmax(model(images), 1)
    soft = distill(images, soft_t, spec, test, seeds=seeds, on_run=tick)
    bar.close()
    res["hard_labels"] = {"mean": hard.mean, "std": hard.std, "runs": hard.runs}
    res["teacher_soft_labels"] = {"mean": soft.mean, "std": soft.std, "runs": soft.runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill.json").write_text(json.dumps(res, indent=2))
    print(f"student trained on {len(images)} DSVs: {hard} (hard labels), {soft} (teacher soft labels) on {test_name}")
    return 0


def _dataset_for(name: str, spec: Any):
    """A bundled split or an ImageFolder path, read at the model's input size and classes."""
    from .data import BUNDLED, load_dataset

    if name in BUNDLED:
        data = load_dataset(name)
    else:
        try:
            data = load_dataset(name, channels=spec.in_channels, image_size=spec.image_size,
                                class_names=spec.class_names)
        except ValueError as e:
            raise SystemExit(f"dsv: error: {e}") from None
    if tuple(data.images.shape[1:]) != tuple(spec.input_shape):
        raise SystemExit(f"dsv: error: {name} has images of shape {tuple(data.images.shape[1:])}, "
                         f"the model takes {tuple(spec.input_shape)}")
    return data


def _family_split(spec: Any, card: dict | None, split: str, option: str) -> str:
    """The bundled split of the data family the model was trained on or fits."""
    family = data_family(spec, card)
    if family is None:
        raise SystemExit(f"dsv: error: no bundled data set fits this model (input {tuple(spec.input_shape)}, "
                         f"{spec.num_classes} classes); pass {option}")
    return f"{family}:{split}"


def cmd_rank(args: argparse.Namespace) -> int:
    from .select import fit_lambdas, write_rank_outputs

    model, spec = _load(args.model)
    data_name = args.data or _family_split(spec, load_card(args.model), "train", "--data")
    data = _dataset_for(data_name, spec)
    if args.limit and args.limit < len(data):
        # a seeded random subset: bundled splits are sorted by class, so "the first N" is one class
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:args.limit])
    bar = _Bar(args.steps, "rank")

    def cb(info: Any) -> None:
        bar.label = f"rank: {info.phase}"
        bar.progress(info)

    res = fit_lambdas(model, data.images, data.labels, steps=args.steps, callback=cb)
    bar.close()
    write_rank_outputs(res, data, args.out)
    print(f"wrote {args.out}/lambdas.csv and the top/bottom grid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dsv", description="Deep Support Vectors: look inside an image classifier.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="print a model's spec and, for a default model, its card")
    p.add_argument("model", help="a .safetensors path or a default model name")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("synthesize", help="synthesise DSVs from noise with DeepKKT")
    p.add_argument("--model", required=True)
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--classes", type=int, nargs="*", default=None)
    p.add_argument("--steps", type=int, default=0, help="0 = the default for the data kind")
    p.add_argument("--device", default=None, help="cpu or cuda (default: where the model is, cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", default=None,
                   help="real data (bundled split or ImageFolder) to measure cos(-theta, sum of its gradients)")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_synthesize)
    p = sub.add_parser("distill", help="retrain a fresh model on DSVs and report test accuracy")
    p.add_argument("--dsv", required=True, help="folder written by dsv synthesize")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="teacher (default: the one in metrics.json)")
    p.add_argument("--test", default=None,
                   help="bundled test split (default: that of the bundled data the model was trained on or fits)")
    p.add_argument("--seeds", type=int, default=3)
    p.set_defaults(fn=cmd_distill)
    p = sub.add_parser("rank", help="fit Lagrange multipliers on real data and rank samples (selection)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=None,
                   help="a bundled split (mnist:train ...) or an ImageFolder path/zip (default: the training "
                        "split of the bundled data the model was trained on or fits)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000, help="at most this many solver steps (stops when converged)")
    p.add_argument("--limit", type=int, default=0, help="use a seeded random subset of N samples")
    p.set_defaults(fn=cmd_rank)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
