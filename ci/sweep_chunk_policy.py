#!/usr/bin/env python
"""Sweep of the tunable chunk policy (specs/chunk_policy.py `TUNABLE`, `tts-run --chunk-policy FILE`): latency,
cost and boundary quality of a grid of hop schedules and output chunk sizes on one pack.

Every policy synthesizes the same speech tokens with the same seed. The LLM does not depend on the policy,
so it is driven identically: seeded ras_sampling with every stop id masked (as ci/bench_e2e.py), so each run
generates max_len = 20 x (text tokens) speech tokens, the same ones (checked). Per policy, after one warm-up:

  * TTFA e2e: `synthesize(text)` to the first PCM chunk (LLM included: a smaller first hop waits for fewer
    generated tokens); TTFA t2w: `push_tokens(tokens)` to the first chunk (flow + vocoder only);
  * RTF e2e / t2w: wall time to the last chunk / audio seconds; medians of `--repeats` runs;
  * flow calls, and the join count: joins are the sample offsets where a new token2wav piece starts (piece
    lengths recorded by wrapping `TtsSession._append`, as tests/test_e2e_parity.py does);
  * boundary quality against the pack's own (upstream-default) policy's stream of the same tokens and seed:
    max / mean |PCM difference| (LSB) within +-JOIN_WINDOW_MS of each join of the tuned stream (and over the
    whole signal); a click ratio at each join, max |second difference| within +-CLICK_WINDOW_MS over the median
    |second difference| of the whole signal (worst, and how many joins exceed `--click-threshold`); the
    spectral flux across each join, |STFT magnitude| of the FLUX_FRAME_MS frame ending at the join vs the
    one starting there (L2), over the median of that flux at every half-frame position (worst, mean). The
    click and flux ratios are also given for the default stream at the same positions (`ref`): what the
    audio itself has there, with no join of the tuned policy.

Hops below the estimator's attention chunk (token_hop_len 25 on CosyVoice2) change the audio, not only the
timing: a streaming flow call masks attention by chunks, and a call whose end is not chunk-aligned sees a
partial last chunk. That is what the quality columns show. `output_chunk_samples` only re-slices the same
PCM (its quality columns must read 0). `--playout` adds one paced run per policy (runtime/playout.py `play`,
200 ms pre-roll): first audio and underruns, at one audio-duration of wall time per policy.

Writes OUT/table.json and OUT/sweep.png; prints the table. On the tiny pack it runs in well under 5 minutes.

    flock /tmp/fullsize.lock .venv/bin/python ci/sweep_chunk_policy.py [--pack build/tiny-pack]
        [--out build/sweep_chunk_policy] [--repeats 3] [--threads N] [--playout]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_PACK = REPO / "build" / "tiny-pack"
DEFAULT_OUT = REPO / "build" / "sweep_chunk_policy"
# ~15 text tokens: 300 speech tokens (12 s at 25 tokens/s), enough for a max hop of 200 to be reached.
TEXT = "A short test sentence for the chunk policy sweep, long enough to stream."
JOIN_WINDOW_MS = 20.0  # PCM difference window around each join
CLICK_WINDOW_MS = 2.0  # second-difference peak window around each join
FLUX_FRAME_MS = 20.0  # STFT frame on each side of a join
CLICK_THRESHOLD = 8.0  # default: a join whose d2 peak is 8x the signal's median |d2| counts as a click

# (token_hop_len, token_max_hop_len, stream_scale_factor, output_chunk_samples); None: the pack's own policy.
# 960 / 480 samples are 40 / 20 ms at 24 kHz.
GRID: list[tuple[int, int, int, int] | None] = [
    None,  # the pack's policy (CosyVoice2: 25/100/x2/960), the quality reference
    (25, 100, 2, 480),  # output chunk only: same audio, re-sliced
    (10, 100, 2, 960),
    (10, 100, 2, 480),
    (15, 100, 2, 960),
    (50, 100, 2, 960),
    (10, 50, 2, 960),
    (25, 50, 2, 960),
    (25, 25, 1, 960),  # constant hop of one attention chunk: the most flow calls at chunk-aligned ends
    (25, 200, 2, 960),
    (10, 200, 2, 960),
    (50, 200, 2, 960),
]


def overrides_of(entry) -> dict[str, int]:
    if entry is None:
        return {}
    keys = ("token_hop_len", "token_max_hop_len", "stream_scale_factor", "output_chunk_samples")
    return dict(zip(keys, entry))


def label(policy) -> str:
    return (
        f"{policy.token_hop_len}/{policy.token_max_hop_len}/x{policy.stream_scale_factor}/{policy.output_chunk_samples}"
    )


def never_stop_sampler(seed: int, params, stop_ids):
    """Seeded ras_sampling with every stop id masked: the utterance runs to max_len, the same on every run."""
    from runtime.sampling import RasSampler

    inner, stops = RasSampler(seed, params), list(stop_ids)

    def sample(scores, decoded):
        scores = np.array(scores, dtype=np.float32)
        scores[stops] = -np.inf
        return inner(scores, decoded)

    return sample


def run_session(engine, seed: int, text: str | None = None, tokens=None) -> dict:
    """One streaming run: synthesize(text) with the never-stop sampler, or push_tokens(tokens)."""
    from runtime.session import TtsSession, derive_seed

    params, stops = engine.llm.params, engine.llm.facts["stop_tokens"]
    s = TtsSession(
        engine,
        seed=seed,
        stream=True,
        sampler_factory=lambda i: never_stop_sampler(derive_seed(seed, i, 0), params, stops),
    )
    pieces: list[int] = []
    append = s._append

    def record(pcm, *rest):
        if len(pcm):
            pieces.append(len(pcm))
        append(pcm, *rest)

    s._append = record
    t0 = time.perf_counter()
    if tokens is None:
        s.synthesize(text)
    else:
        s.push_tokens(tokens)
    pcm = b"".join(c.pcm for c in s.chunks())
    wall = time.perf_counter() - t0
    return {
        "pcm": np.frombuffer(pcm, "<i2"),
        "pieces": pieces,
        "ttfa": s.ttfa,
        "wall": wall,
        "flow_calls": s.flow_calls,
        "tokens": list(s.speech_tokens[0]),
    }


# ---- boundary quality -----------------------------------------------------------------------------------
def joins_of(pieces: list[int]) -> np.ndarray:
    return np.cumsum(pieces)[:-1].astype(np.int64)


def join_diff(a: np.ndarray, b: np.ndarray, joins: np.ndarray, half: int) -> tuple[float, float]:
    """max / mean |a - b| over the union of [j - half, j + half) around the joins (0, 0 without joins)."""
    if not len(joins):
        return 0.0, 0.0
    mask = np.zeros(len(a), bool)
    for j in joins:
        mask[max(0, j - half) : j + half] = True
    d = np.abs(a[mask].astype(np.int64) - b[mask].astype(np.int64))
    return float(d.max()), float(d.mean())


def click_ratios(x: np.ndarray, joins: np.ndarray, half: int) -> np.ndarray:
    """Per join: max |x[n+1] - 2 x[n] + x[n-1]| for n within +-half of it, over the median |d2| of the whole
    signal (floored at 1 LSB, so digital silence does not divide by zero)."""
    d2 = np.abs(np.diff(x.astype(np.float64), 2))  # d2[k] is centred on sample k + 1
    med = max(float(np.median(d2)), 1.0)
    return np.array([d2[max(0, j - half - 1) : j + half - 1].max() / med for j in joins])


def flux_ratios(x: np.ndarray, joins: np.ndarray, frame: int) -> np.ndarray:
    """Per join p: || |rfft(w x[p-N:p])| - |rfft(w x[p:p+N])| ||_2 (Hann w, N = frame), over the median of the
    same flux at every half-frame position of the signal. Joins closer than N to either end are skipped."""
    x = x.astype(np.float64)
    w = np.hanning(frame)

    def mag(start: int) -> np.ndarray:
        return np.abs(np.fft.rfft(w * x[start : start + frame]))

    hop = frame // 2
    starts = np.arange(0, len(x) - frame + 1, hop)
    mags = np.abs(np.fft.rfft(w * np.stack([x[s : s + frame] for s in starts]), axis=1))
    grid = np.linalg.norm(mags[2:] - mags[:-2], axis=1)  # frame k+2 starts where frame k ends
    med = max(float(np.median(grid)), 1e-9)
    ok = [j for j in joins if frame <= j <= len(x) - frame]
    return np.array([np.linalg.norm(mag(j) - mag(j - frame)) / med for j in ok])


def content_levels(x: np.ndarray, rate: int) -> dict:
    """The detectors at every position of a stream (not only at joins): click ratio on a grid of window-sized
    steps, flux ratio on the half-frame grid; their p99 and max are what the audio's own content reaches, the
    level a join has to exceed to stand out. `step_lsb`: the step (LSB) whose d2 alone reaches the threshold."""
    ms = lambda v: int(round(v / 1000 * rate))
    half, frame = ms(CLICK_WINDOW_MS), ms(FLUX_FRAME_MS)
    clicks = click_ratios(x, np.arange(half + 1, len(x) - half, 2 * half), half)
    flux = flux_ratios(x, np.arange(frame, len(x) - frame + 1, frame // 2), frame)
    med_d2 = max(float(np.median(np.abs(np.diff(x.astype(np.float64), 2)))), 1.0)
    pct = lambda v: {"p99": float(np.percentile(v, 99)), "max": float(v.max())}
    return {"click": pct(clicks), "flux": pct(flux), "median_abs_d2": med_d2}


def quality(pcm: np.ndarray, ref: np.ndarray, pieces: list[int], rate: int, click_threshold: float) -> dict:
    n = min(len(pcm), len(ref))
    a, b = pcm[:n], ref[:n]
    joins = joins_of(pieces)
    joins = joins[joins < n]
    ms = lambda v: int(round(v / 1000 * rate))
    jmax, jmean = join_diff(a, b, joins, ms(JOIN_WINDOW_MS))
    whole = np.abs(a.astype(np.int64) - b.astype(np.int64))
    clicks, ref_clicks = (click_ratios(x, joins, ms(CLICK_WINDOW_MS)) for x in (a, b))
    flux, ref_flux = (flux_ratios(x, joins, ms(FLUX_FRAME_MS)) for x in (a, b))
    worst = lambda v: float(v.max()) if len(v) else 0.0
    return {
        "joins": int(len(joins)),
        "length_diff": int(len(pcm) - len(ref)),
        "join_diff_max": jmax,
        "join_diff_mean": jmean,
        "diff_max": float(whole.max()),
        "diff_mean": float(whole.mean()),
        "click_worst": worst(clicks),
        "click_ref_worst": worst(ref_clicks),
        "clicks_over": int((clicks > click_threshold).sum()),
        "clicks_over_ref": int((ref_clicks > click_threshold).sum()),
        "flux_worst": worst(flux),
        "flux_mean": float(flux.mean()) if len(flux) else 0.0,
        "flux_ref_worst": worst(ref_flux),
    }


# ---- one policy -----------------------------------------------------------------------------------------
def measure(engine, args, tokens, ref_pcm) -> dict:
    policy = engine.chunk_policy
    rate = policy.sample_rate
    # warm-up of both modes (ORT allocators, first-call shapes; the LLM's first run costs ~5x a later one)
    run_session(engine, args.seed, text=args.text)
    run_session(engine, args.seed, tokens=tokens)
    e2e = [run_session(engine, args.seed, text=args.text) for _ in range(args.repeats)]
    t2w = [run_session(engine, args.seed, tokens=tokens) for _ in range(args.repeats)]
    first = e2e[0]
    audio_s = len(first["pcm"]) / rate
    problems = []
    if any(r["tokens"] != tokens for r in e2e):
        problems.append("e2e speech tokens differ from the reference run's")
    if any(not np.array_equal(r["pcm"], first["pcm"]) for r in e2e + t2w):
        problems.append("PCM differs between repeats or between synthesize and push_tokens")
    if any(r["pieces"] != first["pieces"] for r in t2w):
        problems.append("token2wav pieces differ between synthesize and push_tokens")
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    row = {
        "policy": label(policy),
        "overrides": overrides_of_policy(engine),
        "hops": policy.schedule(prompt_tokens=0).hops(len(tokens)),
        "flow_calls": first["flow_calls"],
        "audio_s": audio_s,
        "ttfa_e2e_ms": med(e2e, "ttfa") * 1000,
        "ttfa_t2w_ms": med(t2w, "ttfa") * 1000,
        "rtf_e2e": med(e2e, "wall") / audio_s,
        "rtf_t2w": med(t2w, "wall") / audio_s,
        "first_piece_ms": first["pieces"][0] / rate * 1000,
        **quality(first["pcm"], ref_pcm, first["pieces"], rate, args.click_threshold),
        "problems": problems,
    }
    if args.playout:
        from runtime.playout import play
        from runtime.session import TtsSession

        s = TtsSession(engine, seed=args.seed, stream=True)
        s.push_tokens(tokens)
        rep = play(s, write=lambda pcm, chunk: None, preroll_ms=200.0)
        row["playout"] = rep.to_dict()
    return row


def overrides_of_policy(engine) -> dict[str, int]:
    from specs.chunk_policy import TUNABLE

    own, tuned = engine.pack.chunk_policy, engine.chunk_policy
    return {k: getattr(tuned, k) for k in TUNABLE if getattr(tuned, k) != getattr(own, k)}


# ---- output ---------------------------------------------------------------------------------------------
COLUMNS = [  # (header, key, format)
    ("policy", "policy", "{:<15}"),
    ("calls", "flow_calls", "{:>5}"),
    ("TTFA e2e ms", "ttfa_e2e_ms", "{:>11.1f}"),
    ("TTFA t2w ms", "ttfa_t2w_ms", "{:>11.1f}"),
    ("RTF e2e", "rtf_e2e", "{:>7.4f}"),
    ("RTF t2w", "rtf_t2w", "{:>7.4f}"),
    ("joins", "joins", "{:>5}"),
    ("join|d|max", "join_diff_max", "{:>10.0f}"),
    ("join|d|mean", "join_diff_mean", "{:>11.2f}"),
    ("|d|max", "diff_max", "{:>6.0f}"),
    ("|d|mean", "diff_mean", "{:>7.2f}"),
    ("click", "click_worst", "{:>6.1f}"),
    ("ref", "click_ref_worst", "{:>5.1f}"),
    (">T", "clicks_over", "{:>3}"),
    (">T ref", "clicks_over_ref", "{:>6}"),
    ("flux", "flux_worst", "{:>5.2f}"),
    ("mean", "flux_mean", "{:>5.2f}"),
    ("ref", "flux_ref_worst", "{:>5.2f}"),
]


def print_table(rows: list[dict], playout: bool) -> None:
    cols = COLUMNS + (
        [("1st audio ms", "play_first_ms", "{:>12.0f}"), ("underruns", "underruns", "{:>9}")] if playout else []
    )
    widths = [len(f.format(rows[0].get(k, 0))) if rows else len(h) for h, k, f in cols]
    print(" ".join(h.rjust(w) if i else h.ljust(w) for i, ((h, _, _), w) in enumerate(zip(cols, widths))))
    for r in rows:
        if playout:
            r = {**r, "play_first_ms": r["playout"]["ttfa_s"] * 1000, "underruns": r["playout"]["underruns"]}
        print(" ".join(f.format(r[k]).rjust(w) for (_, k, f), w in zip(cols, widths)))


def plot(rows: list[dict], path: Path, title: str, click_threshold: float, content: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["policy"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(2, 2, figsize=(15, 9), sharex=True)

    def bars(a, keys, labels, ylabel, log=False):
        width = 0.8 / len(keys)
        for i, (k, lab) in enumerate(zip(keys, labels)):
            a.bar(x + (i - (len(keys) - 1) / 2) * width, [r[k] for r in rows], width, label=lab)
        a.set_ylabel(ylabel)
        if log:
            a.set_yscale("symlog", linthresh=1.0)
        a.legend(fontsize=8)
        a.grid(axis="y", alpha=0.3)

    bars(ax[0, 0], ["ttfa_e2e_ms", "ttfa_t2w_ms"], ["TTFA e2e (LLM included)", "TTFA token->audio"], "ms")
    bars(ax[0, 1], ["rtf_e2e", "rtf_t2w"], ["RTF e2e", "RTF token->audio"], "wall / audio s")
    for i, r in enumerate(rows):
        ax[0, 1].annotate(f"{r['flow_calls']} calls", (i, max(r["rtf_e2e"], r["rtf_t2w"])), ha="center", fontsize=7)
    bars(
        ax[1, 0],
        ["join_diff_max", "join_diff_mean", "diff_max"],
        [f"join max |d| (+-{JOIN_WINDOW_MS:.0f} ms)", "join mean |d|", "whole-signal max |d|"],
        "LSB vs default policy (symlog)",
        log=True,
    )
    bars(
        ax[1, 1],
        ["click_worst", "click_ref_worst", "flux_worst", "flux_ref_worst"],
        ["click worst", "click, default stream", "flux worst", "flux, default stream"],
        "ratio to signal median",
    )
    ax[1, 1].axhline(click_threshold, color="k", lw=0.8, ls="--")
    ax[1, 1].axhline(content["click"]["max"], color="C0", lw=0.8, ls=":")
    ax[1, 1].axhline(content["flux"]["max"], color="C2", lw=0.8, ls=":")
    ax[1, 1].set_title(
        "dashed: click threshold; dotted: max click / flux of the default stream at any position", fontsize=8
    )
    for a in ax[1]:
        a.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ensure_pack(pack: Path) -> None:
    if (pack / "manifest.json").exists():
        return
    if pack.resolve() != DEFAULT_PACK.resolve():
        sys.exit(f"ERROR | {pack} has no manifest.json. Note: export a pack with tts-export first")
    cmd = [str(Path(sys.executable).parent / "tts-export"), "--random-init", "tiny", "--seed", "0"]
    print(f"writing the tiny pack to {pack}", flush=True)
    subprocess.run([*cmd, "--out", str(pack), "--overwrite"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, default=DEFAULT_PACK)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--text", default=TEXT, help="one sentence; speech tokens = 20 x its text tokens")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per mode and policy (medians reported)")
    ap.add_argument("--threads", type=int, default=None, help="ORT threads per graph (default: ORT's)")
    ap.add_argument("--click-threshold", type=float, default=CLICK_THRESHOLD)
    ap.add_argument("--playout", action="store_true", help="also one paced playout per policy (audio-length wall)")
    args = ap.parse_args()
    ensure_pack(args.pack)

    from runtime.engine import PackEngine
    from runtime.frontend.normalize import normalize_text
    from specs.errors import ToolError
    from specs.pack import Pack

    t_all = time.perf_counter()
    pack = Pack.open(args.pack)
    # One engine at a time, dropped after its policy (PackEngine.get would keep all twelve, LLMs included: fine
    # on the tiny pack, not at full size). Files are hash-checked once, by the reference engine.
    ref_engine = PackEngine(pack, threads=args.threads)
    segments = normalize_text(args.text, ref_engine.tokenizer.encode, split=True)
    if len(segments) != 1:
        sys.exit(f"ERROR | --text makes {len(segments)} segments. Note: give one sentence")
    ref = run_session(ref_engine, args.seed, text=args.text)
    tokens = ref["tokens"]
    ref_pcm = run_session(ref_engine, args.seed, tokens=tokens)["pcm"]
    family, rate = pack.manifest["model"]["family"], pack.chunk_policy.sample_rate
    content = content_levels(ref_pcm, rate)
    print(
        f"{family} pack {args.pack}: {len(tokens)} speech tokens ({len(ref_pcm) / rate:.2f} s), "
        f"seed {args.seed}, {args.repeats} timed runs per mode, threads {args.threads or 'ORT default'}; "
        f"pack policy {label(pack.chunk_policy)}",
        flush=True,
    )
    rows, skipped = [], []
    for entry in GRID:
        tuned = overrides_of(entry)
        try:
            policy = pack.chunk_policy.with_overrides(tuned) if tuned else None
        except ToolError as e:  # e.g. a window-stream pack (CosyVoice 1) refuses hops below its overlap
            skipped.append({"overrides": tuned, "reason": str(e)})
            print(f"skipped {tuned}: {e}", flush=True)
            continue
        engine = (
            ref_engine if policy is None else PackEngine(pack, threads=args.threads, chunk_policy=policy, verify=False)
        )
        rows.append(measure(engine, args, tokens, ref_pcm))
        print(f"  {rows[-1]['policy']}: done", flush=True)
        del engine
    print()
    print_table(rows, args.playout)
    print(
        f"\njoins: sample offsets where a new token2wav piece starts; |d|: PCM difference (LSB) to the pack "
        f"policy's stream, within +-{JOIN_WINDOW_MS:.0f} ms of the joins (join) or over the whole signal; click: "
        f"max |d2| within +-{CLICK_WINDOW_MS:.0f} ms of a join / median |d2| (worst join; ref: the default stream "
        f"at the same offsets), >T: joins above {args.click_threshold:g}; flux: STFT magnitude change across a "
        f"join ({FLUX_FRAME_MS:.0f} ms frames) / median flux (worst, mean; ref as for click)"
    )
    c, f = content["click"], content["flux"]
    print(
        f"content levels of the default stream at every position (no join needed): click p99 {c['p99']:.1f} / max "
        f"{c['max']:.1f}, flux p99 {f['p99']:.2f} / max {f['max']:.2f}; the click threshold {args.click_threshold:g}"
        f" is a lone step of {args.click_threshold * content['median_abs_d2']:.0f} LSB (median |d2| "
        f"{content['median_abs_d2']:.0f} LSB)"
    )
    bad = [(r["policy"], p) for r in rows for p in r["problems"]]
    for name, p in bad:
        print(f"FAILED | {name}: {p}")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "pack": str(args.pack),
        "family": family,
        "pack_policy": pack.chunk_policy.to_dict(),
        "text": args.text,
        "seed": args.seed,
        "speech_tokens": len(tokens),
        "repeats": args.repeats,
        "threads": args.threads,
        "windows_ms": {"join_diff": JOIN_WINDOW_MS, "click": CLICK_WINDOW_MS, "flux_frame": FLUX_FRAME_MS},
        "click_threshold": args.click_threshold,
        "content_levels": content,
        "rows": rows,
        "skipped": skipped,
        "seconds": time.perf_counter() - t_all,
    }
    (args.out / "table.json").write_text(json.dumps(result, indent=1))
    title = f"chunk-policy sweep: {family} {args.pack.name}, {len(tokens)} tokens, seed {args.seed}"
    title += " (policy: first hop / max hop / x scale / output chunk samples)"
    plot(rows, args.out / "sweep.png", title, args.click_threshold, content)
    print(f"wrote {args.out / 'table.json'} and {args.out / 'sweep.png'} ({result['seconds']:.0f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
