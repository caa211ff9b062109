import pytest
import torch

from lora_merge_utils import load_adapters
from lora_merge_utils.instrumentation.benchmarking import interleaved_timings, parameter_bytes, time_call
from lora_merge_utils.serving import STRATEGIES, build_strategies, inference_cost, timing_summary


def test_time_call_reports_ordered_statistics():
    stats = time_call(lambda: sum(range(1000)), warmup=1, repeats=5)
    assert 0 < stats["p10"] <= stats["median"] <= stats["p90"]
    with pytest.raises(ValueError):
        time_call(lambda: None, repeats=0)


def _strategies(backbone, random_adapters):
    model, heads = load_adapters(backbone, {k: random_adapters[k] for k in ("a", "b")})
    baseline = {t: torch.nn.Linear(96, 3) for t in ("a", "b")}
    return build_strategies(backbone, model, heads, ["a", "b"], baseline)


def test_strategies_agree_where_they_should(backbone, random_adapters):
    strategies = _strategies(backbone, random_adapters)
    assert list(strategies) == list(STRATEGIES)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = {name: strategy(x) for name, strategy in strategies.items()}
    for task in ("a", "b"):
        # switching adapters, one mixed batch and separate merged models compute the same function
        torch.testing.assert_close(out["switching"][task], out["separate"][task], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out["mixed batch"][task], out["switching"][task], rtol=1e-4, atol=1e-4)
    assert out["merged"].keys() == out["frozen + K heads"].keys() == {"a", "b"}
    assert parameter_bytes(strategies["separate"]) > parameter_bytes(strategies["merged"])


def test_interleaved_timings_vary_the_order_and_pair_rounds():
    calls = {"fast": (lambda: sum(range(100)), 1), "slow": (lambda: sum(range(20000)), 1)}
    timings = interleaved_timings(calls, rounds=6, warmup=1)
    assert len(timings) == 12 and set(timings["strategy"]) == {"fast", "slow"}
    firsts = timings.groupby("round").head(1)["strategy"]
    assert firsts.nunique() == 2, "the order changes between rounds"


def test_inference_cost_and_its_summary(backbone, random_adapters):
    table = inference_cost(
        _strategies(backbone, random_adapters), k=2, image_size=32, batch_sizes=(1, 4), warmup=1, rounds=4
    )
    assert set(table["strategy"]) == set(STRATEGIES) and len(table) == 2 * 4 * len(STRATEGIES)
    summary = timing_summary(table, reference="frozen + K heads", replicates=200)
    assert len(summary) == 2 * len(STRATEGIES)
    assert (summary["low_ms"] <= summary["median_ms"]).all() and (summary["median_ms"] <= summary["high_ms"]).all()
    reference = summary[summary["strategy"] == "frozen + K heads"]
    assert (reference["vs frozen + K heads"] == 1.0).all()
