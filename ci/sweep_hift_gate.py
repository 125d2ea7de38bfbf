#!/usr/bin/env python
"""Sweep of the hift export gate (exporters/graphs/hift.py `hift_tolerances`, check `phase_drift`): no false
refusals on bundles it was not tuned on, and planted bugs still refused.

Bundles: upstream's own initialisation (`make_random_bundle(..., calibrate=False)`: no jitter, no
calibration), tiny seeds 0..N-1 and medium seeds 0..M-1. Upstream's init gives F0 ~0.1 Hz everywhere (all
frames unvoiced: the sine phase, the one phase-sensitive path, is masked), so each bundle is also exported
"voiced": only the F0 predictor's classifier rescaled to a seeded mean of 80..400 Hz (spread 20%) and the
magnitude bias of conv_post shifted so the waveform peaks at 0.4..0.95 (a real checkpoint's range), which is
what makes F0's last-bit differences drift the phase. Planted bugs (graph side only; the reference stays
upstream): one Snake alpha x1.5 (`snake_alpha`), the source delayed by one sample (`source_shift`), a
symmetric instead of the periodic Hann window in the ISTFT (`istft_window`), each on voiced tiny bundles.

Per export: pass/refuse, the worst comparison (largest bound use = max |err| / allowed; >1 refuses), and,
for passing voiced bundles, F0's relative error ORT vs upstream in float32 ulps and whether the cached
source prefix is exact. Writes TABLE (markdown) and, with matplotlib, a PNG of the bound use per bundle.
Exit 1 on any false refusal, any planted bug that passes, or a cached prefix that is not exact.

    .venv/bin/python ci/sweep_hift_gate.py [--tiny 30] [--medium 3] [--work build/sweep_hift_gate]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from full_size import REPO  # noqa: E402

BUGS = ("snake_alpha", "source_shift", "istft_window")


@dataclass
class Row:
    name: str
    size: str
    seed: int
    variant: str  # upstream | voiced | bug:<name>
    f0_mean: float
    peak: float
    refused: bool
    worst: str
    bound_use: float
    f0_ulps: float = float("nan")
    prefix_exact: bool | None = None
    seconds: float = 0.0

    @property
    def expect_refuse(self) -> bool:
        return self.variant.startswith("bug:")

    @property
    def ok(self) -> bool:
        return self.refused == self.expect_refuse and self.prefix_exact is not False


def upstream_bundle(work: Path, size: str, seed: int) -> Path:
    from exporters.random.bundle import make_random_bundle

    path = work / f"bundle-{size}-{seed}"
    if not path.exists():
        make_random_bundle(path, size, seed, calibrate=False)
    return path


def voiced_bundle(work: Path, base: Path, size: str, seed: int) -> tuple[Path, float, float]:
    """A copy of `base` with only the F0 classifier (mean 80..400 Hz, seeded) and conv_post's magnitude bias
    (peak 0.4..0.95) changed. Returns (path, F0 mean, target peak)."""
    import numpy as np
    import torch

    from exporters.model.bundle import Bundle
    from exporters.oracles.flow import upstream_flow_mel
    from exporters.random.calibration import set_f0_classifier

    rng = np.random.default_rng(1000 + seed)
    f0_mean, peak = float(rng.uniform(80, 400)), float(rng.uniform(0.4, 0.95))
    path = work / f"bundle-{size}-{seed}-voiced"
    if path.exists():
        return path, f0_mean, peak
    tmp = work / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    model = Bundle.open(tmp).build(with_llm=False)
    hift = model.hift
    mel = upstream_flow_mel(model.flow, torch.Generator().manual_seed(seed + 1000))
    with torch.no_grad():
        set_f0_classifier(hift.f0_predictor, mel, f0_mean, 0.2 * f0_mean)  # spread 20 % of the mean
        torch.manual_seed(seed)
        limit, hift.audio_limit = hift.audio_limit, float("inf")
        wav, _ = hift.inference(speech_feat=mel)
        hift.audio_limit = limit
        n_mag = hift.istft_params["n_fft"] // 2 + 1
        hift.conv_post.bias[:n_mag] += math.log(peak / float(wav.abs().max()))  # ISTFT is linear in magnitude
    torch.save(hift.state_dict(), tmp / "hift.pt")
    tmp.rename(path)
    return path, f0_mean, peak


def buggy_exporter(bug: str):
    """HiftExporter with one planted bug in the exported graph (the test vectors still come from upstream)."""
    import torch

    from exporters.graphs.hift import HiftExporter, conv_stft_patch

    class Buggy(HiftExporter):
        def wrapper(self, model):
            w = super().wrapper(model)
            if bug == "snake_alpha":
                with torch.no_grad():
                    w.hift.resblocks[0].activations1[0].alpha.mul_(1.5)
            elif bug == "source_shift":
                source = w.source

                class Shifted(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.inner = source

                    def forward(self, f0, noise):
                        s = self.inner(f0, noise)
                        return torch.cat([s[:, :, :1], s[:, :, :-1]], dim=2)  # one sample late

                w.source = Shifted()
            return w

        def patches(self, model):
            if bug != "istft_window":
                return conv_stft_patch()
            return symmetric_window_istft()

    return Buggy


@contextlib.contextmanager
def symmetric_window_istft():
    """conv_stft_patch with the ISTFT's window swapped for a symmetric Hann (upstream: periodic)."""
    import torch
    from cosyvoice.hifigan.generator import HiFTGenerator

    from exporters.graphs.hift import conv_stft_patch
    from exporters.rewrites.istft import ConvISTFT

    with conv_stft_patch():
        stft = HiFTGenerator._stft

        def _istft(self, magnitude, phase):
            p = self.istft_params
            magnitude = torch.clip(magnitude, max=1e2)
            real, imag = magnitude * torch.cos(phase), magnitude * torch.sin(phase)
            window = torch.hann_window(p["n_fft"], periodic=False)
            return ConvISTFT(p["n_fft"], p["hop_len"], window)(real, imag)

        HiFTGenerator._stft, HiFTGenerator._istft = stft, _istft
        yield  # conv_stft_patch restores upstream's methods on exit


