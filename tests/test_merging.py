import copy

import pytest
import torch
from safetensors.torch import load_file

from lora_merge_utils import load_adapters, merge_adapters
from lora_merge_utils.artifacts import read_json
from lora_merge_utils.merging import MERGE_METHODS, merged_delta

from .conftest import make_random_adapter


def independent_delta(directory, layer: str) -> torch.Tensor:
    """dW = (alpha / r) * B @ A read straight from the saved safetensors file, without PEFT's layer code."""
    config = read_json(directory / "adapter_config.json")
    state = load_file(str(directory / "adapter_model.safetensors"))
    prefix = f"base_model.model.{layer}"
    a, b = state[f"{prefix}.lora_A.weight"], state[f"{prefix}.lora_B.weight"]
    return (config["lora_alpha"] / config["r"]) * (b.double() @ a.double())


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


@pytest.mark.parametrize("weights", [None, [0.7, 0.2, 0.5]])
def test_task_arithmetic_is_the_exact_weighted_sum_layer_by_layer(backbone, random_adapters, weights):
    names = list(random_adapters)
    model, _ = load_adapters(backbone, random_adapters)
    merged = merge_adapters(model, names, weights, method="task_arithmetic")
    deltas = merged_delta(backbone, merged)
    w = weights or [1 / 3] * 3
    assert len(deltas) == 4 * len(backbone.blocks)
    for layer, delta in deltas.items():
        want = sum(wi * independent_delta(random_adapters[n], layer) for wi, n in zip(w, names))
        assert relative_error(delta, want) < 1e-5, layer


def test_peft_linear_is_not_the_weighted_sum_but_cat_is(backbone, random_adapters):
    model, _ = load_adapters(backbone, random_adapters)
    names = list(random_adapters)
    want = {layer: sum(independent_delta(random_adapters[n], layer) for n in names) / 3
            for layer in merged_delta(backbone, merge_adapters(model, names))}
    linear = merged_delta(backbone, merge_adapters(model, names, method="linear"))
    cat = merged_delta(backbone, merge_adapters(model, names, method="cat"))
    linear_errors = [relative_error(linear[layer], want[layer]) for layer in want]
    cat_errors = [relative_error(cat[layer], want[layer]) for layer in want]
    assert min(linear_errors) > 0.1, "PEFT linear mixes A and B factors: far from the sum of updates"
    assert max(cat_errors) < 1e-5


def test_merging_leaves_adapters_untouched(backbone, random_adapters):
    model, _ = load_adapters(backbone, random_adapters)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    files = {n: (d / "adapter_model.safetensors").read_bytes() for n, d in random_adapters.items()}
    for method, kwargs in [("task_arithmetic", {}), ("linear", {}), ("ties", {"density": 0.5}),
                           ("dare_linear", {"density": 0.5}), ("svd", {"svd_rank": 4})]:
        merge_adapters(model, list(random_adapters), method=method, **kwargs)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, tensor in before.items():
        assert torch.equal(tensor, after[key]), key
    assert set(model.peft_config) == set(random_adapters)
    for name, directory in random_adapters.items():
        assert (directory / "adapter_model.safetensors").read_bytes() == files[name]


@pytest.mark.parametrize("method", list(MERGE_METHODS))
def test_every_method_returns_a_working_plain_backbone(backbone, random_adapters, method):
    model, _ = load_adapters(backbone, random_adapters)
    spec = MERGE_METHODS[method]
    kwargs = {"density": 0.5} if spec.uses_density else {}
    merged = merge_adapters(model, ["a", "b"], method=method, **kwargs)
    assert not any("lora" in name for name, _ in merged.named_modules())
    x = torch.randn(2, 3, 32, 32)
    out = merged(x)
    assert out.shape == (2, 96) and torch.isfinite(out).all()
    assert not torch.allclose(out, backbone(x))


