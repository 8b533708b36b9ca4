"""dsvlib never imports a UI toolkit: every module of the library, imported in a fresh process,
leaves streamlit and plotly out of sys.modules."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

UI_MODULES = ("streamlit", "plotly")

_PROBE = r"""
import importlib, json, pkgutil, sys
import dsvlib
names = ["dsvlib"]
for info in pkgutil.walk_packages(dsvlib.__path__, "dsvlib."):
    if info.name.rsplit(".", 1)[-1] != "__main__":  # importing __main__ would run the CLI
        names.append(info.name)
for name in names:
    importlib.import_module(name)
ui = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print(json.dumps({"imported": names, "ui": ui}))
"""


def _library_modules() -> set[str]:
    pkg = ROOT / "dsvlib"
    return {"dsvlib." + ".".join(p.relative_to(pkg).with_suffix("").parts)
            for p in pkg.rglob("*.py") if p.stem not in ("__init__", "__main__")}


def test_dsvlib_imports_no_ui_toolkit():
    out = subprocess.run([sys.executable, "-c", _PROBE % (UI_MODULES,)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"importing dsvlib failed:\n{out.stderr}"
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ui"] == [], f"dsvlib pulled in UI modules: {report['ui']}"
    # the probe really imported every module on disk (synthesize, kkt, data, io, train, cli, ...)
    missing = _library_modules() - set(report["imported"])
    assert not missing, f"not imported by the probe: {sorted(missing)}"
    for core in ("dsvlib.synthesize", "dsvlib.kkt", "dsvlib.data", "dsvlib.io", "dsvlib.train"):
        assert core in report["imported"]


def test_probe_would_notice_a_ui_import():
    """Control: the same probe does report streamlit when something imports it."""
    out = subprocess.run([sys.executable, "-c", "import streamlit\n" + _PROBE % (UI_MODULES,)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "streamlit" in json.loads(out.stdout.strip().splitlines()[-1])["ui"]
