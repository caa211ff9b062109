"""Merge methods that work on the true weight updates ``dW_i = scaling_i * B_i @ A_i`` of K LoRA adapters.

Every method here takes ``factors``: ``{layer: [(B'_1, A_1), ..., (B'_K, A_K)]}`` with ``B' = scaling * B`` (so
``dW_i = B'_i @ A_i``), one weight per task (``w_i``; ``1/K`` for an average, ``lambda`` for a scaled sum), and its
hyperparameters, and returns ``{layer: dW_merged}`` to add to the frozen weights.

Methods that trim by magnitude (TIES, magnitude pruning, KnOTS) rank the entries of each task's update over the
**whole model**, as the papers' code does (one threshold per task, not one per layer). The sign election of TIES
resolves entries whose trimmed values sum to exactly zero to the model-wide majority sign, as the TIES and KnOTS code
do. Decompositions run in float64 and use the low rank of LoRA updates (see :func:`lowrank_svd`), so they stay cheap
for ViT-B on a GPU. On the CPU every method runs on one thread (see :func:`one_thread`), so that a merge gives the same
bytes whatever the caller's thread setting.

References: task arithmetic (Ilharco et al., 2023); TIES (Yadav et al., 2023); DARE (Yu et al., 2024); KnOTS (Stoica
et al., 2024, ``gstoica27/KnOTS``); TSV-Merge (Gargiulo et al., 2025, ``AntoAndGar/task_singular_vectors``); Iso-C and
Iso-CTS (Marczak et al., 2025, ``danielm1405/iso-merging``); Core Space merging (Panariello et al., 2025,
``apanariello4/core-space-merging``), a method designed for LoRA.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

Factors = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]
Deltas = dict[str, torch.Tensor]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU kernels on one thread inside the block (the caller's setting is restored after it).

    MKL's QR, SVD and matrix products split their work by the number of threads and round differently for each
    split: the same LoRA factors decomposed with 3 threads instead of 1 give singular vectors that differ in their
    last bits (about 1e-14), and after the cast to float32 a weight or two of a KnOTS merge of the tiny profile moved
    by one ulp -- enough to flip one test image, so a notebook run with the default threads and a rebuild with
    ``OMP_NUM_THREADS=1`` reported 0.7646 and 0.7671. The matrices here are small (``d x K r``), so one thread costs
    little. GPU kernels are not affected by this setting (a GPU gives its own, repeatable, bytes)."""
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _repeatable(method: Callable) -> Callable:
    """Run ``method`` under :func:`one_thread`."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with one_thread():
            return method(*args, **kwargs)

    return wrapper


def _full(factors: Factors) -> dict[str, list[torch.Tensor]]:
    return {name: [b @ a for b, a in pairs] for name, pairs in factors.items()}


def _dtype(factors: Factors) -> torch.dtype:
    return next(iter(factors.values()))[0][1].dtype


# ---------------------------------------------------------------------------------------------- linear algebra
@_repeatable
def lowrank_svd(factors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """Thin SVD of ``[B_1 A_1, ..., B_K A_K]`` (the K updates side by side) from the factors, in float64.

    The concatenation has rank at most ``K r``, so instead of decomposing a ``d_out x K d_in`` matrix we write it as
    ``Q_B (R_B R_A^T) Q_A^T`` with QR decompositions of ``[B_1 ... B_K]`` and of each ``A_i^T``, and decompose only
    the small ``K r x K r`` core. Same singular values and subspaces as the full SVD, at a cost that does not grow
    with the layer's size (the full SVD in float64 is slow on GPUs, which run float64 at 1/32 of float32).

    Returns ``(U, S, Vh)`` with ``U @ diag(S) @ Vh`` equal to the concatenation, singular values above
    ``1e-10 * max`` only.
    """
    bs = torch.cat([b.double() for b, _ in factors], dim=1)
    q_b, r_b = torch.linalg.qr(bs)
    qa_blocks, ra_blocks = zip(*(torch.linalg.qr(a.double().T) for _, a in factors))
    core = r_b @ torch.block_diag(*ra_blocks).T
    u_c, s, vh_c = torch.linalg.svd(core)
    keep = s > s.max() * 1e-10 if s.numel() else s.bool()
    u_c, s, vh_c = u_c[:, keep], s[keep], vh_c[keep]
    offsets = [0]
    for q in qa_blocks:
        offsets.append(offsets[-1] + q.shape[1])
    vh = torch.cat([vh_c[:, offsets[i] : offsets[i + 1]] @ q.T for i, q in enumerate(qa_blocks)], dim=1)
    return q_b @ u_c, s, vh


@_repeatable
def sum_svd(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], weights: Sequence[float]) -> tuple[torch.Tensor, ...]:
    """Thin SVD ``(U, S, Vh)`` of ``sum_i w_i B_i A_i`` from the factors (rank at most ``K r``), in float64."""
    b = torch.cat([w * b.double() for (b, _), w in zip(pairs, weights)], dim=1)
    a = torch.cat([a.double() for _, a in pairs], dim=0)
    q_b, r_b = torch.linalg.qr(b)
    q_a, r_a = torch.linalg.qr(a.T)
    u_c, s, vh_c = torch.linalg.svd(r_b @ r_a.T)
    keep = s > s.max() * 1e-10 if s.numel() else s.bool()
    return q_b @ u_c[:, keep], s[keep], vh_c[keep] @ q_a.T


@_repeatable
def polar(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (or rows, for a wide matrix): ``P Q^T`` from ``M = P S Q^T``."""
    p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qh


