"""The Triton model repository written from a pack (serving/triton/), against the pack's own I/O specs and against
`tts-run` itself.

Static: every config.pbtxt parses with tritonclient's model_config_pb2 (a strict parser: a typo is rejected);
every tensor that carries a graph tensor has that tensor's dtype, rank and dims from NAME.io.json (named axes as
-1, fixed ones equal); the orchestrator keeps upstream's I/O names and records the manifest's chunk policy; two
generations give the same bytes; generation refuses other families, a worst case beyond the graphs' ranges and
bad options with one-line errors; the models refuse a pack that changed since generation.
Live (the real tritonserver 2.51 of PyPI nvidia-pytriton, Python backend, CPU, 127.0.0.1): 3 concurrent gRPC
streams, then sequential repeats, each equal to `tts-run --stream` (PCM bytes, chunk offsets and sizes, one final
flag); HTTP generate_stream (SSE) gives the same chunks; a cancelled stream and bad input leave the server ready.

Needs the Triton test venv (bash ci/triton_env.sh, or $TTS_TRITON_VENV); skips with the reason without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from serving.triton.repo import MARKER, write_triton_repo
from serving.triton.server import TritonInstall, TritonServer
from specs.errors import ToolError
from specs.io_spec import GraphSpec
from specs.pack import Pack, write_manifest
from tests.conftest import REPO

pytestmark = [pytest.mark.serving, pytest.mark.oracle]  # oracle: the tiny pack is exported from upstream modules

MODEL = "cosyvoice2"
UPSTREAM_INPUTS = {"target_text", "reference_wav", "reference_wav_len", "reference_text"}
PROMPT_TEXT = "Some prompt words."
# (id, text, seed, prompt?, transcript): a plain voice, a zero-shot prompt, a cross-lingual prompt (no transcript)
REQUESTS = [
    ("plain", "Hello world.", 1, False, None),
    ("zero_shot", "A second voice, zero shot.", 2**40 + 3, True, PROMPT_TEXT),
    ("cross", "Third, cross lingual.", 3, True, None),
]
CANCEL_TEXT = "This one is cancelled after its first chunk, it is a longer sentence than the others."
CLIENT_TIMEOUT_S = 240  # the whole client job; each wait inside it is bounded by 60 s


def triton_install() -> TritonInstall:
    try:
        return TritonInstall.find()
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        pytest.skip(f"Triton test venv unavailable ({e}); make it with: bash ci/triton_env.sh")


@pytest.fixture(scope="module")
def install() -> TritonInstall:
    inst = triton_install()
    probe = subprocess.run([str(inst.binary), "--help"], capture_output=True, env=inst.env(), timeout=30)
    if b"Usage: tritonserver" not in probe.stdout + probe.stderr:  # the binary itself cannot run on this host
        pytest.skip(f"the bundled tritonserver does not run here: {(probe.stdout + probe.stderr)[-300:]!r}")
    return inst


@pytest.fixture(scope="module")
def repo(tiny_pack, tmp_path_factory) -> Path:
    return write_triton_repo(tiny_pack, tmp_path_factory.mktemp("triton") / "repo")


# ---- static ---------------------------------------------------------------------------------------------------
PARSE = """
import json, sys
from pathlib import Path
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
out = {}
for p in sorted(Path(sys.argv[1]).glob("*/config.pbtxt")):
    cfg = text_format.Parse(p.read_text(), model_config_pb2.ModelConfig())
    out[p.parent.name] = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
try:
    text_format.Parse('name: "x"\\nbackend: "python"\\nmax_batch_sise: 0\\n', model_config_pb2.ModelConfig())
    out["_typo_rejected"] = False
