import copy

import pytest
import torch
from safetensors.torch import load_file

from lora_merge_utils import load_adapters, merge_adapters
from lora_merge_utils.artifacts import read_json
from lora_merge_utils.merging import MERGE_METHODS, merged_delta, module_copy, update_error

from .helpers import make_random_adapter


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
    want = {
        layer: sum(independent_delta(random_adapters[n], layer) for n in names) / 3
        for layer in merged_delta(backbone, merge_adapters(model, names))
    }
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
    for method, kwargs in [
        ("task_arithmetic", {}),
        ("linear", {}),
        ("ties", {"density": 0.5}),
        ("dare_linear", {"density": 0.5}),
        ("svd", {"svd_rank": 4}),
    ]:
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
    model, heads = load_adapters(backbone, random_adapters)
    spec = MERGE_METHODS[method]
    kwargs = {"density": 0.5} if "density" in spec.knobs else {}
    if spec.data != "none":
        kwargs |= {"unlabeled": {t: torch.randn(8, 3, 32, 32) for t in "ab"}, "heads": heads, "steps": 2}
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


def test_a_module_copy_is_the_deep_copy_and_shares_nothing_mutable(backbone):
    original = copy.deepcopy(backbone).eval().requires_grad_(False)
    copied, deep = module_copy(original), copy.deepcopy(original)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(copied(x), deep(x)) and torch.equal(copied(x), original(x))
    assert [type(m) for m in copied.modules()] == [type(m) for m in deep.modules()]
    ours, theirs = copied.state_dict(keep_vars=True), original.state_dict(keep_vars=True)
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert all(ours[k].data_ptr() != theirs[k].data_ptr() for k in ours), "a tensor is shared"
    assert not copied.training and not any(p.requires_grad for p in copied.parameters())
    copied.blocks[0].register_forward_hook(lambda *args: None)
    with torch.no_grad():
        copied.blocks[0].attn.qkv.weight.add_(1.0)
    assert not original.blocks[0]._forward_hooks, "a hook on the copy reached the original"
    assert torch.equal(original(x), deep(x)), "an in-place change of the copy reached the original"


def test_a_module_copy_keeps_one_copy_of_what_is_referenced_twice():
    class Wrapper(torch.nn.Module):  # as the report wraps a transformers classifier: its children, and it whole
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
            self.second.weight = self.first.weight  # tied
            object.__setattr__(self, "_whole", torch.nn.Sequential(self.first, self.second))

    original = Wrapper()
    copied = module_copy(original)
    assert copied._whole[0] is copied.first and copied._whole[1] is copied.second
    assert copied.second.weight is copied.first.weight and copied.first.weight is not original.first.weight
    assert torch.equal(copied._whole(torch.ones(1, 3)), original._whole(torch.ones(1, 3)))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(method="mean"), "Valid methods: task_arithmetic, ties"),
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
    dirs = {
        "r4": make_random_adapter(backbone, tmp_path / "r4", seed=0, rank=4),
        "r8": make_random_adapter(backbone, tmp_path / "r8", seed=1, rank=8),
    }
    model, _ = load_adapters(backbone, dirs)
    with pytest.raises(ValueError, match="equal rank"):
        merge_adapters(model, ["r4", "r8"], method="linear")
    for method in ("task_arithmetic", "cat"):  # exact whatever the ranks: the weighted sum of the two updates
        errors = update_error(model, ["r4", "r8"], method=method, weights=[0.7, 0.3])
        assert len(errors) == 4 * len(backbone.blocks) and max(errors.values()) < 1e-10, method


def test_unequal_target_modules_are_refused_where_needed(backbone, tmp_path):
    dirs = {
        "all": make_random_adapter(backbone, tmp_path / "all", seed=0),
        "attn": make_random_adapter(backbone, tmp_path / "attn", seed=1, target_modules=r"blocks\.\d+\.attn\.qkv"),
    }
    model, _ = load_adapters(backbone, dirs)
    with pytest.raises(ValueError, match="same target modules"):
        merge_adapters(model, ["all", "attn"], method="ties_on_factors", density=0.5)
    for method, kwargs in (("task_arithmetic", {}), ("ties", {"density": 0.5}), ("tsv", {})):
        merged = merge_adapters(model, ["all", "attn"], method=method, **kwargs)
        assert len(merged_delta(backbone, merged)) == 4 * len(backbone.blocks), "no layer of either is dropped"


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


def test_knots_of_one_adapter_at_full_density_is_that_adapter_scaled(backbone, random_adapters):
    model, _ = load_adapters(backbone, random_adapters)
    merged = merged_delta(backbone, merge_adapters(model, ["a"], method="knots_ties", density=1.0, scale=0.7))
    for layer, delta in merged.items():
        assert relative_error(delta, 0.7 * independent_delta(random_adapters["a"], layer)) < 1e-4, layer


