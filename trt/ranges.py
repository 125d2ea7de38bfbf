"""Small value types shared by the per-graph rules and the profile derivation."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DimRange:
    """min/opt/max of one named dim in one optimisation profile, with where the numbers come from."""

    min: int
    opt: int
    max: int
    why: str = ""

    @classmethod
    def pinned(cls, value: int, why: str = "") -> "DimRange":
        return cls(value, value, value, why)

    def contains(self, value: int) -> bool:
        return self.min <= value <= self.max

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max, "why": self.why}


@dataclass
class ProfileDraft:
    """What a per-graph rule says about one profile: ranges for the dims it knows (others: the spec's)."""

    name: str
    dims: dict[str, DimRange] = field(default_factory=dict)
    doc: str = ""
