"""Untrusted files and arguments (issue 12): a corpus of hostile inputs, generated at test time.

Every case asserts the exact error type and a message that names the problem.  The memory bombs
(tiny files that ask for gigabytes) run in a subprocess under an address-space limit, and their
peak resident memory is measured and bounded.  Pickle payloads would create a marker file: it
must never exist.  No binary file of this corpus is committed; each is built here.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_model, make_spec
from dsvlib import ModelFileError, ModelSpec, load_card, load_model, save_model
from dsvlib.data import load_image_folder, read_image
from dsvlib.limits import DEFAULT_LIMITS, Limits, get_limits

ROOT = Path(__file__).resolve().parent.parent
GiB = 2**30
PEAK_BOUND_MIB = 128  # the most any memory bomb may add to the peak RSS of a process that imported torch


def case(name: str) -> str:
    """A case of the corpus, by name (test_corpus_size counts these calls in this file)."""
    return name


def expect(exc_type: type, fn, *fragments: str) -> str:
    """Run ``fn``; it must raise exactly ``exc_type`` with every fragment in the message."""
    with pytest.raises(Exception) as info:
        fn()
    assert type(info.value) is exc_type, f"{type(info.value).__name__} instead of {exc_type.__name__}: {info.value}"
    msg = str(info.value)
    for frag in fragments:
        assert frag.lower() in msg.lower(), f"{frag!r} not in error message: {msg}"
    return msg


# --------------------------------------------------------------------------- file builders


TINY = {"width": 4, "depth": 1}


def tiny_state() -> dict[str, torch.Tensor]:
    model, _ = make_model(make_spec(**TINY))
    return {k: v.clone() for k, v in model.net.state_dict().items()}


def spec_dict(**over) -> dict:
    d = json.loads(make_spec(**TINY).to_json())
    d.update(over)
    return d


def safetensors_bytes(tensors: dict[str, np.ndarray | tuple[str, tuple, bytes]], metadata=None, *,
                      raw_header: bytes | None = None) -> bytes:
    """A safetensors file written by hand, so that the header can say anything."""
    header: dict = {}
    blobs, offset = [], 0
    for name, value in tensors.items():
        if isinstance(value, tuple):
            dtype, shape, data = value
        else:
            dtype = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64"}[value.dtype]
            shape, data = value.shape, value.tobytes()
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def with_spec(spec: dict | str | int, state: dict[str, torch.Tensor] | None = None, **cast) -> bytes:
    state = tiny_state() if state is None else state
    arrays = {k: v.numpy() for k, v in state.items()}
    meta = {"dsv_spec": spec if isinstance(spec, str) else json.dumps(spec), "format": "dsvlib-1"}
    return safetensors_bytes(arrays, meta)


def zip_with_deflated_zeros(path: Path, members: list[tuple[str, int]]) -> None:
    """A zip whose members each inflate to ``size`` zero bytes, written without ever holding
    them: one 16 MiB deflate block (full flush, so it can repeat), repeated, then a final block.
    The CRC is left 0: a reader finds that out only after inflating the whole member."""
    chunk = 16 * 2**20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
    central, out = [], bytearray()
    for name, size in members:
        assert size % chunk == 0
        data = block * (size // chunk) + b"\x03\x00"  # a final, empty fixed-Huffman block
        fname = name.encode()
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0, len(data), size, len(fname), 0)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, 0, len(data), size,
                                   len(fname), 0, 0, 0, 0, 0, len(out)) + fname)
        out += local + fname + data
    cd_start = len(out)
    for c in central:
        out += c
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(out) - cd_start, cd_start, 0)
    path.write_bytes(bytes(out))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds none (the decoder would allocate them)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- memory bombs, in a subprocess

_RUNNER = r"""
import json, resource, sys, time
import torch, torchvision.models, dsvlib
from dsvlib.data import load_image_folder, read_image

def vm():
    return int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

