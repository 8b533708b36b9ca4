"""Classifiers of any architecture from an ONNX graph, read safely and converted with onnx2torch.

An ``.onnx`` file holds a graph and its weights but no :class:`ModelSpec`, so the caller passes
``ModelSpec(arch="onnx", num_classes=..., in_channels=..., image_size=..., mean=..., std=...)``.
The converted network is wrapped in :class:`Classifier`, which feeds it ``(x - mean) / std`` for
pixels ``x`` in [0, 1]: the graph must take normalised input.  A graph that takes raw pixels gets
``mean=(0,), std=(1,)``.

Export the model with the TorchScript exporter at opset 17 and a free batch dimension::

    torch.onnx.export(model.eval(), torch.rand(1, C, H, W), "model.onnx", dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})

What is refused, before any conversion: files over the byte cap, bytes that are not an ONNX
model, tensors kept in external files (their paths could point anywhere on the machine), ops or
functions from domains other than the standard one, and graphs that fail ``onnx.checker``.
After conversion: graphs without a converter for some op, a fixed batch dimension, an output
that is not ``(N, num_classes)``, NaN/inf weights, and graphs without the second derivative that
DeepKKT needs.  Every refusal is a :class:`ModelFileError`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .io import ModelFileError
from .limits import get_limits
from .models import ONNX_ARCH, Classifier, ModelSpec

__all__ = ["load_onnx", "onnx_to_torch", "read_onnx", "EXPORT_HINT", "OPSET"]

OPSET = 17  # the opset whose ops onnx2torch 1.5 converts (GELU at opset 20 has no converter)
EXPORT_HINT = (
    f"export with torch.onnx.export(model.eval(), example, path, dynamo=False, opset_version={OPSET}, "
    "input_names=['input'], dynamic_axes={'input': {0: 'batch'}})"
)
_STANDARD_DOMAINS = ("", "ai.onnx")


def load_onnx(path: str | os.PathLike, spec: ModelSpec | None, *, max_bytes: int | None = None
              ) -> Classifier:
    """Read, check and convert the ONNX graph at ``path``; a :class:`Classifier` in eval mode.

    ``spec.arch`` must be ``"onnx"``; the graph receives ``(x - spec.mean) / spec.std``.
    """
    path = Path(path)
    _check_spec(spec, path.name)
    try:
        import onnx  # noqa: F401
        import onnx2torch  # noqa: F401
    except ImportError as e:
        raise ModelFileError(f"{path.name}: reading ONNX graphs needs the onnx and onnx2torch packages "
                             f"(pip install -r requirements.txt): {e}") from None
    proto = read_onnx(path, max_bytes=max_bytes)
    _check_graph_input(proto, spec, path.name)
    net = onnx_to_torch(proto, path.name)
    model = Classifier(net, spec).eval()
    _check_behaviour(model, spec, path.name)
    return model


def _check_spec(spec: ModelSpec | None, fname: str) -> None:
    if spec is None:
        raise ModelFileError(
            f"{fname} is an ONNX graph, which carries no spec: pass spec=ModelSpec(arch='onnx', num_classes=..., "
            "in_channels=..., image_size=..., mean=..., std=...), with the mean/std the graph expects its input "
            "normalised with (mean=0, std=1 for a graph that takes raw pixels in [0, 1]) (CLI: --arch onnx "
            "--num-classes N --channels C --image-size S --mean M --std S)"
        )
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"spec must be a dsvlib.ModelSpec, got {type(spec).__name__}")
    if spec.arch != ONNX_ARCH:
        raise ModelFileError(
            f"{fname} is an ONNX graph, which holds its own architecture: pass a spec with arch='onnx' "
            f"(got arch={spec.arch!r})"
        )
    if spec.arch_kwargs:
        raise ModelFileError(f"{fname}: an ONNX graph takes no architecture options, got {spec.arch_kwargs}")


# --------------------------------------------------------------------------- reading


def read_onnx(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """The file's ``onnx.ModelProto``, parsed from bytes and checked; never reads another file.

    ``max_bytes`` defaults to :attr:`dsvlib.limits.Limits.model_bytes`."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    max_bytes = get_limits().model_bytes if max_bytes is None else int(max_bytes)
    if path.is_dir():
        raise ModelFileError(f"{path.name or path} is a directory, not a model file")
    if not path.is_file():
        raise ModelFileError(f"no such model file: {path}")
    too_big = f"{path.name} is over the {max_bytes / 2**20:.0f} MiB limit for model files"
    if path.stat().st_size > max_bytes:
        raise ModelFileError(too_big)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # a cap on what is read, not only on the file's stated size
    if len(data) > max_bytes:
        raise ModelFileError(too_big)
    not_onnx = (f"{path.name} is not an ONNX model (the bytes do not parse as an ONNX ModelProto with a "
                f"graph); {EXPORT_HINT}")
    if not data:
        raise ModelFileError(f"{path.name} is empty; {EXPORT_HINT}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelFileError(not_onnx) from None
    if proto.ir_version <= 0 or not proto.HasField("graph") or len(proto.graph.node) == 0:
        raise ModelFileError(not_onnx)
    _refuse_external_data(proto, path.name)
    _refuse_custom_domains(proto, path.name)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path.name} is not a valid ONNX model: {_first_line(e)[:300]}") from None
    return proto


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph inside its nodes' attributes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(proto: Any) -> Iterator[Any]:
    """Every TensorProto of the model: initializers, sparse ones, and tensors in node attributes."""
    graphs = list(_graphs(proto.graph))
    nodes = [n for g in graphs for n in g.node] + [n for fn in proto.functions for n in fn.node]
    for g in graphs:
        yield from g.initializer
        for sp in g.sparse_initializer:
            yield sp.values
            yield sp.indices
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sp in attr.sparse_tensors:
                yield sp.values
                yield sp.indices


