"""Take-aways (dsvlib.export), model cards (dsvlib.cards) and the data-kind/family facts (dsvlib.data)."""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_model, make_spec
from dsvlib.cards import card_cosine, card_summary, card_training_data, trust_thresholds
from dsvlib.data import data_family, data_kind
from dsvlib.export import export_zip, image_grid, jsonable, model_fingerprint, run_meta, save_grid, synthesis_rows
from dsvlib.io import load_card
from dsvlib.synthesize import default_config, trust_strength

# --------------------------------------------------------------------------- image_grid


def _levels(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random images whose pixels are exact multiples of 1/255 (so uint8 conversion is exact)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255


def test_grey_grid_matches_a_hand_built_canvas() -> None:
    images = _levels(3, 1, 2, 2)
    grid = image_grid(images, ncol=2, pad=1, scale=2, pad_value=1.0)
    assert grid.dtype == np.uint8 and grid.shape == (2 * (4 + 1) + 1, 2 * (4 + 1) + 1)
    u8 = (images[:, 0] * 255).round().numpy().astype(np.uint8)
    expected = np.full((11, 11), 255, np.uint8)
    for i, (top, left) in enumerate([(1, 1), (1, 6), (6, 1)]):  # the 4th cell stays padding
        expected[top:top + 4, left:left + 4] = np.kron(u8[i], np.ones((2, 2), np.uint8))
    np.testing.assert_array_equal(grid, expected)


def test_rgb_grid_shape_pixels_and_pad_value() -> None:
    images = _levels(2, 3, 2, 3, seed=1)
    grid = image_grid(images, ncol=5, pad=2, pad_value=0.0)  # ncol larger than N: one row of two
    assert grid.shape == (2 + 2 + 2, 2 * (3 + 2) + 2, 3)
    u8 = (images.permute(0, 2, 3, 1) * 255).round().numpy().astype(np.uint8)
    np.testing.assert_array_equal(grid[2:4, 2:5], u8[0])
    np.testing.assert_array_equal(grid[2:4, 7:10], u8[1])
    mask = np.ones(grid.shape[:2], bool)
    mask[2:4, 2:5] = mask[2:4, 7:10] = False
    assert (grid[mask] == 0).all()


def test_grid_clamps_and_rejects_bad_input() -> None:
    grid = image_grid(torch.tensor([[[[-1.0, 2.0]]]]), ncol=1, pad=0)
    np.testing.assert_array_equal(grid, [[0, 255]])
    assert image_grid(torch.zeros(0, 1, 4, 4), ncol=3, pad=1).shape == (6, 6)  # one empty cell
    with pytest.raises(ValueError, match="images"):
        image_grid(torch.zeros(1, 2, 4, 4), ncol=1)
    with pytest.raises(ValueError, match="images"):
        image_grid(torch.zeros(4, 4), ncol=1)
    with pytest.raises(ValueError, match="ncol"):
        image_grid(torch.zeros(1, 1, 4, 4), ncol=0)
    with pytest.raises(ValueError, match="scale"):
        image_grid(torch.zeros(1, 1, 4, 4), ncol=1, scale=1.5)


def test_save_grid_writes_the_grid_as_png(tmp_path) -> None:
    images = _levels(4, 1, 5, 5, seed=2)
    path = save_grid(images, tmp_path / "sub" / "grid.png", ncol=2, scale=3)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image_grid(images, 2, scale=3))


# --------------------------------------------------------------------------- export_zip


def _rows(n: int) -> list[dict]:
    return [{"label": i % 3, "class_name": f"class {i % 3}", "lambda": 0.5 * i - 0.75, "kept": i % 2 == 0,
             "probability": 1 / (i + 2), "entropy": math.log(i + 2)} for i in range(n)]


