"""What a student retrained on a run's DSVs gets wrong, from a file saved by ``bench_zoo.py --save-dsvs``.

    python bench/bench_zoo.py --teachers zoo_resnet_bn --threads 1 --tag T --save-dsvs /tmp/dsvs
    python bench/student_diagnostics.py /tmp/dsvs/T_zoo_resnet_bn.pt [--subsets]

Prints the student's (the engine's protocol, ``dsvlib.evaluate``: 3 seeds) accuracy on the kept DSVs
and per test class with its top confusions, the two judges per class, and per class four style
figures of the kept DSVs next to 500 real training digits of that class: mean ink, mean ink above a
stroke's density (5x5 mean over 0.6), the fraction of the ink left after a 4x4 erosion (solid
cores), and the grey fraction of the ink.  ``--subsets``: the student also on all candidates (kept
or not, a dropped one as it was when dropped), on the kept ones both judges read as their class, and
on the kept ones with their solid cores taken out (each image minus its 4x4 erosion: thinner strokes).
``--swap``: per class, the student on the kept DSVs with that class's replaced by 10 real training
digits of it (the same seeded draw for every run): which class's DSVs hold the student back.
MNIST-family runs only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dsvlib import load_model  # noqa: E402
from dsvlib.data import load_dataset  # noqa: E402
from dsvlib.evaluate import STUDENT_FIT  # noqa: E402
from dsvlib.losses import erosion  # noqa: E402
from dsvlib.models import build_classifier  # noqa: E402
from dsvlib.train import fit, predict  # noqa: E402

JUDGES = {"LeNet": ROOT / "assets/judges/mnist_lenet_judge.safetensors",
          "MLP": ROOT / "assets/judges/mnist_mlp_judge.safetensors"}


def student(images: torch.Tensor, labels: torch.Tensor, spec, test, seeds=(0, 1, 2)) -> tuple[float, torch.Tensor]:
    """The mean test accuracy over ``seeds`` (as ``dsvlib.evaluate.distill``) and the pooled confusion matrix."""
    accs, conf = [], torch.zeros(10, 10)
    for s in seeds:
        torch.manual_seed(1000 + s)
        net = build_classifier(spec)
        fit(net, images, labels, STUDENT_FIT, seed=s)
        pred = predict(net, test.images).argmax(1)
        accs.append(float((pred == test.labels).float().mean()))
        conf.index_put_((test.labels, pred), torch.ones(len(pred)), accumulate=True)
    return sum(accs) / len(accs), conf


def style(im: torch.Tensor) -> tuple[float, float, float, float]:
    ink = im.sum().clamp_min(1e-6)
    thick = F.relu(F.avg_pool2d(im, 5, stride=1) - 0.6).mean()
    core = erosion(im, 4)
    grey = ((im > 0.1) & (im < 0.9)).float().sum() / (im > 0.1).float().sum().clamp_min(1)
    return float(im.mean()), float(thick), float(core.sum() / ink), float(grey)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--subsets", action="store_true")
    ap.add_argument("--swap", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = torch.load(args.file, weights_only=True)
    x, y, kept = d["images"], d["targets"], d["kept"]
    _, spec = load_model("mnist_convnet")
    test, real = load_dataset("mnist:test"), load_dataset("mnist:train")
    xk, yk = x[kept], y[kept]
    acc, conf = student(xk, yk, spec, test)
    rows = conf / conf.sum(1, keepdim=True)
    print(f"student on the {len(xk)} kept: {100 * acc:.1f} %")
    reads = {name: predict(load_model(p)[0], xk).argmax(1) == yk for name, p in JUDGES.items()}
    print("class | kept | student | top confusions | judges (LeNet / MLP) | style: DSVs / real "
          "(ink, thick, solid cores, grey)")
    for c in range(10):
        off = sorted(((float(rows[c, k]), k) for k in range(10) if k != c), reverse=True)[:3]
        j = " / ".join(f"{100 * float(r[yk == c].float().mean()):.0f}" for r in reads.values())
        s, r = style(xk[yk == c]), style(real.images[real.labels == c][:500])
        print(f"{c} | {int(kept[y == c].sum())} | {100 * float(rows[c, c]):.0f} % | "
              + ", ".join(f"{k} {100 * v:.0f} %" for v, k in off) + f" | {j} % | "
              + " ".join(f"{v:.3f}" for v in s) + " / " + " ".join(f"{v:.3f}" for v in r))
    if args.subsets:
        print(f"student on all {len(x)} candidates: {100 * student(x, y, spec, test)[0]:.1f} %")
        both = reads["LeNet"] & reads["MLP"]
        print(f"student on the {int(both.sum())} kept that both judges read: {100 * student(xk[both], yk[both], spec, test)[0]:.1f} %")
        thin = (xk - erosion(xk, 4)).clamp(0, 1)
        print(f"student on the kept without their solid cores: {100 * student(thin, yk, spec, test)[0]:.1f} %")
    if args.swap:
        g = torch.Generator().manual_seed(0)
        print("class | student with its DSVs replaced by 10 real digits | change")
        for c in range(10):
            pool = torch.nonzero(real.labels == c).flatten()
            pick = pool[torch.randperm(len(pool), generator=g)[:10]]
            xs = torch.cat([xk[yk != c], real.images[pick]])
            ys = torch.cat([yk[yk != c], real.labels[pick]])
            a = student(xs, ys, spec, test)[0]
            print(f"{c} | {100 * a:.1f} % | {100 * (a - acc):+.1f}")


if __name__ == "__main__":
    main()
