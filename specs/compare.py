"""The one comparator: `tts-validate`, the exporters' self-checks and the tests all judge arrays here.

Modelled on Polygraphy's comparator: a tolerance per output, statistics of the difference with the
index of the largest error, the smallest tolerance that would have passed, NaN/Inf always fail, and
one verdict grammar:

    PASSED | hift/first_chunk/audio | max_abs=2.1e-06 (atol 1e-05, rtol 0) at [0, 23999] | required atol=2.1e-06

Check kinds (specs/tolerance.py): "elementwise" (|a-e| <= atol + rtol*|e|), "exact", and "phase_drift" for
outputs driven by an integrated phase, whose allowed error grows along the time axis:

    |a-e|[..., n] <= atol + rtol*|e| + drift * n * slope_e(n),   slope_e(n) = max |e[m+1] - e[m]|, |m - n| <= W

with n the index on the last axis (0 at the call's first sample) and W = DRIFT_WINDOW. A relative error
`drift` of the frequency that a phase integrates changes the phase of every component by at most drift x its
own phase, which for a component of frequency F at sample n (phase 2*pi*F*n/sr) is the phase of a delay of
drift * n samples, the same for every component: the signal is delayed by <= drift * n samples, and a delay of
d samples moves a sample by at most d times the signal's local step. The bound is atol at the call's start and
rises only as fast as the phase can drift, so a constant offset, a one-sample shift or a wrong gain still fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from specs.io_spec import Tolerance

# phase_drift: half-width (samples) of the window over which the reference's one-sample step is maximised. A
# drifted sample a[n] = e(n - d) lies between e's samples around n - d, |d| << 1 at these bounds; the window
# also covers a step that vanishes at an extremum of e while its neighbours do not.
DRIFT_WINDOW = 4


@dataclass
class Comparison:
    label: str  # graph/case/output
    passed: bool
    check: str
    atol: float
    rtol: float
    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    at_index: list[int] = field(default_factory=list)
    required_atol: float = 0.0  # smallest atol that passes at the given rtol
    expected_absmax: float = 0.0
    mismatches: int = 0  # elements outside tolerance (or unequal, for exact)
    size: int = 0
    problem: str = ""  # shape/dtype/NaN problems, empty when the values were compared
    drift: float = 0.0  # phase_drift: the tolerance's drift (0 for the other checks)
    bound_use: float = 0.0  # max over elements of |a-e| / allowed error (passes iff <= 1; not for exact)

    def line(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        if self.problem:
            return f"{verdict} | {self.label} | {self.problem}"
        if self.check == "exact":
            return (
                f"{verdict} | {self.label} | {self.mismatches}/{self.size} elements differ"
                + (f", first at {self.at_index}" if self.mismatches else "")
                + " (exact)"
            )
        drift = f", drift {self.drift:g}/sample, bound use {self.bound_use:.2f}" if self.check == "phase_drift" else ""
        return (
            f"{verdict} | {self.label} | max_abs={self.max_abs:.2e} (atol {self.atol:g}, rtol {self.rtol:g}{drift}) "
            f"at {self.at_index} | max_rel={self.max_rel:.2e} | required atol={self.required_atol:.2e}"
        )


def compare(actual: np.ndarray, expected: np.ndarray, tol: Tolerance, label: str) -> Comparison:
    """Compare one output against its expected value under `tol`."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    c = Comparison(
        label=label,
        passed=False,
        check=tol.check,
        atol=tol.atol,
        rtol=tol.rtol,
        size=int(expected.size),
        drift=tol.drift if tol.check == "phase_drift" else 0.0,
    )
    if actual.shape != expected.shape:
        c.problem = f"shape {list(actual.shape)} differs from expected {list(expected.shape)}"
        return c
    if expected.size == 0:
        c.passed = True
        return c
    if tol.check == "exact" or not np.issubdtype(expected.dtype, np.floating):
        diff = actual != expected
        c.mismatches = int(diff.sum())
        c.passed = c.mismatches == 0
        c.check = "exact"
        if c.mismatches:
            c.at_index = [int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)]
        return c
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    if not np.all(np.isfinite(a)):
        bad = ~np.isfinite(a)
        idx = [int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape)]
        c.problem = f"{int(bad.sum())} NaN/Inf values in the actual output, first at {idx}"
        return c
    if not np.all(np.isfinite(e)):
        c.problem = "NaN/Inf values in the expected output"
        return c
    absdiff = np.abs(a - e)
    flat = int(np.argmax(absdiff))
    c.max_abs = float(absdiff.reshape(-1)[flat])
    c.at_index = [int(i) for i in np.unravel_index(flat, absdiff.shape)]
    c.mean_abs = float(absdiff.mean())
    c.max_rel = float(np.max(absdiff / np.maximum(np.abs(e), 1e-12)))
    c.expected_absmax = float(np.abs(e).max())
    over = absdiff - tol.rtol * np.abs(e)
    if c.check == "phase_drift":
        over = over - c.drift * drift_envelope(e)
    c.required_atol = float(max(over.max(), 0.0))
    c.mismatches = int((over > tol.atol).sum())
    c.bound_use = float(np.max(absdiff / np.maximum(absdiff - over + tol.atol, 1e-30)))
    c.passed = c.mismatches == 0
    return c


