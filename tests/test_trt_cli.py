"""`tts-build-trt` through its real entry point (cli_entry: one-line errors, exit codes), and import
hygiene: trt/ never pulls in torch, cosyvoice, exporters/ or (for --help / --dry-run) TensorRT."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backends.trt_host import probe_host
from tests.support.trt_fakes import make_fake_pack

HOST = probe_host()


def cli(*args, expect_error=False, code=None):
    proc = subprocess.run(
        [sys.executable, "-c", "from trt.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if code is not None:
        assert proc.returncode == code, proc.stderr
    elif expect_error:
        assert proc.returncode != 0, proc.stdout
    else:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def pack_dir(tmp_path):
    return make_fake_pack(tmp_path / "pack")


def test_help_works_without_tensorrt():
    out = cli("--help").stdout
    assert "--dry-run" in out and "--precision" in out and "--workspace" in out


def test_dry_run_prints_every_engine_and_builds_nothing(pack_dir):
    before = sorted(p.name for p in pack_dir.rglob("*"))
    out = cli("--pack", pack_dir, "--dry-run", "--precision", "fp16,fp32").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["PLAN", "PROFILE", "DIM", "MIN", "OPT", "MAX", "INPUTS"]
    assert any(line.split()[:6] == ["toy.fp16.any", "all_calls", "c", "1", "4", "16"] for line in lines)
    assert any(line.split()[:6] == ["toy.fp32.any", "all_calls.c_empty", "c", "0", "0", "0"] for line in lines)
    assert lines[-1].startswith("DRY RUN | 2 engine(s) planned, nothing built")
    assert sorted(p.name for p in pack_dir.rglob("*")) == before


def test_dry_run_tiny_pack(tiny_pack):
    out = cli("--pack", tiny_pack, "--dry-run", "--graphs", "estimator", "--chunk", "stream").stdout
    row = next(line.split() for line in out.splitlines() if line.startswith("flow.decoder.estimator.fp16.stream"))
    assert row[:6] == ["flow.decoder.estimator.fp16.stream", "all_calls", "frames", "2", "500", "3000"]
    assert "kept fp32: ops LayerNormalization" in out


@pytest.mark.skipif(HOST.can_run, reason="this host has TensorRT and a GPU: a real build would run")
def test_real_build_without_tensorrt_or_gpu_fails_clearly(pack_dir):
    before = {p: p.read_bytes() for p in pack_dir.rglob("*") if p.is_file()}
    err = cli("--pack", pack_dir, code=1).stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        "ERROR | tts-build-trt | building TensorRT engines is not possible on this host"
    )
    assert "pip install 'tensorrt-cu13" in err and "polygraphy" in err
    assert {p: p.read_bytes() for p in pack_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["--precision", "fp8"], 2, "Invalid value for --precision"),
        (["--chunk", "realtime"], 2, "Invalid value for --chunk"),
        (["--max-dim", "frames"], 2, "expected DIM=N"),
        (["--zero-length", "skip"], 2, "--zero-length"),
        (["--graphs", "hift"], 1, "ERROR | --graphs | pack has no graph 'hift'"),
    ],
)
def test_bad_options(pack_dir, args, code, text):
    proc = cli("--pack", pack_dir, "--dry-run", *args, code=code)
    assert text in proc.stderr


def test_missing_pack_is_one_line(tmp_path):
    err = cli("--pack", tmp_path / "nope", "--dry-run", code=1).stderr.strip()
    assert (
        err == f"ERROR | {tmp_path / 'nope'} | pack directory does not exist. Note: a directory written by tts-export"
    )


def test_dry_run_tiny_v1_pack(tiny_v1_pack):
    """CosyVoice 1 plans from its graphs' specs alone (trt/ knows no family): every graph in fp32; in fp16 the flow's
    graphs are left out, as their specs keep TensorRT fp16 off (upstream's users get NaN mel from v1's flow there)."""
    fp32 = cli("--pack", tiny_v1_pack, "--dry-run", "--precision", "fp32").stdout
    names = {"flow.encoder", "flow.decoder.estimator", "hift", "llm.text_encoder", "llm"}
    assert {line.split(".fp32.")[0] for line in fp32.splitlines() if ".fp32." in line and line.endswith(":")} == names
    fp16 = cli("--pack", tiny_v1_pack, "--dry-run", "--precision", "fp16").stdout
    assert "skipped: flow.decoder.estimator.fp16.stream: its I/O spec declares no float16 policy" in fp16
    assert "hift.fp16.stream:" in fp16 and "DRY RUN | 4 engine(s) planned" in fp16
