"""One entry point to merge LoRA adapters, by method name: exact task arithmetic or any PEFT combination type.

``merge_adapters(model, ["digits", "shapes"], method="task_arithmetic")`` returns a *new* plain backbone whose weights
are ``W + sum_i w_i * dW_i`` (with the method's notion of the combined ``dW``). The adapters in ``model`` are never
changed: every method works on a copy.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn

from .workload import count


@dataclass(frozen=True)
class MergeMethod:
    """A merge method addressable by name: what it is and which knobs it takes."""

    name: str
    description: str
    peft_combination: str | None = None
    needs_equal_rank: bool = False
    uses_density: bool = False
    uses_svd_rank: bool = False
    random: bool = False


MERGE_METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in [
        MergeMethod("task_arithmetic", "exact sum of weight updates, sum_i w_i * B_i A_i * scaling_i"),
        MergeMethod("linear", "PEFT linear: weighted sums of the A and of the B factors separately (not exact)",
                    "linear", needs_equal_rank=True),
        MergeMethod("cat", "PEFT cat: concatenated factors, exact, rank grows to the sum of ranks", "cat"),
        MergeMethod("svd", "PEFT svd: exact sum truncated to svd_rank by SVD", "svd", uses_svd_rank=True),
        MergeMethod("ties", "PEFT TIES: trim to density, elect signs, disjoint mean (on A and B)", "ties",
                    needs_equal_rank=True, uses_density=True),
        MergeMethod("dare_linear", "PEFT DARE: random drop to density and rescale, then linear", "dare_linear",
                    needs_equal_rank=True, uses_density=True, random=True),
        MergeMethod("dare_ties", "PEFT DARE then TIES sign election", "dare_ties",
                    needs_equal_rank=True, uses_density=True, random=True),
        MergeMethod("magnitude_prune", "PEFT: keep the largest-magnitude fraction density, then linear",
                    "magnitude_prune", needs_equal_rank=True, uses_density=True),
        MergeMethod("knots_ties", "KnOTS: align the updates in a shared SVD basis, then TIES-merge there",
                    uses_density=True),
    ]
}
MERGED_ADAPTER = "__merged__"


def get_merge_method(name: str) -> MergeMethod:
    """The method called ``name``; a ``ValueError`` lists the valid names."""
    try:
        return MERGE_METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown merge method {name!r}. Valid methods: {', '.join(MERGE_METHODS)}.") from None


def lora_layers(model: PeftModel) -> dict[str, LoraLayer]:
    """The LoRA-wrapped modules of a PEFT model by their name in the plain backbone (e.g. ``blocks.0.attn.qkv``)."""
    prefix = "base_model.model."
    return {
        name[len(prefix):] if name.startswith(prefix) else name: module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }


def delta_weights(model: PeftModel, adapter: str) -> dict[str, torch.Tensor]:
    """``dW = scaling * B @ A`` of one adapter, per target module, as PEFT itself computes it when merging."""
    return {
        name: layer.get_delta_weight(adapter).detach().clone()
        for name, layer in lora_layers(model).items()
        if adapter in layer.lora_A
    }


def _validate(model: PeftModel, adapters: Sequence[str], weights: Sequence[float] | None, method: MergeMethod,
              density: float | None, scale: float | None = None) -> list[float]:
    if not isinstance(model, PeftModel):
        raise ValueError(
            f"merge_adapters needs a peft.PeftModel holding the adapters, got {type(model).__name__}. Load them "
            "with lora_merge_utils.load_adapters(backbone, {name: path, ...})."
        )
    adapters = list(adapters)
    if not adapters:
        raise ValueError("Give at least one adapter name to merge.")
    if len(set(adapters)) != len(adapters):
        raise ValueError(f"Adapter names repeat in {adapters}; each adapter can be merged once.")
    unknown = [a for a in adapters if a not in model.peft_config]
    if unknown:
        loaded = [a for a in model.peft_config if a != MERGED_ADAPTER]
        raise ValueError(f"Adapter(s) {unknown} are not loaded in this model. Loaded adapters: {loaded}.")
    if weights is not None and scale is not None:
        raise ValueError("Give either weights= (one per adapter) or scale= (the same weight for all), not both.")
    if weights is None:
        weights = [1.0 / len(adapters) if scale is None else float(scale)] * len(adapters)
    weights = [float(w) for w in weights]
    if len(weights) != len(adapters):
        raise ValueError(
            f"Got {len(weights)} weight(s) for {len(adapters)} adapter(s); give one weight per adapter, "
            "or none for equal weights 1/K."
        )
    configs = [model.peft_config[a] for a in adapters]
    if method.needs_equal_rank and len({c.r for c in configs}) > 1:
        ranks = {a: c.r for a, c in zip(adapters, configs)}
        raise ValueError(
            f"Method {method.name!r} needs adapters of equal rank, got {ranks}. Use 'task_arithmetic', 'cat' or "
            "'svd', which accept different ranks."
        )
    targets = {a: frozenset(lora_layers_names(model, a)) for a in adapters}
    if method.needs_equal_rank and len(set(targets.values())) > 1:
        raise ValueError(
            f"Method {method.name!r} needs adapters with the same target modules, but they differ: "
            + "; ".join(f"{a}: {len(t)} modules" for a, t in targets.items())
            + ". Use 'task_arithmetic' or 'cat', or retrain with the same target_modules."
        )
    if method.uses_density:
        if density is None:
            raise ValueError(f"Method {method.name!r} needs density=, the fraction of weights kept, in (0, 1].")
        if not 0.0 < float(density) <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}.")
    elif density is not None:
        raise ValueError(f"Method {method.name!r} takes no density; only {_density_methods()} do.")
    return weights


def _density_methods() -> str:
    return ", ".join(m.name for m in MERGE_METHODS.values() if m.uses_density)


def lora_layers_names(model: PeftModel, adapter: str) -> list[str]:
    return [name for name, layer in lora_layers(model).items() if adapter in layer.lora_A]


def merge_adapters(
    model: PeftModel,
    adapters: Sequence[str],
    weights: Sequence[float] | None = None,
    method: str = "task_arithmetic",
    *,
    density: float | None = None,
    svd_rank: int | None = None,
    majority_sign_method: str = "total",
    seed: int = 0,
    scale: float | None = None,
) -> nn.Module:
    """Merge named adapters of ``model`` into a new plain backbone (no LoRA layers left).

    Args:
        model: A ``PeftModel`` holding the adapters (see :func:`lora_merge_utils.load_adapters`); left unchanged.
        adapters: Names of the adapters to merge.
        weights: One weight per adapter; default equal weights ``1/K``.
        scale: Instead of ``weights``: the same weight ``scale`` for every adapter (task arithmetic's lambda:
            ``W + scale * sum_i dW_i``).
        method: One of :data:`MERGE_METHODS`: ``task_arithmetic`` (exact ``W + sum_i w_i dW_i``), or a PEFT
            ``add_weighted_adapter`` combination type: ``linear``, ``cat``, ``svd``, ``ties``, ``dare_linear``,
            ``dare_ties``, ``magnitude_prune``; or ``knots_ties`` (see :func:`knots_ties_delta`).
        density: Fraction of weights kept, in (0, 1], for ``ties``, ``dare_*``, ``magnitude_prune``, ``knots_ties``.
        svd_rank: Rank of the ``svd`` result (default: the largest input rank).
        majority_sign_method: ``"total"`` or ``"frequency"``, for the TIES sign election.
        seed: Seeds DARE's random drop, so a merge is reproducible (the global RNG is left as it was).

    Returns:
        A deep copy of the base backbone with the merged update folded into its weights, in eval mode.
    """
    spec = get_merge_method(method)
    weights = _validate(model, adapters, weights, spec, density, scale)
    count("merges")
    work = copy.deepcopy(model)
    if spec.name == "task_arithmetic":
        merged = _task_arithmetic(work, list(adapters), weights)
    elif spec.name == "knots_ties":
        layers = lora_layers(work)
        merged = _apply_deltas(work, {
            name: knots_ties_delta([lora_factors(layers[name], a) for a in adapters], weights, float(density),
                                   majority_sign_method)
            for name in _common_layers(work, adapters)
        })
    else:
        kwargs = {"combination_type": spec.peft_combination, "majority_sign_method": majority_sign_method}
        if spec.uses_density:
            kwargs["density"] = float(density)
        if spec.uses_svd_rank:
            kwargs["svd_rank"] = svd_rank
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            work.add_weighted_adapter(list(adapters), weights, adapter_name=MERGED_ADAPTER, **kwargs)
        work.set_adapter(MERGED_ADAPTER)
        merged = work.merge_and_unload(adapter_names=[MERGED_ADAPTER])
    merged.eval()
    merged.requires_grad_(False)
    return merged


def _task_arithmetic(work: PeftModel, adapters: list[str], weights: list[float]) -> nn.Module:
    deltas: dict[str, torch.Tensor] = {}
    for adapter, weight in zip(adapters, weights):
        for name, delta in delta_weights(work, adapter).items():
            deltas[name] = deltas.get(name, 0) + weight * delta
    return _apply_deltas(work, deltas)


def _common_layers(model: PeftModel, adapters: Sequence[str]) -> list[str]:
    names = [set(lora_layers_names(model, a)) for a in adapters]
    return sorted(set.intersection(*names))


def _ties(tensors: torch.Tensor, density: float, majority_sign_method: str = "total") -> torch.Tensor:
    """TIES on a stack ``[K, ...]``: keep each tensor's top-``density`` entries by magnitude, elect a sign per entry,
    and average the entries that agree with it (Yadav et al., 2023)."""
    flat = tensors.flatten(1)
    keep = max(1, int(round(density * flat.shape[1])))
    threshold = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
    trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
    if majority_sign_method == "frequency":
        sign = torch.sign(torch.sign(trimmed).sum(0))
    else:
        sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    return merged.view(tensors.shape[1:])


def lora_factors(layer: LoraLayer, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scaling * B, A)`` of one adapter in one layer, so that ``dW = (scaling * B) @ A``."""
    if getattr(layer, "fan_in_fan_out", False):
        raise ValueError("Layers that store weights transposed (fan_in_fan_out) are not supported here.")
    return layer.lora_B[adapter].weight.detach() * layer.scaling[adapter], layer.lora_A[adapter].weight.detach()


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
    vh = torch.cat([vh_c[:, offsets[i]:offsets[i + 1]] @ q.T for i, q in enumerate(qa_blocks)], dim=1)
    return q_b @ u_c, s, vh


