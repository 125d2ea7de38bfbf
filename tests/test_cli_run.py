"""`tts-run` and `tts-validate` as a new user meets them: outputs, stats line, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from specs.pack import write_manifest

BIN = Path(sys.executable).parent


def cli(*args, stdin=None, timeout=600):
    r = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], capture_output=True, timeout=timeout, input=stdin)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def one_error(stderr: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("ERROR |")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def test_run_writes_24k_mono_pcm16_and_reports(tiny_pack, tmp_path):
    out = tmp_path / "a.wav"
    rc, _, err = cli(
        "tts-run",
        "--pack",
        tiny_pack,
        "--text",
        "Hi there.",
        "--out",
        out,
        "--stream",
        "--chunk-log",
        tmp_path / "chunks.jsonl",
    )
    assert rc == 0, err
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (24000, 1, "PCM_16", "WAV")
    assert "streaming schedule: token hop 25" in err  # logged at start
    assert "TTFA" in err and "RTF" in err and " chunks " in err
    metas = [json.loads(line) for line in (tmp_path / "chunks.jsonl").read_text().splitlines()]
    assert sum(m["n_samples"] for m in metas) == info.frames and metas[-1]["final"]


def test_raw_pcm_on_stdout_equals_the_wav(tiny_pack, tmp_path):
    rc, raw, err = cli("tts-run", "--pack", tiny_pack, "--text", "Hi there.", "--out", "-", "--stream")
    assert rc == 0, err
    rc, _, err = cli("tts-run", "--pack", tiny_pack, "--text", "Hi there.", "--out", tmp_path / "b.wav", "--stream")
    wav, _ = sf.read(str(tmp_path / "b.wav"), dtype="int16")
    assert np.frombuffer(raw, "<i2").tobytes() == wav.tobytes()


def test_tokens_file_runs_without_text(tiny_pack, tmp_path):
    (tmp_path / "t.txt").write_text(" ".join(str(i * 91 % 6561) for i in range(40)))
    rc, _, err = cli("tts-run", "--pack", tiny_pack, "--tokens", tmp_path / "t.txt", "--out", tmp_path / "t.wav")
    assert rc == 0, err
    assert sf.info(str(tmp_path / "t.wav")).frames == 40 * 2 * 480


@pytest.mark.parametrize(
    "args, expect",
    [
        (["tts-run", "--pack", "P", "--out", "o.wav"], "give exactly one of --text"),
        (["tts-run", "--pack", "P", "--out", "o.wav", "--text", "a", "--tokens", "t.txt"], "give exactly one of"),
        (
            ["tts-run", "--pack", "P", "--out", "o.wav", "--text", "a", "--prompt-text", "b"],
            "given without --prompt-wav",
        ),
        (
            ["tts-run", "--pack", "P", "--out", "o.wav", "--text", "a", "--device", "tpu"],
            "'tpu' (choose from cpu, cuda)",
        ),
        (["tts-run", "--pack", "P", "--out", "o.wav", "--text", "a", "--trt", "int4"], "'int4' (choose from auto"),
        (["tts-run", "--pack", "P", "--out", "o.wav", "--text", "a", "--max-chars", "0"], "--max-chars"),
        (["tts-run", "--pack", "P", "--out", "o.wav", "--text", "a", "--threads", "-1"], "--threads"),
        (["tts-export", "--out", "o"], "give exactly one of --model-dir DIR"),
        (["tts-export", "--out", "o", "--model-dir", "m", "--random-init", "tiny"], "give exactly one of --model-dir"),
        (["tts-export", "--out", "o", "--model-dir", "m", "--keep-bundle", "k"], "--keep-bundle needs --random-init"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, expect):
    """Usage errors (options that cannot go together, values outside their choices) exit 2, as typer does, before
    any work; nothing is written."""
    r = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert expect in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "case, expect",
    [
        ("empty_text", "text | has nothing to say"),
        ("long_text", "text | is 100000 characters"),
        ("bad_utf8", "is not valid UTF-8 (byte 3: 0xff)"),
        ("stereo_8bit", "8-bit"),
        ("short_prompt", "too short"),
        ("truncated_prompt", "truncated"),
        ("missing_prompt", "prompt WAV does not exist"),
        ("token_out_of_range", "out of range, e.g. 9999"),
    ],
)
def test_bad_input_one_line_error(tiny_pack, tmp_path, case, expect):
    out = tmp_path / "o.wav"
    args = ["tts-run", "--pack", tiny_pack, "--out", out]
    if case == "empty_text":
        args += ["--text", "  "]
    elif case == "long_text":
        args += ["--text", "a" * 100_000]
    elif case == "bad_utf8":
        (tmp_path / "t.txt").write_bytes(b"abc\xff\xfe")
        args += ["--text-file", tmp_path / "t.txt"]
    elif case == "token_out_of_range":
        (tmp_path / "t.txt").write_text("1 2 9999")
        args += ["--tokens", tmp_path / "t.txt"]
    else:
        wav = tmp_path / "p.wav"
        if case == "stereo_8bit":
            sf.write(str(wav), np.zeros((24000, 2)), 24000, subtype="PCM_U8")
        elif case == "short_prompt":
            sf.write(str(wav), np.zeros(2400), 24000, subtype="PCM_16")
        elif case == "truncated_prompt":
            sf.write(str(wav), np.random.default_rng(0).uniform(-0.5, 0.5, 48000), 24000, subtype="PCM_16")
            wav.write_bytes(wav.read_bytes()[:30000])
        args += ["--text", "Hello.", "--prompt-wav", wav, "--prompt-text", "hello"]
    rc, _, err = cli(*args)
    assert rc == 1
    assert expect in one_error(err)
    assert not out.exists() and not list(tmp_path.glob(".o.wav.part"))


def test_pack_missing_a_graph(tiny_pack, tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(tiny_pack, pack)
    m = json.loads((pack / "manifest.json").read_text())
    del m["graphs"]["hift"]
    write_manifest(pack / "manifest.json", m)
    rc, _, err = cli("tts-run", "--pack", pack, "--text", "Hello.", "--out", tmp_path / "o.wav")
    assert rc == 1 and "pack has no graph hift" in one_error(err)


def test_validate_passes_and_catches_a_tampered_graph(tiny_pack, tmp_path):
    rc, out, err = cli("tts-validate", tiny_pack)
    text = out.decode()
    assert rc == 0, text + err
    assert text.rstrip().splitlines()[-1].startswith("PASSED |")
    assert "max_abs=" in text
    pack = tmp_path / "pack"
    shutil.copytree(tiny_pack, pack)
    with open(pack / "hift.onnx", "r+b") as f:
        f.seek(2000)
        f.write(b"\x00\x01\x02\x03")
    rc, _, err = cli("tts-validate", pack)
    assert rc == 1 and "graph hift has sha256" in one_error(err)


def test_realtime_playout_and_a_tuned_chunk_policy(tiny_pack, tmp_path):
    """--realtime --chunk-policy: same PCM as the same tuned policy unpaced, the policy first in the chunk log and the
    playout report last; bad policy files are one line, exit 1; --realtime with --bistream is a usage error."""
    policy = tmp_path / "p.json"
    policy.write_text('{"token_hop_len": 10, "token_max_hop_len": 50}')
    base = ["tts-run", "--pack", tiny_pack, "--text", "Paced and tuned.", "--stream", "--chunk-policy", policy]
    rc, paced, err = cli(*base, "--realtime", "--out", "-", "--chunk-log", tmp_path / "log.jsonl")
    assert rc == 0 and "paced playout:" in err and "chunk policy tuned by" in err, err
    rc, plain, err = cli(*base, "--out", "-")
    assert rc == 0 and paced == plain and len(plain) > 0
    lines = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[0]["chunk_policy"]["token_hop_len"] == 10 and lines[0]["tuned"] == {
        "token_hop_len": 10,
        "token_max_hop_len": 50,
    }
    assert lines[-1]["playout"]["chunks"] == len(lines) - 2 and lines[-1]["playout"]["underruns"] >= 0
    assert sum(m["n_samples"] for m in lines[1:-1]) * 2 == len(plain)
    for text, expect in (
        ("{not json", "is not JSON"),
        ("[1]", "holds a JSON list"),
        ('{"token_hop_len": "10"}', "token_hop_len must be integers"),
        ('{"source_cache_len": 10}', "sets source_cache_len, which belong to the pack's graphs"),
    ):
        policy.write_text(text)
        rc, _, err = cli(*base, "--out", tmp_path / "x.wav")
        assert rc == 1 and expect in one_error(err), err
        assert not (tmp_path / "x.wav").exists()
    rc, _, err = cli("tts-run", "--pack", tiny_pack, "--text", "Hi.", "--realtime", "--bistream", "--out", "-")
    assert rc == 2 and "not with --bistream" in err
