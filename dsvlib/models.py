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
import math
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn

from .limits import get_limits

__all__ = [
    "ModelSpec",
    "Classifier",
    "register_model",
    "create_model",
    "list_models",
    "build_classifier",
    "count_parameters",
    "check_buildable",
    "ArchOption",
    "arch_options",
    "ONNX_ARCH",
    "NORMS",
]

ONNX_ARCH = "onnx"  # spec.arch of a classifier read from an ONNX graph (dsvlib.onnx_import)
NORMS = ("instance", "batch", "group", "layer", "none")
Norm = Literal["instance", "batch", "group", "layer", "none"]  # NORMS as a type, so arch_options sees them


def _int_field(value: Any, name: str, lo: int, hi: int, env: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {_short(value)}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi:,}, got {value:,}"
                         + (f" (raise the limit with {env})" if value > hi else ""))
    return value


def _floats(value: Any, name: str) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be a sequence of numbers, got {type(value).__name__} {_short(value)}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"{name} must hold numbers, got {type(v).__name__} {_short(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        out.append(v)
    return tuple(out)


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def _check_arch_kwargs(kwargs: Any, limits: Any) -> None:
    env = "DSV_MAX_ARCH_VALUE"
    if not isinstance(kwargs, dict):
        raise ValueError(f"arch_kwargs must be a dict of keyword options, got {type(kwargs).__name__} {_short(kwargs)}")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"arch_kwargs keys must be option names, got {_short(key)}")
        if key in _SPEC_ARGS or key in ("weights", "progress"):
            raise ValueError(f"arch_kwargs may not set {key!r}: "
                             + ("it is a field of the spec itself" if key in _SPEC_ARGS else "no weights are downloaded"))
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(value) > limits.arch_list:
            raise ValueError(f"arch_kwargs[{key!r}] has {len(value):,} entries, over the limit of "
                             f"{limits.arch_list} (raise it with DSV_MAX_ARCH_LIST)")
        for v in items:
            if v is None or isinstance(v, bool):
                continue
            if isinstance(v, numbers.Integral):
                if not -limits.arch_value <= int(v) <= limits.arch_value:
                    raise ValueError(f"arch_kwargs[{key!r}] = {int(v):,} is over the limit of {limits.arch_value:,} "
                                     f"for architecture options (raise it with {env})")
            elif isinstance(v, numbers.Real):
                if not math.isfinite(float(v)):
                    raise ValueError(f"arch_kwargs[{key!r}] must be finite, got {v}")
            elif isinstance(v, str):
                if len(v) > 100:
                    raise ValueError(f"arch_kwargs[{key!r}] is a string of {len(v):,} characters; at most 100")
            else:
                raise ValueError(f"arch_kwargs[{key!r}] must be a number, a string, a bool or a list of them, "
                                 f"got {type(v).__name__} {_short(v)}")


