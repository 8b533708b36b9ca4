"""The shipped default models: every measured number on a card is recomputed from the weights."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from dsvlib import load_model
from dsvlib.io import ASSETS_DIR, default_models, file_sha256, load_card
from dsvlib.train import RECIPES, evaluate_card

CARDS = sorted((ASSETS_DIR / "models").glob("*.card.json"))
ACC_TOL = 0.005
COS_TOL = 0.02


def _name(card_path: Path) -> str:
    return card_path.name[: -len(".card.json")]


def test_default_models_are_shipped():
    names = [_name(p) for p in CARDS]
    assert "mnist_convnet" in names
    assert sorted(names) == default_models(), "every weights file needs a card and every card its weights"


@functools.lru_cache(maxsize=None)
def _measure(name: str):
    """(card, spec, recomputed numbers) for one shipped model; computed once per session."""
    card = json.loads((ASSETS_DIR / "models" / f"{name}.card.json").read_text())
    model, spec = load_model(ASSETS_DIR / "models" / f"{name}.safetensors")
    data_kind = card["recipe"]["data"].split(":")[0]
    return card, spec, evaluate_card(model, data_kind)


@pytest.fixture(params=[_name(p) for p in CARDS])
def measured(request):
    return _measure(request.param)


def test_card_metadata(measured):
    card, spec, _ = measured
    name = card["name"]
    assert name in RECIPES, f"card {name!r} has no recipe in dsvlib.train.RECIPES"
    assert card["command"] == f"python -m dsvlib.train {name}"
    assert 0 < card["training_seconds"] <= 600, "a default model must train in under 10 minutes on CPU"
    assert card["recipe"]["arch"] == spec.arch == RECIPES[name].arch
    assert card["recipe"]["arch_kwargs"] == spec.arch_kwargs == RECIPES[name].arch_kwargs
    assert card["recipe"]["data"] == f"{RECIPES[name].data}:train"
    assert load_card(name) == card


def _assert_close(card_value, measured_value, tol, where):
    assert abs(card_value - measured_value) <= tol, f"{where}: card says {card_value}, measured {measured_value}"


def test_card_numbers_match_the_weights(measured):
    card, _, now = measured
    for key in ("train_accuracy", "test_accuracy"):
        _assert_close(card[key], now[key], ACC_TOL, key)
    for key in ("stationarity_cosine", "stationarity_cosine_all", "stationarity_cosine_last"):
        _assert_close(card[key], now[key], COS_TOL, key)
    if "shortcut" in now:
        assert "shortcut" in card
        assert card["shortcut"]["biased_class"] == now["shortcut"]["biased_class"]
        for key, value in now["shortcut"].items():
            if key != "biased_class":
                _assert_close(card["shortcut"][key], value, ACC_TOL, f"shortcut.{key}")
    assert set(now) <= set(card), f"card lacks measured fields {sorted(set(now) - set(card))}"


def test_mnist_convnet_reaches_98_percent():
    _, _, now = _measure("mnist_convnet")
    assert now["test_accuracy"] >= 0.98  # recomputed from the weights, not read from the card


SHORTCUT_MODELS = [_name(p) for p in CARDS if json.loads(p.read_text())["recipe"]["data"].startswith("shortcut:")]


@pytest.mark.parametrize("name", SHORTCUT_MODELS)
def test_shortcut_model_learned_the_shortcut(name):
    _, _, now = _measure(name)
    # the planted mark really flips the model's predictions: an audit has something to find
    assert now["shortcut"]["mark_flips_to_biased_class"] >= 0.3
    assert now["shortcut"]["other_classes_clean_accuracy"] >= 0.9


ALL_CARDS = CARDS + sorted((ASSETS_DIR / "judges").glob("*.card.json"))


@pytest.mark.parametrize("card_path", ALL_CARDS, ids=lambda p: p.parent.name + "/" + _name(p))
def test_card_records_the_hash_of_its_weights(card_path):
    card = json.loads(card_path.read_text())
    weights = card_path.with_name(f"{_name(card_path)}.safetensors")
    assert card["weights_sha256"] == file_sha256(weights), f"{card_path.name}: weights_sha256 is stale"
    assert load_card(weights) == card  # found by content, the judges' cards included


def test_a_card_is_found_by_content_not_by_name(tmp_path):
    shipped = ASSETS_DIR / "models" / "mnist_convnet.safetensors"
    card = load_card("mnist_convnet")
    assert card is not None and card["name"] == "mnist_convnet"
    # the same bytes under another name and folder: the shipped card
    copy = tmp_path / "renamed.safetensors"
    copy.write_bytes(shipped.read_bytes())
    assert load_card(copy) == card
    # other weights named like the shipped model: no card, not the shipped accuracy
    other = tmp_path / "mnist_convnet.safetensors"
    model, spec = load_model("mnist_convnet")
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)
    from dsvlib import save_model

    save_model(model, spec, other)
    assert load_card(other) is None
    # the shipped shortcut model's bytes under that name: the shortcut card, by content
    shortcut = tmp_path / "x" / "mnist_convnet.safetensors"
    shortcut.parent.mkdir()
    shortcut.write_bytes((ASSETS_DIR / "models" / "shortcut_convnet.safetensors").read_bytes())
    assert load_card(shortcut)["name"] == "shortcut_convnet"
    # a card written beside the file, for other weights, is not taken either
    (tmp_path / "mnist_convnet.card.json").write_text(json.dumps(card))
    assert load_card(other) is None
    assert load_card("no_such_model") is None
