"""The `dsv` command line, run as a real subprocess on the shipped MNIST model."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def dsv(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dsvlib.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"dsv {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_info_prints_spec_and_card() -> None:
    out = dsv("info", "assets/models/mnist_convnet.safetensors").stdout
    assert "architecture: convnet" in out and "classes:      10" in out
    card = json.loads((ROOT / "assets/models/mnist_convnet.card.json").read_text())
    assert f'"test_accuracy": {card["test_accuracy"]}' in out


def test_info_on_a_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"this is not a model")
    proc = dsv("info", str(bad), check=False)
    assert proc.returncode != 0
    assert "not a model file" in proc.stderr and "Traceback" not in proc.stderr


def test_synthesize_then_distill(tmp_path: Path) -> None:
    out = tmp_path / "dsv"
    proc = dsv("synthesize", "--model", "mnist_convnet", "--per-class", "2", "--classes", "3", "7",
               "--steps", "4", "--seed", "1", "--out", str(out))
    assert "trust:" in proc.stdout and "synthesize [" in proc.stderr  # progress bar on the terminal
    arr = np.load(out / "images.npz")
    assert arr["images"].shape == (4, 1, 28, 28) and arr["images"].dtype == np.float32
    assert 0.0 <= arr["images"].min() and arr["images"].max() <= 1.0
    assert arr["labels"].tolist() == [3, 3, 7, 7] and arr["lambdas"].shape == (4,)
    assert Image.open(out / "grid.png").size[0] > 0
    hist = json.loads((out / "history.json").read_text())
    assert hist["step"][-1] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 4 and 0.0 <= metrics["primal_feasible"] <= 1.0
    assert metrics["trust"]["reading"] and "real_data_cosine" in metrics["trust"]
    res = dsv("distill", "--dsv", str(out), "--out", str(tmp_path / "d"), "--seeds", "1")
    d = json.loads((tmp_path / "d" / "distill.json").read_text())
    assert d["n_images"] == 4 and 0.0 <= d["hard_labels"]["mean"] <= 1.0
    assert "student trained on 4 DSVs" in res.stdout


def test_synthesize_rejects_a_class_out_of_range(tmp_path: Path) -> None:
    proc = dsv("synthesize", "--model", "mnist_convnet", "--classes", "12", "--out", str(tmp_path), check=False)
    assert proc.returncode != 0 and "--classes must be in 0..9" in proc.stderr


def test_rank_writes_csv_and_grid(tmp_path: Path) -> None:
    dsv("rank", "--model", "mnist_convnet", "--data", "mnist:test", "--limit", "200", "--steps", "200",
        "--out", str(tmp_path))
    rows = list(csv.DictReader(open(tmp_path / "lambdas.csv")))
    assert len(rows) == 200
    assert {"index", "label", "lambda", "entropy", "predicted"} <= set(rows[0])
    assert len({r["label"] for r in rows}) == 10  # a random subset, not the first class only
    assert all(float(r["lambda"]) >= 0 for r in rows) and any(float(r["lambda"]) > 0 for r in rows)
    assert list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("data", ["nope:train", "/no/such/folder"])
def test_rank_unknown_data_is_a_clear_error(tmp_path: Path, data: str) -> None:
    proc = dsv("rank", "--model", "mnist_convnet", "--data", data, "--out", str(tmp_path), check=False)
    assert proc.returncode != 0 and "dsv: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_synthesize_writes_an_export_zip_that_matches_the_run(tmp_path: Path) -> None:
    import io
    import zipfile

    from dsvlib.export import image_grid
    from dsvlib.io import load_model

    out = tmp_path / "dsv"
    dsv("synthesize", "--model", "mnist_convnet", "--per-class", "2", "--classes", "0", "5",
        "--steps", "3", "--seed", "2", "--out", str(out))
    arr = np.load(out / "images.npz")
    images = torch.from_numpy(arr["images"])
    # grid.png is the shared grid writer's picture, 3x upscaled, one row per class
    np.testing.assert_array_equal(np.asarray(Image.open(out / "grid.png")), image_grid(images, 2, scale=3))
    zf = zipfile.ZipFile(out / "export.zip")
    pngs = sorted(f for f in zf.namelist() if f.startswith("images/"))
    assert pngs == ["images/0000_0.png", "images/0001_0.png", "images/0002_5.png", "images/0003_5.png"]
    for name, im in zip(pngs, arr["images"]):
        png = np.asarray(Image.open(io.BytesIO(zf.read(name))), dtype=np.float32) / 255
        assert np.abs(png - im[0]).max() <= 0.5 / 255 + 1e-6
    rows = list(csv.DictReader(io.StringIO(zf.read("metrics.csv").decode())))
    assert [int(r["label"]) for r in rows] == [0, 0, 5, 5]
    assert [float(r["lambda"]) for r in rows] == pytest.approx(arr["lambdas"].tolist(), rel=1e-6)
    doc = json.loads(zf.read("metrics.json"))
    model, _ = load_model("mnist_convnet")
    from dsvlib.export import model_fingerprint

    assert doc["meta"]["model"] == "mnist_convnet" and doc["meta"]["model_fingerprint"] == model_fingerprint(model)
    assert doc["meta"]["config"]["steps"] == 3 and doc["meta"]["seed"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.mean([r["predicted"] == r["label"] for r in doc["rows"]]) == pytest.approx(metrics["primal_feasible"])


def test_rank_without_data_uses_the_models_training_family(tmp_path: Path) -> None:
    proc = dsv("rank", "--model", "mnist_convnet", "--limit", "60", "--steps", "30", "--out", str(tmp_path))
    rows = list(csv.DictReader(open(tmp_path / "lambdas.csv")))
    assert len(rows) == 60 and "wrote" in proc.stdout


def test_rank_without_data_on_a_model_no_bundled_set_fits(tmp_path: Path) -> None:
    from dsvlib.io import save_model
    from dsvlib.models import ModelSpec, build_classifier

    spec = ModelSpec(arch="convnet", num_classes=7, in_channels=3, image_size=16, mean=(0.5,), std=(0.25,),
                     arch_kwargs={"width": 4, "depth": 1})
    path = tmp_path / "odd.safetensors"
    save_model(build_classifier(spec), spec, path)
    proc = dsv("rank", "--model", str(path), "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode != 0 and "pass --data" in proc.stderr and "Traceback" not in proc.stderr


def test_edit_writes_final_frames_and_probs(tmp_path: Path) -> None:
    from dsvlib.data import load_dataset

    digit = (load_dataset("mnist:test").images[3, 0].numpy() * 255).astype(np.uint8)
    src = tmp_path / "digit.png"
    Image.fromarray(digit).resize((56, 40)).save(src)  # not the model's size: final.png keeps 56x40
    out = tmp_path / "edit"
    for _ in range(2):  # a rerun into the same folder replaces the frames
        proc = dsv("edit", "--model", "mnist_convnet", "--image", str(src), "--target", "8", "--steps", "12",
                   "--out", str(out))
    assert "edit (deepkkt) [" in proc.stderr and "p(8)" in proc.stdout
    assert Image.open(out / "final.png").size == (56, 40)
    frames = sorted((out / "frames").iterdir())
    assert [f.name for f in frames] == ["step_00000.png", "step_00010.png", "step_00012.png"]
    assert Image.open(frames[0]).size == (28, 28)
    probs = json.loads((out / "probs.json").read_text())
    assert probs["steps"] == [0, 10, 12] and len(probs["probs"]) == 3 and len(probs["probs"][0]) == 10
    assert probs["status"] in ("reached", "not reached") and probs["target"] == 8
    assert probs["after"][8] > probs["before"][8]
    assert abs(sum(probs["after"]) - 1) < 1e-4


def test_edit_rejects_a_bad_target_and_a_missing_image(tmp_path: Path) -> None:
    src = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(src)
    proc = dsv("edit", "--model", "mnist_convnet", "--image", str(src), "--target", "12", "--out", str(tmp_path / "o"),
               check=False)
    assert proc.returncode == 2 and "--target must be a class index in 0..9" in proc.stderr
    proc = dsv("edit", "--model", "mnist_convnet", "--image", str(tmp_path / "none.png"), "--target", "1",
               "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "is not a file" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_interpolate_writes_strip_and_probs(tmp_path: Path) -> None:
    out = tmp_path / "strip"
    proc = dsv("interpolate", "--model", "mnist_convnet", "--a", "3", "--b", "8", "--deltas", "0,0.5,1",
               "--steps", "5", "--out", str(out))
    assert "delta 0.50" in proc.stdout
    w, h = Image.open(out / "strip.png").size
    assert w > 2 * h  # three frames side by side
    probs = json.loads((out / "probs.json").read_text())
    assert probs["deltas"] == [0.0, 0.5, 1.0] and len(probs["p_b"]) == 3 and len(probs["failed"]) == 3
    assert isinstance(probs["monotonic"], bool)
    proc = dsv("interpolate", "--model", "mnist_convnet", "--a", "3", "--b", "3", "--out", str(tmp_path / "o"),
               check=False)
    assert proc.returncode == 2 and "different classes" in proc.stderr