def _validate_spec(spec: "ModelSpec") -> None:
    """Types and ranges of every field, against :func:`dsvlib.limits.get_limits`; nothing is
    allocated before this passes (class names are made only after num_classes is in range)."""
    lim = get_limits()
    put = lambda k, v: object.__setattr__(spec, k, v)  # noqa: E731 - frozen dataclass
    if not isinstance(spec.arch, str) or not spec.arch or len(spec.arch) > 200:
        raise ValueError(f"arch must be an architecture name (a non-empty str), got {type(spec.arch).__name__} "
                         f"{_short(spec.arch)}")
    if not isinstance(spec.name, str):
        raise ValueError(f"name must be a str, got {type(spec.name).__name__}")
    put("num_classes", _int_field(spec.num_classes, "num_classes", 2, lim.classes, "DSV_MAX_CLASSES"))
    put("in_channels", _int_field(spec.in_channels, "in_channels", 1, lim.channels, "DSV_MAX_CHANNELS"))
    size = spec.image_size
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if isinstance(size, (str, bytes)) or not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"image_size must be an integer or a pair (height, width), got {_short(size)}")
    put("image_size", tuple(_int_field(s, "image_size", 1, lim.image_side, "DSV_MAX_IMAGE_SIDE") for s in size))
    put("mean", _floats(spec.mean, "mean"))
    put("std", _floats(spec.std, "std"))
    if len(spec.mean) not in (1, spec.in_channels) or len(spec.std) not in (1, spec.in_channels):
        raise ValueError(f"mean/std must have 1 or in_channels={spec.in_channels} entries")
    if any(s <= 0 for s in spec.std):
        raise ValueError(f"std entries must be > 0, got {spec.std}")
    names = spec.class_names
    if isinstance(names, (str, bytes)) or not isinstance(names, (tuple, list)):
        raise ValueError(f"class_names must be a sequence of str, got {type(names).__name__}")
    if names and len(names) != spec.num_classes:
        raise ValueError(f"class_names has {len(names)} entries but num_classes is {spec.num_classes}")
    if any(not isinstance(c, (str, numbers.Integral)) or len(str(c)) > 200 for c in names):
        raise ValueError("class_names must be strings of at most 200 characters")
    put("class_names", tuple(str(c) for c in names) or tuple(str(i) for i in range(spec.num_classes)))
    _check_arch_kwargs(spec.arch_kwargs, lim)


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
        _validate_spec(self)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.image_size)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        if not isinstance(text, str):
            raise ValueError(f"spec metadata must be a JSON string, got {type(text).__name__}")
        try:
            d = json.loads(text)
        except RecursionError:
            raise ValueError("spec metadata is nested too deeply") from None
        if not isinstance(d, dict):
            raise ValueError(f"spec metadata is not a JSON object but a {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"spec metadata has unknown fields {sorted(unknown)[:10]}; known: {sorted(known)}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"spec metadata lacks the fields {missing}")
        return cls(**d)  # list values are accepted and checked by __post_init__


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
    """Build the bare network (no normalisation) for ``arch``.

    Any failure of the builder (bad keyword, bad value) is a ``ValueError`` naming the architecture.
    """
    if not isinstance(arch, str):
        raise ValueError(f"arch must be a str, got {type(arch).__name__}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if arch.startswith("torchvision:"):
        return _torchvision_model(arch.split(":", 1)[1], num_classes, in_channels, **kwargs)
    if arch not in _REGISTRY:
        raise _unknown_arch(arch)
    try:
        return _REGISTRY[arch](num_classes=num_classes, in_channels=in_channels, image_size=size, **kwargs)
    except ValueError:
        raise
    except (TypeError, RuntimeError, AttributeError, KeyError, IndexError, ZeroDivisionError,
            NotImplementedError, OverflowError) as e:
        raise ValueError(f"bad arguments for architecture {arch!r}: {type(e).__name__}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def count_parameters(spec: "ModelSpec") -> int:
    """Weights and buffers (elements) of the network ``spec`` describes, counted on the ``meta``
    device: nothing is allocated, so a spec asking for billions of weights costs milliseconds."""
    if spec.arch == ONNX_ARCH:
        raise ValueError(_unknown_arch(ONNX_ARCH).args[0])
    with torch.device("meta"):
        net = create_model(spec.arch, num_classes=spec.num_classes, in_channels=spec.in_channels,
                           image_size=spec.image_size, **spec.arch_kwargs)
    return sum(t.numel() for t in net.parameters()) + sum(t.numel() for t in net.buffers())


def check_buildable(spec: "ModelSpec") -> int:
    """``ValueError`` unless the network of ``spec`` builds and stays under the parameter limit
    (:attr:`dsvlib.limits.Limits.parameters`); returns its parameter count.  Allocates nothing."""
    n = count_parameters(spec)
    cap = get_limits().parameters
    if n > cap:
        raise ValueError(f"architecture {spec.arch!r} {spec.arch_kwargs} with {spec.num_classes} classes, "
                         f"{spec.in_channels} channels and image size {spec.image_size} has {n:,} parameters, "
                         f"over the limit of {cap:,} (raise it with DSV_MAX_PARAMETERS)")
    return n


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
    """A freshly initialised :class:`Classifier` for ``spec`` (eval mode).

    The network is first counted on the ``meta`` device (:func:`check_buildable`), so a spec over
    the parameter limit is refused before any memory is allocated.
    """
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    check_buildable(spec)
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

    if in_channels not in (1, 3):
        raise ValueError(f"torchvision models take 1 or 3 input channels, got {in_channels}")
    try:
        net = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except ValueError as e:
        raise ValueError(f"bad arguments for architecture 'torchvision:{name}': {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - torchvision builders raise TypeError, AssertionError, ...
        raise ValueError(f"bad arguments for architecture 'torchvision:{name}': {type(e).__name__}: "
                         f"{_first_line(e)}") from None
    if in_channels == 3:
        return net
    return _RepeatChannels(net, 3)  # grey images fed as RGB
