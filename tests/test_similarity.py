import pytest
import torch

from lora_merge_utils.similarity import frechet_distance, linear_cka, spearman_with_ci, weight_cosine


def test_frechet_distance_is_zero_for_the_same_set_and_grows_with_a_shift():
    torch.manual_seed(0)
    x = torch.randn(500, 8)
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(x, x + 1.0) == pytest.approx(8.0, rel=1e-3)


def test_linear_cka_is_invariant_to_rotation_and_scale_and_low_for_noise():
    torch.manual_seed(0)
    x = torch.randn(300, 10)
    rotation, _ = torch.linalg.qr(torch.randn(10, 10))
    assert linear_cka(x, 3 * x @ rotation) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, torch.randn(300, 10)) < 0.2
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(x, x[:10])


def test_weight_cosine_per_layer_and_overall():
    a = {"l1": torch.ones(2, 2), "l2": torch.ones(3)}
    b = {"l1": torch.ones(2, 2), "l2": -torch.ones(3)}
    cos = weight_cosine(a, b)
    assert cos["l1"] == pytest.approx(1) and cos["l2"] == pytest.approx(-1)
    assert cos["overall"] == pytest.approx((4 - 3) / 7)


def test_spearman_with_bootstrap_interval_is_seeded():
    x = list(range(15))
    y = [v + (3 if v % 4 == 0 else 0) for v in x]
    first, second = spearman_with_ci(x, y, seed=1), spearman_with_ci(x, y, seed=1)
    assert first == second
    assert first["low"] <= first["rho"] <= first["high"] <= 1
    with pytest.raises(ValueError, match="at least 3"):
        spearman_with_ci([1, 2], [1, 2])