# ------------------------------------------------------------------------------------------------ TIES machinery
def trim_global(vectors: torch.Tensor, density: float) -> torch.Tensor:
    """Keep, in each row (a task's whole update, flattened), the ``density`` fraction of largest magnitude."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}.")
    if density >= 1.0:
        return vectors
    keep = max(1, int(round(density * vectors.shape[1])))
    threshold = vectors.abs().kthvalue(vectors.shape[1] - keep + 1, dim=1, keepdim=True).values
    return torch.where(vectors.abs() >= threshold, vectors, torch.zeros_like(vectors))


def elect_signs(trimmed: torch.Tensor, method: str = "total") -> torch.Tensor:
    """TIES sign election per entry: the sign of the sum of the trimmed values (``"total"``) or of their signs
    (``"frequency"``). Entries whose sum is exactly zero take the majority sign of the whole model."""
    if method not in ("total", "frequency"):
        raise ValueError(f"majority_sign_method must be 'total' or 'frequency', got {method!r}.")
    signs = torch.sign(trimmed.sum(0) if method == "total" else torch.sign(trimmed).sum(0))
    majority = torch.sign(signs.sum()) if signs.sum() != 0 else torch.ones((), dtype=signs.dtype)
    return torch.where(signs == 0, majority.to(signs.device), signs)


def disjoint_mean(vectors: torch.Tensor, signs: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Mean of the weighted non-zero entries that agree with the elected sign (0 where none does)."""
    agree = (torch.sign(vectors) == signs) & (vectors != 0)
    w = torch.tensor(list(weights), dtype=vectors.dtype, device=vectors.device).view(-1, 1)
    return (vectors * w * agree).sum(0) / agree.sum(0).clamp(min=1)


def _flatten(per_layer: dict[str, list[torch.Tensor]]) -> tuple[torch.Tensor, list[tuple[str, torch.Size, int]]]:
    """``{layer: [t_1..t_K]}`` -> ``[K, D]`` (each task's tensors of all layers flattened together) and the layout."""
    layout = [(name, tensors[0].shape, tensors[0].numel()) for name, tensors in per_layer.items()]
    rows = torch.stack(
        [
            torch.cat([tensors[i].reshape(-1) for tensors in per_layer.values()])
            for i in range(len(next(iter(per_layer.values()))))
        ]
    )
    return rows, layout