@contextlib.contextmanager
def registered(exporter_cls):
    from exporters import graphs

    saved = graphs.REGISTRY["hift"]
    graphs.REGISTRY["hift"] = exporter_cls
    try:
        yield
    finally:
        graphs.REGISTRY["hift"] = saved


@contextlib.contextmanager
def gate_calls():
    """Every call of the export gate (ONNX Runtime vs upstream) while inside, as lists of comparisons: also
    when the export refuses (its error carries only the first failure)."""
    import exporters.pipeline.checks as checks

    calls: list[list] = []
    real = checks.ort_check

    def spy(path, spec, cases, label):
        results = real(path, spec, cases, label)
        calls.append(results)
        return results

    checks.ort_check = spy
    try:
        yield calls
    finally:
        checks.ort_check = real


def export_hift(bundle: Path, out: Path, seed: int, simplify: bool):
    """(refused, lines, comparisons) of `tts-export --graphs hift` on `bundle`."""
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from specs.errors import ToolError

    shutil.rmtree(out, ignore_errors=True)
    lines: list[str] = []
    with gate_calls() as calls:
        try:
            opts = ExportOptions(seed=seed, simplify=simplify, log=lines.append)
            export_pack(bundle, out, ["hift"], opts, log=lines.append)
            refused = False
        except ToolError:
            refused = True
    return refused, lines, calls[0] if calls else []


def f0_relative_ulps(bundle: Path, pack: Path) -> float:
    import numpy as np
    import torch

    from exporters.model.bundle import Bundle
    from exporters.oracles.hift import graph_f0
    from specs.pack import Pack

    entry = Pack.open(pack).graph("hift")
    facts = entry.spec().facts
    f0g = graph_f0(entry.onnx_path, facts["samples_per_mel_frame"], facts["harmonics"])
    hift = Bundle.open(bundle).build(with_llm=False).hift
    worst = 0.0
    for ins, _ in entry.vectors().values():
        with torch.no_grad():
            up = hift.f0_predictor(torch.from_numpy(ins["mel"])).numpy().astype(np.float64)
        got = f0g(ins["mel"]).astype(np.float64)
        voiced = up > 10
        if voiced.any():
            worst = max(worst, float((np.abs(got - up)[voiced] / up[voiced]).max()) / 2.0**-24)
    return worst


def worst_of(comps) -> tuple[str, float]:
    if not comps:
        return "no comparison (export failed before the gate)", float("nan")
    failed = [c for c in comps if not c.passed]
    c = max(failed or comps, key=lambda c: c.bound_use)
    return c.line(), max(x.bound_use for x in comps)


def run_one(name, size, seed, variant, bundle, work, f0_mean, peak, simplify, log) -> Row:
    t0 = time.time()
    out = work / "packs" / name
    refused, _lines, comps = export_hift(bundle, out, seed, simplify)
    line, use = worst_of(comps)
    row = Row(name, size, seed, variant, f0_mean, peak, refused, line, use)
    if not refused and variant == "voiced":
        row.f0_ulps = f0_relative_ulps(bundle, out)
    if not refused:
        import numpy as np

        from backends.ort import OrtRunner
        from specs.pack import Pack

        entry = Pack.open(out).graph("hift")
        runner = OrtRunner(entry.onnx_path, entry.spec())
        row.prefix_exact = all(
            bool(np.array_equal(runner.run(ins)["source"][:, :, : ins["cache_source"].shape[2]], ins["cache_source"]))
            for ins, _ in entry.vectors().values()
        )
    shutil.rmtree(out, ignore_errors=True)
    row.seconds = time.time() - t0
    verdict = "refused" if refused else "passed"
    flag = "ok" if row.ok else "WRONG"
    log(f"{flag:5s} {name:28s} {verdict:7s} bound use {use:9.3g} | {line}")
    return row


