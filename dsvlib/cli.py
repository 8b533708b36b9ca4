"""Command line: ``dsv info | synthesize | distill | rank | edit | interpolate``.

Progress goes to the terminal through the library's callbacks (the core never prints).
Every argument and output path is checked before any work starts.  An error is one line on
stderr, ``dsv: error: ...``, with exit code 2 and no traceback (``--debug`` shows it); Ctrl-C
ends with one line and exit code 130.  Outputs are written under a temporary name beside
``--out`` and moved into place only when the command has finished, so an interrupted run
leaves nothing that looks complete.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .cards import card_cosine, card_training_data
from .data import data_family, data_kind
from .export import export_zip, run_meta, save_grid, synthesis_rows
from .io import ModelFileError, load_card, load_model
from .models import ONNX_ARCH, ModelSpec, arch_options, list_models
from .progress import describe

MAX_IMAGES = 10_000  # per synthesize run: --per-class x classes


class CliError(Exception):
    """A bad argument or output path: printed as one line, exit code 2."""


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


def _load(model: str, spec: ModelSpec | None = None) -> tuple[Any, Any]:
    return load_model(model, spec=spec)  # a ModelFileError becomes one line in main()


# --------------------------------------------------------------------------- argument checks


def _int_type(lo: int, what: str = "an integer"):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what} >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be {what} >= {lo}, got {value}")
        return value

    parse.__name__ = f"integer >= {lo}"
    return parse


def _floats_type(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated finite numbers, got {text!r}")
    return values


def _check_device(device: str | None) -> None:
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise CliError(f"--device {device}: CUDA is not available on this machine; use cpu")
        if dev.index is not None and dev.index >= n:
            raise CliError(f"--device {device}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
        return
    if dev.type == "mps" and torch.backends.mps.is_available():
        return
    raise CliError(f"--device {device!r} is not available here; use cpu or cuda")


def _check_out(out: str, option: str = "--out") -> Path:
    """``out`` as a folder that can be created or reused; an existing file (or a file on its
    path) is refused before any work."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CliError(f"{option} {out} is an existing file; give a folder (it is created if missing)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CliError(f"{option} {out}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise CliError(f"{option} {out}: the folder {parent} is not writable")
            break
    return path


def _check_data_name(name: str, option: str) -> None:
    from .data import BUNDLED

    if name not in BUNDLED and not os.path.exists(name):
        raise CliError(f"{option} {name!r} is neither a bundled split ({', '.join(BUNDLED)}) nor an existing "
                       "ImageFolder folder or zip")


def _spec_from_args(args: argparse.Namespace) -> ModelSpec | None:
    """The architecture description of a plain state_dict or an .onnx graph (the app's form)."""
    given = {k: getattr(args, k, None) for k in ("num_classes", "channels", "image_size", "mean", "std",
                                                  "class_names")}
    if getattr(args, "arch", None) is None:
        extra = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if extra or getattr(args, "arch_kwargs", None) not in (None, "{}"):
            raise CliError(f"{', '.join(extra) or '--arch-kwargs'} describe(s) an architecture: pass --arch too")
        return None
    missing = [f"--{k.replace('_', '-')}" for k in ("num_classes", "channels", "image_size", "mean", "std")
               if given[k] is None]
    if missing:
        raise CliError(f"--arch {args.arch} needs {', '.join(missing)} as well")
    try:
        kwargs = json.loads(args.arch_kwargs or "{}")
    except json.JSONDecodeError as e:
        raise CliError(f"--arch-kwargs must be a JSON object, e.g. '{{\"width\": 32}}': {e}") from None
    if not isinstance(kwargs, dict):
        raise CliError(f"--arch-kwargs must be a JSON object, got a {type(kwargs).__name__}")
    arch = args.arch
    try:
        if arch != ONNX_ARCH:
            known = {o.name for o in arch_options(arch)}
            unknown = sorted(set(kwargs) - known) if not arch.startswith("torchvision:") else []
            if unknown:
                raise CliError(f"--arch-kwargs: {arch} has no options {unknown}; its options: {sorted(known)}")
        names = tuple(n.strip() for n in args.class_names.split(",") if n.strip()) if args.class_names else ()
        return ModelSpec(arch=arch, num_classes=args.num_classes, in_channels=args.channels,
                         image_size=args.image_size, mean=args.mean, std=args.std, class_names=names,
                         arch_kwargs=kwargs)
    except ValueError as e:
        raise CliError(f"--arch {arch}: {e}") from None


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out``: the command writes there, and its files are moved into
    ``out`` only when the block ends without error (Ctrl-C leaves ``out`` as it was)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cmd_info(args: argparse.Namespace) -> int:
    model, spec = _load(args.model, _spec_from_args(args))
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

    from .synthesize import config_for, synthesize

    _check_device(args.device)
    out = _check_out(args.out)
    if args.real:
        _check_data_name(args.real, "--real")
    if args.classes is not None and any(c < 0 for c in args.classes):
        raise CliError(f"--classes must be class indices >= 0, got {args.classes}")
    user_spec = _spec_from_args(args)
    model, spec = _load(args.model, user_spec)
    classes = args.classes if args.classes else list(range(spec.num_classes))
    for c in classes:
        if not 0 <= c < spec.num_classes:
            raise CliError(f"--classes must be in 0..{spec.num_classes - 1}, got {c}")
    if len(classes) * args.per_class > MAX_IMAGES:
        raise CliError(f"--per-class {args.per_class} x {len(classes)} classes is {len(classes) * args.per_class:,} "
                       f"images; at most {MAX_IMAGES:,} per run")
    real = _dataset_for(args.real, spec) if args.real else None  # read before the run, not after it
    targets = torch.tensor(classes).repeat_interleave(args.per_class)
    cfg = config_for(model, spec)
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    bar = _Bar(cfg.steps, "synthesize")
    res = synthesize(model, targets, cfg, seed=args.seed, device=args.device, callback=bar.progress)
    bar.close()
    with _staged(out) as tmp:
        metrics = _write_synthesis(tmp, args, model, spec, cfg, res, targets, real)
    print(f"wrote {out}/images.npz, grid.png, history.json, metrics.json, export.zip ({res.seconds:.1f} s)")
    print(f"primal feasible: {100 * metrics['primal_feasible']:.0f} %   kept: {metrics['kept']}/{metrics['n']}")
    print(f"trust: {res.trust['reading']}")
    if "real_data_cosine" in metrics["trust"]:
        print(f"       cos(-theta, sum of gradients) on real data {metrics['trust']['real_data']}: "
              f"{metrics['trust']['real_data_cosine']:.3f} (how well stationarity can hold for this model at all)")
    return 0


def _write_synthesis(out: Path, args: argparse.Namespace, model: Any, spec: Any, cfg: Any, res: Any,
                     targets: torch.Tensor, real: Any) -> dict[str, Any]:
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
    if real is not None:
        from .kkt import dataset_gradient_cosine

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
    return metrics


def cmd_distill(args: argparse.Namespace) -> int:
    from .data import BUNDLED, load_dataset
    from .evaluate import distill

    dsv = Path(args.dsv)
    for f in ("metrics.json", "images.npz"):
        if not (dsv / f).is_file():
            raise CliError(f"--dsv {args.dsv} has no {f}; give a folder written by dsv synthesize")
    out = _check_out(args.out)
    if args.test is not None and args.test not in BUNDLED:
        raise CliError(f"--test must be a bundled split ({', '.join(b for b in BUNDLED if b.endswith(':test'))}), "
                       f"got {args.test!r}")
    try:
        metrics = json.loads((dsv / "metrics.json").read_text())
        with np.load(dsv / "images.npz", allow_pickle=False) as arr:
            images, labels = torch.from_numpy(arr["images"]), torch.from_numpy(arr["labels"]).long()
    except (ValueError, KeyError, OSError) as e:
        raise CliError(f"--dsv {args.dsv}: metrics.json or images.npz cannot be read: {e}") from None
    teacher = args.model or (metrics.get("model") if isinstance(metrics, dict) else None)
    if not isinstance(teacher, str):
        raise CliError(f"--dsv {args.dsv}: metrics.json names no model; pass --model")
    model, spec = _load(teacher, _spec_from_args(args))
    if tuple(images.shape[1:]) != tuple(spec.input_shape) or len(images) != len(labels) or len(images) == 0:
        raise CliError(f"--dsv {args.dsv} holds images of shape {tuple(images.shape)}, the model takes "
                       f"(N, {', '.join(map(str, spec.input_shape))})")
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
    with _staged(out) as tmp:
        (tmp / "distill.json").write_text(json.dumps(res, indent=2))
    print(f"student trained on {len(images)} DSVs: {hard} (hard labels), {soft} (teacher soft labels) on {test_name}")
    return 0


def _dataset_for(name: str, spec: Any):
    """A bundled split or an ImageFolder path, read at the model's input size and classes."""
    from .data import BUNDLED, load_dataset

    if name in BUNDLED:
        data = load_dataset(name)
    else:
        data = load_dataset(name, channels=spec.in_channels, image_size=spec.image_size,
                            class_names=spec.class_names)
    if tuple(data.images.shape[1:]) != tuple(spec.input_shape):
        raise CliError(f"{name} has images of shape {tuple(data.images.shape[1:])}, "
                       f"the model takes {tuple(spec.input_shape)}")
    return data


def _family_split(spec: Any, card: dict | None, split: str, option: str) -> str:
    """The bundled split of the data family the model was trained on or fits."""
    family = data_family(spec, card)
    if family is None:
        raise CliError(f"no bundled data set fits this model (input {tuple(spec.input_shape)}, "
                       f"{spec.num_classes} classes); pass {option}")
    return f"{family}:{split}"


def cmd_rank(args: argparse.Namespace) -> int:
    from .select import fit_lambdas, write_rank_outputs

    out = _check_out(args.out)
    if args.data:
        _check_data_name(args.data, "--data")
    model, spec = _load(args.model, _spec_from_args(args))
    data_name = args.data or _family_split(spec, load_card(args.model), "train", "--data")
    data = _dataset_for(data_name, spec)
    if args.limit is not None and args.limit < len(data):
        # a seeded random subset: bundled splits are sorted by class, so "the first N" is one class
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:args.limit])
    bar = _Bar(args.steps, "rank")

    def cb(info: Any) -> None:
        bar.label = f"rank: {info.phase}"
        bar.progress(info)

    res = fit_lambdas(model, data.images, data.labels, steps=args.steps, callback=cb)
    bar.close()
    with _staged(out) as tmp:
        write_rank_outputs(res, data, tmp)
    print(f"wrote {out}/lambdas.csv and the top/bottom grid")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from PIL import Image

    from .data import read_image
    from .edit import default_edit_config, edit
    from .export import png_bytes, image_grid

    _check_device(args.device)
    out = _check_out(args.out)
    src = Path(args.image)
    if not src.is_file():
        raise CliError(f"--image {args.image} is not a file; give a PNG or JPEG")
    model, spec = _load(args.model, _spec_from_args(args))
    if not 0 <= args.target < spec.num_classes:
        raise CliError(f"--target must be a class index in 0..{spec.num_classes - 1}, got {args.target}")
    data = src.read_bytes()
    x = read_image(data, channels=spec.in_channels, size=tuple(spec.image_size), name=f"--image {args.image}")
    with Image.open(src) as im:
        size = im.size  # (W, H) of the input: final.png is written at it
    cfg = default_edit_config(data_kind(spec))
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    bar = _Bar(cfg.steps, f"edit ({args.method})")
    res = edit(model, x, args.target, cfg, method=args.method, seed=args.seed, device=args.device,
               callback=bar.progress)
    bar.close()
    names = list(spec.class_names)
    with _staged(out) as tmp:
        final = torch.nn.functional.interpolate(res.edited, size=(size[1], size[0]), mode="bilinear",
                                                align_corners=False).clamp(0, 1)
        (tmp / "final.png").write_bytes(png_bytes(image_grid(final, 1, pad=0)))
        (tmp / "frames").mkdir()
        for k, step in enumerate(res.frame_steps):
            (tmp / "frames" / f"step_{step:05d}.png").write_bytes(png_bytes(image_grid(res.frames[k], 1, pad=0)))
        probs = {"status": res.status[0], "message": res.messages[0], "method": res.method,
                 "target": args.target, "target_name": names[args.target], "class_names": names,
                 "steps": list(res.frame_steps), "probs": res.probs[:, 0].tolist(),
                 "before": res.probs_before[0].tolist(), "after": res.probs_after[0].tolist(),
                 "lr": res.lr_used[0], "seconds": round(res.seconds, 2), "model": args.model, "seed": args.seed}
        (tmp / "probs.json").write_text(json.dumps(probs, indent=1))
        shutil.rmtree(out / "frames", ignore_errors=True)  # a rerun's frames replace the last run's, not mix with them
    before, after = res.probs_before[0], res.probs_after[0]
    print(f"wrote {out}/final.png ({size[0]}x{size[1]}), frames/ ({len(res.frame_steps)}), probs.json "
          f"({res.seconds:.1f} s)")
    print(f"{res.status[0]}: p({names[args.target]}) {float(before[args.target]):.0%} -> {float(after[args.target]):.0%}; "
          f"predicted {names[int(before.argmax())]} -> {names[int(after.argmax())]}"
          + (f"  ({res.messages[0]})" if res.messages[0] else ""))
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .export import save_grid
    from .interpolate import default_interpolation_config, interpolate

    _check_device(args.device)
    out = _check_out(args.out)
    if any(not 0.0 <= d <= 1.0 for d in args.deltas):
        raise CliError(f"--deltas must lie in [0, 1], got {list(args.deltas)}")
    model, spec = _load(args.model, _spec_from_args(args))
    for opt, c in (("--a", args.a), ("--b", args.b)):
        if not 0 <= c < spec.num_classes:
            raise CliError(f"{opt} must be a class index in 0..{spec.num_classes - 1}, got {c}")
    if args.a == args.b:
        raise CliError(f"--a and --b must be different classes, got {args.a} twice")
    cfg = default_interpolation_config(data_kind(spec))
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    bar = _Bar(cfg.steps, "interpolate")
    res = interpolate(model, args.a, args.b, args.deltas, cfg, seed=args.seed, device=args.device,
                      callback=bar.progress)
    bar.close()
    names = list(spec.class_names)
    with _staged(out) as tmp:
        save_grid(res.images, tmp / "strip.png", ncol=len(res.deltas))
        (tmp / "probs.json").write_text(json.dumps({
            "a": args.a, "b": args.b, "class_names": names, "deltas": res.deltas.tolist(),
            "probs": res.probs.tolist(), "p_a": res.prob_a.tolist(), "p_b": res.prob_b.tolist(),
            "failed": res.failed.tolist(), "monotonic": res.monotonic(), "status": res.status,
            "message": res.message, "seconds": round(res.seconds, 2), "model": args.model, "seed": args.seed},
            indent=1))
    print(f"wrote {out}/strip.png and probs.json ({res.seconds:.1f} s): {res.status}")
    for d, pa, pb, f in zip(res.deltas.tolist(), res.prob_a.tolist(), res.prob_b.tolist(), res.failed.tolist()):
        print(f"  delta {d:.2f}: p({names[args.a]}) {pa:.2f}  p({names[args.b]}) {pb:.2f}" + ("  FAILED" if f else ""))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`CliError` (one line, exit code 2, in main())."""

    def error(self, message: str):  # type: ignore[override]
        where = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise CliError(f"{where}{message}")


def _add_spec_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "architecture of a plain state_dict (.pt/.pth/.safetensors without dsvlib metadata) or an .onnx graph; "
        "the same fields as the app's Model page")
    g.add_argument("--arch", default=None,
                   help=f"{', '.join(list_models())}, torchvision:<name>, or {ONNX_ARCH} for an ONNX graph")
    g.add_argument("--arch-kwargs", default=None, metavar="JSON",
                   help='the architecture\'s options as a JSON object, e.g. \'{"width": 32, "depth": 3}\'')
    g.add_argument("--num-classes", type=_int_type(2), default=None)
    g.add_argument("--channels", type=_int_type(1), default=None, help="input channels: 1 (grey) or 3 (RGB)")
    g.add_argument("--image-size", type=_int_type(1), default=None, help="input side in pixels (square)")
    g.add_argument("--mean", type=_floats_type, default=None, help="comma separated, 1 or one per channel")
    g.add_argument("--std", type=_floats_type, default=None, help="comma separated, each > 0")
    g.add_argument("--class-names", default=None, help="comma separated (optional)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="dsv", description="Deep Support Vectors: look inside an image classifier.")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error (anywhere on the line)")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    p = sub.add_parser("info", help="print a model's spec and, for a known model file, its card")
    p.add_argument("model", help="a model file (.safetensors, .pt, .pth, .onnx) or a default model name")
    _add_spec_options(p)
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("synthesize", help="synthesise DSVs from noise with DeepKKT")
    p.add_argument("--model", required=True)
    p.add_argument("--per-class", type=_int_type(1), default=10)
    p.add_argument("--classes", type=int, nargs="*", default=None, help="class indices (default: all)")
    p.add_argument("--steps", type=_int_type(1), default=None, help="default: the recipe's for the data kind")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=_int_type(0), default=0)
    p.add_argument("--real", default=None,
                   help="real data (bundled split or ImageFolder) to measure cos(-theta, sum of its gradients)")
    p.add_argument("--out", required=True, help="output folder (created; an existing file is refused)")
    _add_spec_options(p)
    p.set_defaults(fn=cmd_synthesize)
    p = sub.add_parser("distill", help="retrain a fresh model on DSVs and report test accuracy")
    p.add_argument("--dsv", required=True, help="folder written by dsv synthesize")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="teacher (default: the one in metrics.json)")
    p.add_argument("--test", default=None,
                   help="bundled test split (default: that of the bundled data the model was trained on or fits)")
    p.add_argument("--seeds", type=_int_type(1), default=3)
    _add_spec_options(p)
    p.set_defaults(fn=cmd_distill)
    p = sub.add_parser("rank", help="fit Lagrange multipliers on real data and rank samples (selection)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=None,
                   help="a bundled split (mnist:train ...) or an ImageFolder path/zip (default: the training "
                        "split of the bundled data the model was trained on or fits)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=_int_type(1), default=3000,
                   help="at most this many solver steps (stops when converged)")
    p.add_argument("--limit", type=_int_type(1), default=None, help="use a seeded random subset of N samples")
    _add_spec_options(p)
    p.set_defaults(fn=cmd_rank)
    p = sub.add_parser("edit", help="edit an image toward a class with DeepKKT (or the cross-entropy baseline)")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True, help="PNG or JPEG; converted to the model's channels and size")
    p.add_argument("--target", type=int, required=True, help="target class index")
    p.add_argument("--out", required=True, help="output folder: final.png (at the input's size), frames/, probs.json")
    p.add_argument("--method", choices=("deepkkt", "ce"), default="deepkkt",
                   help="deepkkt (default) or ce: plain cross-entropy steps, the baseline")
    p.add_argument("--steps", type=_int_type(1), default=None, help="default: the edit recipe's (150)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=_int_type(0), default=0)
    _add_spec_options(p)
    p.set_defaults(fn=cmd_edit)
    p = sub.add_parser("interpolate", help="DSVs mixing two classes, y = (1 - delta) e_a + delta e_b, as a strip")
    p.add_argument("--model", required=True)
    p.add_argument("--a", type=int, required=True, help="class at delta 0")
    p.add_argument("--b", type=int, required=True, help="class at delta 1")
    p.add_argument("--deltas", type=_floats_type, default=(0.0, 0.25, 0.5, 0.75, 1.0), help="comma separated, in [0, 1]")
    p.add_argument("--out", required=True, help="output folder: strip.png, probs.json")
    p.add_argument("--steps", type=_int_type(1), default=None, help="default: the synthesis recipe's (300)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=_int_type(0), default=0)
    _add_spec_options(p)
    p.set_defaults(fn=cmd_interpolate)
    return ap


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, ModelFileError):
        return text  # a key mismatch lists its keys side by side below the first line
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0, 2 for an error, 130 for Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("\ndsv: interrupted; no output was written\n")
        return 130
    except Exception as e:  # noqa: BLE001 - the contract: one line, exit code 2, traceback with --debug
        if debug:
            raise
        known = isinstance(e, (CliError, ModelFileError, ValueError, OSError))
        prefix = "" if known else f"unexpected {type(e).__name__}: "
        hint = "" if known else " (run with --debug for the traceback)"
        sys.stderr.write(f"dsv: error: {prefix}{_one_line(e)}{hint}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
