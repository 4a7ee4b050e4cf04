"""The gate's statistics against hand-computed values, and its per-suite verdicts."""

from __future__ import annotations

import pytest

from learner.gate import GateConfig, compare_suite, decide
from learner.stats import binom_sf_half, bwt, mcnemar_exact, mean_ci, sign_test, wilson
from skills.evaluate import SuiteResult

# ---- Wilson ------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    (8, 10, 0.4901625, 0.9433178),  # p=.8: centre .716741, half .226578
    (0, 10, 0.0, 0.2775328),  # centre = half = 0.1387664
    (10, 10, 0.7224672, 1.0),
    (30, 30, 0.8864866, 1.0),  # k = n: lower = n / (n + z²)
    (1, 2, 0.0945312, 0.9054688),
])
def test_wilson_matches_hand_computation(k, n, lo, hi):
    assert wilson(k, n) == pytest.approx((lo, hi), abs=1e-6)


def test_wilson_edge_cases():
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


# ---- exact McNemar / sign test ----------------------------------------------------------


def test_binomial_tail():
    assert binom_sf_half(8, 10) == pytest.approx(56 / 1024)  # C(10,8)+C(10,9)+C(10,10) = 45+10+1
    assert binom_sf_half(0, 5) == 1.0 and binom_sf_half(6, 5) == 0.0


@pytest.mark.parametrize(("b", "c", "alternative", "p"), [
    (5, 0, "two-sided", 2 / 32),
    (5, 0, "greater", 1 / 32),
    (5, 0, "less", 1.0),
    (6, 1, "greater", 8 / 128),  # P(X >= 6 | n = 7) = (7 + 1) / 128
    (6, 1, "two-sided", 16 / 128),
    (1, 6, "less", 8 / 128),
    (3, 3, "greater", 42 / 64),  # (20 + 15 + 6 + 1) / 64
    (3, 3, "two-sided", 1.0),  # 2 * 42/64 capped
    (0, 0, "two-sided", 1.0),
    (10, 0, "greater", 1 / 1024),
])
def test_mcnemar_exact(b, c, alternative, p):
    assert mcnemar_exact(b, c, alternative) == pytest.approx(p)


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)
    with pytest.raises(ValueError):
        mcnemar_exact(1, 2, "bigger")


def test_sign_test_drops_ties():
    assert sign_test([0.1, -0.2, 0.0, 0.3, 0.5], "greater") == (3, 1, pytest.approx(5 / 16))


# ---- BWT, mean interval -----------------------------------------------------------------


def test_bwt():
    assert bwt([[0.9, 0.1], [0.7, 0.8]]) == pytest.approx(-0.2)
    R = [[0.8, None, None], [0.6, 0.9, None], [0.5, 0.7, 0.95]]
    assert bwt(R) == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)
    assert bwt([[0.5]]) is None
    assert bwt([[None, 0.1], [0.7, 0.8]]) is None  # the only term has a missing cell


def test_mean_ci():
    assert mean_ci([1.0, 2.0, 3.0]) == pytest.approx((2 - 1.959964 / 3 ** 0.5, 2 + 1.959964 / 3 ** 0.5))
    assert mean_ci([0.5]) == (0.5, 0.5)


# ---- per-suite verdicts -----------------------------------------------------------------


def _suite(scores, name="s", kind="skill", metric="accuracy", higher=True):
    return SuiteResult(name=name, kind=kind, metric=metric, higher_is_better=higher,
                       cases=[{"id": str(i), "score": float(x)} for i, x in enumerate(scores)])


def _cmp(a, b, **kw):
    kw.setdefault("tolerance", 0.02)
    kw.setdefault("alpha", 0.05)
    return compare_suite(_suite(a), _suite(b), **kw)


def test_small_suite_noise_does_not_block():
    # 10 cases: 6/10 -> 4/10 with 3 flipped down and 1 up: 20 points, but p = P(X>=3|4) = 5/16
    a = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    b = [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]
    c = _cmp(a, b)
    assert (c.worse_cases, c.better_cases, c.verdict) == (3, 1, "drop not significant")
    assert c.p_value == pytest.approx(5 / 16) and not c.blocks


def test_real_drop_blocks():
    a = [1] * 30 + [0] * 10
    b = [1] * 20 + [0] * 20  # 10 worse, 0 better: p = 1/1024
    c = _cmp(a, b)
    assert (c.champion, c.candidate, c.verdict) == (0.75, 0.5, "regressed") and c.blocks
    assert c.p_value == pytest.approx(1 / 1024)
    assert c.reason == ("s: 75.0% → 50.0% (-25.0 points; 10 case(s) worse, 0 better, one-sided exact "
                        "McNemar p = 0.000977): drop beyond the tolerance of 2 points and p < 0.05")


def test_drop_within_tolerance_does_not_block():
    c = _cmp([1] * 100, [0] + [1] * 99)
    assert c.verdict == "drop within tolerance" and not c.blocks


def test_different_cases_are_refused():
    with pytest.raises(ValueError, match="different cases"):
        compare_suite(_suite([1, 0]), _suite([1, 0, 1]), tolerance=0.02, alpha=0.05)


def test_new_skill_rules():
    assert _cmp([0, 0, 0], [1, 0, 0], role="new skill").verdict == "improved"
    assert _cmp([1, 0, 0], [1, 0, 0], role="new skill").verdict == "not improved"
    assert _cmp([1, 1], [1, 1], role="new skill").verdict == "improved"  # already perfect
    assert _cmp([0, 0, 0, 0], [1, 0, 0, 0], role="new skill", min_gain=0.3).verdict == "not improved"


def test_drift_is_lower_is_better():
    zero = _suite([0.0] * 8, "drift", "drift", "kl", higher=False)
    far = _suite([0.3] * 8, "drift", "drift", "kl", higher=False)
    near = _suite([0.05] * 8, "drift", "drift", "kl", higher=False)
    c = compare_suite(zero, far, tolerance=0.1, alpha=0.05)
    assert (c.worse_cases, c.verdict) == (8, "regressed") and c.p_value == pytest.approx(1 / 256)
    assert compare_suite(zero, near, tolerance=0.1, alpha=0.05).verdict == "drop within tolerance"
    assert compare_suite(far, zero, tolerance=0.1, alpha=0.05).verdict == "ok"


def test_decide_blocks_with_reasons_and_per_suite_tolerance():
    champ = [_suite([1] * 30 + [0] * 10, "a"), _suite([1] * 10, "b")]
    cand = [_suite([1] * 20 + [0] * 20, "a"), _suite([1] * 10, "b")]
    d = decide(champ, cand, GateConfig())
    assert d.decision == "block" and len(d.reasons) == 1 and d.reasons[0].startswith("a: 75.0% → 50.0%")
    loose = decide(champ, cand, GateConfig(tolerances={"a": 0.3}))
    assert loose.decision == "promote"
    assert loose.reasons == ["no suite dropped beyond its tolerance with p < 0.05 (2 suites)"]
    with pytest.raises(ValueError, match="new skill"):
        decide(champ, cand, GateConfig(), new_skill="zzz")
