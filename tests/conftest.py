"""Shared fixtures: tiny seeded models, the repository root, and the devices to test on."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# The tests exercise this checkout, whatever else is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dsvlib.models import ModelSpec, build_classifier  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """CPU always; CUDA too when present."""
    return request.param


def make_spec(arch: str = "convnet", *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
              **arch_kwargs) -> ModelSpec:
    if arch == "convnet" and not arch_kwargs:
        arch_kwargs = {"width": 8, "depth": 2}
    return ModelSpec(arch=arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                     mean=(0.1307,) * in_channels, std=(0.3081,) * in_channels, arch_kwargs=arch_kwargs,
                     name=f"tiny_{arch}")


def make_model(spec: ModelSpec | None = None, seed: int = 0):
    """A freshly initialised, seeded classifier (eval mode) for ``spec`` (default: tiny ConvNet)."""
    spec = spec or make_spec()
    torch.manual_seed(seed)
    return build_classifier(spec), spec


@pytest.fixture
def tiny_model():
    return make_model()
