"""Voices: names a request can give as `voice`, each a prompt for `TtsSession`.

- `default`: no prompt (what `tts-run` does without --prompt-wav).
- the pack's built-in speakers (CosyVoice 1 SFT / Instruct packs: `tts-run --speaker NAME`).
- registered voices: a prompt WAV + transcript, its features, speech tokens and x-vector computed once by the
  pack's own frontend (the code `tts-run --prompt-wav` calls) and stored under the voices directory:

      VOICES_DIR/<id>/voice.json    id, transcript, cross_lingual, pack fingerprint, prompt length
      VOICES_DIR/<id>/prompt.npz    PromptInputs arrays: prompt_text, speech_tokens, speech_feat, embedding
      VOICES_DIR/<id>/prompt.wav    the uploaded WAV, as sent

  A voice is written into a hidden `.tmp-*` sibling and renamed into place when complete (a rename onto a
  non-empty directory fails, so two registrations of one id cannot both win), so a crash or a bad upload leaves
  nothing half-written; stale `.tmp-*` directories are removed at start.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.frontend.normalize import has_nothing_to_say
from runtime.session import Prompt
from specs.errors import ToolError

VOICE_ID = re.compile(r"[a-z0-9_-]{1,64}")
DEFAULT_VOICE = "default"
PROMPT_ARRAYS = ("prompt_text", "speech_tokens", "speech_feat", "embedding")  # PromptInputs fields
STALE_TMP_SECONDS = 600  # a .tmp-* this old belongs to no registration still running


class VoiceError(ToolError):
    """A problem with a voice field; `param` is the request field it names, `status` the HTTP status."""

    def __init__(self, param: str, problem: str, expected: str | None = None, status: int = 400):
        super().__init__(param, problem, expected)
        self.param = param
        self.status = status


@dataclass(frozen=True)
class Voice:
    id: str
    kind: str  # "builtin" | "speaker" | "registered"
    prompt: Prompt | None  # None: no prompt
    info: dict = field(default_factory=dict)  # what GET /v1/voices shows beyond id and kind

    def public(self) -> dict:
        return {"id": self.id, "object": "voice", "kind": self.kind, **self.info}


def pack_fingerprint(pack) -> str:
    """What a stored voice's arrays depend on: the pack's frontend files, mel parameters and family. A voice made
    with another pack (other tokenizer, other mel) is not used."""
    config = pack.config
    basis = {
        "family": pack.family,
        "frontend": {k: v.get("sha256") for k, v in sorted(pack.manifest.get("frontend", {}).items())},
        "feat_extractor": config.get("feat_extractor"),
        "token_mel_ratio": config.get("flow", {}).get("token_mel_ratio"),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


def builtin_voices(engine) -> dict[str, Voice]:
    """`default` and the pack's SFT speakers, each with the prompt `tts-run --speaker NAME` uses."""
    from runtime.session import speaker_prompt

    voices = {DEFAULT_VOICE: Voice(DEFAULT_VOICE, "builtin", None, {"description": "no prompt (tts-run's default)"})}
    for name in engine.speakers:
        info = {"description": "built-in speaker of the pack", "instruct": bool(engine.instruct)}
        voices[name] = Voice(name, "speaker", speaker_prompt(engine, name), info)
    return voices


def check_voice_id(voice_id: object, reserved) -> str:
    if not isinstance(voice_id, str) or not VOICE_ID.fullmatch(voice_id):
        raise VoiceError("id", f"is {str(voice_id)[:80]!r}", "1-64 characters from a-z, 0-9, '_' and '-'")
    if voice_id in reserved:
        raise VoiceError("id", f"{voice_id!r} is a built-in voice", "another id", status=409)
    return voice_id


