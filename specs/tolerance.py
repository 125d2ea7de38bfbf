"""A tolerance: how far an output may be from its reference, and why (judged by specs/compare.py)."""

from __future__ import annotations

from dataclasses import dataclass

CHECKS = ("elementwise", "exact", "phase_drift")


@dataclass
class Tolerance:
    atol: float
    rtol: float = 0.0
    reason: str = ""
    # "elementwise": |a-e| <= atol + rtol*|e| everywhere; "exact": equal (integer outputs);
    # "phase_drift": |a-e|[..., n] <= atol + rtol*|e| + drift * n * slope_e(n) along the last (time) axis, n = 0 at
    # the call's first sample, slope_e(n) = the reference's largest one-sample step |e[m+1] - e[m]| within
    # DRIFT_WINDOW samples of n (specs/compare.py). For outputs driven by an integrated phase: a relative error
    # `drift` of the integrated frequency shifts the phase of every component by drift * (its phase), i.e. delays
    # the signal by at most drift * n samples, and a delay of d samples moves a sample by <= d * slope_e.
    check: str = "elementwise"
    drift: float = 0.0  # phase_drift only: the bound on the relative error of the integrated frequency

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"unknown tolerance check {self.check!r} (one of {', '.join(CHECKS)})")
        if self.drift < 0 or (self.drift and self.check != "phase_drift"):
            raise ValueError(f"drift {self.drift} is only meaningful (>= 0) with check 'phase_drift'")

    def to_dict(self) -> dict:
        d = {"atol": self.atol, "rtol": self.rtol, "reason": self.reason, "check": self.check}
        if self.check == "phase_drift":  # other checks keep their four keys (specs and plan metadata unchanged)
            d["drift"] = self.drift
        return d