base_vm, base_rss = vm(), rss()
limit = base_vm + 2 * 2**30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
out = {"base_rss": base_rss, "base_vm": base_vm, "cases": {}}
for name, kind, path, spec in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    try:
        if kind == "model":
            dsvlib.load_model(path, spec=dsvlib.ModelSpec(**spec) if spec else None)
        elif kind == "folder":
            load_image_folder(path, channels=1, image_size=28)
        else:
            read_image(open(path, 'rb').read(), channels=1, size=(28, 28), name=path)
        err, msg = None, ""
    except BaseException as e:
        err, msg = type(e).__name__, str(e)
    out["cases"][name] = {"error": err, "message": msg, "seconds": time.perf_counter() - t0, "peak_rss": rss()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bombs")
    tiny = spec_dict()
    files: list[tuple[str, str, str, dict | None, type, tuple[str, ...]]] = []

    def model_file(name: str, data: bytes, spec=None, *frags: str) -> None:
        (d / f"{name}.safetensors").write_bytes(data)
        files.append((case(name), "model", str(d / f"{name}.safetensors"), spec, ModelFileError, frags))

    model_file("classes_1e9", with_spec(spec_dict(num_classes=10**9, class_names=[])), None,
               "num_classes", "10,000", "DSV_MAX_CLASSES")
    model_file("image_size_1e5", with_spec(spec_dict(image_size=[100000, 100000])), None, "image_size", "1,024")
    model_file("channels_1e8", with_spec(spec_dict(in_channels=10**8, mean=[0.1], std=[0.3])), None,
               "in_channels", "16")
    model_file("width_20000", with_spec(spec_dict(arch_kwargs={"width": 20000, "depth": 1})), None,
               "width", "20,000", "8,192")
    model_file("hidden_list_1e6", with_spec(spec_dict(arch="mlp", arch_kwargs={"hidden": [8] * 10**6})), None,
               "hidden", "1,000,000 entries")
    model_file("params_8000_wide", with_spec(spec_dict(arch_kwargs={"width": 8000, "depth": 3})), None,
               "parameters", "150,000,000")
    model_file("vit_h_14", with_spec(spec_dict(arch="torchvision:vit_h_14", in_channels=3, image_size=[224, 224],
                                               arch_kwargs={})), None, "630,777,610 parameters", "DSV_MAX_PARAMETERS")
    # a 1.6 MB torch zip whose data.pkl inflates to 1.5 GB
    zip_with_deflated_zeros(d / "pkl_bomb.pt", [("archive/data.pkl", 1536 * 2**20)])
    files.append((case("torch_zip_data_pkl_1_5GB"), "model", str(d / "pkl_bomb.pt"), tiny, ModelFileError,
                  ("data.pkl", "1,536.0 MiB", "nothing was read")))
    # an image-folder zip of three 1 GB members
    zip_with_deflated_zeros(d / "folder.zip", [(f"a/{i}.png", 1024 * 2**20) for i in range(3)])
    files.append((case("image_zip_3x1GB"), "folder", str(d / "folder.zip"), None, ValueError,
                  ("a/0.png", "1,024.0 MiB", "DSV_MAX_ZIP_MEMBER_BYTES")))
    (d / "huge.png").write_bytes(png_header_only(20000, 20000))
    files.append((case("png_400_megapixels"), "image", str(d / "huge.png"), None, ValueError,
                  ("400,000,000 pixels", "40,000,000")))
    (d / "big.png").write_bytes(png_header_only(9000, 9000))
    files.append((case("png_81_megapixels"), "image", str(d / "big.png"), None, ValueError, ("81,000,000 pixels",)))
    assert max(os.path.getsize(f[2]) for f in files) < 4 * 2**20, "the bombs are tiny files"
    arg = json.dumps([(name, kind, path, spec) for name, kind, path, spec, _, _ in files])
    proc = subprocess.run([sys.executable, "-c", _RUNNER, arg], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"result": result, "files": files}


def test_memory_bombs_are_refused_before_allocation(bombs):
    result = bombs["result"]
    base = result["base_rss"]
    worst_name, worst = None, 0
    for name, _kind, _path, _spec, exc, frags in bombs["files"]:
        got = result["cases"][name]
        assert got["error"] == exc.__name__, f"{name}: {got['error']}: {got['message']}"
        for frag in frags:
            assert frag.lower() in got["message"].lower(), f"{name}: {frag!r} not in {got['message']}"
        assert got["seconds"] < 5, f"{name} took {got['seconds']:.1f} s"
        if got["peak_rss"] - base > worst:
            worst_name, worst = name, got["peak_rss"] - base
    peak = max(c["peak_rss"] for c in result["cases"].values())
    slowest = max(result["cases"].items(), key=lambda kv: kv[1]["seconds"])
    biggest = max(os.path.getsize(f[2]) for f in bombs["files"])
    print(f"\nmemory bombs: {len(bombs['files'])} cases, files of at most {biggest / 2**20:.1f} MiB; baseline RSS "
          f"{base / 2**20:.0f} MiB (torch imported); worst peak RSS {peak / 2**20:.0f} MiB, +{worst / 2**20:.0f} MiB "
          f"over the baseline ({worst_name}); slowest refusal {slowest[1]['seconds']:.3f} s ({slowest[0]})")
    assert worst < PEAK_BOUND_MIB * 2**20, f"{worst_name} added {worst / 2**20:.0f} MiB to the peak"
    assert result["cases"]["vit_h_14"]["seconds"] < 2  # counted on the meta device, not built


# --------------------------------------------------------------------------- finiteness after the cast


def _load_bytes(tmp_path: Path, data: bytes, name: str = "m.safetensors", **kw):
    path = tmp_path / name
    path.write_bytes(data)
    return lambda: load_model(path, **kw)


def _state_with(key: str, value: np.ndarray | tuple) -> dict:
    arrays: dict = {k: v.numpy() for k, v in tiny_state().items()}
    arrays[key] = value
    return arrays


def _meta() -> dict:
    return {"dsv_spec": json.dumps(spec_dict())}


@pytest.mark.parametrize("name, value, frags", [
    (case("float64_1e300_becomes_inf"), lambda s: np.full(s, 1e300, np.float64), ("classifier.weight", "inf", "float32")),
    (case("float64_nan"), lambda s: np.full(s, np.nan, np.float64), ("NaN",)),
    (case("int64_2_pow_62"), lambda s: np.full(s, 2**62, np.int64), ("int64", "integer weights are refused")),
    (case("float8_weights"), lambda s: ("F8_E4M3", s, bytes(int(np.prod(s)))), ("float8_e4m3fn", "not supported")),
    (case("bool_weights"), lambda s: ("BOOL", s, bytes(int(np.prod(s)))), ("bool",)),
])
def test_weights_are_checked_after_the_cast(tmp_path, name, value, frags):
    shape = tuple(tiny_state()["classifier.weight"].shape)
    data = safetensors_bytes(_state_with("classifier.weight", value(shape)), _meta())
    expect(ModelFileError, _load_bytes(tmp_path, data), *frags)


@pytest.mark.parametrize("name, over, frags", [
    (case("std_nan"), {"std": [float("nan")]}, ("std must be finite",)),
    (case("std_inf"), {"std": [float("inf")]}, ("std must be finite",)),
    (case("mean_inf"), {"mean": [float("-inf")]}, ("mean must be finite",)),
    (case("std_zero"), {"std": [0.0]}, ("std entries must be > 0",)),
    (case("std_negative"), {"std": [-1.0]}, ("std entries must be > 0",)),
    (case("mean_strings"), {"mean": ["a"]}, ("mean must hold numbers",)),
])
def test_spec_normalisation_is_checked(tmp_path, name, over, frags):
    # json.dumps writes NaN/Infinity, which Python's json reads back: exactly what an attacker can write
    expect(ModelFileError, _load_bytes(tmp_path, with_spec(spec_dict(**over))), "dsv_spec", *frags)


# --------------------------------------------------------------------------- one error contract


@pytest.mark.parametrize("name, metadata, frags", [
    (case("metadata_int"), 5, ("damaged safetensors header", "__metadata__ is int")),
    (case("metadata_list"), ["dsv_spec"], ("__metadata__ is list",)),
    (case("metadata_non_string_value"), {"dsv_spec": {"arch": "convnet"}}, ("non-string values",)),
    (case("spec_is_a_number"), {"dsv_spec": "5"}, ("not a JSON object but a int",)),
    (case("spec_is_a_list"), {"dsv_spec": "[1, 2]"}, ("not a JSON object but a list",)),
    (case("spec_nested_deeply"), {"dsv_spec": "[" * 100000 + "]" * 100000}, ("dsv_spec",)),
    (case("spec_missing_fields"), {"dsv_spec": json.dumps({"arch": "convnet"})}, ("lacks the fields", "num_classes")),
    (case("spec_unknown_fields"), {"dsv_spec": json.dumps({**spec_dict(), "evil": 1})}, ("unknown fields", "evil")),
    (case("arch_a_number"), {"dsv_spec": json.dumps(spec_dict(arch=5))}, ("arch must be", "int")),
    (case("arch_kwargs_a_list"), {"dsv_spec": json.dumps(spec_dict(arch_kwargs=[1, 2]))}, ("arch_kwargs must be a dict",)),
    (case("arch_kwargs_nested_object"), {"dsv_spec": json.dumps(spec_dict(arch_kwargs={"width": {"a": 1}}))},
     ("arch_kwargs['width']",)),
    (case("num_classes_a_string"), {"dsv_spec": json.dumps(spec_dict(num_classes="10"))}, ("num_classes must be an integer",)),
    (case("num_classes_a_float"), {"dsv_spec": json.dumps(spec_dict(num_classes=10.5))}, ("num_classes must be an integer",)),
    (case("image_size_a_dict"), {"dsv_spec": json.dumps(spec_dict(image_size={"h": 28}))}, ("image_size",)),
    (case("class_names_objects"), {"dsv_spec": json.dumps(spec_dict(class_names=[{}] * 10))}, ("class_names",)),
    (case("unknown_arch"), {"dsv_spec": json.dumps(spec_dict(arch="nope"))}, ("unknown architecture 'nope'",)),
    (case("torchvision_bad_keyword"), {"dsv_spec": json.dumps(spec_dict(arch="torchvision:resnet18", in_channels=3,
                                                                        arch_kwargs={"evil": 1}))},
     ("bad arguments for architecture 'torchvision:resnet18'", "evil")),
    (case("torchvision_bad_value"), {"dsv_spec": json.dumps(spec_dict(arch="torchvision:vit_b_16", in_channels=3,
                                                                      arch_kwargs={"patch_size": 7}))},
     ("bad arguments for architecture 'torchvision:vit_b_16'",)),
    (case("arch_kwargs_sets_a_spec_field"), {"dsv_spec": json.dumps(spec_dict(arch_kwargs={"num_classes": 3}))},
     ("may not set 'num_classes'",)),
    (case("arch_kwargs_asks_for_weights"), {"dsv_spec": json.dumps(spec_dict(arch="torchvision:resnet18", in_channels=3,
                                                                             arch_kwargs={"weights": "DEFAULT"}))},
     ("may not set 'weights'",)),
    (case("convnet_bad_norm"), {"dsv_spec": json.dumps(spec_dict(arch_kwargs={"width": 4, "norm": "evil"}))},
     ("unknown norm 'evil'",)),
])
def test_every_bad_metadata_is_a_model_file_error(tmp_path, name, metadata, frags):
    arrays = {k: v.numpy() for k, v in tiny_state().items()}
    expect(ModelFileError, _load_bytes(tmp_path, safetensors_bytes(arrays, metadata)), *frags)


def test_damaged_headers_and_directories(tmp_path):
    arrays = {k: v.numpy() for k, v in tiny_state().items()}
    good = safetensors_bytes(arrays, _meta())
    case("header_not_json")
    bad = good[:8] + b"{" + b"\xff" * (struct.unpack("<Q", good[:8])[0] - 1) + good[8 + struct.unpack("<Q", good[:8])[0]:]
    expect(ModelFileError, _load_bytes(tmp_path, bad), "damaged safetensors header", "not valid JSON")
    case("header_cut_off")
    expect(ModelFileError, _load_bytes(tmp_path, good[:60]), "damaged safetensors header", "cut-off")
    case("header_a_json_list")
    expect(ModelFileError, _load_bytes(tmp_path, safetensors_bytes({}, raw_header=b"{}")[:8] + b"{}"),
           "m.safetensors")
    case("offsets_out_of_range")
    lying = safetensors_bytes({"classifier.weight": ("F32", (10, 64), b"\x00" * 16)}, _meta())
    expect(ModelFileError, _load_bytes(tmp_path, lying), "damaged safetensors file")
    case("directory")
    (tmp_path / "dir.safetensors").mkdir()
    expect(ModelFileError, lambda: load_model(tmp_path / "dir.safetensors"), "is a directory, not a model file")
    case("directory_onnx")
    (tmp_path / "dir.onnx").mkdir()
    expect(ModelFileError, lambda: load_model(tmp_path / "dir.onnx", spec=ModelSpec(
        arch="onnx", num_classes=10, in_channels=1, image_size=28, mean=(0,), std=(1,))), "is a directory")


def test_bad_arguments_are_value_errors_naming_them(tmp_path):
    case("load_model_spec_not_a_spec")
    expect(ValueError, lambda: load_model("mnist_convnet", spec={"arch": "convnet"}), "spec must be")
    case("load_model_max_bytes_negative")
    expect(ValueError, lambda: load_model("mnist_convnet", max_bytes=-1), "max_bytes")
    case("load_model_path_an_int")
    expect(ValueError, lambda: load_model(5), "path_or_name")
    case("modelspec_num_classes_bool")
    expect(ValueError, lambda: ModelSpec(arch="convnet", num_classes=True, in_channels=1, image_size=28,
                                         mean=(0,), std=(1,)), "num_classes")
    case("read_image_channels_2")
    expect(ValueError, lambda: read_image(b"", channels=2, size=(8, 8)), "channels")
    case("env_limit_malformed")
    os.environ["DSV_MAX_CLASSES"] = "many"
    try:
        expect(ValueError, get_limits, "DSV_MAX_CLASSES")
    finally:
        del os.environ["DSV_MAX_CLASSES"]


def test_limits_can_be_raised_by_configuration(tmp_path, monkeypatch):
    case("limit_raised_by_env")
    data = with_spec(spec_dict(num_classes=20000, class_names=[]))
    expect(ModelFileError, _load_bytes(tmp_path, data), "DSV_MAX_CLASSES")
    monkeypatch.setenv("DSV_MAX_CLASSES", "30000")
    assert get_limits().classes == 30000
    # past the spec check now: the weights (10 outputs) do not fit 20,000 classes
    expect(ModelFileError, _load_bytes(tmp_path, data), "class-count mismatch", "20000 classes")


# --------------------------------------------------------------------------- pickle payloads


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("how", [case("pickle_payload_zip"), case("pickle_payload_legacy"),
                                 case("pickle_payload_raw"), case("pickle_payload_in_safetensors_name")])
def test_no_payload_ever_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    state: dict = dict(tiny_state())
    state["payload"] = _Payload(str(marker))
    path = tmp_path / ("evil.safetensors" if how.endswith("safetensors_name") else "evil.pt")
    if how.endswith("legacy"):
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif how.endswith("raw"):
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, path)
    msg = expect(ModelFileError, lambda: load_model(path, spec=make_spec(**TINY)), "refused", "not loaded")
    assert "\x1b[" not in msg and "weights_only=False" not in msg
    expect(ModelFileError, lambda: load_model(path), "refused")  # without a spec too
    from dsvlib import cli

    assert cli.main(["info", str(path), "--arch", "convnet", "--arch-kwargs", json.dumps(TINY), "--num-classes", "10",
                     "--channels", "1", "--image-size", "28", "--mean", "0.1307", "--std", "0.3081"]) == 2
    assert not marker.exists(), "a pickle payload ran"


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def run_cli(capsys):
    from dsvlib import cli

    def run(*args: str) -> tuple[int, str]:
        code = cli.main(list(args))
        err = capsys.readouterr().err
        return code, err
    return run


