"""Pack writing is atomic; reading checks the schema and every file's hash."""

import json

import numpy as np
import pytest

from specs.errors import ToolError
from specs.pack import Pack, PackWriter, load_vectors, save_vectors, write_manifest
from tests.support.specs import make_spec
from tests.support.trt_fakes import CHUNK_POLICY

MANIFEST = {
    "tool": {"name": "t", "version": "0"},
    "model": {"family": "cosyvoice2", "source": {"files": {}}, "config": {}},
    "audio": {"sample_rate": 24000, "encoding": "pcm_s16le", "channels": 1, "chunk_policy": dict(CHUNK_POLICY)},
}


def write_toy_pack(dest):
    with PackWriter(dest) as w:
        w.path("toy.onnx").write_bytes(b"not really onnx")
        vectors = {
            "first_chunk": (
                {"x": np.ones((1, 4, 2), np.float32), "cache": np.zeros((1, 0), np.float32)},
                {"y": np.arange(8, dtype=np.float32)[None]},
            )
        }
        w.add_graph("toy", make_spec(), "toy.onnx", vectors, opset=18)
        w.add_data("table", np.arange(6, dtype=np.float32).reshape(2, 3), "a lookup table")
        return w.commit(MANIFEST)


def test_pack_round_trip_and_hashes(tmp_path):
    root = write_toy_pack(tmp_path / "pack")
    pack = Pack.open(root)
    pack.verify()
    assert pack.graph_names() == ["toy"]
    assert pack.graph("toy").spec() == make_spec()
    ins, outs = pack.graph("toy").vectors()["first_chunk"]
    assert ins["cache"].shape == (1, 0) and outs["y"].shape == (1, 8)
    assert pack.data("table").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert not list(tmp_path.glob(".pack.tmp-*"))


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with PackWriter(tmp_path / "pack") as w:
            w.path("toy.onnx").write_bytes(b"x")
            raise RuntimeError("export failed half-way")
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_is_refused_unless_overwrite(tmp_path):
    root = write_toy_pack(tmp_path / "pack")
    with pytest.raises(ToolError, match="already exists"):
        PackWriter(root)
    (tmp_path / "notapack").mkdir()
    with pytest.raises(ToolError, match="is not a pack"):
        PackWriter(tmp_path / "notapack", overwrite=True)


@pytest.mark.parametrize("target", ["toy.onnx", "toy.io.json", "toy.vectors.npz", "data/table.npy"])
def test_tampered_file_is_detected(tmp_path, target):
    root = write_toy_pack(tmp_path / "pack")
    with open(root / target, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ToolError, match="modified or corrupted"):
        Pack.open(root).verify()


def test_invalid_manifest_names_field(tmp_path):
    root = write_toy_pack(tmp_path / "pack")
    m = json.loads((root / "manifest.json").read_text())
    m["audio"]["encoding"] = "float32"
    write_manifest(root / "manifest.json", m)
    with pytest.raises(ToolError, match="field audio/encoding"):
        Pack.open(root)


def test_vectors_keys_and_zero_length_arrays(tmp_path):
    save_vectors(
        tmp_path / "v.npz",
        {"c": ({"past_key_values.0.key": np.zeros((1, 2, 0, 4), np.float32)}, {"logits": np.ones(3, np.float32)})},
    )
    ((ins, outs),) = load_vectors(tmp_path / "v.npz").values()
    assert ins["past_key_values.0.key"].shape == (1, 2, 0, 4) and outs["logits"].sum() == 3


def test_pack_of_an_older_format_is_refused_with_re_export(tmp_path):
    root = write_toy_pack(tmp_path / "pack")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["format_version"] = 1
    write_manifest(root / "manifest.json", manifest)
    with pytest.raises(ToolError, match="format_version is 1, this tool reads format 2.*re-export"):
        Pack.open(root)


def test_io_spec_of_an_older_format_is_refused_with_re_export():
    from specs.io_spec import GraphSpec

    d = make_spec().to_dict()
    d["format_version"] = 1
    with pytest.raises(ToolError, match="format_version is 1.*re-export"):
        GraphSpec.from_dict(d, "toy.io.json")