def knots_ties_delta(updates: Sequence[torch.Tensor | tuple[torch.Tensor, torch.Tensor]], weights: Sequence[float],
                     density: float, majority_sign_method: str = "total") -> torch.Tensor:
    """KnOTS-TIES for one layer (Stoica et al., 2024, "Model merging with SVD to tie the KnOTS", arXiv:2410.19735).

    LoRA updates of different tasks live in different subspaces, so entry-wise merges such as TIES compare
    numbers that do not correspond. KnOTS first aligns them: the updates are concatenated side by side,
    ``[dW_1 ... dW_K] = U S [V_1 ... V_K]^T``, so every ``dW_i = U S V_i^T`` shares the basis ``U S``. The
    task-specific ``V_i`` (scaled by ``w_i``) are merged with TIES in that basis, and the result is mapped back:
    ``dW = U S V_merged^T``.

    ``updates`` are the layer's updates ``dW_i``, or their LoRA factors ``(scaling * B_i, A_i)`` (then the SVD is
    computed from the factors, see :func:`lowrank_svd`; the result is the same).
    """
    if all(isinstance(u, tuple) for u in updates):
        u, s, vh = lowrank_svd(updates)
        dtype, width = updates[0][1].dtype, updates[0][1].shape[1]
    else:
        stacked = torch.cat([d.double() for d in updates], dim=1)
        u, s, vh = torch.linalg.svd(stacked, full_matrices=False)
        rank = int((s > s.max() * 1e-10).sum()) if s.numel() else 0
        u, s, vh = u[:, :rank], s[:rank], vh[:rank]
        dtype, width = updates[0].dtype, updates[0].shape[1]
    blocks = torch.stack([w * vh[:, i * width:(i + 1) * width] for i, w in enumerate(weights)])
    merged_v = _ties(blocks, density, majority_sign_method)
    return ((u * s) @ merged_v).to(dtype)


