"""Bundles: our random-init yaml equals the shipped architecture; bad bundles fail early and clearly."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specs.errors import ToolError
from tests.conftest import DATA_DIR, needs_oracle, needs_shared_data

pytestmark = needs_oracle


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@needs_shared_data
def test_full_random_init_config_equals_shipped_yaml(tmp_path):
    """`--random-init full` must be the real CosyVoice2-0.5B architecture, module for module."""
    import torch

    from exporters.model.config import build_modules
    from exporters.random.config import qwen_config, render_yaml

    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "config.json").write_text(json.dumps(qwen_config("full")))
    (tmp_path / "ours.yaml").write_text(render_yaml("full"))
    with torch.device("meta"):  # shapes only: no memory for 0.6 B parameters
        ours = build_modules(tmp_path / "ours.yaml", "cosyvoice2", tmp_path / "q")
        shipped = build_modules(DATA_DIR / "cosyvoice2.yaml", "cosyvoice2", tmp_path / "q")
    for part in ("llm", "flow", "hift"):
        assert _shapes(getattr(ours, part)) == _shapes(getattr(shipped, part)), part
    assert ours.feat_extractor == shipped.feat_extractor
    assert ours.sampling == shipped.sampling == {"top_p": 0.8, "top_k": 25, "win_size": 10, "tau_r": 0.1}


def test_tiny_bundle_loads_strictly_and_records_calibration(tiny_bundle, tiny_model):
    info = json.loads((tiny_bundle / "random_init.json").read_text())
    cal = info["calibration"]
    assert 90 < cal["f0_mean_hz"] < 130 and cal["voiced_ratio"] > 0.9
    assert 0.06 < cal["wav_std"] < 0.1 and cal["wav_peak"] < 0.95 and 500 < cal["spectral_centroid_hz"] < 4000
    assert tiny_model.sample_rate == 24000 and tiny_model.feat_extractor["hop_size"] == 480


def _copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=os.link)  # hard links: cheap; files we damage are replaced
    return dst


def _replace(path: Path, data: bytes) -> None:
    path.unlink()  # break the hard link before writing
    path.write_bytes(data)


def test_missing_file_named_up_front(tiny_bundle, tmp_path):
    b = _copy_bundle(tiny_bundle, tmp_path / "b")
    (b / "hift.pt").unlink()
    (b / "campplus.onnx").unlink()
    from exporters.model.bundle import Bundle

    with pytest.raises(ToolError) as e:
        Bundle.open(b)
    assert "bundle is missing hift.pt, campplus.onnx" in str(e.value)


def test_truncated_checkpoint(tiny_bundle, tmp_path):
    b = _copy_bundle(tiny_bundle, tmp_path / "b")
    _replace(b / "flow.pt", (tiny_bundle / "flow.pt").read_bytes()[:100_000])
    from exporters.model.bundle import Bundle

    with pytest.raises(ToolError) as e:
        Bundle.open(b).build(with_llm=False)
    assert str(e.value).startswith(f"{b / 'flow.pt'} | cannot be read as a PyTorch state dict")


def test_state_dict_of_another_size(tiny_bundle, tmp_path):
    """A hift.pt from a bigger model: shapes are named, not a torch traceback."""
    import torch

    b = _copy_bundle(tiny_bundle, tmp_path / "b")
    sd = torch.load(tiny_bundle / "hift.pt", weights_only=True)
    key = "f0_predictor.classifier.weight"
    sd[key] = torch.zeros(1, 64)
    (b / "hift.pt").unlink()
    torch.save(sd, b / "hift.pt")
    from exporters.model.bundle import Bundle

    with pytest.raises(ToolError, match=rf"tensor {key} has shape \[1, 64\]"):
        Bundle.open(b).build(with_llm=False)


@needs_shared_data
def test_yaml_of_another_model(tiny_bundle, tmp_path):
    b = _copy_bundle(tiny_bundle, tmp_path / "b")
    _replace(b / "cosyvoice2.yaml", (DATA_DIR / "cosyvoice3.yaml").read_bytes())
    from exporters.model.bundle import Bundle

    with pytest.raises(ToolError) as e:
        Bundle.open(b)
    msg = str(e.value)
    assert "declares a cosyvoice3 model (llm CosyVoice3LM, flow CausalMaskedDiffWithDiT" in msg
    assert "a cosyvoice2 yaml declares llm Qwen2LM" in msg


def test_verify_official_reports_size_mismatch(tiny_bundle):
    from exporters.model.bundle import Bundle

    with pytest.raises(ToolError) as e:
        Bundle.open(tiny_bundle).verify_official()
    # hift.pt has two official revisions (sizes differ): it is judged by sha256; the others by size first.
    assert (
        "hift.pt | has sha256" in str(e.value) and "the official hift.pt has 3386cc88" in str(e.value)
    ) or " bytes. Note: the official " in str(e.value)


# ---- the same failures through the CLI, as a new user meets them ------------------------------------------
def run_cli(*args, cwd=None):
    exe = Path(sys.executable).parent
    return subprocess.run([str(exe / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.parametrize(
    "damage, expect",
    [
        ("missing_hift", "bundle is missing hift.pt"),
        ("truncated_flow", "flow.pt | cannot be read as a PyTorch state dict"),
        ("other_yaml", "cosyvoice2.yaml | declares a cosyvoice3 model"),
    ],
)
def test_cli_bad_bundle_one_line_error_and_no_pack(tiny_bundle, tmp_path, damage, expect):
    b = _copy_bundle(tiny_bundle, tmp_path / "b")
    if damage == "missing_hift":
        (b / "hift.pt").unlink()
    elif damage == "truncated_flow":
        _replace(b / "flow.pt", (tiny_bundle / "flow.pt").read_bytes()[:4096])
    elif DATA_DIR.is_dir():
        _replace(b / "cosyvoice2.yaml", (DATA_DIR / "cosyvoice3.yaml").read_bytes())
    else:
        pytest.skip(f"{DATA_DIR} not present")
    out = tmp_path / "pack"
    r = run_cli("tts-export", "--model-dir", str(b), "--out", str(out))
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR |")]
    assert len(errors) == 1 and expect in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".pack.tmp-*"))
