import pytest
import torch

from lora_merge_utils import load_adapters
from lora_merge_utils.benchmarking import parameter_bytes, time_call
from lora_merge_utils.serving import build_strategies, inference_cost


def test_time_call_reports_ordered_statistics():
    stats = time_call(lambda: sum(range(1000)), warmup=1, repeats=5)
    assert 0 < stats["p10"] <= stats["median"] <= stats["p90"]
    with pytest.raises(ValueError):
        time_call(lambda: None, repeats=0)


def test_strategies_agree_where_they_should(backbone, random_adapters):
    model, heads = load_adapters(backbone, {k: random_adapters[k] for k in ("a", "b")})
    strategies = build_strategies(backbone, model, heads, ["a", "b"])
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        switching, separate, merged = (strategies[s](x) for s in ("switching", "separate", "merged"))
    for task in ("a", "b"):
        # switching adapters and separate merged models compute the same function, up to float rounding
        torch.testing.assert_close(switching[task], separate[task], rtol=1e-4, atol=1e-4)
    assert merged.keys() == {"a", "b"}
    assert parameter_bytes(strategies["separate"]) > parameter_bytes(strategies["merged"])


def test_inference_cost_table(backbone, random_adapters):
    model, heads = load_adapters(backbone, {k: random_adapters[k] for k in ("a", "b")})
    table = inference_cost(build_strategies(backbone, model, heads, ["a", "b"]), k=2, image_size=32,
                           batch_sizes=(1, 4), warmup=1, repeats=3)
    assert set(table["strategy"]) == {"base", "switching", "merged", "separate"} and len(table) == 8
    assert (table["images_per_s"] > 0).all() and (table["p10_ms"] <= table["p90_ms"]).all()