def _refuse_external_data(proto: Any, fname: str) -> None:
    import onnx

    for t in _tensors(proto):
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            where = next((e.value for e in t.external_data if e.key == "location"), "?")
            raise ModelFileError(
                f"refused {fname}: tensor {t.name!r} keeps its data in an external file ({where!r}); only "
                "self-contained .onnx files are read, since an external-data path can point anywhere on this "
                "machine. Save the model in one file (onnx.save(model, path, save_as_external_data=False); "
                "models under 2 GB fit)"
            )


def _refuse_custom_domains(proto: Any, fname: str) -> None:
    custom = sorted({o.domain for o in proto.opset_import if o.domain not in _STANDARD_DOMAINS})
    nodes = [n for g in _graphs(proto.graph) for n in g.node]
    custom_ops = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in _STANDARD_DOMAINS})
    if custom or custom_ops or len(proto.functions):
        what = ", ".join(custom_ops or custom) or f"{len(proto.functions)} local functions"
        raise ModelFileError(
            f"refused {fname}: it uses operators outside the standard ONNX domain ({what}); only standard "
            f"ONNX ops can be read. {EXPORT_HINT}, without custom ops"
        )


def _check_graph_input(proto: Any, spec: ModelSpec, fname: str) -> None:
    import onnx

    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise ModelFileError(
            f"{fname}: the graph has {len(inputs)} inputs and {len(proto.graph.output)} outputs; a classifier "
            "graph takes one image batch (N, C, H, W) and gives one logits tensor (N, classes)"
        )
    t = inputs[0].type.tensor_type
    if t.elem_type not in (0, onnx.TensorProto.FLOAT):
        raise ModelFileError(f"{fname}: the graph's input is of type "
                             f"{onnx.TensorProto.DataType.Name(t.elem_type)}, not float32")
    if t.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        want = (None, *spec.input_shape)
        if len(dims) != 4 or any(d is not None and w is not None and d != w for d, w in zip(dims[1:], want[1:])):
            shown = ["N" if d is None else d for d in dims]
            raise ModelFileError(
                f"{fname}: the graph takes input of shape {shown}, but the spec describes (N, C, H, W) = "
                f"(N, {spec.in_channels}, {spec.image_size[0]}, {spec.image_size[1]}); set channels and image "
                "size to what the graph takes"
            )


# --------------------------------------------------------------------------- conversion


def _unsupported_ops(proto: Any) -> list[str]:
    from onnx2torch.node_converters import get_converter

    opsets = {o.domain or "": o.version for o in proto.opset_import}
    missing = []
    for op in sorted({(n.domain or "", n.op_type) for n in proto.graph.node}):
        version = opsets.get(op[0], opsets.get("ai.onnx" if op[0] == "" else "", 0))
        try:
            get_converter(domain=op[0], operation_type=op[1], version=version)
        except NotImplementedError:
            missing.append(f"{op[1]} (opset {version})")
    return missing


def onnx_to_torch(proto: Any, fname: str = "the ONNX graph") -> nn.Module:
    """Convert a checked ``ModelProto`` with onnx2torch; eval mode, float weights as parameters.

    onnx2torch keeps an initializer that feeds a generic op (MatMul, Add, ...) as a buffer; it
    becomes an ``nn.Parameter`` here, so that DeepKKT's stationarity sees every weight.
    """
    import onnx2torch

    missing = _unsupported_ops(proto)
    if missing:
        raise ModelFileError(
            f"{fname}: onnx2torch has no converter for {', '.join(missing)}; {EXPORT_HINT} "
            "(the dynamo exporter and newer opsets write ops such as Gelu-20 or Reshape with allowzero=1 "
            "that have none)"
        )
    proto = _untie_identity_initializers(proto)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = onnx2torch.convert(proto)
    except Exception as e:  # noqa: BLE001 - any converter failure is a file the library cannot use
        raise ModelFileError(f"{fname}: onnx2torch could not convert the graph: {_first_line(e)[:300]}; "
                             f"{EXPORT_HINT}") from None
    _initializers_as_parameters(net)
    _repair_layer_norms(net)
    for name, t in net.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFileError(f"{fname}: tensor '{name}' contains NaN or inf values; the model cannot be used")
    return net.eval()


