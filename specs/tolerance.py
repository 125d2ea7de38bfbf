"""A tolerance: how far an output may be from its reference, and why (judged by specs/compare.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Tolerance:
    atol: float
    rtol: float = 0.0
    reason: str = ""
    # "elementwise": |a-e| <= atol + rtol*|e| everywhere; "exact": equal (integer outputs).
    check: str = "elementwise"

    def to_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "reason": self.reason, "check": self.check}