def test_methods_on_true_updates_differ_from_their_factor_wise_peft_versions(backbone, random_adapters):
    model, _ = load_adapters(backbone, random_adapters)
    ours = merged_delta(backbone, merge_adapters(model, ["a", "b"], method="ties", density=0.5))
    peft = merged_delta(backbone, merge_adapters(model, ["a", "b"], method="ties_on_factors", density=0.5))
    layer = "blocks.0.attn.qkv"
    assert relative_error(ours[layer], peft[layer]) > 0.1


def test_adamerging_learns_layer_coefficients_that_lower_the_entropy(backbone, random_adapters):
    from lora_merge_utils.adamerging import entropy

    model, heads = load_adapters(backbone, random_adapters)
    images = {t: torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i, t in enumerate("ab")}
    start = merge_adapters(model, ["a", "b"])
    short = dict(method="adamerging_short", unlabeled=images, heads=heads, steps=15, lr=0.05)  # from 1/K
    learned = merge_adapters(model, ["a", "b"], **short)
    again = merge_adapters(model, ["a", "b"], **short)
    coefficients = learned.lora_book_coefficients
    assert len(coefficients) == 4 * len(backbone.blocks)
    values = [v for pair in coefficients.values() for v in pair]
    assert all(0.0 <= v <= 1.0 for v in values) and max(abs(v - 0.5) for v in values) > 0.05
    assert coefficients == again.lora_book_coefficients, "seeded: the same batches, the same result"
    with torch.no_grad():

        def total(merged):
            return sum(float(entropy(heads[t](merged(images[t])))) for t in "ab")

        assert total(learned) < total(start)
    with pytest.raises(ValueError, match="needs unlabeled= images and heads="):
        merge_adapters(model, ["a", "b"], method="adamerging")


def test_adamerging_follows_the_official_schedule_and_the_short_one_is_named_apart(
    backbone, random_adapters, monkeypatch
):
    """``adamerging`` is the official code's schedule (500 Adam steps at lr 1e-3 from 0.3, 32 images per task and
    step); the cheaper schedule the chapters use has a name of its own and starts from the merge weights."""
    import lora_merge_utils.adamerging as module

    calls = []
    monkeypatch.setattr(module, "adamerging", lambda plain, *args, **kwargs: calls.append(kwargs) or plain)
    model, heads = load_adapters(backbone, random_adapters)
    images = {t: torch.zeros(4, 3, 32, 32) for t in "ab"}
    merge_adapters(model, ["a", "b"], method="adamerging", unlabeled=images, heads=heads)
    merge_adapters(model, ["a", "b"], method="adamerging_short", unlabeled=images, heads=heads)
    merge_adapters(model, ["a", "b"], method="adamerging", unlabeled=images, heads=heads, scale=0.6, steps=7)
    paper, short, given = calls
    assert (paper["steps"], paper["lr"], list(paper["init"]), paper["batch_size"]) == (500, 1e-3, [0.3, 0.3], 32)
    assert (short["steps"], short["lr"], list(short["init"]), short["batch_size"]) == (10, 0.02, [0.5, 0.5], 16)
    assert (given["steps"], list(given["init"])) == (7, [0.6, 0.6]), "what the caller gives wins"


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
    want = {
        layer: sum(model.base_model.model.get_submodule(layer).get_delta_weight(n).double() for n in names) / 2
        for layer in float32
    }
    naive = max(relative_error(float32[layer], want[layer]) for layer in want)
    assert naive > 1e-5, "float32 rounding of W + dW hides the update at this scale"
    exact = update_error(model, names)
    assert len(exact) == 4 * len(backbone.blocks) and max(exact.values()) < 1e-9
    assert min(update_error(model, names, method="linear").values()) > 0.1, "and a non-exact method still shows"
    assert next(model.parameters()).dtype == torch.float32, "the model itself is not converted"


def test_density_one_on_factors_keeps_every_entry_without_a_warning(backbone, random_adapters, recwarn):
    """Density 1 is the top of the shared tuning grid: PEFT's factor-wise TIES keeps every entry and says nothing
    (its UserWarning would land in a chapter's output), while a smaller density trims."""
    model, _ = load_adapters(backbone, random_adapters)
    names = list(random_adapters)
    whole = merged_delta(backbone, merge_adapters(model, names, method="ties_on_factors", density=1.0))
    trimmed = merged_delta(backbone, merge_adapters(model, names, method="ties_on_factors", density=0.3))
    assert not [w for w in recwarn if "no pruning" in str(w.message)]
    assert any(relative_error(trimmed[layer], whole[layer].double()) > 0.01 for layer in whole)