@pytest.mark.parametrize("name, args, frag", [
    (case("cli_per_class_0"), ["synthesize", "--model", "mnist_convnet", "--per-class", "0"], "--per-class: must be an integer >= 1, got 0"),
    (case("cli_per_class_negative"), ["synthesize", "--model", "mnist_convnet", "--per-class", "-1"], "--per-class"),
    (case("cli_steps_negative"), ["synthesize", "--model", "mnist_convnet", "--steps", "-5"], "--steps: must be an integer >= 1"),
    (case("cli_device_unknown"), ["synthesize", "--model", "mnist_convnet", "--device", "foo"], "--device 'foo' is not a device"),
    (case("cli_device_index_too_high"), ["synthesize", "--model", "mnist_convnet", "--device", "cuda:99"], "--device cuda:99"),
    (case("cli_seed_negative"), ["synthesize", "--model", "mnist_convnet", "--seed", "-1"], "--seed"),
    (case("cli_real_missing"), ["synthesize", "--model", "mnist_convnet", "--real", "/no/such/data"], "--real '/no/such/data'"),
    (case("cli_classes_negative"), ["synthesize", "--model", "mnist_convnet", "--classes", "-1"], "--classes"),
    (case("cli_too_many_images"), ["synthesize", "--model", "mnist_convnet", "--per-class", "5000"], "at most 10,000"),
    (case("cli_rank_limit_negative"), ["rank", "--model", "mnist_convnet", "--limit", "-5"], "--limit: must be an integer >= 1"),
    (case("cli_rank_steps_0"), ["rank", "--model", "mnist_convnet", "--steps", "0"], "--steps"),
    (case("cli_distill_seeds_0"), ["distill", "--dsv", ".", "--seeds", "0"], "--seeds: must be an integer >= 1"),
    (case("cli_distill_no_dsv_folder"), ["distill", "--dsv", "/no/such"], "has no metrics.json"),
    (case("cli_arch_without_fields"), ["info", "x.pt", "--arch", "convnet"], "needs --num-classes"),
    (case("cli_arch_kwargs_not_json"), ["info", "x.pt", "--arch", "convnet", "--arch-kwargs", "{width: 3}", "--num-classes", "10",
                                       "--channels", "1", "--image-size", "28", "--mean", "0", "--std", "1"], "JSON object"),
    (case("cli_arch_kwargs_unknown"), ["info", "x.pt", "--arch", "convnet", "--arch-kwargs", '{"evil": 3}', "--num-classes", "10",
                                      "--channels", "1", "--image-size", "28", "--mean", "0", "--std", "1"], "no options ['evil']"),
    (case("cli_std_nan"), ["info", "x.pt", "--arch", "convnet", "--num-classes", "10", "--channels", "1",
                           "--image-size", "28", "--mean", "0", "--std", "nan"], "--std"),
    (case("cli_classes_huge"), ["info", "x.pt", "--arch", "convnet", "--num-classes", "1000000000", "--channels", "1",
                                "--image-size", "28", "--mean", "0", "--std", "1"], "num_classes must be in 2..10,000"),
    (case("cli_unknown_model"), ["info", "/no/such.safetensors"], "no model file"),
])
def test_cli_arguments_are_checked_before_any_work(tmp_path, run_cli, name, args, frag):
    needs_out = args[0] in ("synthesize", "rank", "distill")
    t0 = time.perf_counter()
    code, err = run_cli(*args, *(["--out", str(tmp_path / "out")] if needs_out else []))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsv: error: "), err
    assert frag.lower() in err.lower(), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert time.perf_counter() - t0 < 10


