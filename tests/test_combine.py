"""Each merge method's defining property, on small hand-computed cases (not only shapes): the tests fail if a
method is replaced by a plain mean or sum, trims per layer instead of over the whole model, or drops zero-sum signs."""

import pytest
import torch

from lora_merge_utils import combine


def _rank1(b, a):
    return torch.tensor(b, dtype=torch.float64).view(-1, 1), torch.tensor(a, dtype=torch.float64).view(1, -1)


@pytest.fixture
def two_layers():
    """Two layers, two tasks, rank-1 updates chosen so every step is computable by hand.

    layer a: dW_1 = [[3, .2], [0, 0]], dW_2 = [[-1, 0], [0, 0]];
    layer b: dW_1 = [[0, 0], [0, .1]], dW_2 = [[0, 0], [0, 2]].
    """
    return {
        "a": [_rank1([1, 0], [3, 0.2]), _rank1([1, 0], [-1, 0])],
        "b": [_rank1([0, 1], [0, 0.1]), _rank1([0, 1], [0, 2])],
    }


def test_knots_ties_by_hand(two_layers):
    """Per layer, [dW_1 dW_2] has rank 1: U = e_row, S V_i^T is the row of dW_i, so each task's vector over the
    whole model is t1 = [3, .2, 0, .1], t2 = [-1, 0, 0, 2]. Keeping 50% per task *over the whole model* keeps
    t1 -> [3, .2, 0, 0] (the .1 of layer b goes; trimming per layer would keep it) and t2 -> [-1, 0, 0, 2]. Signs:
    3 - 1 > 0, .2 > 0, 2 > 0. Disjoint mean with weight 1: [3, .2, 0, 2] (task 2's -1 disagrees)."""
    merged = combine.knots_ties(two_layers, [1.0, 1.0], density=0.5)
    torch.testing.assert_close(merged["a"], torch.tensor([[3.0, 0.2], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(merged["b"], torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64))
    mean = combine.task_arithmetic(two_layers, [0.5, 0.5])
    assert not torch.allclose(merged["a"], mean["a"]) and not torch.allclose(merged["b"], mean["b"])
    half = combine.knots_ties(two_layers, [0.6, 0.6], density=0.5)
    torch.testing.assert_close(half["b"], 0.6 * merged["b"]), "the scale multiplies the disjoint mean"


def test_ties_resolves_zero_sum_signs_to_the_majority():
    """Entry 0: +1 and -1 sum to zero, so it takes the model-wide majority sign (+: two of three elected signs are
    +) and keeps the +1; dropping zero-sum entries would give 0 there."""
    layer = {"w": [_rank1([1], [1.0, 2.0, 3.0]), _rank1([1], [-1.0, 2.0, -1.0])]}
    merged = combine.ties(layer, [1.0, 1.0], density=1.0)["w"]
    torch.testing.assert_close(merged, torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))


def test_ties_trims_over_the_whole_model(two_layers):
    """Plain TIES on the updates: t1 = [3, .2, 0, 0 | 0, 0, 0, .1], t2 = [-1, 0, 0, 0 | 0, 0, 0, 2]; 25% of 8 entries =
    2 kept per task over both layers: t1 keeps 3 and .2 (its .1 in layer b goes), t2 keeps -1 and 2."""
    merged = combine.ties(two_layers, [1.0, 1.0], density=0.25)
    torch.testing.assert_close(merged["a"], torch.tensor([[3.0, 0.2], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(merged["b"], torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64))


def test_magnitude_prune_keeps_the_largest_entries_then_sums(two_layers):
    merged = combine.magnitude_prune(two_layers, [1.0, 1.0], density=0.25)
    torch.testing.assert_close(merged["a"], torch.tensor([[2.0, 0.2], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(merged["b"], torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64))


def test_dare_keeps_the_expected_update_and_is_seeded():
    torch.manual_seed(0)
    layer = {"w": [(torch.randn(64, 4), torch.randn(4, 64)) for _ in range(2)]}
    exact = combine.task_arithmetic(layer, [0.5, 0.5])["w"]
    draws = torch.stack([combine.dare_linear(layer, [0.5, 0.5], density=0.5, seed=s)["w"] for s in range(200)])
    assert (draws[0] == 0).float().mean() > 0.2, "entries are dropped"
    assert float((draws.mean(0) - exact).norm() / exact.norm()) < 0.1, "rescaling keeps the update in expectation"
    torch.testing.assert_close(combine.dare_linear(layer, [0.5, 0.5], 0.5, seed=3)["w"], draws[3])


def test_dare_ties_is_dare_then_ties_in_full_as_mergelm_does_it(two_layers):
    """MergeLM's DARE-TIES: DARE's drop and rescale on every update, then TIES-Merging with its trim. At density 1
    DARE drops nothing, so the result is plain TIES at the trim density; skipping the trim (PEFT's recipe) gives a
    different merge; and with a real drop it equals TIES run on the dropped updates."""
    torch.testing.assert_close(
        combine.dare_ties(two_layers, [1.0, 1.0], density=1.0, trim_density=0.25),
        combine.ties(two_layers, [1.0, 1.0], density=0.25),
    )
    untrimmed = combine.dare_ties(two_layers, [1.0, 1.0], density=1.0, trim_density=1.0)
    torch.testing.assert_close(untrimmed["b"], torch.tensor([[0.0, 0.0], [0.0, 1.05]], dtype=torch.float64))
    torch.manual_seed(0)
    layer = {"w": [(torch.randn(32, 4), torch.randn(4, 32)) for _ in range(3)]}
    dropped = combine._dare(combine._full(layer), 0.5, seed=7)
    by_hand = combine._ties_merge(dropped, [0.4] * 3, 0.2, "total")
    torch.testing.assert_close(combine.dare_ties(layer, [0.4] * 3, 0.5, seed=7), by_hand)
    assert float((by_hand["w"] != 0).float().mean()) < 0.6, "the trim removes entries DARE kept"
    with pytest.raises(ValueError, match="trim_density"):
        combine.dare_ties(layer, [0.4] * 3, 0.5, trim_density=0.0)


def test_tsv_orthogonalises_overlapping_subspaces_and_keeps_disjoint_ones():
    """Updates on orthogonal directions are left as their sum; two updates on the same direction are spread over
    orthogonal ones (the polar factor of [u, u] is two orthonormal columns), so the result has rank 2 and neither
    doubles the shared direction (the sum would) nor averages it."""
    disjoint = {"w": [_rank1([1, 0, 0], [1, 0, 0]), _rank1([0, 1, 0], [0, 2, 0])]}
    torch.testing.assert_close(
        combine.tsv(disjoint, [1.0, 1.0])["w"], combine.task_arithmetic(disjoint, [1.0, 1.0])["w"]
    )
    shared = {"w": [_rank1([1, 0, 0], [1, 0, 0]), _rank1([1, 0, 0], [1, 0, 0])]}
    merged = combine.tsv(shared, [1.0, 1.0])["w"]
    assert torch.linalg.matrix_rank(merged) == 2
    torch.testing.assert_close(torch.linalg.svdvals(merged)[:2], torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_official_tsv_agrees_on_full_rank_updates_and_rotates_low_rank_ones():
    """The official TSV keeps min(m, n)/K components per task whatever their values. When every update has that
    rank it is ours exactly; on rank-2 LoRA updates of a 16 x 16 layer it keeps 8 per task, 6 of them null-space
    directions, whose part in the orthogonalisation moves the result far from ours, with the same singular values
    (the null directions weigh 0). One coefficient for every task scales the result."""
    generator = torch.Generator().manual_seed(0)
    dense = {"w": [(torch.randn(6, 6, generator=generator, dtype=torch.float64), torch.eye(6)) for _ in range(2)]}
    dense = {"w": [(b, a.double()) for b, a in dense["w"]]}
    torch.testing.assert_close(combine.tsv_full(dense, [0.5, 0.5])["w"], combine.tsv(dense, [0.5, 0.5])["w"])
    lora = {
        "w": [
            (torch.randn(16, 2, generator=generator, dtype=torch.float64), torch.randn(2, 16, generator=generator))
            for _ in range(2)
        ]
    }
    lora = {"w": [(b, a.double()) for b, a in lora["w"]]}
    official, ours = combine.tsv_full(lora, [1.0, 1.0])["w"], combine.tsv(lora, [1.0, 1.0])["w"]
    assert (official - ours).norm() / ours.norm() > 0.1
    torch.testing.assert_close(torch.linalg.svdvals(official), torch.linalg.svdvals(ours))
    torch.testing.assert_close(combine.tsv_full(lora, [0.3, 0.3])["w"], 0.3 * official)


def test_iso_c_flattens_the_spectrum_of_the_sum():
    """The sum diag(3, 1) has singular values 3 and 1; Iso-C keeps its singular vectors and gives both the mean, 2."""
    layer = {"w": [_rank1([1, 0], [3, 0]), _rank1([0, 1], [0, 1])]}
    torch.testing.assert_close(
        combine.iso_c(layer, [1.0, 1.0])["w"], torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    )


def test_iso_cts_gives_each_task_its_own_directions():
    """Two tasks of rank 2 on four orthogonal directions (singular values 4, 3 and 2, 1), common fraction 0.5: the
    common subspace is the sum's top two directions (both of task 1's), and each task adds its top residual
    direction: task 1 has none left (nothing remains after projection, so it adds no direction), task 2 its value-2
    direction. With a flat spectrum the result keeps three directions at the mean (4 + 3 + 2) / 3; Iso-C keeps all
    four at (4 + 3 + 2 + 1) / 4."""
    eye = torch.eye(4, dtype=torch.float64)
    task1 = (torch.stack([4 * eye[0], 3 * eye[1]], dim=1), torch.stack([eye[0], eye[1]]))
    task2 = (torch.stack([2 * eye[2], 1 * eye[3]], dim=1), torch.stack([eye[2], eye[3]]))
    merged = combine.iso_cts({"w": [task1, task2]}, [1.0, 1.0], common_fraction=0.5)["w"]
    values = torch.linalg.svdvals(merged)
    torch.testing.assert_close(values[:3], torch.full((3,), 3.0, dtype=torch.float64))
    assert values[3] < 1e-9, "task 2's weakest direction is left out"
    iso = torch.linalg.svdvals(combine.iso_c({"w": [task1, task2]}, [1.0, 1.0])["w"])
    torch.testing.assert_close(iso, torch.full((4,), 10 / 4, dtype=torch.float64))


def test_iso_over_the_papers_space_fills_the_null_space_of_a_lora_sum():
    """The official Iso-C/Iso-CTS flatten all min(m, n) singular values of the dense sum. Two rank-1 updates of an 8 x 8
    layer (values 3 and 1) have a rank-2 sum: the paper's space gives all eight directions the value (3 + 1) / 8, six
    of them from the null space, while ours keeps the two directions at (3 + 1) / 2. On full-rank updates the two
    spaces agree (Iso-C), and Iso-CTS over the paper's space matches the official recipe's flat spectrum."""
    eye = torch.eye(8, dtype=torch.float64)
    lora = {"w": [(3 * eye[:, :1], eye[:1]), (eye[:, 1:2], eye[1:2])]}
    full = torch.linalg.svdvals(combine.iso_c_full(lora, [1.0, 1.0])["w"])
    torch.testing.assert_close(full, torch.full((8,), 0.5, dtype=torch.float64))
    ours = torch.linalg.svdvals(combine.iso_c(lora, [1.0, 1.0])["w"])
    torch.testing.assert_close(ours[:2], torch.full((2,), 2.0, dtype=torch.float64))
    assert ours[2:].abs().max() < 1e-9
    cts = torch.linalg.svdvals(combine.iso_cts_full(lora, [1.0, 1.0], common_fraction=0.5)["w"])
    assert (cts > 0.1).sum() == 8, "the task-specific share is filled with arbitrary directions"
    torch.manual_seed(0)
    dense = {"w": [(torch.randn(6, 6, dtype=torch.float64), torch.eye(6, dtype=torch.float64)) for _ in range(2)]}
    torch.testing.assert_close(combine.iso_c_full(dense, [0.5, 0.5])["w"], combine.iso_c(dense, [0.5, 0.5])["w"])


def test_lowrank_svd_matches_the_full_svd():
    torch.manual_seed(0)
    factors = [(torch.randn(48, 4), torch.randn(4, 32)) for _ in range(3)]
    stacked = torch.cat([b.double() @ a.double() for b, a in factors], dim=1)
    u, s, vh = combine.lowrank_svd(factors)
    assert u.shape == (48, 12) and vh.shape == (12, 96)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, stacked, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, torch.linalg.svdvals(stacked)[:12], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(u.T @ u, torch.eye(12, dtype=torch.float64), rtol=0, atol=1e-10)


def test_core_space_is_lossless_and_small():
    """Each task's update is exactly ``U_B M_i V_A^T`` in the shared bases, and its core matrix is only
    ``sum r_i`` square (here 3 tasks of ranks 2, 3, 4 on a 40 x 50 layer: 9 x 9 instead of 40 x 50)."""
    generator = torch.Generator().manual_seed(0)
    pairs = [
        (torch.randn(40, r, generator=generator, dtype=torch.float64), torch.randn(r, 50, generator=generator))
        for r in (2, 3, 4)
    ]
    u_b, cores, vh_a = combine.core_space(pairs)
    assert u_b.shape == (40, 9) and vh_a.shape == (9, 50) and all(m.shape == (9, 9) for m in cores)
    for (b, a), core in zip(pairs, cores):
        torch.testing.assert_close(u_b @ core @ vh_a, b @ a.double(), rtol=1e-10, atol=1e-10)


def test_core_ties_trims_each_layer_on_its_own_as_the_official_code_does():
    """Layer a: dW_1 = 3 e1 f1^T, dW_2 = 1 e1 f1^T; layer b: .1 and .2 on e2 f2^T. In the shared bases every core
    matrix is 2 x 2 with one non-zero entry, so keeping a quarter of each layer's entries keeps it: layer a merges to
    mean(3, 1) = 2, layer b to mean(.1, .2) = .15. TIES over the whole model at the same one entry per task drops
    layer b altogether (each task keeps only its layer-a entry)."""
    layers = {
        "a": [_rank1([1, 0], [3, 0]), _rank1([1, 0], [1, 0])],
        "b": [_rank1([0, 1], [0, 0.1]), _rank1([0, 1], [0, 0.2])],
    }
    merged = combine.core_ties(layers, [1.0, 1.0], density=0.25)
    torch.testing.assert_close(merged["a"], torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(merged["b"], torch.tensor([[0.0, 0.0], [0.0, 0.15]], dtype=torch.float64))
    whole_model = combine.ties(layers, [1.0, 1.0], density=0.125)
    torch.testing.assert_close(whole_model["b"], torch.zeros(2, 2, dtype=torch.float64))


def test_core_ties_elects_signs_like_ties():
    """dW_2 = -0.5 dW_1: the elected sign is task 1's everywhere, so the disjoint mean keeps task 1's update alone
    (task arithmetic would give a quarter of it), whatever signs the bases' SVD picked."""
    generator = torch.Generator().manual_seed(1)
    b, a = torch.randn(6, 2, generator=generator, dtype=torch.float64), torch.randn(2, 5, generator=generator)
    layer = {"w": [(b, a.double()), (-0.5 * b, a.double())]}
    torch.testing.assert_close(combine.core_ties(layer, [1.0, 1.0], density=1.0)["w"], b @ a.double())


@pytest.mark.parametrize(
    "method",
    ["knots_ties", "tsv", "tsv_full", "iso_c", "iso_cts", "iso_c_full", "iso_cts_full", "ties", "core_ties"],
)
def test_same_bytes_whatever_the_number_of_threads(method):
    """MKL's QR and SVD round differently with different thread counts (in the last bits, with 3 threads against 1
    on ViT-sized LoRA factors); after the cast to float32 a weight or two moved by one ulp, enough to flip one test
    image of a merge (0.7671 against 0.7646). The decompositions run on a fixed number of threads, so they do not."""
    generator = torch.Generator().manual_seed(0)
    factors = {
        f"layer{i}": [
            (
                torch.randn(d_out, 8, generator=generator, dtype=torch.float64),
                torch.randn(8, d_in, generator=generator, dtype=torch.float64),
            )
            for _ in range(3)
        ]
        for i, (d_out, d_in) in enumerate([(384, 96), (96, 384), (288, 96)])
    }
    options = {"density": 0.9} if method in ("knots_ties", "ties", "core_ties") else {}
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 3, 8):
            torch.set_num_threads(threads)
            results.append(getattr(combine, method)(factors, [0.6, 0.6, 0.6], **options))
            assert torch.get_num_threads() == threads, "the caller's thread setting is left as it was"
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        assert all(torch.equal(results[0][name], other[name]) for name in factors)
