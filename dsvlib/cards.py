"""How a model card is read: one place for the app, the CLI and the benches.

A card (``assets/models/<name>.card.json``, written by :mod:`dsvlib.train`) records the recipe,
accuracies and how well the weights satisfy the stationarity condition (cos(-theta, sum of the
training data's gradients); see :func:`dsvlib.kkt.dataset_gradient_cosine`).
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["card_cosine", "card_training_data", "card_summary", "trust_thresholds"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def card_cosine(card: Mapping[str, Any] | None) -> float | None:
    """The card's trust cosine: ``stationarity_cosine`` (all parameters except scale-invariant
    ones), falling back to ``stationarity_cosine_all`` (all parameters; older cards); None if absent."""
    card = card or {}
    for key in ("stationarity_cosine", "stationarity_cosine_all"):
        value = _number(card.get(key))
        if value is not None:
            return value
    return None


def card_training_data(card: Mapping[str, Any] | None) -> str | None:
    """The data the model was trained on, from the card's recipe (e.g. ``"mnist:train"``), or None."""
    data = ((card or {}).get("recipe") or {}).get("data")
    return str(data) if data else None


def card_summary(card: Mapping[str, Any] | None) -> dict[str, float]:
    """The card's headline numbers, each under a label that says what was measured on what.

    Only numbers present on the card appear, in a fixed order; an empty dict for no card.
    """
    card = card or {}
    train = card_training_data(card)
    test = f"{train.split(':')[0]}:test" if train and ":" in train else None
    on_train = f" on {train}" if train else " on training data"
    on_test = f" on {test}" if test else ""
    keys = [
        ("test_accuracy", f"test accuracy{on_test}"),
        ("train_accuracy", f"train accuracy{on_train}"),
        ("stationarity_cosine", f"stationarity cosine{on_train} (all parameters except scale-invariant ones)"),
        ("stationarity_cosine_all", f"stationarity cosine{on_train} (all parameters)"),
        ("stationarity_cosine_last", f"stationarity cosine{on_train} (last layer only)"),
    ]
    out = {label: _number(card.get(key)) for key, label in keys}
    shortcut = card.get("shortcut") or {}
    biased = shortcut.get("biased_class", "the biased class")
    out[f"share of other classes' test images that the shortcut mark flips to {biased}"] = _number(
        shortcut.get("mark_flips_to_biased_class"))
    out["training time (seconds)"] = _number(card.get("training_seconds"))
    return {k: v for k, v in out.items() if v is not None}


def trust_thresholds() -> dict[str, float]:
    """The lowest cosine (to 0.01) that :func:`dsvlib.synthesize.trust_strength` reads as each
    strength, e.g. ``{"weak": -1.0, "partial": ..., "strong": ...}``.  Read off the function itself,
    so that text which quotes the thresholds cannot drift from it."""
    from .synthesize import trust_strength

    out: dict[str, float] = {}
    for k in range(-100, 101):
        strength = trust_strength(k / 100)
        out.setdefault(strength, k / 100)
    return out