def test_cli_out_that_is_a_file_is_refused_first(tmp_path, run_cli):
    case("cli_out_existing_file")
    f = tmp_path / "taken"
    f.write_text("mine")
    code, err = run_cli("synthesize", "--model", "mnist_convnet", "--out", str(f))
    assert code == 2 and "is an existing file" in err and f.read_text() == "mine"


def test_cli_ctrl_c_is_one_line_and_leaves_no_output(tmp_path, run_cli, monkeypatch):
    case("cli_ctrl_c")
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["dsvlib.synthesize"], "synthesize", interrupted)
    code, err = run_cli("synthesize", "--model", "mnist_convnet", "--steps", "2", "--out", str(tmp_path / "o"))
    assert code == 130 and err.strip() == "dsv: interrupted; no output was written"
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.partial-*"))


def test_cli_debug_shows_the_traceback(tmp_path):
    case("cli_debug")
    proc = subprocess.run([sys.executable, "-m", "dsvlib.cli", "synthesize", "--model", "mnist_convnet", "--device",
                           "foo", "--out", str(tmp_path / "o"), "--debug"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "CliError" in proc.stderr


def test_cli_loads_a_plain_state_dict_with_an_architecture(tmp_path, run_cli, capsys):
    case("cli_plain_state_dict")
    torch.save(tiny_state(), tmp_path / "plain.pt")
    common = ["--channels", "1", "--image-size", "28", "--mean", "0.1307", "--std", "0.3081"]
    code, err = run_cli("info", str(tmp_path / "plain.pt"))
    assert code == 2 and "--arch" in err  # the "no spec" message names options that exist
    from dsvlib import cli

    assert cli.main(["info", str(tmp_path / "plain.pt"), "--arch", "convnet", "--arch-kwargs", json.dumps(TINY),
                     "--num-classes", "10", *common]) == 0
    out = capsys.readouterr().out
    assert "architecture: convnet {'width': 4, 'depth': 1}" in out and "classes:      10" in out


# --------------------------------------------------------------------------- images


def _png(arr: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


def test_images_are_allowed_by_content(tmp_path):
    case("eps_named_png")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n"
    expect(ValueError, lambda: read_image(eps, channels=1, size=(8, 8), name="x.png"), "x.png", "EPS", "allowed: PNG")
    case("tiff_named_jpg")
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="TIFF")
    expect(ValueError, lambda: read_image(buf.getvalue(), channels=1, size=(8, 8), name="y.jpg"), "TIFF")
    case("text_named_png")
    expect(ValueError, lambda: read_image(b"hello", channels=1, size=(8, 8), name="z.png"), "an unknown format")
    case("png_cut_off")
    expect(ValueError, lambda: read_image(_png(np.zeros((64, 64), np.uint8))[:60], channels=1, size=(8, 8), name="c.png"),
           "c.png", "not a readable PNG")
    case("allowed_formats_decode")
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (255, 255, 255)).save(buf, format=fmt)
        x = read_image(buf.getvalue(), channels=3, size=(8, 8), name=fmt)
        assert x.shape == (3, 8, 8) and x.min() > 0.9, fmt


def test_sixteen_bit_png_is_scaled_by_65535():
    case("png_16_bit")
    arr = np.full((16, 16), 32768, np.uint16)
    arr[:, 8:] = 65535
    x = read_image(_png(arr), channels=1, size=(16, 16), name="deep.png")
    assert x[0, 0, 0].item() == pytest.approx(0.5, abs=1e-3) and x[0, 0, -1].item() == pytest.approx(1.0, abs=1e-4)
    assert read_image(_png(arr), channels=3, size=(16, 16)).shape == (3, 16, 16)


def test_exif_orientation_is_applied():
    case("jpeg_exif_rotated")
    arr = np.zeros((32, 32), np.uint8)
    arr[:, :16] = 255  # left half white, as stored
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 3  # rotate 180 degrees on display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, exif=exif)
    x = read_image(buf.getvalue(), channels=1, size=(32, 32))
    assert x[0, :, :12].mean() < 0.1 and x[0, :, -12:].mean() > 0.9  # shown rotated: white on the right


def test_gif_first_frame():
    case("gif_first_frame")
    frames = [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert read_image(buf.getvalue(), channels=1, size=(8, 8)).max() < 0.05


def test_image_folder_caps(tmp_path, monkeypatch):
    import zipfile

    case("image_zip_total_cap")
    png = _png(np.zeros((8, 8), np.uint8))
    with zipfile.ZipFile(tmp_path / "f.zip", "w") as zf:
        for i in range(4):
            zf.writestr(f"a/{i}.png", png)
    monkeypatch.setenv("DSV_MAX_ZIP_TOTAL_BYTES", str(2 * len(png)))
    expect(ValueError, lambda: load_image_folder(tmp_path / "f.zip", channels=1, image_size=8),
           "f.zip", "DSV_MAX_ZIP_TOTAL_BYTES")
    monkeypatch.delenv("DSV_MAX_ZIP_TOTAL_BYTES")
    assert len(load_image_folder(tmp_path / "f.zip", channels=1, image_size=8)) == 4
    case("image_folder_eps_member")
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "x.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n")
    expect(ValueError, lambda: load_image_folder(tmp_path / "d", channels=1, image_size=8), "x.png", "EPS")


# --------------------------------------------------------------------------- cards by content


def test_a_file_named_like_a_shipped_model_gets_no_card(tmp_path):
    case("card_by_name")
    impostor = tmp_path / "mnist_convnet.safetensors"
    model, spec = make_model(make_spec(**TINY))
    save_model(model, spec, impostor)
    assert load_card(impostor) is None
    assert load_card("mnist_convnet")["name"] == "mnist_convnet"


# --------------------------------------------------------------------------- the README states the truth


def test_readme_states_the_limits_of_the_code():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Safe loading policy", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(DSV_MAX_\w+)` \| ([^|]+?) \|", section, flags=re.M))
    assert rows == DEFAULT_LIMITS.describe(), "README's limits table differs from dsvlib/limits.py"
    assert len(rows) == len(Limits.__dataclass_fields__)


def test_corpus_size():
    """Every case of this file is named once with case("..."): counted from the source, so the
    number does not depend on which tests ran."""
    names = re.findall(r'case\("(\w+)"\)', Path(__file__).read_text())
    assert len(names) == len(set(names)), "a case name is used twice"
    print(f"\ncorpus: {len(names)} hostile inputs")
    text = (ROOT / "README.md").read_text()
    assert re.search(rf"\b{len(names)} hostile inputs\b", text), f"README should state the corpus size ({len(names)})"