except text_format.ParseError:
    out["_typo_rejected"] = True
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def configs(repo) -> dict:
    """Every config.pbtxt parsed by tritonclient's model_config_pb2 (in the Triton venv), as dicts."""
    inst = triton_install()
    r = subprocess.run([str(inst.python), "-c", PARSE, str(repo)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def dims(t: dict) -> list[int]:
    return [int(d) for d in t.get("dims", [])]


def test_configs_parse_and_match_the_pack_io_specs(configs, repo, tiny_pack):
    assert configs.pop("_typo_rejected") is True  # the parser is strict: an unknown field fails
    pack = Pack.open(tiny_pack)
    assert set(configs) == {MODEL, "token2wav", "speaker_embedding", "speech_tokenizer", "llm"}
    checked = 0
    for name, cfg in configs.items():
        assert cfg["name"] == name and cfg["backend"] == "python"
        params = {k: v.get("string_value", "") for k, v in cfg["parameters"].items()}
        assert params["pack_manifest_sha256"] == pack.manifest["manifest_sha256"]
        assert Path(params["repo_path"]).resolve() == REPO
        io_map = json.loads(params.get("io_map", "{}"))
        for t in cfg["input"] + cfg["output"]:
            if t["name"] not in io_map:
                continue
            graph, tensor = io_map[t["name"]].split(":")
            spec = GraphSpec.load(pack.graph(graph).spec_path)
            src = next(x for x in spec.inputs + spec.outputs if x.name == tensor)
            assert t["data_type"] == "TYPE_" + {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}[src.dtype]
            assert dims(t) == [-1 if isinstance(d, str) else d for d in src.shape], (name, t["name"], src.shape)
            checked += 1
    assert checked >= 15  # token2wav's caches and prompt, the frontend outputs, the LLM's prompt tokens
    orch = configs[MODEL]
    assert orch["model_transaction_policy"]["decoupled"] is True
    inputs = {t["name"]: t for t in orch["input"]}
    assert UPSTREAM_INPUTS | {"seed"} == set(inputs)
    assert [n for n, t in inputs.items() if not t.get("optional")] == ["target_text"]
    assert {t["name"] for t in orch["output"]} == {"waveform", "pcm16", "sample_offset"}
    params = {k: v.get("string_value", "") for k, v in orch["parameters"].items()}
    assert json.loads(params["chunk_policy"]) == pack.manifest["audio"]["chunk_policy"]
    assert int(params["sample_rate"]) == pack.manifest["audio"]["sample_rate"]


def test_generation_is_deterministic(repo, tiny_pack, tmp_path):
    again = write_triton_repo(tiny_pack, tmp_path / "again")
    files = sorted(p.relative_to(repo) for p in repo.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((repo / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert len(files) == 11  # 5 x (config.pbtxt, 1/model.py) + the marker


def test_generation_refuses_with_one_line_errors(tiny_pack, tmp_path):
    with pytest.raises(ToolError, match=r"flow\.encoder I/O spec \| dim tokens allows at most 1500"):
        write_triton_repo(tiny_pack, tmp_path / "a", max_tokens=10**6)  # beyond the encoder's token range
    with pytest.raises(ToolError, match=r"llm I/O spec \| dim sequence_length allows at most 1024 \(largest Tens"):
        write_triton_repo(tiny_pack, tmp_path / "b", max_text_tokens=1000)  # prefill beyond the TRT profile
    with pytest.raises(ToolError, match=r"--llm \| is 'vllm'"):
        write_triton_repo(tiny_pack, tmp_path / "c", llm="vllm")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    with pytest.raises(ToolError, match="is not a Triton repository written by tts-export"):
        write_triton_repo(tiny_pack, tmp_path / "d")
    write_triton_repo(tiny_pack, tmp_path / "e")
    with pytest.raises(ToolError, match="already exists"):
        write_triton_repo(tiny_pack, tmp_path / "e")
    assert (write_triton_repo(tiny_pack, tmp_path / "e", overwrite=True) / MARKER).is_file()
    other = edited_pack(tiny_pack, tmp_path / "v3", lambda m: m["model"].update(family="cosyvoice3"))
    with pytest.raises(ToolError, match="is a cosyvoice3 pack: this version writes Triton repositories for cosyv"):
        write_triton_repo(other, tmp_path / "f")
    assert not (tmp_path / "f").exists() and not (tmp_path / "a").exists()


def test_openai_mode_has_no_llm_model(tiny_pack, tmp_path):
    url = "http://127.0.0.1:9/v1/chat/completions"
    repo = write_triton_repo(tiny_pack, tmp_path / "r", llm=f"openai={url}")
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == sorted(
        [MODEL, "token2wav", "speaker_embedding", "speech_tokenizer"]
    )
    params = config_params(repo / MODEL / "config.pbtxt")
    assert params["llm_mode"] == "openai" and params["llm_api_base"] == url


def test_prompt_limit_is_the_runtime_one():
    from runtime.frontend.audio import MAX_PROMPT_SECONDS
    from serving.triton import repo

    assert repo.MAX_PROMPT_SECONDS == MAX_PROMPT_SECONDS


def edited_pack(pack: Path, dest: Path, edit) -> Path:
    """A copy of the pack (files hard-linked: a pack refuses symbolic links out of it) whose manifest is edited
    and re-digested."""
    shutil.copytree(
        pack, dest, copy_function=os.link, ignore=lambda d, names: ["manifest.json"] if d == str(pack) else []
    )
    manifest = json.loads((pack / "manifest.json").read_text())
    edit(manifest)
    write_manifest(dest / "manifest.json", manifest)
    return dest


def config_params(path: Path) -> dict[str, str]:
    """The parameters of a generated config.pbtxt (its strings are JSON-compatible escapes)."""
    pairs = re.findall(r'key: ("(?:[^"\\]|\\.)*") value: \{ string_value: ("(?:[^"\\]|\\.)*") \}', path.read_text())
    return {json.loads(k): json.loads(v) for k, v in pairs}


def test_models_refuse_a_changed_pack(repo, tiny_pack, tmp_path, monkeypatch):
    """The orchestrator's load-time checks, run in process with a stand-in for Triton's stub module."""
    monkeypatch.setitem(
        sys.modules, "triton_python_backend_utils", types.SimpleNamespace(TRITONSERVER_RESPONSE_COMPLETE_FINAL=1)
    )
    from serving.triton.models.orchestrator import Model

    params = config_params(repo / MODEL / "config.pbtxt")

    def args(p: dict) -> dict:  # what Triton hands initialize(): the config as JSON
        return {
            "model_config": json.dumps({"name": MODEL, "parameters": {k: {"string_value": v} for k, v in p.items()}})
        }

    Model(args(params)).finalize()  # as generated: loads
    policy = json.loads(params["chunk_policy"])
    with pytest.raises(ToolError, match="audio.chunk_policy differs from the one the Triton repository was generated"):
        Model(args({**params, "chunk_policy": json.dumps({**policy, "token_hop_len": 7})}))
    changed = edited_pack(
        tiny_pack, tmp_path / "p", lambda m: m["audio"]["chunk_policy"].update(output_chunk_samples=480)
    )
    with pytest.raises(ToolError, match="changed since the Triton repository was generated"):
        Model(args({**params, "pack_dir": str(changed)}))


# ---- live server ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prompt(tmp_path_factory) -> tuple[Path, Path]:
    """A 1.5 s voiced-like prompt at 16 kHz: a PCM16 WAV for tts-run and its float samples for the client."""
    d = tmp_path_factory.mktemp("prompt")
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    sf.write(str(d / "prompt.wav"), x.astype(np.float32), 16000, subtype="PCM_16")
    samples, _ = sf.read(str(d / "prompt.wav"), dtype="float32")  # what load_prompt_wav reads: int16 / 32768
    np.save(d / "prompt.npy", samples)
    return d / "prompt.wav", d / "prompt.npy"


def request(rid: str, text: str, seed: int, with_prompt: bool, transcript, prompt) -> dict:
    req = {"id": rid, "text": text, "seed": seed}
    if with_prompt:
        req["reference_wav"] = str(prompt[1])
        if transcript is not None:
            req["reference_text"] = transcript
    return req


@pytest.fixture(scope="module")
def served(install, repo, prompt, tmp_path_factory) -> dict:
    """One server for the module: the client job (concurrent round, sequential repeats, SSE, cancel, bad input)
    runs once; its results and the server log are what the tests read."""
    work = tmp_path_factory.mktemp("server")
    reqs = [request(*r, prompt) for r in REQUESTS]
    job = {
        "streams": [reqs, [{**reqs[0], "id": "plain_again"}], [{**reqs[1], "id": "zero_shot_again"}]],
        "sse": [{**reqs[0], "id": "plain_sse"}],
        "cancel": {"id": "cancel", "text": CANCEL_TEXT, "seed": 5},
        "bad": True,
    }
    (work / "job.json").write_text(json.dumps(job))
    with TritonServer(repo, install, work) as server:
        cmd = [str(install.python), "-m", "serving.triton.client", "--grpc", server.grpc_url, "--http", server.http_url]
        cmd += ["--model", MODEL, "--job", str(work / "job.json"), "--out", str(work / "out.npz")]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        still_ready = server.ready()
    log = server.log_path.read_text(errors="replace")
    assert r.returncode == 0, f"client failed:\n{r.stderr[-3000:]}\nserver log:\n{log[-3000:]}"
    data = np.load(work / "out.npz")
    arrays = {k: data[k] for k in data.files}
    return {"arrays": arrays, "summary": json.loads(str(data["summary"])), "log": log, "ready": still_ready}


@pytest.fixture(scope="module")
def tts_run(tiny_pack, prompt, tmp_path_factory):
    """The reference: `tts-run --stream` (its CLI, in process) PCM and --chunk-log lines per request."""
    from typer.testing import CliRunner

    from runtime.cli import app

    tmp = tmp_path_factory.mktemp("tts-run")
    out = {}
    for rid, text, seed, with_prompt, transcript in REQUESTS:
        wav, log = tmp / f"{rid}.wav", tmp / f"{rid}.jsonl"
        cmd = ["--pack", str(tiny_pack), "--text", text, "--seed", str(seed), "--stream", "--out", str(wav)]
        cmd += ["--chunk-log", str(log)]
        if with_prompt:
            cmd += ["--prompt-wav", str(prompt[0])] + (["--prompt-text", transcript] if transcript is not None else [])
        r = CliRunner().invoke(app, cmd)
        assert r.exit_code == 0, r.output
        pcm, _ = sf.read(str(wav), dtype="int16")
        out[rid] = pcm, [json.loads(line) for line in log.read_text().splitlines()]
    return out


def check_stream(served, rid: str, ref) -> None:
    """A served stream against tts-run's: no error, one final flag, same chunk offsets and sizes, same PCM."""
    s = served["summary"]
    rec = next(r[rid] for r in [x["requests"] for x in s["rounds"]] + [s["sse"]] if rid in r)
    a = served["arrays"]
    pcm, chunks = ref
    assert rec["error"] is None and rec.get("finals", 1) == 1, rec
    assert a[f"{rid}/offsets"].tolist() == [c["sample_offset"] for c in chunks]
    assert a[f"{rid}/sizes"].tolist() == [c["n_samples"] for c in chunks]
    assert np.array_equal(a[f"{rid}/pcm16"], pcm), f"{rid}: PCM differs from tts-run"


@pytest.mark.parametrize("rid", [r[0] for r in REQUESTS])
def test_concurrent_streams_equal_tts_run(served, tts_run, rid):
    check_stream(served, rid, tts_run[rid])
    assert np.array_equal(served["arrays"][f"{rid}/waveform"] * 32768, tts_run[rid][0].astype(np.float32))
    assert len(tts_run[rid][1]) > 10  # several flow calls and many chunks: a real stream


def test_sequential_repeats_equal_tts_run(served, tts_run):
    check_stream(served, "plain_again", tts_run["plain"])
    check_stream(served, "zero_shot_again", tts_run["zero_shot"])


def test_http_sse_gives_the_same_chunks(served, tts_run):
    check_stream(served, "plain_sse", tts_run["plain"])
    code, body = served["summary"]["robustness"]["bad"]["infer_on_decoupled"]
    assert code == 501 and "decoupled transaction policy" in body


def test_cancel_and_bad_input_leave_the_server_ready(served):
    rob = served["summary"]["robustness"]
    cancel = rob["cancel"]
    assert cancel["first_chunk_before_cancel"] and cancel["ready_after"]
    assert cancel["retry"]["error"] is None and cancel["retry"]["finals"] == 1
    assert len(served["arrays"]["after_cancel/offsets"]) > 0
    bad = rob["bad"]
    assert (
        bad["empty_text"]["error"]
        == "text | has nothing to say (no letters or digits). Note: words or characters to synthesize"
    )
    assert bad["empty_text"]["chunks"] == 0
    assert "data-type is 'INT32', but model 'cosyvoice2' expects 'BYTES'" in bad["wrong_dtype"]
    assert "unknown model" in bad["unknown_model"]
    assert bad["ready_after"] and served["ready"]
    assert "Stub process" not in served["log"] and "is not healthy" not in served["log"]


class ReplayLLM:
    """A loopback stand-in for an OpenAI-compatible LLM server (labelled as such: the real vLLM / trtllm-serve
    path needs a GPU host): it records each request and streams back given speech tokens as <|s_N|> text, split
    across SSE events at awkward places (mid-token), then [DONE]."""

    def __init__(self, tokens: list[int]):
        import http.server
        import threading

        self.tokens, self.requests = tokens, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                text = "".join(f"<|s_{t}|>" for t in outer.tokens) + "<|eos1|>"
                for i in range(0, len(text), 7):
                    delta = {"choices": [{"index": 0, "delta": {"content": text[i : i + 7]}}]}
                    self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/chat/completions"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_openai_llm_tier_streams_tokens_into_the_same_audio(install, tiny_pack, tts_run, tmp_path):
    """--llm openai=URL against a loopback stub that replays the tokens tts-run's own LLM drew for the sentence:
    the chat request follows upstream's protocol and the audio equals tts-run's."""
    from runtime.engine import PackEngine
    from runtime.session import TtsSession, derive_seed

    rid, text, seed = REQUESTS[0][:3]
    session = TtsSession(PackEngine.get(tiny_pack), seed=seed, stream=True)
    session.synthesize(text)
    pcm = b"".join(c.pcm for c in session.chunks())
    assert np.array_equal(np.frombuffer(pcm, "<i2"), tts_run[rid][0])  # the replayed tokens are tts-run's
    stub = ReplayLLM(session.speech_tokens[0])
    try:
        repo = write_triton_repo(tiny_pack, tmp_path / "repo", llm=f"openai={stub.url}")
        (tmp_path / "job.json").write_text(json.dumps({"streams": [[{"id": rid, "text": text, "seed": seed}]]}))
        with TritonServer(repo, install, tmp_path / "server") as server:
            cmd = [str(install.python), "-m", "serving.triton.client", "--grpc", server.grpc_url]
            cmd += ["--http", server.http_url, "--job", str(tmp_path / "job.json"), "--out", str(tmp_path / "o.npz")]
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        stub.close()
    data = np.load(tmp_path / "o.npz")
    served = {"arrays": {k: data[k] for k in data.files}, "summary": json.loads(str(data["summary"]))}
    check_stream(served, rid, tts_run[rid])
    (req,) = stub.requests
    ids = PackEngine.get(tiny_pack).tokenizer.encode(text)
    assert req["messages"] == [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
    assert req["stream"] is True and req["seed"] == derive_seed(seed, 0, 0) and "<|eos1|>" in req["stop"]
    assert (req["min_tokens"], req["max_tokens"]) == (2 * len(ids), 20 * len(ids))  # the tiny LLM's 2 and 20 ratios


def test_tts_export_writes_the_repository_and_checks_its_usage(tiny_pack, tiny_v1_pack, tmp_path):
    """`tts-export --pack PACK --triton-repo DIR`: the same bytes as write_triton_repo; usage errors exit 2; a pack
    of a family without a Triton layout is one line, exit 1, nothing written."""
    exe = str(Path(sys.executable).parent / "tts-export")
    run = lambda *a: subprocess.run([exe, *map(str, a)], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run("--pack", tiny_pack, "--triton-repo", tmp_path / "repo")
    assert r.returncode == 0 and "PASSED | Triton repository" in r.stderr, r.stderr
    write_triton_repo(tiny_pack, tmp_path / "again")
    files = sorted(p.relative_to(tmp_path / "repo") for p in (tmp_path / "repo").rglob("*") if p.is_file())
    assert files and all((tmp_path / "repo" / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    r = run("--triton-repo", tmp_path / "x")
    assert r.returncode == 2 and "--pack and --triton-repo go together" in " ".join(r.stderr.split())
    r = run("--pack", tiny_pack, "--triton-repo", tmp_path / "y", "--random-init", "tiny")
    assert r.returncode == 2 and not (tmp_path / "y").exists()
    r = run("--pack", tiny_v1_pack, "--triton-repo", tmp_path / "v1")
    assert r.returncode == 1 and "is a cosyvoice1 pack" in r.stderr and not (tmp_path / "v1").exists()