def drift_envelope(expected: np.ndarray, window: int = DRIFT_WINDOW) -> np.ndarray:
    """n * slope_e(n) along the last axis: the most a delay of n * 1 samples can move e[..., n] (see the module
    doc), with slope_e(n) the largest |e[m+1] - e[m]| for |m - n| <= window (edges: the window is clipped)."""
    e = np.asarray(expected, np.float64)
    if e.ndim == 0 or e.shape[-1] < 2:
        return np.zeros_like(e)
    step = np.abs(np.diff(e, axis=-1))
    step = np.concatenate([step, step[..., -1:]], axis=-1)  # step[n] = |e[n+1] - e[n]|, last repeated
    pad = [(0, 0)] * (e.ndim - 1) + [(window, window)]
    padded = np.pad(step, pad, mode="edge")
    slope = np.lib.stride_tricks.sliding_window_view(padded, 2 * window + 1, axis=-1).max(axis=-1)
    return slope * np.arange(e.shape[-1], dtype=np.float64)


@dataclass
class Report:
    """A list of comparisons plus the closing summary; renders to console lines and JSON."""

    title: str
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, c: Comparison) -> Comparison:
        self.comparisons.append(c)
        return c

    def extend(self, cs: Iterable[Comparison]) -> None:
        self.comparisons.extend(cs)

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    def summary(self) -> str:
        n_ok = sum(c.passed for c in self.comparisons)
        return f"{'PASSED' if self.passed else 'FAILED'} {n_ok}/{len(self.comparisons)} outputs | {self.title}"

    def lines(self) -> list[str]:
        return [c.line() for c in self.comparisons] + [self.summary()]

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "passed": self.passed,
            "notes": self.notes,
            "comparisons": [asdict(c) for c in self.comparisons],
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def check_vectors(runner, vectors, label: str | None = None, tolerances=None) -> list[Comparison]:
    """Every test case of `vectors` run on `runner` (any backend's Runner: `spec` and `run(feed)`), each expected
    output judged under the spec's tolerance (or `tolerances`, output name -> Tolerance, where given)."""
    spec = runner.spec
    tol = {**spec.tolerances, **(tolerances or {})}
    label = label or spec.graph
    results = []
    for case, (ins, outs) in vectors.items():
        got = runner.run(ins)
        for name, expected in outs.items():
            if name not in got:
                results.append(
                    Comparison(
                        label=f"{label}/{case}/{name}",
                        passed=False,
                        check="elementwise",
                        atol=0,
                        rtol=0,
                        problem=f"graph has no output {name!r}",
                    )
                )
            else:
                results.append(compare(got[name], expected, tol[name], f"{label}/{case}/{name}"))
    return results