def test_dare_is_reproducible_with_a_seed_and_varies_without(backbone, random_adapters):
    model, _ = load_adapters(backbone, random_adapters)
    first = merge_adapters(model, ["a", "b"], method="dare_linear", density=0.5, seed=1).state_dict()
    again = merge_adapters(model, ["a", "b"], method="dare_linear", density=0.5, seed=1).state_dict()
    other = merge_adapters(model, ["a", "b"], method="dare_linear", density=0.5, seed=2).state_dict()
    key = "blocks.0.attn.qkv.weight"
    assert torch.equal(first[key], again[key]) and not torch.equal(first[key], other[key])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(method="mean"), "Valid methods: task_arithmetic, linear"),
        (dict(weights=[0.5]), "1 weight\\(s\\) for 2 adapter"),
        (dict(method="ties", density=0.0), "density must be in \\(0, 1\\]"),
        (dict(method="ties", density=1.5), "density must be in \\(0, 1\\]"),
        (dict(method="ties"), "needs density="),
        (dict(method="linear", density=0.5), "takes no density"),
    ],
)
def test_bad_arguments_are_named(backbone, random_adapters, kwargs, error):
    model, _ = load_adapters(backbone, random_adapters)
    with pytest.raises(ValueError, match=error):
        merge_adapters(model, ["a", "b"], **kwargs)


def test_unknown_adapter_name_lists_the_loaded_ones(backbone, random_adapters):
    model, _ = load_adapters(backbone, random_adapters)
    with pytest.raises(ValueError, match="Loaded adapters: \\['a', 'b', 'c'\\]"):
        merge_adapters(model, ["a", "z"])


def test_unequal_ranks_are_refused_where_needed_and_fine_for_exact_methods(backbone, tmp_path):
    dirs = {"r4": make_random_adapter(backbone, tmp_path / "r4", seed=0, rank=4),
            "r8": make_random_adapter(backbone, tmp_path / "r8", seed=1, rank=8)}
    model, _ = load_adapters(backbone, dirs)
    with pytest.raises(ValueError, match="equal rank"):
        merge_adapters(model, ["r4", "r8"], method="linear")
    merge_adapters(model, ["r4", "r8"], method="task_arithmetic")
    merge_adapters(model, ["r4", "r8"], method="cat")


def test_unequal_target_modules_are_refused_where_needed(backbone, tmp_path):
    dirs = {"all": make_random_adapter(backbone, tmp_path / "all", seed=0),
            "attn": make_random_adapter(backbone, tmp_path / "attn", seed=1,
                                        target_modules=r"blocks\.\d+\.attn\.qkv")}
    model, _ = load_adapters(backbone, dirs)
    with pytest.raises(ValueError, match="same target modules"):
        merge_adapters(model, ["all", "attn"], method="ties", density=0.5)
    merged = merge_adapters(model, ["all", "attn"], method="task_arithmetic")
    assert len(merged_delta(backbone, merged)) == 4 * len(backbone.blocks)


def test_merge_needs_a_peft_model(backbone):
    with pytest.raises(ValueError, match="needs a peft.PeftModel"):
        merge_adapters(copy.deepcopy(backbone), ["a"])


def test_scale_is_the_same_weight_for_every_adapter(backbone, random_adapters):
    model, _ = load_adapters(backbone, random_adapters)
    by_scale = merge_adapters(model, ["a", "b"], scale=0.8).state_dict()
    by_weights = merge_adapters(model, ["a", "b"], weights=[0.8, 0.8]).state_dict()
    assert all(torch.equal(by_scale[k], by_weights[k]) for k in by_scale)
    with pytest.raises(ValueError, match="either weights= .* or scale="):
        merge_adapters(model, ["a", "b"], weights=[0.5, 0.5], scale=1.0)


def test_knots_of_one_adapter_at_full_density_is_that_adapter(backbone, random_adapters):
    from lora_merge_utils.merging import knots_ties_delta

    model, _ = load_adapters(backbone, random_adapters)
    layer = "blocks.2.mlp.fc1"
    delta = independent_delta(random_adapters["a"], layer).float()
    merged = knots_ties_delta([delta], [0.7], density=1.0)
    assert relative_error(merged, 0.7 * delta.double()) < 1e-5