def write_table(rows: list[Row], path: Path) -> None:
    head = "| bundle | variant | F0 mean Hz | peak | verdict | expected | bound use | F0 err ulps | prefix exact |"
    out = [head, "|" + "---|" * 9]
    for r in rows:
        out.append(
            f"| {r.name} | {r.variant} | {r.f0_mean:.0f} | {r.peak:.2f} | {'refused' if r.refused else 'passed'} "
            f"| {'refuse' if r.expect_refuse else 'pass'} | {r.bound_use:.3g} | "
            f"{'' if math.isnan(r.f0_ulps) else f'{r.f0_ulps:.1f}'} | "
            f"{'' if r.prefix_exact is None else r.prefix_exact} |"
        )
    out.append("")
    out.append("Worst comparison per bundle:")
    out.append("")
    out += [f"- {r.name}: `{r.worst}`" for r in rows]
    path.write_text("\n".join(out) + "\n")


def plot(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.18), 4))
    colors = {"upstream": "tab:blue", "voiced": "tab:green"}
    for i, r in enumerate(rows):
        ax.scatter(i, max(r.bound_use, 1e-6), color=colors.get(r.variant, "tab:red"), s=14)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [r.name for r in rows], rotation=90, fontsize=5)
    ax.set_ylabel("max |err| / allowed (refused > 1)")
    ax.set_title("hift gate: blue upstream init, green voiced, red planted bugs")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return True


def sweep_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every gate sweep shares: how many upstream-init bundles, planted-bug seeds, where bundles live."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", type=int, default=30, help="upstream-init tiny bundles, seeds 0..N-1 (default 30)")
    ap.add_argument("--medium", type=int, default=3, help="upstream-init medium bundles, seeds 0..M-1 (default 3)")
    ap.add_argument("--bug-seeds", type=int, default=2, help="tiny seeds each planted bug runs on (default 2)")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "sweep_hift_gate", help="bundles are kept here")
    return ap


def main() -> int:
    ap = sweep_arguments(__doc__)
    ap.add_argument("--simplify", action="store_true", help="also run onnxsim as tts-export does (slower)")
    ap.add_argument("--table", type=Path, default=None, help="markdown table (default WORK/table.md)")
    ap.add_argument("--plot", type=Path, default=None, help="PNG of the bound use (default WORK/bound_use.png)")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    table, png = args.table or work / "table.md", args.plot or work / "bound_use.png"

    def log(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.time()
    rows: list[Row] = []
    plan = [("tiny", s) for s in range(args.tiny)] + [("medium", s) for s in range(args.medium)]
    for size, seed in plan:
        base = upstream_bundle(work, size, seed)
        rows.append(run_one(f"{size}-{seed}", size, seed, "upstream", base, work, float("nan"), float("nan"),
                            args.simplify, log))  # fmt: skip
        voiced, f0_mean, peak = voiced_bundle(work, base, size, seed)
        rows.append(run_one(f"{size}-{seed}-voiced", size, seed, "voiced", voiced, work, f0_mean, peak,
                            args.simplify, log))  # fmt: skip
    for bug in BUGS:
        for seed in range(args.bug_seeds):
            voiced, f0_mean, peak = voiced_bundle(work, upstream_bundle(work, "tiny", seed), "tiny", seed)
            with registered(buggy_exporter(bug)):
                rows.append(run_one(f"bug-{bug}-tiny-{seed}", "tiny", seed, f"bug:{bug}", voiced, work, f0_mean,
                                    peak, args.simplify, log))  # fmt: skip
    write_table(rows, table)
    plotted = plot(rows, png)
    good = [r for r in rows if not r.expect_refuse]
    bugs = [r for r in rows if r.expect_refuse]
    false_refusals = [r for r in good if r.refused]
    missed = [r for r in bugs if not r.refused]
    not_exact = [r for r in rows if r.prefix_exact is False]
    ulps = [r.f0_ulps for r in good if not math.isnan(r.f0_ulps)]
    for size in ("tiny", "medium"):
        for variant in ("upstream", "voiced"):
            sel = [r for r in good if r.size == size and r.variant == variant]
            if sel:
                log(
                    f"{size:6s} {variant:8s}: {sum(not r.refused for r in sel)}/{len(sel)} passed, "
                    f"worst bound use {max(r.bound_use for r in sel):.3g}"
                )
    log(
        f"planted bugs: {sum(r.refused for r in bugs)}/{len(bugs)} refused, smallest bound use "
        f"{min((r.bound_use for r in bugs), default=float('nan')):.3g}"
    )
    if ulps:
        log(f"F0 relative error ORT vs upstream (voiced frames): max {max(ulps):.1f} float32 ulps")
    log(f"table: {table}" + (f", plot: {png}" if plotted else " (matplotlib not installed: no plot)"))
    log(f"{time.time() - t0:.0f} s")
    if false_refusals or missed or not_exact:
        log(
            f"FAILED: {len(false_refusals)} false refusal(s) {[r.name for r in false_refusals]}, "
            f"{len(missed)} planted bug(s) passed {[r.name for r in missed]}, "
            f"{len(not_exact)} inexact cached prefix(es) {[r.name for r in not_exact]}"
        )
        return 1
    log("PASSED: no false refusal, every planted bug refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