@pytest.mark.parametrize("channels", [1, 3])
def test_export_zip_holds_images_grid_csv_json_readme(channels: int) -> None:
    n = 5
    images = torch.rand(n, channels, 6, 7, generator=torch.Generator().manual_seed(channels))
    cfg = default_config("digits")
    meta = {"config": jsonable(cfg), "model": "tiny", "seed": 3, "device": torch.device("cpu"), "odd": float("nan")}
    data = export_zip(images, _rows(n), meta, grid_ncol=2)
    zf = zipfile.ZipFile(io.BytesIO(data))
    pngs = sorted(f for f in zf.namelist() if f.startswith("images/"))
    assert pngs == [f"images/{i:04d}_class_{i % 3}.png" for i in range(n)]
    assert {"grid.png", "metrics.csv", "metrics.json", "README.txt"} <= set(zf.namelist())
    for i, name in enumerate(pngs):
        arr = np.asarray(Image.open(io.BytesIO(zf.read(name))), dtype=np.float32) / 255
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        assert arr.shape == (channels, 6, 7)  # native size
        assert np.abs(arr - images[i].numpy()).max() <= 0.5 / 255 + 1e-6
    grid = np.asarray(Image.open(io.BytesIO(zf.read("grid.png"))))
    np.testing.assert_array_equal(grid, image_grid(images, 2, scale=3))

    rows = list(csv.DictReader(io.StringIO(zf.read("metrics.csv").decode())))
    assert len(rows) == n
    assert list(rows[0]) == ["index", "file", "label", "class_name", "lambda", "kept", "probability", "entropy"]
    for i, r in enumerate(rows):
        assert int(r["index"]) == i and r["file"] == pngs[i] and int(r["label"]) == i % 3
        assert float(r["lambda"]) == pytest.approx(0.5 * i - 0.75) and r["kept"] == str(i % 2 == 0)
        assert float(r["entropy"]) == pytest.approx(math.log(i + 2))

    doc = json.loads(zf.read("metrics.json"))
    assert doc["meta"]["config"] == json.loads(json.dumps(jsonable(cfg)))
    assert doc["meta"]["config"]["steps"] == cfg.steps and doc["meta"]["config"]["jitter"]["translate"] == cfg.jitter.translate
    assert doc["meta"]["device"] == "cpu" and doc["meta"]["odd"] == "nan"
    assert [r["lambda"] for r in doc["rows"]] == [r["lambda"] for r in _rows(n)]
    assert "metrics.csv" in zf.read("README.txt").decode()
    assert export_zip(images, _rows(n), meta, grid_ncol=2) == data  # same inputs, same bytes


def test_export_zip_rejects_mismatched_rows_and_names() -> None:
    images = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match="rows"):
        export_zip(images, _rows(2), {})
    with pytest.raises(ValueError, match="names"):
        export_zip(images, _rows(3), {}, names=["a"])
    rows = [r | {"index": 99, "file": "elsewhere"} for r in _rows(3)]  # the zip's own columns win
    zf = zipfile.ZipFile(io.BytesIO(export_zip(images, rows, {}, names=["../x y", "", "ok"])))
    files = ["images/0000_x_y.png", "images/0001_image.png", "images/0002_ok.png"]
    assert sorted(f for f in zf.namelist() if f.startswith("images/")) == files
    table = list(csv.DictReader(io.StringIO(zf.read("metrics.csv").decode())))
    assert [(r["index"], r["file"]) for r in table] == [(str(i), f) for i, f in enumerate(files)]


def test_jsonable_turns_config_and_odd_values_into_json() -> None:
    cfg = default_config("natural")
    out = jsonable({"cfg": cfg, "t": torch.tensor([1.5, 2.0]), "n": np.float32(0.25), "inf": float("inf"),
                    "dtype": torch.float32, "tuple": (1, 2)})
    json.dumps(out, allow_nan=False)  # strict JSON
    assert out["cfg"]["steps"] == cfg.steps and out["cfg"]["tv"] == cfg.tv
    assert out["t"] == [1.5, 2.0] and out["n"] == 0.25 and out["inf"] == "inf"
    assert out["dtype"] == "torch.float32" and out["tuple"] == [1, 2]


def test_synthesis_rows_and_meta() -> None:
    model, spec = make_model()
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = torch.softmax(model(images), 1)
    labels = probs.argmin(1)  # never the predicted class: the probability must be the label's
    result = SimpleNamespace(images=images, labels=labels, lambdas=torch.tensor([0.5, -0.1, 2.0, 0.0]),
                             kept=torch.tensor([True, False, True, True]))
    rows = synthesis_rows(model, result, [f"c{i}" for i in range(10)])
    assert [r["label"] for r in rows] == labels.tolist()
    assert [r["class_name"] for r in rows] == [f"c{i}" for i in labels.tolist()]
    assert [r["probability"] for r in rows] == pytest.approx(probs[torch.arange(4), labels].tolist(), abs=1e-6)
    assert [r["predicted"] for r in rows] == probs.argmax(1).tolist()
    assert [r["lambda"] for r in rows] == pytest.approx([0.5, -0.1, 2.0, 0.0])
    assert [r["kept"] for r in rows] == [True, False, True, True]
    entropy = -(probs * probs.log()).sum(1)
    assert [r["entropy"] for r in rows] == pytest.approx(entropy.tolist(), abs=1e-5)
    assert [r["class_name"] for r in synthesis_rows(model, result)] == [str(i) for i in labels.tolist()]
    meta = run_meta(model, model_name="tiny", config=default_config("digits", steps=2), seed=0)
    assert meta["model_fingerprint"] == model_fingerprint(model) and meta["device"] == "cpu"
    assert meta["config"]["steps"] == 2 and json.dumps(meta, allow_nan=False)