def test_knots_aligns_before_ties_so_it_differs_from_entrywise_ties(backbone, random_adapters):
    from lora_merge_utils.merging import _ties, knots_ties_delta

    layer = "blocks.0.attn.qkv"
    deltas = [independent_delta(random_adapters[n], layer).float() for n in ("a", "b")]
    knots = knots_ties_delta(deltas, [1.0, 1.0], density=0.5)
    plain = _ties(torch.stack(deltas), 0.5)
    assert knots.shape == deltas[0].shape and torch.isfinite(knots).all()
    assert relative_error(knots, plain.double()) > 0.05
    # At full density with agreeing signs, TIES in the shared basis is the mean of the aligned factors.
    same = knots_ties_delta([deltas[0], deltas[0]], [1.0, 1.0], density=1.0)
    assert relative_error(same, deltas[0].double()) < 1e-5


def _scale_updates(model, target_ratio: float) -> float:
    """Scale every B factor so that ||dW|| / ||W|| is about ``target_ratio`` per layer (the ViT-B regime)."""
    from lora_merge_utils.merging import lora_layers

    ratios = []
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for adapter in layer.lora_A:
                delta = layer.get_delta_weight(adapter)
                layer.lora_B[adapter].weight.mul_(target_ratio * layer.get_base_layer().weight.norm() / delta.norm())
                ratios.append(float(layer.get_delta_weight(adapter).norm() / layer.get_base_layer().weight.norm()))
    return max(ratios)


def test_exactness_is_measured_in_float64_at_vit_b_magnitudes(backbone, random_adapters):
    """At ||dW|| / ||W|| = 1e-4, reading a float32 merged weight back as (W + dW) - W loses ~1e-3 of the update, so a
    1e-5 check there would fail even for an exact merge; update_error works on a float64 copy and stays exact."""
    from lora_merge_utils.merging import update_error

    model, _ = load_adapters(backbone, random_adapters)
    names = list(random_adapters)[:2]
    assert _scale_updates(model, 1e-4) < 2e-4
    float32 = merged_delta(backbone, merge_adapters(model, names))
    want = {layer: sum(model.base_model.model.get_submodule(layer).get_delta_weight(n).double() for n in names) / 2
            for layer in float32}
    naive = max(relative_error(float32[layer], want[layer]) for layer in want)
    assert naive > 1e-5, "float32 rounding of W + dW hides the update at this scale"
    exact = update_error(model, names)
    assert len(exact) == 4 * len(backbone.blocks) and max(exact.values()) < 1e-9
    assert min(update_error(model, names, method="linear").values()) > 0.1, "and a non-exact method still shows"
    assert next(model.parameters()).dtype == torch.float32, "the model itself is not converted"


def test_lowrank_svd_matches_the_full_svd():
    from lora_merge_utils.merging import knots_ties_delta, lowrank_svd

    torch.manual_seed(0)
    factors = [(torch.randn(48, 4), torch.randn(4, 32)) for _ in range(3)]
    stacked = torch.cat([b.double() @ a.double() for b, a in factors], dim=1)
    u, s, vh = lowrank_svd(factors)
    assert u.shape == (48, 12) and vh.shape == (12, 96)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, stacked, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, torch.linalg.svdvals(stacked)[:12], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(u.T @ u, torch.eye(12, dtype=torch.float64), rtol=0, atol=1e-10)
    # In float64 the full SVD sees rank 12 too (float32 products would add noise directions that trimming counts).
    deltas = [b.double() @ a.double() for b, a in factors]
    for density in (0.3, 1.0):
        torch.testing.assert_close(knots_ties_delta(factors, [0.5, 0.3, 0.2], density).double(),
                                   knots_ties_delta(deltas, [0.5, 0.3, 0.2], density), rtol=1e-5, atol=1e-6)
