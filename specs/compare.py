"""The one comparator: `tts-validate`, the exporters' self-checks and the tests all judge arrays here.

Modelled on Polygraphy's comparator: a tolerance per output, statistics of the difference with the
index of the largest error, the smallest tolerance that would have passed, NaN/Inf always fail, and
one verdict grammar:

    PASSED | hift/first_chunk/audio | max_abs=2.1e-06 (atol 1e-05, rtol 0) at [0, 23999] | required atol=2.1e-06
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from specs.io_spec import Tolerance


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
        return (
            f"{verdict} | {self.label} | max_abs={self.max_abs:.2e} (atol {self.atol:g}, rtol {self.rtol:g}) "
            f"at {self.at_index} | max_rel={self.max_rel:.2e} | required atol={self.required_atol:.2e}"
        )


def compare(actual: np.ndarray, expected: np.ndarray, tol: Tolerance, label: str) -> Comparison:
    """Compare one output against its expected value under `tol`."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    c = Comparison(label=label, passed=False, check=tol.check, atol=tol.atol, rtol=tol.rtol, size=int(expected.size))
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
    c.required_atol = float(max(over.max(), 0.0))
    c.mismatches = int((over > tol.atol).sum())
    c.passed = c.mismatches == 0
    return c


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