def _apply_deltas(work: PeftModel, deltas: dict[str, torch.Tensor]) -> nn.Module:
    plain = work.unload()
    modules = dict(plain.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            modules[name].weight += delta.to(modules[name].weight.dtype)
    return plain


def merged_delta(base: nn.Module, merged: nn.Module) -> dict[str, torch.Tensor]:
    """Per-layer ``W_merged - W_base`` for every weight that changed, in float64 on the CPU (the modules are not
    moved; to inspect or compare merges)."""
    base_state = base.state_dict()
    deltas = {}
    for name, tensor in merged.state_dict().items():
        if name.endswith(".weight"):
            diff = tensor.detach().to("cpu", torch.float64) - base_state[name].detach().to("cpu", torch.float64)
            if diff.any():
                deltas[name.removesuffix(".weight")] = diff
    return deltas


def update_error(model: PeftModel, adapters: Sequence[str], method: str = "task_arithmetic",
                 weights: Sequence[float] | None = None, **kwargs) -> dict[str, float]:
    """How far a merge's update lands from the exact weighted sum of the adapters' updates, per layer:
    ``||dW_merged - sum_i w_i dW_i|| / ||sum_i w_i dW_i||``.

    Computed where the question is meaningful at any scale: on a float64 copy of the model on the CPU (``model``
    itself is neither changed nor moved). In float32, reading an update back as ``(W + dW) - W`` has a relative
    error of about ``1e-7 * ||W|| / ||dW||``, which for a ViT-B adapter (``||dW|| / ||W||`` near ``1e-4``) is far
    above any sensible tolerance; in float64 it is about ``1e-16 * ||W|| / ||dW||``.
    """
    model64 = copy.deepcopy(model).to("cpu", torch.float64)
    weights = _validate(model64, adapters, weights, get_merge_method(method), kwargs.get("density"),
                        kwargs.get("scale"))
    expected: dict[str, torch.Tensor] = {}
    for adapter, weight in zip(adapters, weights):
        for name, delta in delta_weights(model64, adapter).items():
            expected[name] = expected.get(name, 0) + weight * delta
    base = {name: layer.get_base_layer().weight.detach() for name, layer in lora_layers(model64).items()}
    options = {key: value for key, value in kwargs.items() if key != "scale"}  # already folded into weights
    merged = dict(merge_adapters(model64, adapters, weights, method, **options).named_modules())
    return {name: float((merged[name].weight - base[name] - exact).norm() / exact.norm())
            for name, exact in expected.items()}
