"""The architecture's import rules, read from the source (every import statement, lazy ones inside functions
included), and the absence of import cycles between our modules.

    specs  <-  backends  <-  {runtime, trt}  <-  conformance (tts-validate)
    exporters use specs and backends only; nothing imports exporters, conformance or the tests.

runtime/ and trt/ never load torch or the upstream package (the runtime installs with numpy + onnxruntime + a
tokenizer library); specs/ never loads an inference engine; trt/ loads TensorRT, Polygraphy and onnx only when
it builds or runs a plan, so `--help` and `--dry-run` work without them (checked by importing every module).
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

OURS = ("specs", "backends", "runtime", "trt", "conformance", "exporters", "serving")
UPSTREAM = ("torch", "torchaudio", "cosyvoice", "matcha", "transformers", "hyperpyyaml")
ENGINES = ("onnxruntime", "tensorrt", "polygraphy", "onnx", "onnxsim")
# package -> packages it may never import, lazily or not
BANNED = {
    "specs": ("backends", "runtime", "trt", "conformance", "exporters") + UPSTREAM + ENGINES,
    "backends": ("runtime", "trt", "conformance", "exporters") + UPSTREAM,
    "runtime": ("trt", "conformance", "exporters") + UPSTREAM,
    "trt": ("runtime", "conformance", "exporters") + UPSTREAM,
    "conformance": ("exporters",) + UPSTREAM,
    "exporters": ("runtime", "trt", "conformance"),
    "serving": ("trt", "conformance", "exporters") + UPSTREAM,  # servers sit on the runtime, like tts-run
}
LAZY_IN_TRT = ("tensorrt", "polygraphy", "onnx")


def module_names(package: str) -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}."))


def module_file(name: str):
    path = REPO / name.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(name: str) -> set[str]:
    """Every module named by an import statement anywhere in the module (absolute imports only: we use no
    relative ones; a test below keeps it so)."""
    tree = ast.parse(module_file(name).read_text(), str(module_file(name)))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import"
            out.add(node.module or "")
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


ALL = [m for p in OURS for m in [p, *module_names(p)]]


@pytest.mark.parametrize("package", list(BANNED))
def test_package_imports_only_what_its_layer_may(package):
    mods = [package, *module_names(package)]
    assert len(mods) >= 3
    bad = [f"{m} imports {i}" for m in mods for i in sorted(imports_of(m)) if i.split(".")[0] in BANNED[package]]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_our_modules():
    known = set(ALL)
    graph = {m: {i for i in imports_of(m) if i in known and i != m} for m in ALL}
    # a package's __init__ is not an edge source for its own submodules' imports of it
    cycles, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in ALL:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_reader_sees_lazy_imports():
    """The AST reader is not fooled by an import inside a function (what the old runtime check missed)."""
    assert "trt.validate" in imports_of("conformance.validate") or any(
        i.startswith("trt.validate") for i in imports_of("conformance.validate")
    )
    assert any(i.startswith("backends.trt_plan") for i in imports_of("runtime.engine"))


@pytest.mark.parametrize(
    "package, banned",
    [
        ("runtime", UPSTREAM + ("exporters",)),
        ("trt", UPSTREAM + ("exporters",) + LAZY_IN_TRT),
        ("backends", UPSTREAM + LAZY_IN_TRT + ("onnxruntime",)),
    ],
)
def test_importing_every_module_loads_no_banned_package(package, banned):
    mods = module_names(package)
    code = (
        f"import importlib, sys\nfor m in {mods!r}: importlib.import_module(m)\n"
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & {set(banned)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"{package}/ imports {out.stdout.strip()}"