def _untie_identity_initializers(proto: Any) -> Any:
    """A copy of ``proto`` where ``Identity(initializer)`` nodes are replaced by initializers.

    The TorchScript exporter stores equal tensors once and hands them out through Identity nodes
    (a freshly initialised network's zero biases, for one); onnx2torch's Conv converter wants
    its weight and bias as initializers.  The original network had separate parameters there.
    """
    import onnx

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    if not any(n.op_type == "Identity" and n.input and n.input[0] in inits for n in graph.node):
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if (node.op_type == "Identity" and node.domain in _STANDARD_DOMAINS and len(node.input) == 1
                and node.input[0] in inits and node.output[0] not in outputs):
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            graph.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return proto


def _repair_layer_norms(net: nn.Module) -> None:
    """onnx2torch takes a LayerNorm's normalised shape from ONNX shape inference, which loses it
    after a reshape computed at run time (ViT and mixer blocks: 0 there); the scale has it."""
    for m in net.modules():
        if isinstance(m, nn.LayerNorm) and m.weight is not None and 0 in tuple(m.normalized_shape):
            m.normalized_shape = tuple(m.weight.shape)


def _initializers_as_parameters(net: nn.Module) -> None:
    container = getattr(net, "initializers", None)
    if container is None:
        return
    for name, buf in list(container.named_buffers(recurse=False)):
        if buf is not None and buf.is_floating_point():
            del container._buffers[name]
            container.register_parameter(name, nn.Parameter(buf.clone()))


# --------------------------------------------------------------------------- behaviour


def _check_behaviour(model: Classifier, spec: ModelSpec, fname: str) -> None:
    """Run a seeded batch of 2: a free batch dimension, (N, num_classes) logits, and the second
    derivative DeepKKT takes (d/dx of a function of d loss / d theta)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, *spec.input_shape, generator=g)
    try:
        with torch.no_grad():
            y1 = model(x[:1])
    except Exception as e:  # noqa: BLE001 - whatever the converted graph raises on a plain input
        raise ModelFileError(
            f"{fname}: the converted graph fails on one image of shape {(1, *spec.input_shape)}: "
            f"{_first_line(e)[:200]}; check the spec's channels and image size against the graph's input"
        ) from None
    fixed_batch = (f"{fname}: the graph does not take a batch of 2 images: its batch dimension is fixed; "
                   "export with dynamic_axes={'input': {0: 'batch'}} (and the output's)")
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as e:  # noqa: BLE001 - a shape error inside the graph
        raise ModelFileError(f"{fixed_batch}. PyTorch said: {_first_line(e)[:200]}") from None
    if not torch.is_tensor(y) or y.dim() != 2:
        shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise ModelFileError(f"{fname}: the graph's output for 2 images has shape {shape}; a classifier gives "
                             "logits of shape (N, classes)")
    if y.shape[0] != 2:
        raise ModelFileError(fixed_batch)
    if y.shape[1] != spec.num_classes:
        raise ModelFileError(f"{fname}: class-count mismatch: the spec says {spec.num_classes} classes but the "
                             f"graph outputs {y.shape[1]}")
    if not torch.allclose(y[:1], y1, rtol=1e-3, atol=1e-4):
        raise ModelFileError(f"{fixed_batch}; the first image's logits change with the batch it is in")
    try:
        gx = _double_backward(model, x)
    except RuntimeError as e:
        raise ModelFileError(f"{fname}: the converted graph has no second derivative, which DeepKKT needs: "
                             f"{_first_line(e)[:200]}") from None
    if gx is None or not torch.isfinite(gx).all():
        raise ModelFileError(f"{fname}: the converted graph gives no finite second derivative, which DeepKKT needs")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _double_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """d/dx of |d CE / d theta|^2, the shape of the DeepKKT gradient; leaves no .grad behind."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("the converted graph has no parameters")
    x = x.clone().requires_grad_(True)
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, logits.detach().argmax(1))
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    total = sum((g * g).sum() for g in grads if g is not None)
    if not torch.is_tensor(total):
        raise RuntimeError("no parameter gets a gradient from the logits")
    return torch.autograd.grad(total, x, allow_unused=True)[0]
