"""The hift export gate (exporters/graphs/hift.py `hift_tolerances`, comparator check `phase_drift`): bundles from
upstream's own initialisation pass (also with a voiced F0, where the phase drifts), planted bugs are refused,
and the check kind itself bounds the error as documented. The full sweep: ci/sweep_hift_gate.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from specs.compare import DRIFT_WINDOW, compare, drift_envelope
from specs.tolerance import Tolerance

REPO = Path(__file__).resolve().parents[1]


def drift_tol(atol=1e-5, drift=1e-3) -> Tolerance:
    return Tolerance(atol=atol, check="phase_drift", drift=drift, reason="unit test of the phase_drift check")


def sine(n=4000, freq=0.01, amp=0.5):
    return amp * np.sin(2 * np.pi * freq * np.arange(n))[None, :]


def test_phase_drift_passes_a_delay_within_the_bound():
    e = sine()
    n = np.arange(e.shape[-1])
    delayed = 0.5 * np.sin(2 * np.pi * 0.01 * (n - 0.8e-3 * n))[None, :]  # delay 0.8 x drift * n
    c = compare(delayed, e, drift_tol(), "g/c/y")
    assert c.passed and c.check == "phase_drift" and 0.5 < c.bound_use <= 1.0, c.line()
    assert "drift 0.001/sample" in c.line() and c.line().startswith("PASSED | g/c/y | max_abs=")


def test_phase_drift_fails_beyond_the_bound_and_on_an_offset_or_shift():
    e = sine()
    n = np.arange(e.shape[-1])
    assert not compare(0.5 * np.sin(2 * np.pi * 0.01 * (n - 2e-3 * n))[None, :], e, drift_tol(), "g").passed
    assert not compare(e + 2e-5, e, drift_tol(), "offset").passed  # fails at the first sample: bound = atol
    shifted = np.concatenate([e[:, :1], e[:, :-1]], axis=1)  # one sample late, from sample 1 on
    assert not compare(shifted, e, drift_tol(), "shift").passed


def test_phase_drift_nan_shape_and_envelope():
    tol = drift_tol(atol=1.0, drift=1.0)
    a = sine()
    a[0, 5] = np.nan
    assert "NaN/Inf" in compare(a, sine(), tol, "n").problem and not compare(a, sine(), tol, "n").passed
    assert not compare(np.zeros((1, 3)), np.zeros((1, 4)), tol, "s").passed
    env = drift_envelope(np.array([[0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]))
    assert env[0, 0] == 0.0 and env[0, DRIFT_WINDOW] == DRIFT_WINDOW and env[0, DRIFT_WINDOW + 1] == 0.0
    assert compare(sine(), sine(), tol, "same").passed


def test_phase_drift_tolerance_round_trips_and_validates():
    schema = json.loads((REPO / "specs" / "schema" / "io_spec.schema.json").read_text())
    sub = {"$defs": schema["$defs"], **schema["$defs"]["tolerance"]}
    t = drift_tol(drift=3e-6)
    d = t.to_dict()
    assert d["drift"] == 3e-6 and Tolerance(**d) == t
    jsonschema.validate(d, sub)
    plain = Tolerance(1e-5, 0, "elementwise keeps its four keys").to_dict()
    assert set(plain) == {"atol", "rtol", "reason", "check"}
    jsonschema.validate(plain, sub)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**d, "check": "elementwise"}, sub)  # drift only with phase_drift
    with pytest.raises(ValueError):
        Tolerance(1e-5, 0, "x", check="elementwise", drift=1e-3)
    with pytest.raises(ValueError):
        Tolerance(1e-5, 0, "x", check="spectral")


# --- the gate on real exports (upstream oracle) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sys.path.insert(0, str(REPO / "ci"))
    spec = importlib.util.spec_from_file_location("sweep_hift_gate", REPO / "ci" / "sweep_hift_gate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sweep_hift_gate"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    mod.WORK = tmp_path_factory.mktemp("sweep")
    return mod


def run(sweep, size, seed, voiced=False, bug=None):
    base = sweep.upstream_bundle(sweep.WORK, size, seed)
    bundle, f0_mean, peak = sweep.voiced_bundle(sweep.WORK, base, size, seed) if voiced else (base, 0.0, 0.0)
    name = f"{size}-{seed}-{'v' if voiced else 'u'}-{bug or 'ok'}"
    variant = f"bug:{bug}" if bug else ("voiced" if voiced else "upstream")
    if bug is None:
        return sweep.run_one(name, size, seed, variant, bundle, sweep.WORK, f0_mean, peak, False, lambda m: None)
    with sweep.registered(sweep.buggy_exporter(bug)):
        return sweep.run_one(name, size, seed, variant, bundle, sweep.WORK, f0_mean, peak, False, lambda m: None)


@pytest.mark.oracle
@pytest.mark.parametrize("seed", [3, 7])
def test_upstream_init_tiny_bundles_pass(sweep, seed):
    for voiced in (False, True):
        row = run(sweep, "tiny", seed, voiced)
        assert not row.refused and row.bound_use < 0.5, row.worst
        assert row.prefix_exact, "the cached source prefix must be a bit-exact copy of cache_source"
    assert row.f0_ulps < 32  # the drift budget is 64 ulps of F0 (exporters/graphs/hift.py)


@pytest.mark.oracle
@pytest.mark.parametrize("bug", ["snake_alpha", "source_shift", "istft_window"])
def test_planted_bugs_are_refused(sweep, bug):
    row = run(sweep, "tiny", 0, voiced=True, bug=bug)
    assert row.refused and row.bound_use > 5, row.worst


@pytest.mark.oracle
def test_hift_spec_declares_phase_drift(tiny_model):
    from exporters.graphs.hift import HIFT_DRIFT, HiftExporter

    tol = HiftExporter().spec(tiny_model).tolerances
    for name in ("audio", "source"):
        assert tol[name].check == "phase_drift" and tol[name].drift == HIFT_DRIFT and tol[name].atol <= 1e-5
        assert "ulps" in tol[name].reason and "sweep" in tol[name].reason
