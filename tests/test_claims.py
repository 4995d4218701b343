"""The plain-words summary never says more than the Holm-adjusted verdicts."""

from __future__ import annotations

import polars as pl

from pipeline.claims import plain_words
from pipeline.report import COMPARISON_SCHEMA, adjust_for_multiplicity
from pipeline.stats import compare_paired


def comparison(run: str, metric: str, a: list[float], b: list[float]) -> dict:
    result = compare_paired(a, b, resolution=1e-4 if metric.endswith("_top1") else 0.0)
    return {"dataset": "fmnist", "run": run, "baseline": "byol", "kind": "listed",
            "metric": metric, "direction": "higher is better", "seeds": result.seeds,
            "run_mean": sum(a) / len(a), "baseline_mean": sum(b) / len(b),
            "difference": result.mean, "ci_low": result.low, "ci_high": result.high,
            "p_value": result.p_value, "sd": result.sd, "detectable": result.detectable,
            "seeds_for_detect": 12, "verdict": result.verdict}


def claims(*records: dict) -> list[str]:
    frame = adjust_for_multiplicity(pl.DataFrame(list(records), schema=COMPARISON_SCHEMA), 0.05)
    return plain_words(frame, "fmnist", 0.95, 0.01)


BYOL = [0.70, 0.72, 0.74]


def test_a_raw_verdict_that_does_not_survive_holm_is_not_claimed():
    # triplet vs BYOL on kNN: decisive unadjusted, one of 12 tests
    decisive = comparison("triplet", "knn20_top1", [0.710, 0.736, 0.761], BYOL)
    assert decisive["verdict"] == "better" and decisive["p_value"] < 0.05
    noise = [comparison(f"run{i}", "linear_top1", [0.70 + 0.01 * (i % 3 - 1), 0.73, 0.74],
                        BYOL) for i in range(11)]
    [paragraph, *_] = claims(decisive, *noise)
    assert paragraph.startswith("**triplet vs byol** (3 seeds): kNN-20 top-1: no detectable "
                                "difference (+1.6 points")
    assert "better" not in paragraph
    assert "not after adjustment (Holm-adjusted p = " in paragraph
    assert "over 12 tests" in paragraph
    assert "this study could detect" in paragraph and "12 seeds would detect 1.0 points" \
        in paragraph


def test_a_verdict_that_survives_holm_is_stated():
    [paragraph] = claims(comparison("triplet", "linear_top1", [0.75, 0.77, 0.79], BYOL))
    assert paragraph.startswith("**triplet vs byol** (3 seeds): linear top-1: better "
                                "(+5.0 points")
    assert "could detect" not in paragraph


def test_an_undefined_comparison_stays_undefined():
    record = comparison("triplet", "linear_top1", BYOL, BYOL) | {
        "difference": None, "ci_low": None, "ci_high": None, "p_value": None,
        "verdict": "undefined (triplet seed 1: linear_top1 is nan)"}
    [paragraph] = claims(record)
    assert paragraph.endswith("linear top-1: undefined (triplet seed 1: linear_top1 is nan).")
