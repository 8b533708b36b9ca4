"""Model registry, the spec that travels with a classifier, and the pixel-space wrapper.

Every classifier in dsvlib is a :class:`Classifier`: it takes images in pixel space [0, 1],
shape (N, C, H, W), and normalises inside with the spec's mean/std.  Architectures are built by
name from a registry (``create_model("convnet", num_classes=10, in_channels=1, image_size=28)``);
any torchvision classification architecture is reachable as ``"torchvision:<name>"``.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn

__all__ = [
    "ModelSpec",
    "Classifier",
    "register_model",
    "create_model",
    "list_models",
    "build_classifier",
    "ArchOption",
    "arch_options",
    "ONNX_ARCH",
    "NORMS",
]

ONNX_ARCH = "onnx"  # spec.arch of a classifier read from an ONNX graph (dsvlib.onnx_import)
NORMS = ("instance", "batch", "group", "layer", "none")
Norm = Literal["instance", "batch", "group", "layer", "none"]  # NORMS as a type, so arch_options sees them


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a classifier and feed it pixels.

    ``arch_kwargs`` are the keyword arguments of the registered architecture (width, depth, ...).
    """

    arch: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", (self.image_size, self.image_size))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        names = tuple(str(c) for c in self.class_names) or tuple(str(i) for i in range(self.num_classes))
        object.__setattr__(self, "class_names", names)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries but num_classes is {self.num_classes}"
            )
        if len(self.mean) not in (1, self.in_channels) or len(self.std) not in (1, self.in_channels):
            raise ValueError(f"mean/std must have 1 or in_channels={self.in_channels} entries")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std entries must be > 0, got {self.std}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.image_size)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("spec metadata is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"spec metadata has unknown fields {sorted(unknown)}; known: {sorted(known)}")
        d["image_size"] = tuple(d.get("image_size", ()))
        d["mean"] = tuple(d.get("mean", ()))
        d["std"] = tuple(d.get("std", ()))
        d["class_names"] = tuple(d.get("class_names", ()))
        return cls(**d)


class Classifier(nn.Module):
    """Pixel-space wrapper: ``forward(x in [0,1]) = net((x - mean) / std)``.

    The normalisation constants are non-persistent buffers, so ``state_dict()`` holds only the
    network's weights under the ``net.`` prefix.
    """

    def __init__(self, net: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        c = spec.in_channels
        mean = torch.tensor(spec.mean, dtype=torch.float32).expand(c).clone().view(1, c, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).expand(c).clone().view(1, c, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn(num_classes, in_channels, image_size, **kwargs) -> nn.Module``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Registered names; any ``torchvision:<name>`` classification model is accepted too."""
    return sorted(_REGISTRY)


def create_model(
    arch: str, *, num_classes: int, in_channels: int, image_size: int | tuple[int, int], **kwargs: Any
) -> nn.Module:
    """Build the bare network (no normalisation) for ``arch``."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if arch.startswith("torchvision:"):
        return _torchvision_model(arch.split(":", 1)[1], num_classes, in_channels, **kwargs)
    if arch not in _REGISTRY:
        raise _unknown_arch(arch)
    try:
        return _REGISTRY[arch](num_classes=num_classes, in_channels=in_channels, image_size=size, **kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for architecture {arch!r}: {e}") from None


@dataclass(frozen=True)
class ArchOption:
    """One keyword option of a registered architecture, read from its builder's signature.

    ``type`` is a short name ("int", "float", "str", "bool", "tuple[int, ...]"); ``default`` is
    None for an option without a default; ``choices`` lists the accepted values where the
    annotation is a ``Literal``.
    """

    name: str
    type: str
    default: Any
    choices: tuple[Any, ...] = ()


_SPEC_ARGS = ("num_classes", "in_channels", "image_size")


def _type_name(annotation: Any, default: Any) -> tuple[str, tuple[Any, ...]]:
    """(short type name, choices) for an annotation; falls back to the default's type."""
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]).__name__, tuple(choices)
    if annotation in (int, float, str, bool):
        return annotation.__name__, ()
    # tuple[int, ...] | list[int] and the like: name the first sequence form
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) in (tuple, list):
            inner = typing.get_args(arg)
            item = inner[0].__name__ if inner and isinstance(inner[0], type) else "Any"
            return f"tuple[{item}, ...]", ()
    if default is not None and default is not inspect.Parameter.empty:
        return ("tuple[int, ...]" if isinstance(default, (tuple, list)) else type(default).__name__), ()
    return "str", ()


def arch_options(arch: str) -> tuple[ArchOption, ...]:
    """The keyword options of architecture ``arch`` (what ``ModelSpec.arch_kwargs`` may hold).

    Read with :func:`inspect.signature` from the registered builder, leaving out the arguments
    that the spec fills in (num_classes, in_channels, image_size).  ``"torchvision:<name>"`` and
    ``"onnx"`` have none here: torchvision builders take their options through ``**kwargs``, and
    an ONNX graph carries its architecture in the file.
    """
    if arch == ONNX_ARCH:
        return ()
    if arch.startswith("torchvision:"):
        _torchvision_names(arch.split(":", 1)[1])  # fail early on an unknown name
        return ()
    if arch not in _REGISTRY:
        raise _unknown_arch(arch)
    fn = _REGISTRY[arch]
    target = fn.__init__ if isinstance(fn, type) else fn
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the defaults' types
        hints = {}
    options = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in _SPEC_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = None if p.default is p.empty else p.default
        type_name, choices = _type_name(hints.get(p.name, p.annotation), p.default)
        options.append(ArchOption(name=p.name, type=type_name, default=default, choices=choices))
    return tuple(options)


def _unknown_arch(arch: str) -> ValueError:
    if arch == ONNX_ARCH:
        return ValueError(f"architecture {ONNX_ARCH!r} cannot be built: it is read from an .onnx file "
                          "with dsvlib.load_model(path, spec=ModelSpec(arch='onnx', ...))")
    return ValueError(f"unknown architecture {arch!r}; known: {list_models()} or 'torchvision:<name>' "
                      "(e.g. 'torchvision:resnet18')")


def build_classifier(spec: ModelSpec) -> Classifier:
    """A freshly initialised :class:`Classifier` for ``spec`` (eval mode)."""
    net = create_model(
        spec.arch,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        **spec.arch_kwargs,
    )
    return Classifier(net, spec).eval()


# --------------------------------------------------------------------------- architectures


def _norm(kind: Norm | str, c: int, hw: tuple[int, int]) -> nn.Module:
    if kind in ("instance", "instancenorm"):
        return nn.GroupNorm(c, c, affine=True)  # the ConvNet of dataset-condensation papers
    if kind in ("batch", "batchnorm"):
        return nn.BatchNorm2d(c)
    if kind in ("group", "groupnorm"):
        return nn.GroupNorm(min(4, c), c)
    if kind in ("layer", "layernorm"):
        return nn.GroupNorm(1, c)
    if kind in ("none", None):
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use one of {', '.join(NORMS)}")


class ConvNet(nn.Module):
    """The paper's ConvNet: ``depth`` x [conv3x3 -> norm -> ReLU -> avgpool2x2] -> linear."""

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int],
                 width: int = 32, depth: int = 3, norm: Norm = "instance") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, (h, w) = in_channels, image_size
        for _ in range(depth):
            if h < 2 or w < 2:
                raise ValueError(f"depth {depth} too large for image size {image_size}")
            layers += [nn.Conv2d(c, width, 3, padding=1), _norm(norm, width, (h, w)), nn.ReLU(),
                       nn.AvgPool2d(2)]
            c, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] * len(hidden) -> Linear.  ``hidden=()`` is a linear model."""

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int],
                 hidden: tuple[int, ...] | list[int] = (256,)) -> None:
        super().__init__()
        d = in_channels * image_size[0] * image_size[1]
        layers: list[nn.Module] = [nn.Flatten()]
        for hdim in hidden:
            layers += [nn.Linear(d, int(hdim)), nn.ReLU()]
            d = int(hdim)
        layers.append(nn.Linear(d, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LeNet(nn.Module):
    """LeNet-5 style: conv5 -> maxpool -> conv5 -> maxpool -> 120 -> 84 -> classes."""

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        h = ((image_size[0] // 2) - 4) // 2
        w = ((image_size[1] // 2) - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * h * w, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18Small(nn.Module):
    """ResNet-18 for small images: 3x3 stem, no max-pool, stages (2,2,2,2), global avg pool."""

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int],
                 width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        cin = width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            stride = 1 if i == 0 else 2
            blocks += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


register_model("convnet")(ConvNet)
register_model("mlp")(MLP)
register_model("lenet")(LeNet)
register_model("resnet18_small")(ResNet18Small)


class _RepeatChannels(nn.Module):
    def __init__(self, net: nn.Module, repeat: int) -> None:
        super().__init__()
        self.net = net
        self.repeat = repeat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.repeat(1, self.repeat, 1, 1))


def _torchvision_names(name: str) -> list[str]:
    """torchvision's classification model names; ValueError when ``name`` is not one of them."""
    try:
        import torchvision.models as tvm
    except Exception as e:  # pragma: no cover - depends on the install
        raise ValueError(f"torchvision is needed for 'torchvision:{name}' but failed to import: {e}") from None
    available = tvm.list_models(module=tvm)
    if name not in available:
        raise ValueError(f"unknown torchvision classification model {name!r}; e.g. {available[:8]} ...")
    return available


def _torchvision_model(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    _torchvision_names(name)
    import torchvision.models as tvm

    net = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels == 3:
        return net
    if in_channels == 1:
        return _RepeatChannels(net, 3)  # grey images fed as RGB
    raise ValueError(f"torchvision models take 1 or 3 input channels, got {in_channels}")
