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
from specs.outputs import make_parents, remove_dirs
from specs.schema import read_json, validate_json

MANIFEST = "manifest.json"
DIGEST_FIELD = "manifest_sha256"


def manifest_digest(manifest: Mapping) -> str:
    """sha256 of the manifest's canonical JSON without its own digest field: the manifest checks itself."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(path: Path, manifest: dict) -> None:
    """The manifest with its digest, as JSON (the caller renames it into place)."""
    manifest[DIGEST_FIELD] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest, indent=2) + "\n")


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
        where = str(root / MANIFEST)
        self.chunk_policy = ChunkPolicy.from_manifest(manifest["audio"], where)
        config_rate = manifest["model"]["config"].get("sample_rate")
        if config_rate is not None and config_rate != self.chunk_policy.sample_rate:
            raise ToolError(
                where,
                f"audio.sample_rate is {self.chunk_policy.sample_rate} but the model's is "
                f"{config_rate} (model.config.sample_rate)",
                "a pack written by tts-export; re-export it",
            )
        for what, path, _ in self.files():
            self._inside(path, what)

    @classmethod
    def open(cls, root: str | Path) -> Pack:
        root = Path(root)
        if not root.is_dir():
            raise ToolError(root, "pack directory does not exist", "a directory written by tts-export")
        mpath = root / MANIFEST
        manifest = read_json(mpath, "manifest", "a pack directory written by tts-export")
        check_format_version(manifest, str(mpath))
        validate_json(manifest, "manifest", str(mpath))
        if manifest.get(DIGEST_FIELD) != manifest_digest(manifest):
            raise ToolError(
                mpath,
                f"its {DIGEST_FIELD} does not match its content",
                "the manifest was edited after export; re-export the pack (a pack whose files do not "
                "match its manifest never runs)",
            )
        return cls(root, manifest)

    def _inside(self, path: Path, what: str) -> None:
        """Manifest paths stay inside the pack: no absolute paths, no '..', no links out."""
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:
            raise ToolError(
                self.root / MANIFEST,
                f"{what} points outside the pack ({path})",
                "every file a manifest lists lies inside the pack directory",
            )

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
        except (OSError, ValueError, EOFError) as e:  # truncated, zero-byte, not .npy
            raise ToolError(
                path,
                f"data file cannot be read as .npy ({type(e).__name__}: {e})",
                "the file written by tts-export; re-export the pack",
            ) from None
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

    def verify(self, only: set[str] | None = None, cache: VerifiedFiles | None = None) -> int:
        """Check every file's sha256 against the manifest (optionally only for some graphs); with `cache`, a file
        whose identity (device, inode, size, mtime, ctime) matches an earlier verdict is not hashed again.
        Returns the number of files hashed."""
        hashed = 0
        for what, path, want in self.files():
            if only is not None and not any(what.startswith(f"graph {g}") for g in only):
                continue
            if not path.is_file():
                raise ToolError(path, f"{what} is missing", "every file listed in manifest.json is in the pack")
            if cache is not None and cache.known(path, want):
                continue
            got = sha256_file(path)
            hashed += 1
            if got == want and cache is not None:
                cache.remember(path, got)
            if got != want:
                raise ToolError(
                    path,
                    f"{what} has sha256 {got[:16]}…, the manifest says {want[:16]}…",
                    "the file was modified or corrupted after export; re-export the pack",
                )
        if cache is not None:
            cache.save()
        return hashed


class VerifiedFiles:
    """Verdicts of earlier hash checks, keyed by file identity, in a small JSON file outside every pack
    ($TTS_VERIFY_CACHE, default ~/.cache/cosyvoice-pack/verified.json). Any write to a file changes its ctime
    (which no user can set back), so a modified file is always hashed again."""

    def __init__(self, path: str | Path | None = None):
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cosyvoice-pack" / "verified.json"
        self.path = Path(path or os.environ.get("TTS_VERIFY_CACHE") or default)
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self._dirty = False

    @staticmethod
    def identity(path: Path) -> dict:
        st = os.stat(path)
        return {
            "dev": st.st_dev,
            "ino": st.st_ino,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
        }

    def known(self, path: Path, sha256: str) -> bool:
        entry = self.entries.get(os.path.realpath(path))
        return entry is not None and entry.get("sha256") == sha256 and entry.get("id") == self.identity(path)

    def remember(self, path: Path, sha256: str) -> None:
        self.entries[os.path.realpath(path)] = {"sha256": sha256, "id": self.identity(path)}
        self._dirty = True

    def save(self) -> None:
        """Best effort (a read-only home only costs re-hashing next time); written atomically."""
        if not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)
        except OSError:
            pass
        self._dirty = False


def check_pack_destination(dest: str | Path, overwrite: bool = False) -> Path:
    """Where a pack may be written: a new path, or (with overwrite) an existing pack; never through a link, never
    over anything else; the nearest existing parent must be writable. Called before any work."""
    dest = Path(dest).absolute()
    if dest.is_symlink():
        raise ToolError(dest, "is a symbolic link; refusing to write a pack through it", "the pack's real path")
    if dest.exists() and not overwrite:
        raise ToolError(dest, "already exists", "choose a new --out directory or pass --overwrite")
    if dest.exists() and not (dest.is_dir() and (dest / MANIFEST).is_file()):
        raise ToolError(dest, "exists and is not a pack; refusing to replace it", "choose a new --out directory")
    check_new_directory_parent(dest, "--out")
    return dest


def check_new_directory_parent(path: Path, what: str) -> None:
    """The nearest existing parent of `path` is a directory we can create entries in. Probed by creating (and
    removing) an empty directory there: permission bits say nothing to root, nor about read-only mounts or /proc."""
    path = path.absolute()
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ToolError(parent, f"is not a directory (in the path of {what})", "a path below a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tts-probe-", dir=parent))
    except OSError as e:
        raise ToolError(
            path, f"cannot be created: {parent} is not writable ({e.strerror})", f"a writable location for {what}"
        ) from None


# ---- writing -----------------------------------------------------------------------------------------------
class PackWriter:
    """Collects a pack in a temporary sibling directory; `commit()` renames it into place.

    Use as a context manager: on any exception the temporary directory is removed and the destination
    is untouched.
    """

    def __init__(self, dest: str | Path, overwrite: bool = False):
        self.dest = check_pack_destination(dest, overwrite)
        self.overwrite = overwrite
        self.created_dirs = make_parents(self.dest.parent)  # removed again if the export fails
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.tmp-", dir=self.dest.parent))
        except OSError as e:
            remove_dirs(self.created_dirs)
            raise ToolError(
                self.dest.parent, f"cannot write the pack here ({e.strerror})", "a writable location for --out"
            ) from None
        self.manifest: dict = {"format_version": FORMAT_VERSION, "graphs": {}, "data": {}}
        self._done = False

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            remove_dirs(self.created_dirs)

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
        self.manifest[DIGEST_FIELD] = manifest_digest(self.manifest)
        validate_json(self.manifest, "manifest", "manifest being written")
        write_manifest(self.tmp / MANIFEST, self.manifest)
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