# --------------------------------------------------------------------------- model_fingerprint


def test_fingerprint_is_stable_and_tracks_every_weight(device: str) -> None:
    model, spec = make_model()
    fp = model_fingerprint(model)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert model_fingerprint(copy.deepcopy(model).to(device)) == fp  # a copy, on any device
    assert model_fingerprint(make_model(spec, seed=0)[0]) == fp  # same seed, same weights
    assert model_fingerprint(make_model(spec, seed=1)[0]) != fp
    names = list(model.state_dict())
    assert len(names) > 1
    for name in names:  # a tiny change to any single entry changes the fingerprint
        changed = copy.deepcopy(model)
        with torch.no_grad():
            changed.state_dict()[name].view(-1)[-1] += 1e-4 if changed.state_dict()[name].is_floating_point() else 1
        assert model_fingerprint(changed) != fp, name
    assert model_fingerprint(model) == fp  # reading it changed nothing


# --------------------------------------------------------------------------- cards


def test_card_cosine_prefers_auto_and_falls_back_to_all() -> None:
    card = load_card("mnist_convnet")
    assert card_cosine(card) == card["stationarity_cosine"]
    assert card_cosine({"stationarity_cosine_all": 0.3}) == 0.3
    assert card_cosine({"stationarity_cosine": 0.7, "stationarity_cosine_all": 0.3}) == 0.7
    assert card_cosine(None) is None and card_cosine({}) is None
    assert card_cosine({"stationarity_cosine": float("nan"), "stationarity_cosine_all": 0.2}) == 0.2
    assert card_training_data(card) == "mnist:train" and card_training_data({}) is None


def test_card_summary_labels_say_what_was_measured_on_what() -> None:
    card = load_card("shortcut_convnet")
    s = card_summary(card)
    assert s["test accuracy on shortcut:test"] == card["test_accuracy"]
    assert s["train accuracy on shortcut:train"] == card["train_accuracy"]
    assert s["stationarity cosine on shortcut:train (all parameters except scale-invariant ones)"] == \
        card["stationarity_cosine"]
    assert s["stationarity cosine on shortcut:train (all parameters)"] == card["stationarity_cosine_all"]
    assert s["stationarity cosine on shortcut:train (last layer only)"] == card["stationarity_cosine_last"]
    flips = [k for k in s if "shortcut mark" in k]
    assert flips and "triangle" in flips[0] and s[flips[0]] == card["shortcut"]["mark_flips_to_biased_class"]
    assert card_summary(None) == {}
    assert card_summary({"test_accuracy": 0.9}) == {"test accuracy": 0.9}


def test_trust_thresholds_are_read_off_trust_strength() -> None:
    t = trust_thresholds()
    assert set(t) == {"weak", "partial", "strong"} and t["weak"] < t["partial"] < t["strong"] <= 1.0
    for strength in ("partial", "strong"):
        assert trust_strength(t[strength]) == strength
        assert trust_strength(t[strength] - 0.01) != strength


# --------------------------------------------------------------------------- data kind and family


def test_data_kind_grey_is_digits_colour_is_natural() -> None:
    assert data_kind(make_spec(in_channels=1)) == "digits"
    assert data_kind(make_spec(in_channels=3, image_size=32)) == "natural"
    assert data_kind(1) == "digits" and data_kind(3) == "natural" and data_kind((3, 32, 32)) == "natural"
    for bad in (0, "grey", None):
        with pytest.raises(ValueError, match="spec_or_channels"):
            data_kind(bad)


def test_data_family_from_card_or_shape() -> None:
    mnist_like = make_spec(in_channels=1, image_size=28, num_classes=10)
    shapes_like = make_spec(in_channels=3, image_size=32, num_classes=4)
    assert data_family(mnist_like) == "mnist"
    assert data_family(shapes_like) == "shortcut"
    assert data_family(make_spec(in_channels=3, image_size=32, num_classes=10)) is None
    assert data_family(mnist_like, {"recipe": {"data": "shortcut:train"}}) == "shortcut"  # the card wins
    assert data_family(mnist_like, {"recipe": {"data": "/my/folder"}}) == "mnist"  # not bundled: by shape