class VoiceStore:
    def __init__(self, engine, root: str | Path | None, log=print):
        self.engine = engine
        self.root = Path(root) if root is not None else None
        self.log = log
        self.fingerprint = pack_fingerprint(engine.pack)
        self.builtin = builtin_voices(engine)
        self._registered: dict[str, Voice] = {}
        self._lock = threading.Lock()
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_stale_tmp()
            for d in sorted(self.root.iterdir()):
                if d.is_dir() and VOICE_ID.fullmatch(d.name):
                    self._load(d)

    # ---- lookup ---------------------------------------------------------------------------------------
    def get(self, name: object) -> Voice:
        if not isinstance(name, str) or not name:
            raise VoiceError("voice", f"is {name!r}", "a voice name or {'id': NAME}; GET /v1/voices lists them")
        if name in self.builtin:
            return self.builtin[name]
        with self._lock:
            voice = self._registered.get(name)
        if voice is None and self.root is not None and VOICE_ID.fullmatch(name) and (self.root / name).is_dir():
            voice = self._load(self.root / name)  # registered by another process sharing the directory
        if voice is None:
            raise VoiceError("voice", f"{name[:80]!r} is not a voice of this server", "GET /v1/voices lists them")
        return voice

    def list(self) -> list[Voice]:
        with self._lock:
            registered = sorted(self._registered.values(), key=lambda v: v.id)
        return [*self.builtin.values(), *registered]

    # ---- registration (blocking: run it on a worker thread) -------------------------------------------
    def register(self, voice_id: str, wav: bytes, transcript: str | None) -> Voice:
        if self.root is None:
            raise VoiceError("id", "this server keeps no voices", "start tts-serve with --voices-dir DIR", 501)
        check_voice_id(voice_id, self.builtin)
        transcript = check_transcript(transcript)
        if (self.root / voice_id).exists():
            raise VoiceError("id", f"voice {voice_id!r} exists", "another id (voices are never overwritten)", 409)
        frontend = self._frontend()
        tmp = self.root / f".tmp-{voice_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _write(tmp / "prompt.wav", wav)
            from runtime.frontend.audio import load_prompt_wav

            try:
                audio = load_prompt_wav(tmp / "prompt.wav")
            except ToolError as e:  # it names our temporary file: name the request field instead
                problem = e.problem.replace(str(tmp / "prompt.wav"), "the upload")
                raise VoiceError("audio_sample", problem, e.expected) from None
            inputs = frontend.zero_shot(audio, transcript or "")
            arrays = {k: np.asarray(getattr(inputs, k)) for k in PROMPT_ARRAYS}
            meta = {
                "id": voice_id,
                "transcript": transcript,
                "cross_lingual": transcript is None,
                "fingerprint": self.fingerprint,
                "prompt_seconds": round(audio.seconds, 3),
                "prompt_sample_rate": audio.sample_rate,
                "speech_tokens": int(arrays["speech_tokens"].size),
                "created_at": int(time.time()),
            }
            with open(tmp / "prompt.npz", "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            _write(tmp / "voice.json", json.dumps(meta, ensure_ascii=False, indent=1).encode())
            try:
                os.rename(tmp, self.root / voice_id)
            except OSError:  # ENOTEMPTY / EEXIST: a concurrent registration of the same id won
                raise VoiceError("id", f"voice {voice_id!r} exists", "another id", 409) from None
            _fsync_dir(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        voice = _voice(meta, arrays)
        with self._lock:
            self._registered[voice_id] = voice
        return voice

    def _frontend(self):
        try:
            return self.engine.prompt_frontend
        except ToolError as e:
            raise VoiceError("audio_sample", f"this pack cannot make voices ({e.problem})", e.expected, 501) from None

    # ---- disk -----------------------------------------------------------------------------------------
    def _load(self, d: Path) -> Voice | None:
        try:
            meta = json.loads((d / "voice.json").read_text(encoding="utf-8"))
            with np.load(d / "prompt.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in PROMPT_ARRAYS}
        except (OSError, ValueError, KeyError) as e:
            self.log(f"WARNING | voice {d.name} skipped: unreadable ({type(e).__name__}: {e})")
            return None
        if meta.get("fingerprint") != self.fingerprint or meta.get("id") != d.name:
            self.log(f"WARNING | voice {d.name} skipped: registered with another pack or renamed")
            return None
        voice = _voice(meta, arrays)
        with self._lock:
            self._registered[d.name] = voice
        return voice

    def _remove_stale_tmp(self) -> None:
        now = time.time()
        for d in self.root.glob(".tmp-*"):
            try:
                if now - d.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(d, ignore_errors=True)
            except FileNotFoundError:
                pass


def check_transcript(transcript: str | None) -> str | None:
    """None (omitted or empty): a cross-lingual voice (the prompt gives the voice only, as tts-run without
    --prompt-text). Otherwise it must be valid UTF-8 with something to say."""
    if transcript is None or transcript == "":
        return None
    try:
        transcript.encode("utf-8")
    except UnicodeEncodeError as e:
        raise VoiceError("transcript", f"is not valid UTF-8 (character {e.start})", "UTF-8 text") from None
    if has_nothing_to_say(transcript):
        raise VoiceError("transcript", "has no letters or digits", "the words spoken in the WAV, or omit it")
    return transcript


def _voice(meta: dict, arrays: dict) -> Voice:
    from runtime.frontend.prompt import PromptInputs

    prompt = Prompt.from_inputs(PromptInputs(**arrays), cross_lingual=bool(meta["cross_lingual"]))
    info = {k: meta[k] for k in ("transcript", "cross_lingual", "prompt_seconds", "speech_tokens", "created_at")}
    return Voice(meta["id"], "registered", prompt, info)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
