"""Artifact pack layout: reading (with hash checks) and atomic writing.

    PACK/
      manifest.json              format version, model family, source hashes, graphs, data, audio contract
      NAME.onnx [+ NAME.onnx.data] one graph per component (external data for graphs over 2 GB)
      NAME.io.json               I/O spec (specs/schema/io_spec.schema.json)
      NAME.vectors.npz           test vectors: "CASE/in/TENSOR" and "CASE/out/TENSOR"
      data/*.npy                 tensors the runtime needs that are not graphs (embedding tables, noise)
      frontend/                  the bundle's campplus.onnx, speech_tokenizer_v2.onnx and tokenizer files
      trt/*.plan + *.json        TensorRT plans with their metadata (tts-build-trt)

A pack is written into a temporary sibling directory and renamed into place at the end, so a failed
export leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specs import FORMAT_VERSION
from specs.chunk_policy import ChunkPolicy
from specs.errors import ToolError
from specs.io_spec import GraphSpec
from specs.schema import read_json, validate_json

MANIFEST = "manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: str | Path) -> dict:
    path = Path(path)
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


# ---- test vectors ---------------------------------------------------------------------------------------
def vector_key(case: str, kind: str, tensor: str) -> str:
    assert kind in ("in", "out")
    return f"{case}/{kind}/{tensor}"


def save_vectors(
    path: str | Path, cases: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]
) -> None:
    """cases: case name -> (inputs, expected outputs)."""
    arrays: dict[str, Any] = {}
    for case, (ins, outs) in cases.items():
        for k, v in ins.items():
            arrays[vector_key(case, "in", k)] = np.asarray(v)
        for k, v in outs.items():
            arrays[vector_key(case, "out", k)] = np.asarray(v)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_vectors(path: str | Path) -> dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ToolError(path, "test vector file is missing") from None
    except Exception as e:  # zipfile.BadZipFile, ValueError, ...
        raise ToolError(path, f"cannot be read as an .npz file ({type(e).__name__}: {e})") from None
    cases: dict[str, tuple[dict, dict]] = {}
    with npz:
        for key in npz.files:
            parts = key.split("/", 2)
            if len(parts) != 3 or parts[1] not in ("in", "out"):
                raise ToolError(path, f"unexpected key {key!r}", "keys are CASE/in/TENSOR or CASE/out/TENSOR")
            case, kind, tensor = parts
            ins, outs = cases.setdefault(case, ({}, {}))
            (ins if kind == "in" else outs)[tensor] = npz[key]
    return cases


def check_format_version(manifest, source: str) -> None:
    """Packs of another format are refused before anything else is read from them."""
    got = manifest.get("format_version") if isinstance(manifest, dict) else None
    if got != FORMAT_VERSION:
        raise ToolError(
            source,
            f"pack format_version is {got!r}, this tool reads format {FORMAT_VERSION}",
            "re-export the pack with this version of tts-export (format 2 added dim roles, TensorRT "
            "profiles and precision policies to the I/O specs and typed the chunk policy)",
        )


# ---- reading -----------------------------------------------------------------------------------------------
@dataclass
class GraphEntry:
    name: str
    record: dict
    pack: Pack

    @property
    def onnx_path(self) -> Path:
        return self.pack.root / self.record["file"]

    @property
    def spec_path(self) -> Path:
        return self.pack.root / self.record["io_spec"]

    @property
    def vectors_path(self) -> Path:
        return self.pack.root / self.record["vectors"]

    @property
    def precision(self) -> str:
        return self.record["precision"]

    def spec(self) -> GraphSpec:
        return GraphSpec.load(self.spec_path)

    def vectors(self):
        return load_vectors(self.vectors_path)


class Pack:
    """A pack on disk. `Pack.open` validates the manifest (format version, schema, the typed chunk policy);
    `verify` checks hashes."""

    def __init__(self, root: Path, manifest: dict):
        self.root = root
        self.manifest = manifest
        self.chunk_policy = ChunkPolicy.from_manifest(manifest["audio"], str(root / MANIFEST))

    @classmethod
    def open(cls, root: str | Path) -> Pack:
        root = Path(root)
        if not root.is_dir():
            raise ToolError(root, "pack directory does not exist", "a directory written by tts-export")
        mpath = root / MANIFEST
        manifest = read_json(mpath, "manifest", "a pack directory written by tts-export")
        check_format_version(manifest, str(mpath))
        validate_json(manifest, "manifest", str(mpath))
        return cls(root, manifest)

    @property
    def family(self) -> str:
        return self.manifest["model"]["family"]

    @property
    def audio(self) -> dict:
        return self.manifest["audio"]

    @property
    def config(self) -> dict:
        return self.manifest["model"]["config"]

    def graph_names(self) -> list[str]:
        return list(self.manifest["graphs"])

    def has_graph(self, name: str) -> bool:
        return name in self.manifest["graphs"]

    def graph(self, name: str) -> GraphEntry:
        try:
            return GraphEntry(name, self.manifest["graphs"][name], self)
        except KeyError:
            raise ToolError(
                self.root / MANIFEST, f"pack has no graph {name!r}", f"graphs in this pack: {self.graph_names()}"
            ) from None

    def data(self, name: str) -> np.ndarray:
        rec = self.manifest.get("data", {}).get(name)
        if rec is None:
            raise ToolError(
                self.root / MANIFEST,
                f"pack has no data tensor {name!r}",
                f"data in this pack: {sorted(self.manifest.get('data', {}))}",
            )
        path = self.root / rec["file"]
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise ToolError(path, "data file listed in the manifest is missing") from None
        if list(arr.shape) != rec["shape"] or str(arr.dtype) != rec["dtype"]:
            raise ToolError(
                path,
                f"has shape {list(arr.shape)} dtype {arr.dtype}",
                f"manifest says shape {rec['shape']} dtype {rec['dtype']}",
            )
        return arr

    def files(self) -> Iterator[tuple[str, Path, str]]:
        """(what, path, expected sha256) for every file the manifest hashes."""
        for name, g in self.manifest["graphs"].items():
            yield f"graph {name}", self.root / g["file"], g["sha256"]
            for ext in g.get("external_data", []):
                yield f"graph {name} external data", self.root / ext["file"], ext["sha256"]
            yield f"graph {name} io spec", self.root / g["io_spec"], g["io_spec_sha256"]
            yield f"graph {name} vectors", self.root / g["vectors"], g["vectors_sha256"]
        for name, d in self.manifest.get("data", {}).items():
            yield f"data {name}", self.root / d["file"], d["sha256"]
        for name, f in self.manifest.get("frontend", {}).items():
            yield f"frontend {name}", self.root / f["file"], f["sha256"]
        for name, p in self.manifest.get("plans", {}).items():
            yield f"plan {name}", self.root / p["file"], p["sha256"]
            yield f"plan {name} metadata", self.root / p["meta"], p["meta_sha256"]

    def verify(self, only: set[str] | None = None) -> None:
        """Check every file's sha256 against the manifest (optionally only for some graphs)."""
        for what, path, want in self.files():
            if only is not None and not any(what.startswith(f"graph {g}") for g in only):
                continue
            if not path.exists():
                raise ToolError(path, f"{what} is missing", "every file listed in manifest.json is in the pack")
            got = sha256_file(path)
            if got != want:
                raise ToolError(
                    path,
                    f"{what} has sha256 {got[:16]}…, the manifest says {want[:16]}…",
                    "the file was modified or corrupted after export; re-export the pack",
                )


