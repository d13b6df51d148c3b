"""The Prometheus sink's bulk histogram update equals observing value by value."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from workers.sinks.prometheus import observe_all


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name.split("_", 1)[1], sample.labels.get("le", "")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_observe_all_counts_each_bucket_and_the_sum_as_observe_does() -> None:
    amounts = np.array([0.0, 1e-3, 1.0001e-3, 2.5e-3, 0.5, 3e-3, 1e-4, 2.5e-3, 7.0])
    by_one, at_once = CollectorRegistry(), CollectorRegistry()
    bounds = (1e-3, 2.5e-3, 1e-2, 1.0)
    one = Histogram("a_seconds", "", ["x"], buckets=bounds, registry=by_one).labels("q")
    bulk = Histogram("b_seconds", "", ["x"], buckets=bounds, registry=at_once).labels("q")
    for amount in amounts.tolist():
        one.observe(amount)
    observe_all(bulk, amounts)
    observe_all(bulk, amounts[:0])  # nothing: nothing changes
    expected, got = samples(by_one), samples(at_once)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key  # the sum: another order
    assert got[("seconds_bucket", "0.001")] == 3  # bounds are inclusive, as observe's
