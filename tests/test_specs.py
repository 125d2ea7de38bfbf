"""The pack contract: I/O spec schema + consistency, feed checks, and the comparator's verdicts."""

import json

import numpy as np
import pytest

from specs.compare import Report, compare
from specs.errors import ToolError
from specs.io_spec import GraphSpec, Tolerance
from tests.support.specs import make_spec


def test_spec_round_trips_through_json_and_schema():
    spec = make_spec()
    again = GraphSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec
    assert again.free_dims() == ["frames", "cache_len"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["inputs"][0]["shape"].__setitem__(2, "nope"), "undeclared dim 'nope'"),
        (lambda d: d["dims"]["frames"].update(min=50), "min/opt/max 50/10/100"),
        (lambda d: d["tolerances"].pop("y"), "output 'y' has no tolerance"),
        (lambda d: d["tolerances"]["y"].update(reason="short"), "field tolerances/y/reason"),
        (lambda d: d["inputs"][0].update(dtype="float64"), "field inputs/0/dtype"),
        (lambda d: d.pop("cases"), "'cases' is a required property"),
    ],
)
def test_bad_specs_are_named_errors(mutate, message):
    d = make_spec().to_dict()
    mutate(d)
    with pytest.raises(ToolError) as e:
        GraphSpec.from_dict(d, "toy.io.json")
    assert "toy.io.json" in str(e.value) and message in str(e.value)


def test_check_feed_accepts_zero_length_cache_and_binds_dims():
    spec = make_spec()
    bound = spec.check_feed({"x": np.zeros((1, 4, 7), np.float32), "cache": np.zeros((1, 0), np.float32)})
    assert bound == {"frames": 7, "cache_len": 0}


@pytest.mark.parametrize(
    "feed, message",
    [
        ({"x": np.zeros((1, 4, 7), np.float64), "cache": np.zeros((1, 0), np.float32)}, "dtype float64"),
        ({"x": np.zeros((1, 5, 7), np.float32), "cache": np.zeros((1, 0), np.float32)}, "axis 1 fixed at 4"),
        ({"x": np.zeros((1, 4, 101), np.float32), "cache": np.zeros((1, 0), np.float32)}, "frames in [1, 100]"),
        ({"x": np.zeros((1, 4, 7), np.float32)}, "missing ['cache']"),
    ],
)
def test_check_feed_rejects_with_a_clear_message(feed, message):
    with pytest.raises(ToolError) as e:
        make_spec().check_feed(feed)
    assert message in str(e.value)


def test_comparator_reports_max_error_location_and_required_tolerance():
    expected = np.zeros((2, 3), np.float32)
    actual = expected.copy()
    actual[1, 2] = 3e-5
    c = compare(actual, expected, Tolerance(1e-5, 0, "test tolerance"), "g/case/y")
    assert not c.passed and c.at_index == [1, 2] and c.mismatches == 1
    assert c.required_atol == pytest.approx(3e-5, rel=1e-3)
    assert c.line().startswith("FAILED | g/case/y | max_abs=3.00e-05")
    assert compare(actual, expected, Tolerance(c.required_atol * 1.01, 0, "just enough"), "g/c/y").passed


def test_comparator_rtol_scales_with_expected_magnitude():
    e = np.array([100.0, 0.0])
    a = np.array([100.05, 0.0])
    assert compare(a, e, Tolerance(0.0, 1e-3, "relative only"), "r").passed
    assert not compare(a, e, Tolerance(0.0, 1e-4, "relative only"), "r").passed


def test_comparator_fails_on_nan_shape_and_integer_mismatch():
    tol = Tolerance(1.0, 0, "loose but NaN still fails")
    assert "NaN/Inf" in compare(np.array([np.nan]), np.array([0.0]), tol, "n").problem
    assert "shape" in compare(np.zeros(3), np.zeros(4), tol, "s").problem
    ints = compare(np.array([1, 2, 3]), np.array([1, 2, 4]), tol, "ids")
    assert ints.check == "exact" and not ints.passed and ints.at_index == [2]


def test_report_summary_and_json(tmp_path):
    r = Report("toy")
    r.add(compare(np.ones(3), np.ones(3), Tolerance(0, 0, "exact copy expected"), "a"))
    r.add(compare(np.ones(3), np.zeros(3), Tolerance(0, 0, "exact copy expected"), "b"))
    assert r.summary().startswith("FAILED 1/2 outputs")
    r.write_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False