# ---- writing -----------------------------------------------------------------------------------------------
class PackWriter:
    """Collects a pack in a temporary sibling directory; `commit()` renames it into place.

    Use as a context manager: on any exception the temporary directory is removed and the destination
    is untouched.
    """

    def __init__(self, dest: str | Path, overwrite: bool = False):
        self.dest = Path(dest).absolute()
        if self.dest.exists() and not overwrite:
            raise ToolError(self.dest, "already exists", "choose a new --out directory or pass --overwrite")
        if self.dest.exists() and not (self.dest / MANIFEST).exists():
            raise ToolError(
                self.dest, "exists and is not a pack; refusing to replace it", "choose a new --out directory"
            )
        self.overwrite = overwrite
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.tmp-", dir=self.dest.parent))
        self.manifest: dict = {"format_version": FORMAT_VERSION, "graphs": {}, "data": {}}
        self._done = False

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, rel: str) -> Path:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_data(self, name: str, array: np.ndarray, doc: str) -> None:
        rel = f"data/{name}.npy"
        array = np.ascontiguousarray(array)
        np.save(self.path(rel), array, allow_pickle=False)
        self.manifest["data"][name] = {
            "file": rel,
            "sha256": sha256_file(self.tmp / rel),
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "doc": doc,
        }

    def add_graph(
        self,
        name: str,
        spec: GraphSpec,
        onnx_file: str,
        vectors: Mapping,
        opset: int,
        external_data: Sequence[str] = (),
        extra: Mapping | None = None,
    ) -> None:
        """Register a graph whose ONNX file (and external data) is already under the temp dir."""
        spec_rel, vec_rel = f"{name}.io.json", f"{name}.vectors.npz"
        self.path(spec_rel).write_text(spec.to_json())
        save_vectors(self.path(vec_rel), vectors)
        rec = {
            "file": onnx_file,
            **file_record(self.tmp / onnx_file),
            "external_data": [{"file": f, **file_record(self.tmp / f)} for f in external_data],
            "io_spec": spec_rel,
            "io_spec_sha256": sha256_file(self.tmp / spec_rel),
            "vectors": vec_rel,
            "vectors_sha256": sha256_file(self.tmp / vec_rel),
            "opset": int(opset),
            "precision": spec.precision,
        }
        if extra:
            rec.update(extra)
        self.manifest["graphs"][name] = rec

    def commit(self, manifest_fields: Mapping) -> Path:
        self.manifest.update(manifest_fields)
        validate_json(self.manifest, "manifest", "manifest being written")
        (self.tmp / MANIFEST).write_text(json.dumps(self.manifest, indent=2) + "\n")
        os.chmod(self.tmp, 0o755)
        if self.dest.exists():
            old = self.dest.with_name(f".{self.dest.name}.old-{os.getpid()}")
            os.rename(self.dest, old)
            os.rename(self.tmp, self.dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.dest)
        self._done = True
        return self.dest
