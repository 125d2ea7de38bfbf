"""Faults planted one at a time, as a user or a service manager would cause them: tampered packs, special-file
and unwritable outputs, malformed manifests, bad arguments, signals to real subprocesses. Each checks the exit
code, one `ERROR | subject | problem` line without a traceback, and that nothing was half-written or replaced."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from specs.pack import Pack, VerifiedFiles, write_manifest

BIN = Path(sys.executable).parent
LONG_TEXT = " ".join(["This sentence keeps the synthesizer busy for a while."] * 12)


def run(*args, env=None, timeout=300, cwd=None):
    e = {**os.environ, "TTS_VERIFY_CACHE": str(Path(cwd or ".").absolute() / ".verified.json"), **(env or {})}
    r = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, timeout=timeout, env=e, cwd=cwd)
    return r.returncode, r.stderr.decode(errors="replace")


def one_error(stderr: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("ERROR |")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


@pytest.fixture
def pack(tiny_pack, tmp_path):
    dst = tmp_path / "pack"
    shutil.copytree(tiny_pack, dst)
    return dst


def tts_run(pack, out, *extra, cwd=None, text="Hi there."):
    """tts-run; when it fails, also checks that it left nothing at or beside `out` (no WAV, no .part file)."""
    rc, err = run("tts-run", "--pack", str(pack), "--text", text, "--out", str(out), *extra, cwd=cwd)
    out = Path(out)
    if rc != 0 and out.parent.is_dir() and not out.is_char_device():
        assert not out.exists() and not (out.parent / f".{out.name}.part").exists(), err[-2000:]
    return rc, err


# ---- 1. packs that do not match their manifest never run -------------------------------------------------------
def flip_bytes(path: Path, at: int = 4000, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    at = min(at, len(data) - n)
    data[at : at + n] = bytes(b ^ 0xFF for b in data[at : at + n])
    path.write_bytes(bytes(data))


def loosen_tolerances(io_json: Path) -> None:
    spec = json.loads(io_json.read_text())
    for tol in spec["tolerances"].values():
        tol["atol"] = 3.0
    io_json.write_text(json.dumps(spec))


@pytest.mark.parametrize(
    "tamper, subject",
    [
        (lambda p: flip_bytes(p / "hift.onnx"), "hift.onnx"),
        (lambda p: loosen_tolerances(p / "hift.io.json"), "hift.io.json"),
        (lambda p: (p / "llm.vectors.npz").write_bytes(b"garbage"), "llm.vectors.npz"),
        (lambda p: (p / "data" / "flow.rand_noise.npy").write_bytes(b""), "flow.rand_noise.npy"),
        (lambda p: flip_bytes(p / "frontend" / "campplus.onnx"), "campplus.onnx"),
    ],
)
def test_tampered_pack_file_is_refused_naming_it(pack, tmp_path, tamper, subject):
    tamper(pack)
    out = tmp_path / "o.wav"
    rc, err = tts_run(pack, out, cwd=tmp_path)
    line = one_error(err)
    assert rc == 1 and subject in line and "sha256" in line, line
    assert not out.exists() and not list(tmp_path.glob(".o.wav.part"))


def test_edited_manifest_is_refused_by_its_digest(pack, tmp_path):
    m = json.loads((pack / "manifest.json").read_text())
    m["audio"]["chunk_policy"]["output_chunk_samples"] = 480  # valid per schema, but not what was exported
    (pack / "manifest.json").write_text(json.dumps(m))
    rc, err = tts_run(pack, tmp_path / "o.wav", cwd=tmp_path)
    assert rc == 1 and "manifest_sha256 does not match" in one_error(err)


def test_manifest_path_leaving_the_pack_is_refused(pack, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    shutil.copyfile(pack / "data" / "flow.rand_noise.npy", outside)
    m = json.loads((pack / "manifest.json").read_text())
    m["data"]["flow.rand_noise"]["file"] = "../elsewhere.npy"
    write_manifest(pack / "manifest.json", m)  # a consistent manifest: the path itself is the fault
    rc, err = tts_run(pack, tmp_path / "o.wav", cwd=tmp_path)
    assert rc == 1 and "points outside the pack" in one_error(err)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["audio"]["chunk_policy"].pop("token_hop_len"), "'token_hop_len' is a required property"),
        (lambda m: m["audio"]["chunk_policy"].update(output_chunk_samples=0), "output_chunk_samples"),
        (lambda m: m["audio"].update(sample_rate=16000), "audio.sample_rate is 16000 but the model's is 24000"),
        (lambda m: m["audio"]["chunk_policy"].update(crossfade={"window": "hamming", "length": 99999}), "crossfade"),
    ],
)
def test_malformed_manifest_fields_are_refused(pack, tmp_path, change, message):
    m = json.loads((pack / "manifest.json").read_text())
    change(m)
    write_manifest(pack / "manifest.json", m)
    rc, err = tts_run(pack, tmp_path / "o.wav", cwd=tmp_path)
    assert rc == 1 and message in one_error(err)


def test_no_verify_is_explicit_and_logged(pack, tmp_path):
    flip_bytes(pack / "llm.vectors.npz")  # not loaded by the runtime: runs only because verification is off
    rc, err = tts_run(pack, tmp_path / "o.wav", "--no-verify", cwd=tmp_path)
    assert rc == 0 and "--no-verify: pack files are NOT checked" in err


@pytest.mark.parametrize("corrupt", ["empty", "truncated", "garbage"])
def test_corrupt_data_with_verification_off_is_one_line(pack, tmp_path, corrupt):
    f = pack / "data" / "flow.rand_noise.npy"
    f.write_bytes({"empty": b"", "truncated": f.read_bytes()[:200], "garbage": b"\x93NUMPY garbage" * 9}[corrupt])
    rc, err = tts_run(pack, tmp_path / "o.wav", "--no-verify", cwd=tmp_path)
    assert rc == 1 and "cannot be read as .npy" in one_error(err)


def test_verdicts_are_cached_per_file_identity(pack, tmp_path):
    cache = VerifiedFiles(tmp_path / "v.json")
    p = Pack.open(pack)
    n = p.verify(cache=cache)
    assert n == len(list(p.files()))
    assert p.verify(cache=VerifiedFiles(tmp_path / "v.json")) == 0  # reload: nothing hashed again
    data = (pack / "hift.io.json").read_bytes()
    (pack / "hift.io.json").write_bytes(data)  # same bytes, new ctime: hashed again (and still fine)
    assert p.verify(cache=VerifiedFiles(tmp_path / "v.json")) == 1


# ---- 2. outputs never destroy what they replace --------------------------------------------------------------
def test_fifo_and_char_device_are_streamed_in_place(tiny_pack, tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(open(fifo, "rb").read()))
    reader.start()
    rc, err = tts_run(tiny_pack, fifo, cwd=tmp_path)
    reader.join(60)
    assert rc == 0, err
    assert fifo.is_fifo() and got[:4] == b"RIFF" and len(got) > 44  # still a FIFO: written, not replaced
    rc, err = tts_run(tiny_pack, os.devnull, cwd=tmp_path)
    assert rc == 0 and Path(os.devnull).is_char_device()


def test_symlink_is_followed_and_said(tiny_pack, tmp_path):
    real = tmp_path / "real.wav"
    real.write_bytes(b"old")
    link = tmp_path / "link.wav"
    link.symlink_to(real)
    rc, err = tts_run(tiny_pack, link, cwd=tmp_path)
    assert rc == 0 and "is a symbolic link: writing to" in err
    assert link.is_symlink() and real.read_bytes()[:4] == b"RIFF"


@pytest.mark.parametrize("option", ["--out", "--chunk-log"])
def test_directory_target_is_refused_before_synthesis(tiny_pack, tmp_path, option):
    d = tmp_path / "adir"
    d.mkdir()
    outputs = {"--out": str(tmp_path / "o.wav"), option: str(d)}
    args = ["--pack", str(tiny_pack), "--text", LONG_TEXT, *(x for kv in outputs.items() for x in kv)]
    t0 = time.time()
    rc, err = run("tts-run", *args, cwd=tmp_path)
    assert rc == 1 and f"{option} is a directory" in one_error(err)
    assert time.time() - t0 < 30 and d.is_dir() and not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize(
    "target",
    ["--out", "--chunk-log", "--report-json", "tts-export --out", "--keep-bundle"],
)
def test_unwritable_location_is_one_line(tiny_pack, tmp_path, target):
    """/proc refuses new files even to root (as a read-only mount would): each output option, one line, no work."""
    where = "/proc/cosyvoice-test"
    args = {
        "--out": ["tts-run", "--pack", tiny_pack, "--text", "Hi.", "--out", where],
        "--chunk-log": ["tts-run", "--pack", tiny_pack, "--text", "Hi.", "--out", tmp_path / "o.wav",
                        "--chunk-log", where],
        "--report-json": ["tts-validate", tiny_pack, "--report-json", where],
        "tts-export --out": ["tts-export", "--random-init", "tiny", "--out", where],
        "--keep-bundle": ["tts-export", "--random-init", "tiny", "--keep-bundle", where, "--out", tmp_path / "p"],
    }[target]  # fmt: skip
    t0 = time.time()
    rc, err = run(*map(str, args), cwd=tmp_path)
    assert rc == 1 and where in one_error(err)
    assert time.time() - t0 < 30 and [x.name for x in tmp_path.iterdir() if not x.name.startswith(".verified")] == []


def test_report_json_directory_is_refused(tiny_pack, tmp_path):
    rc, err = run("tts-validate", str(tiny_pack), "--report-json", str(tmp_path), cwd=tmp_path)
    assert rc == 1 and "--report-json is a directory" in one_error(err)


def test_export_destinations_checked_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, err = run("tts-export", "--random-init", "tiny", "--out", str(afile / "pack"), cwd=tmp_path)
    assert rc == 1 and "is not a directory" in one_error(err)
    existing = tmp_path / "existing"
    existing.mkdir()
    kept = tmp_path / "kept"
    t0 = time.time()
    rc, err = run(
        "tts-export", "--random-init", "tiny", "--keep-bundle", str(kept), "--out", str(existing), cwd=tmp_path
    )
    assert rc == 1 and "already exists" in one_error(err)
    assert not kept.exists() and time.time() - t0 < 30  # the bundle was not built first


def test_failed_export_removes_the_parents_it_created(tmp_path):
    bundle = tmp_path / "not-a-bundle"
    bundle.mkdir()
    rc, err = run("tts-export", "--model-dir", str(bundle), "--out", str(tmp_path / "a" / "b" / "pack"), cwd=tmp_path)
    assert rc == 1 and one_error(err)
    assert not (tmp_path / "a").exists()


# ---- 3. bad arguments ------------------------------------------------------------------------------------------
def test_invalid_utf8_argument_is_one_line(tiny_pack, tmp_path):
    r = subprocess.run(
        [str(BIN / "tts-run"), "--pack", str(tiny_pack), "--text", b"abc\xff\xfe", "--out", str(tmp_path / "o.wav")],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 1 and "is not valid UTF-8" in one_error(r.stderr.decode(errors="replace"))


@pytest.mark.parametrize("kind", ["txt", "npy"])
def test_token_ids_beyond_int64_are_one_line(tiny_pack, tmp_path, kind):
    f = tmp_path / f"t.{kind}"
    if kind == "txt":
        f.write_text("1 2 99999999999999999999")
    else:
        np.save(f, np.array([1, 2**64 - 1], np.uint64))
    rc, err = run(
        "tts-run", "--pack", str(tiny_pack), "--tokens", str(f), "--out", str(tmp_path / "o.wav"), cwd=tmp_path
    )
    line = one_error(err)
    assert rc == 1 and ("outside the 64-bit range" in line or "out of range" in line), line


@pytest.mark.parametrize("text", ["\x00\x00\x00", "\x01\x02\x03\x7f", "\u200b\u200b", "...!!", "😀😀", " \t\n"])
@pytest.mark.parametrize("mode", [[], ["--bistream"]])
def test_text_with_nothing_to_say_is_refused(tiny_pack, tmp_path, text, mode):
    f = tmp_path / "t.txt"  # a file: argv cannot carry NUL bytes
    f.write_text(text)
    rc, err = run(
        "tts-run",
        "--pack",
        str(tiny_pack),
        "--text-file",
        str(f),
        "--out",
        str(tmp_path / "o.wav"),
        *mode,
        cwd=tmp_path,
    )
    assert rc == 1 and "nothing to say" in one_error(err)
    assert not (tmp_path / "o.wav").exists()


# ---- 4. signals: clean up, one line, 130 / 143 ---------------------------------------------------------------
def wait_for(pred, timeout=120.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_tts_run_leaves_no_debris(tiny_pack, tmp_path, sig, code):
    out, log = tmp_path / "o.wav", tmp_path / "chunks.jsonl"
    p = subprocess.Popen(
        [
            str(BIN / "tts-run"),
            "--pack",
            str(tiny_pack),
            "--text",
            LONG_TEXT,
            "--out",
            str(out),
            "--stream",
            "--chunk-log",
            str(log),
        ],
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert wait_for(lambda: (tmp_path / ".o.wav.part").exists() and (tmp_path / ".o.wav.part").stat().st_size > 44)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code
    assert f"interrupted by {sig.name}" in one_error(err.decode())
    assert sorted(x.name for x in tmp_path.iterdir() if not x.name.startswith(".verified")) == []


def test_sigterm_during_export_leaves_no_debris(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out" / "pack"
    p = subprocess.Popen(
        [str(BIN / "tts-export"), "--random-init", "tiny", "--out", str(out)],
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert wait_for(lambda: any(tmp.iterdir()) or (tmp_path / "out").exists())
    time.sleep(2.0)  # well into building and exporting
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err.decode()[-2000:]
    assert "interrupted by SIGTERM" in one_error(err.decode())
    # ours: the random bundle's cosyvoice-random-* directory; libraries keep their own files there (ONNX Runtime
    # its .ses session id, torch its torchinductor_* cache), which a finished export leaves as well
    ours = [x.name for x in tmp.iterdir() if x.name not in (".ses",) and not x.name.startswith("torchinductor_")]
    assert ours == [] and not (tmp_path / "out").exists()


def test_a_signal_a_library_wrapped_still_exits_as_interrupted(capsys):
    """A signal that lands inside library code which wraps the exception (an extension module's import turns it into
    `ImportError: initialization failed`, which our code then reports as a ToolError) still exits 128 + signal."""
    from specs import errors

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    @errors.cli_entry
    def main():
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises Interrupted here
            time.sleep(5)
        except BaseException as e:
            raise errors.ToolError("cosyvoice.yaml", "cannot be built (ImportError: initialization failed)") from e

    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        errors._RECEIVED.clear()
        for s, h in saved.items():
            signal.signal(s, h)
    assert exit_info.value.code == 143
    assert capsys.readouterr().err.strip() == "ERROR | interrupted by SIGTERM; partial outputs removed"