def _unflatten(vector: torch.Tensor, layout) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name, shape, size in layout:
        out[name] = vector[start : start + size].view(shape)
        start += size
    return out


def _ties_merge(
    per_layer: dict[str, list[torch.Tensor]], weights, density: float, majority_sign_method: str, trim: bool = True
) -> dict[str, torch.Tensor]:
    rows, layout = _flatten(per_layer)
    trimmed = trim_global(rows, density) if trim else rows
    return _unflatten(disjoint_mean(trimmed, elect_signs(trimmed, majority_sign_method), weights), layout)


def _dare(per_layer: dict[str, list[torch.Tensor]], density: float, seed: int) -> dict[str, list[torch.Tensor]]:
    """Drop each entry with probability ``1 - density`` and rescale the rest by ``1 / density`` (Yu et al.)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}.")
    generator = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same drop on every device
    out = {}
    for name, tensors in per_layer.items():
        out[name] = [
            t * (torch.rand(t.shape, generator=generator) < density).to(t.device, t.dtype) / density for t in tensors
        ]
    return out


# ------------------------------------------------------------------------------------------------------ methods
@_repeatable
def task_arithmetic(factors: Factors, weights: Sequence[float]) -> Deltas:
    """``sum_i w_i dW_i``: averaging with ``w_i = 1/K``, a scaled sum with ``w_i = lambda``.

    Example:
        >>> import torch
        >>> b1, a1 = torch.tensor([[1.0], [0.0]]), torch.tensor([[2.0, 0.0]])  # dW_1 = [[2, 0], [0, 0]]
        >>> b2, a2 = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0, 4.0]])  # dW_2 = [[0, 0], [0, 4]]
        >>> task_arithmetic({"layer": [(b1, a1), (b2, a2)]}, [0.5, 0.5])["layer"]
        tensor([[1., 0.],
                [0., 2.]])
    """
    return {name: sum(w * b @ a for (b, a), w in zip(pairs, weights)) for name, pairs in factors.items()}


@_repeatable
def ties(factors: Factors, weights: Sequence[float], density: float, majority_sign_method: str = "total") -> Deltas:
    """TIES-Merging on the true updates: keep each task's ``density`` largest-magnitude entries (whole model), elect
    a sign per entry, average the weighted entries that agree with it.

    Example (two rank-1 updates of one 1x2 layer; on the first entry they disagree and the larger mass, +3, wins):
        >>> import torch
        >>> one = torch.ones(1, 1)
        >>> factors = {"layer": [(one, torch.tensor([[3.0, 1.0]])), (one, torch.tensor([[-1.0, 2.0]]))]}
        >>> ties(factors, [1.0, 1.0], density=1.0)["layer"]  # second entry: both agree, their mean
        tensor([[3.0000, 1.5000]])
        >>> ties(factors, [1.0, 1.0], density=0.5)["layer"]  # each task keeps its largest entry only
        tensor([[3., 2.]])
    """
    return _ties_merge(_full(factors), weights, density, majority_sign_method)


@_repeatable
def dare_linear(factors: Factors, weights: Sequence[float], density: float, seed: int = 0) -> Deltas:
    """DARE then a weighted sum: every entry kept with probability ``density`` and rescaled by ``1 / density``."""
    dropped = _dare(_full(factors), density, seed)
    return {name: sum(w * t for t, w in zip(tensors, weights)) for name, tensors in dropped.items()}


@_repeatable
def dare_ties(
    factors: Factors,
    weights: Sequence[float],
    density: float,
    seed: int = 0,
    majority_sign_method: str = "total",
    trim_density: float = 0.2,
) -> Deltas:
    """DARE-TIES as MergeLM (Yu et al., 2024) does it: DARE drops each entry of every update with probability
    ``1 - density`` and rescales the rest, then TIES-Merging runs in full on the result — each task keeps its
    ``trim_density`` largest-magnitude entries (whole model; MergeLM's ``param_value_mask_rate`` is
    ``1 - trim_density``, 0.8 by default), a sign is elected per entry and the agreeing entries are averaged.
    ``trim_density=1.0`` skips the trim, which is what PEFT's ``dare_ties`` does on its factors.

    Example (at density 1.0 DARE drops nothing; the trim then keeps each task's largest entry):
        >>> import torch
        >>> one = torch.ones(1, 1)
        >>> factors = {"layer": [(one, torch.tensor([[3.0, 1.0]])), (one, torch.tensor([[-1.0, 2.0]]))]}
        >>> dare_ties(factors, [1.0, 1.0], density=1.0, trim_density=1.0)["layer"]  # plain TIES at density 1
        tensor([[3.0000, 1.5000]])
        >>> dare_ties(factors, [1.0, 1.0], density=1.0, trim_density=0.5)["layer"]
        tensor([[3., 2.]])
    """
    if not 0.0 < trim_density <= 1.0:
        raise ValueError(f"trim_density must be in (0, 1], got {trim_density}.")
    dropped = _dare(_full(factors), density, seed)
    return _ties_merge(dropped, weights, trim_density, majority_sign_method, trim=trim_density < 1.0)


def dare_ties_no_trim(
    factors: Factors, weights: Sequence[float], density: float, seed: int = 0, majority_sign_method: str = "total"
) -> Deltas:
    """DARE-TIES as KnOTS's code configures it (``configs/vitB_r16_dare_ties.py``: ``topK`` 100), the recipe
    Marczak et al. (2025) report under that name: DARE's drop and rescale, then sign election and the disjoint mean,
    with no trim (:func:`dare_ties` with ``trim_density=1``).

    Example (at density 1.0 DARE drops nothing, so this is TIES without its trim):
        >>> import torch
        >>> one = torch.ones(1, 1)
        >>> factors = {"layer": [(one, torch.tensor([[3.0, 1.0]])), (one, torch.tensor([[-1.0, 2.0]]))]}
        >>> dare_ties_no_trim(factors, [1.0, 1.0], density=1.0)["layer"]
        tensor([[3.0000, 1.5000]])
    """
    return dare_ties(factors, weights, density, seed, majority_sign_method, trim_density=1.0)


@_repeatable
def magnitude_prune(factors: Factors, weights: Sequence[float], density: float) -> Deltas:
    """Keep each task's ``density`` largest-magnitude entries (whole model), then a weighted sum."""
    rows, layout = _flatten(_full(factors))
    trimmed = trim_global(rows, density)
    w = torch.tensor(list(weights), dtype=rows.dtype, device=rows.device).view(-1, 1)
    return _unflatten((trimmed * w).sum(0), layout)


@_repeatable
def knots_ties(
    factors: Factors, weights: Sequence[float], density: float, majority_sign_method: str = "total"
) -> Deltas:
    """KnOTS-TIES (Stoica et al., 2024), as the official code does it.

    Per layer, the updates are concatenated side by side and decomposed, ``[dW_1 ... dW_K] = U S [V_1 ... V_K]^T``,
    so every task is written in the shared basis ``U``: ``dW_i = U (S V_i^T)``. TIES then merges the task blocks
    ``S V_i^T`` (singular values folded in, the official ``s_on_V``), trimming each task's blocks of the whole model
    together; the merged block is mapped back, ``dW = U (S V^T)_merged``. The paper's ViT-B setting keeps 20% with a
    scale of 0.6.
    """
    bases, blocks = {}, {}
    for name, pairs in factors.items():
        u, s, vh = lowrank_svd(pairs)
        bases[name] = u
        edges = [0]
        for _, a in pairs:
            edges.append(edges[-1] + a.shape[1])
        blocks[name] = [s[:, None] * vh[:, edges[i] : edges[i + 1]] for i in range(len(pairs))]
    merged = _ties_merge(blocks, weights, density, majority_sign_method)
    dtype = _dtype(factors)
    return {name: (bases[name] @ merged[name]).to(dtype) for name in factors}


@_repeatable
def tsv(factors: Factors, weights: Sequence[float]) -> Deltas:
    """TSV-Merge (Gargiulo et al., 2025) within the updates' span: keep each task's top ``min(m, n) / K`` singular
    components that are not zero (all ``r`` of a LoRA update's, whose rank is lower), make the concatenated left and
    right singular vectors of all tasks orthonormal (their polar factors), and rebuild ``U_perp diag(w_i s_i)
    V_perp^T``, removing the overlap between tasks' subspaces that causes interference. The official code keeps
    ``min(m, n) / K`` components whatever their values, null-space ones included (:func:`tsv_full`); the two agree
    when every task's update has at least that rank."""
    out = {}
    for name, pairs in factors.items():
        k = len(pairs)
        us, ss, vhs = [], [], []
        for (b, a), w in zip(pairs, weights):
            u, s, vh = lowrank_svd([(b, a)])
            keep = min(len(s), min(b.shape[0], a.shape[1]) // k)
            us.append(u[:, :keep])
            ss.append(w * s[:keep])
            vhs.append(vh[:keep])
        u_perp, vh_perp = polar(torch.cat(us, dim=1)), polar(torch.cat(vhs, dim=0))
        out[name] = ((u_perp * torch.cat(ss)) @ vh_perp).to(_dtype(factors))
    return out


@_repeatable
def tsv_full(factors: Factors, weights: Sequence[float]) -> Deltas:
    """TSV-Merge as the official code (``AntoAndGar/task_singular_vectors``, ``compute_and_sum_svd_mem_reduction``)
    does it, on dense updates: each task's top ``int(min(m, n) * (1 / K))`` singular components, zero singular values
    included, side by side; both concatenated bases made orthogonal by their polar factors (``U_u V_u^T`` of an SVD),
    then ``U_perp diag(w_i s_i) V_perp^T``. On a LoRA update of rank ``r`` below that count, all but ``r`` of a task's
    columns are null-space directions, whatever the SVD returns for a zero singular value; they weigh nothing in the
    sum but take part in the orthogonalisation and rotate the kept directions, so the result differs from
    :func:`tsv`, which keeps the ``r`` real ones. The official code scales the result by one coefficient; a weight
    per task here scales that task's singular values (the same for equal weights)."""
    out = {}
    for name, pairs in factors.items():
        k = len(pairs)
        # Decomposed unweighted, as the official code does before it scales the result: a weighted update's
        # null-space directions would come out of the SVD differently.
        updates = [b.double() @ a.double() for b, a in pairs]
        rows, columns = updates[0].shape
        size = min(rows, columns)
        keep = int(size * (1 / k))  # the official rounding (the same as size // k for every layer size here)
        sum_u = updates[0].new_zeros(rows, size)
        sum_s = updates[0].new_zeros(size)
        sum_vh = updates[0].new_zeros(size, columns)
        for i, (update, weight) in enumerate(zip(updates, weights)):
            u, s, vh = torch.linalg.svd(update, full_matrices=False)
            sum_u[:, i * keep : (i + 1) * keep] = u[:, :keep]
            sum_s[i * keep : (i + 1) * keep] = weight * s[:keep]
            sum_vh[i * keep : (i + 1) * keep] = vh[:keep]
        u_u, _, vh_u = torch.linalg.svd(sum_u, full_matrices=False)
        u_v, _, vh_v = torch.linalg.svd(sum_vh, full_matrices=False)
        out[name] = torch.linalg.multi_dot((u_u, vh_u, torch.diag(sum_s), u_v, vh_v)).to(_dtype(factors))
    return out


@_repeatable
def iso_c(factors: Factors, weights: Sequence[float]) -> Deltas:
    """Iso-C (Marczak et al., 2025): the weighted sum of the updates with a flat (isotropic) spectrum, every singular
    value replaced by their mean, so no task's directions dominate. For low-rank LoRA sums the spectrum is flattened
    within its support: the official code, written for full-rank task vectors, averages over ``min(m, n)`` values,
    which for a rank-``K r`` sum would put energy into arbitrary null-space directions."""
    out = {}
    for name, pairs in factors.items():
        u, s, vh = sum_svd(pairs, weights)
        out[name] = (s.mean() * u @ vh).to(_dtype(factors))
    return out


def _common_split(size: int, k: int, common_fraction: float) -> tuple[int, int]:
    """Iso-CTS's split of ``size`` directions: the common subspace's count, and the task-specific count (a multiple
    of ``k``, an equal share per task), as the official code rounds them."""
    specific = round((size - int(size * common_fraction)) / k) * k
    return size - specific, specific


def _flat_orthonormal(us: list[torch.Tensor], ss: list[torch.Tensor], vhs: list[torch.Tensor]) -> torch.Tensor:
    """Iso-CTS's last step: the kept left and right singular vectors made orthonormal (their polar factors), with a
    flat spectrum, the mean of all the kept singular values."""
    u_perp, vh_perp = polar(torch.cat(us, dim=1)), polar(torch.cat(vhs, dim=0))
    return torch.cat(ss).mean() * u_perp @ vh_perp


@_repeatable
def iso_cts(factors: Factors, weights: Sequence[float], common_fraction: float = 0.8) -> Deltas:
    """Iso-CTS (Marczak et al., 2025): the top ``common_fraction`` of the weighted sum's singular directions (the
    common subspace) plus, for each task, the top directions of its update with the common subspace projected out
    (an equal share each), made orthonormal and given a flat spectrum. Within the sum's support, as :func:`iso_c`;
    a task whose update lies wholly in the common subspace adds no direction (the official code would add an
    arbitrary one with a zero singular value, which the flat spectrum then promotes)."""
    if not 0.0 < common_fraction <= 1.0:
        raise ValueError(f"common_fraction must be in (0, 1], got {common_fraction}.")
    out = {}
    for name, pairs in factors.items():
        k = len(pairs)
        u, s, vh = sum_svd(pairs, weights)
        common, specific = _common_split(len(s), k, common_fraction)
        us, ss, vhs = [u[:, :common]], [s[:common]], [vh[:common]]
        for (b, a), w in zip(pairs, weights):
            b = w * b.double()
            residual_b = b - us[0] @ (us[0].T @ b)
            ut, st, vht = lowrank_svd([(residual_b, a)])
            us.append(ut[:, : specific // k])
            ss.append(st[: specific // k])
            vhs.append(vht[: specific // k])
        out[name] = _flat_orthonormal(us, ss, vhs).to(_dtype(factors))
    return out


@_repeatable
def iso_c_full(factors: Factors, weights: Sequence[float]) -> Deltas:
    """Iso-C exactly as the official code (``danielm1405/iso-merging``, ``src/utils/iso.py``) does it, on the dense
    weighted sum: every one of its ``min(m, n)`` singular values, zeros included, replaced by their mean. For a LoRA
    sum of rank ``K r`` below ``min(m, n)`` this spreads ``sum(S) / min(m, n)`` over every direction, the null space's
    included, whose singular vectors are arbitrary (whatever the SVD returns for a zero singular value): the paper's
    space, kept to show what it does to low-rank updates (:func:`iso_c` flattens within the sum's support)."""
    out = {}
    for name, pairs in factors.items():
        dense = sum(w * (b.double() @ a.double()) for (b, a), w in zip(pairs, weights))
        u, s, vh = torch.linalg.svd(dense, full_matrices=False)
        out[name] = (s.mean() * u @ vh).to(_dtype(factors))
    return out


@_repeatable
def iso_cts_full(factors: Factors, weights: Sequence[float], common_fraction: float = 0.8) -> Deltas:
    """Iso-CTS exactly as the official code does it, on dense updates: the common subspace is the top
    ``common_fraction`` of all ``min(m, n)`` directions of the weighted sum, each task adds an equal share of the top
    directions of its update with the common subspace projected out, the bases are made orthonormal and the spectrum
    flat (the mean of all the kept values). On LoRA updates of total rank ``K r`` below ``common_fraction *
    min(m, n)`` every update lies inside the common subspace, so each task's residual is zero and its directions are
    arbitrary: the method reduces to :func:`iso_c_full` with other arbitrary directions."""
    if not 0.0 < common_fraction <= 1.0:
        raise ValueError(f"common_fraction must be in (0, 1], got {common_fraction}.")
    out = {}
    for name, pairs in factors.items():
        k = len(pairs)
        updates = [w * (b.double() @ a.double()) for (b, a), w in zip(pairs, weights)]
        common, specific = _common_split(min(updates[0].shape), k, common_fraction)
        u, s, vh = torch.linalg.svd(sum(updates), full_matrices=False)
        us, ss, vhs = [u[:, :common]], [s[:common]], [vh[:common]]
        for update in updates:
            residual = update - us[0] @ (us[0].T @ update)
            ut, st, vht = torch.linalg.svd(residual, full_matrices=False)
            us.append(ut[:, : specific // k])
            ss.append(st[: specific // k])
            vhs.append(vht[: specific // k])
        out[name] = _flat_orthonormal(us, ss, vhs).to(_dtype(factors))
    return out


def core_space(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Core Space (Panariello et al., 2025): the reference bases of one layer's K adapters and each task's core matrix.

    ``U_B`` is the left singular basis of the stacked ``[B'_1 ... B'_K]``, ``V_A^T`` the right singular basis of the
    stacked ``[A_1; ...; A_K]``; task ``i``'s core matrix is ``M_i = U_B^T B'_i A_i V_A`` (``sum r_i`` square at
    most). The map is lossless: ``U_B M_i V_A^T = dW_i`` for every task, since each ``B'_i`` lies in the span of
    ``U_B`` and each ``A_i`` in the row span of ``V_A^T``. Returns ``(U_B, [M_1, ..., M_K], V_A^T)`` in float64.
    """
    b_stack = torch.cat([b.double() for b, _ in pairs], dim=1)
    a_stack = torch.cat([a.double() for _, a in pairs], dim=0)
    u_b = torch.linalg.svd(b_stack, full_matrices=False)[0]
    vh_a = torch.linalg.svd(a_stack, full_matrices=False)[2]
    cores = [(u_b.T @ b.double()) @ (a.double() @ vh_a.T) for b, a in pairs]
    return u_b, cores, vh_a


@_repeatable
def core_ties(
    factors: Factors, weights: Sequence[float], density: float, majority_sign_method: str = "total"
) -> Deltas:
    """TIES in Core Space, as the official code (``apanariello4/core-space-merging``, ``task_merger.py``,
    ``merge_space="core"``, ``merge_method="ties"``) does it: per layer, each task's update is written as its core
    matrix in the bases shared by all tasks (:func:`core_space`), TIES merges the core matrices of that layer (each
    task keeps its ``density`` largest-magnitude entries, a sign is elected per entry, agreeing entries are
    averaged), and the merged core matrix is mapped back, ``dW = U_B M V_A^T``. Unlike :func:`ties` (whole model),
    the trim is per layer, as that code's ``matrix_per_layer`` representation does it; and it acts on ``sum r_i``
    squared entries per layer instead of ``m n``, which is what makes the method cheap for LoRA. With one weight
    ``lambda`` for every task, the result is ``lambda`` times the official merge (its ``scaling_coeffs``).

    Example (a merge of one task at density 1 is that task's update, weighted: the core map loses nothing):
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> b, a = torch.randn(4, 2, generator=g), torch.randn(2, 5, generator=g)
        >>> torch.allclose(core_ties({"layer": [(b, a)]}, [0.5], density=1.0)["layer"], 0.5 * b @ a, atol=1e-6)
        True
    """
    out = {}
    for name, pairs in factors.items():
        u_b, cores, vh_a = core_space(pairs)
        merged = _ties_merge({name: cores}, weights, density, majority_sign_method)[name]
        out[name] = (u_b @ merged @ vh_a).to(_dtype(factors))
    return out
