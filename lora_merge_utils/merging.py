"""One entry point to merge LoRA adapters by method name: ``merge_adapters(model, names, method=...)``.

``merge_adapters(model, ["digits", "shapes"], method="task_arithmetic")`` returns a *new* plain backbone whose weights
are ``W + dW_merged``, with the method's notion of the combined update. The adapters in ``model`` are never changed:
every method works on a copy. Three kinds of method share the entry point (``python -m lora_merge_utils list``):

* ours, on the true updates ``dW_i = scaling_i B_i A_i`` (:mod:`lora_merge_utils.combine`): task arithmetic, TIES,
  DARE, magnitude pruning, KnOTS-TIES, Core Space TIES, TSV-Merge, Iso-C, Iso-CTS;
* PEFT's ``add_weighted_adapter``: ``linear``, ``cat``, ``svd``, and the factor-wise ``*_on_factors`` variants of
  TIES, DARE and magnitude pruning, which combine the A factors and the B factors separately (not the updates);
* AdaMerging, which learns one coefficient per layer and task from unlabeled images
  (:mod:`lora_merge_utils.adamerging`): ``adamerging`` on the paper's schedule, ``adamerging_short`` on one a hundred
  times cheaper.

A request for a merge is a :class:`~lora_merge_utils.methods.MergeSpec`: a method, its hyperparameters, a label for
tables, and whether each task's head is refitted on the merged backbone's features.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Sequence

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn

from . import combine
from .instrumentation.workload import count
from .methods import LIBRARY, MERGE_METHODS, MergeMethod, MergeSpec, check_merge_request, get_merge_method

__all__ = [  # MERGE_METHODS, MergeMethod and get_merge_method live in .methods (no torch); kept importable here
    "MERGED_ADAPTER",
    "MERGE_METHODS",
    "MergeMethod",
    "MergeSpec",
    "adapter_factors",
    "delta_weights",
    "get_merge_method",
    "lora_factors",
    "lora_layers",
    "merge_adapters",
    "merged_delta",
    "module_copy",
    "plain_copy",
    "update_error",
]


MERGED_ADAPTER = "__merged__"


def lora_layers(model: PeftModel) -> dict[str, LoraLayer]:
    """The LoRA-wrapped modules of a PEFT model by their name in the plain backbone (e.g. ``blocks.0.attn.qkv``)."""
    prefix = "base_model.model."
    return {
        name[len(prefix) :] if name.startswith(prefix) else name: module
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


def lora_factors(layer: LoraLayer, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scaling * B, A)`` of one adapter in one layer, so that ``dW = (scaling * B) @ A``."""
    if getattr(layer, "fan_in_fan_out", False):
        raise ValueError("Layers that store weights transposed (fan_in_fan_out) are not supported here.")
    return layer.lora_B[adapter].weight.detach() * layer.scaling[adapter], layer.lora_A[adapter].weight.detach()


def adapter_factors(model: PeftModel, adapters: Sequence[str]) -> combine.Factors:
    """``{layer: [(scaling * B_i, A_i) for each adapter]}`` over every layer any adapter targets; an adapter that
    does not target a layer contributes a zero update there (rank-1 zero factors)."""
    layers = lora_layers(model)
    targeted = sorted({name for name, layer in layers.items() for a in adapters if a in layer.lora_A})
    factors = {}
    for name in targeted:
        weight = layers[name].get_base_layer().weight
        factors[name] = [
            lora_factors(layers[name], a)
            if a in layers[name].lora_A
            else (weight.new_zeros(weight.shape[0], 1), weight.new_zeros(1, weight.shape[1]))
            for a in adapters
        ]
    return factors


_PLAIN_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def plain_copy(model: PeftModel) -> nn.Module:
    """A copy of ``model``'s base backbone without any LoRA layer. The first call unloads a deep copy of the whole
    PEFT model (slow: every adapter is copied too) and keeps that plain backbone; later calls copy only it
    (:func:`module_copy`), after checking that the base weights have not changed since (``merge_adapter`` changes
    them in place)."""
    cached = _PLAIN_COPIES.get(model)
    if cached is not None:
        modules = dict(cached.named_modules())
        if all(
            torch.equal(layer.get_base_layer().weight, modules[name].weight)
            for name, layer in lora_layers(model).items()
        ):
            return module_copy(cached)
    cached = copy.deepcopy(model).unload()
    cached.eval().requires_grad_(False)
    _PLAIN_COPIES[model] = cached
    return module_copy(cached)


_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


def module_copy(module: nn.Module, memo: dict[int, object] | None = None) -> nn.Module:
    """What ``copy.deepcopy(module)`` gives, faster: the same classes, a clone of every parameter, buffer and tensor,
    and every other attribute copied deeply, with one copy of each object however often it is referenced (a model
    held beside its own children, tied weights). ``memo`` is ``copy.deepcopy``'s.

    ``copy.deepcopy`` walks every object, each module's dozen empty hook tables included, through Python's generic
    machinery: about 12 ms for the tiny ViT against under 3 ms here, and a merge is scored right after its copy is made,
    over a thousand times a book. The copy's tensors are bit for bit the original's."""
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    clone = memo[id(module)] = object.__new__(type(module))

    def tensor(t: torch.Tensor | None, as_parameter: bool) -> torch.Tensor | None:
        if t is None:
            return None
        if id(t) not in memo:
            copied = t.detach().clone()
            memo[id(t)] = nn.Parameter(copied, requires_grad=t.requires_grad) if as_parameter else copied
        return memo[id(t)]

    state = clone.__dict__
    for name, value in vars(module).items():
        if name in ("_parameters", "_buffers", "_modules") or isinstance(value, _IMMUTABLE):
            state[name] = value
        elif isinstance(value, dict | list | set) and not value:
            state[name] = value.copy()  # the hook tables: empty, and of their own class (an OrderedDict stays one)
        elif isinstance(value, nn.Module):
            state[name] = module_copy(value, memo)
        elif isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            state[name] = tensor(value, False)
        else:
            state[name] = copy.deepcopy(value, memo)
    clone._parameters = {name: tensor(p, True) for name, p in module._parameters.items()}
    clone._buffers = {name: tensor(b, False) for name, b in module._buffers.items()}
    clone._modules = {name: None if m is None else module_copy(m, memo) for name, m in module._modules.items()}
    return clone


def _validate(
    model: PeftModel,
    adapters: Sequence[str],
    method: MergeMethod,
    options: dict[str, object],
    weights: Sequence[float] | None = None,
    scale: float | None = None,
    seed: int = 0,
) -> tuple[list[float], dict[str, object]]:
    """The request checked by :func:`~lora_merge_utils.methods.check_merge_request` (the command line's check too),
    then what only the model can tell: the adapters are loaded, and of equal rank and targets where the method
    needs it, and ``svd_rank`` is at most their summed rank."""
    if not isinstance(model, PeftModel):
        raise ValueError(
            f"merge_adapters needs a peft.PeftModel holding the adapters, got {type(model).__name__}. Load them "
            "with lora_merge_utils.load_adapters(backbone, {name: path, ...})."
        )
    if isinstance(adapters, str):
        raise ValueError(
            f"adapters must be a list of adapter names, got the string {adapters!r}: write [{adapters!r}]."
        )
    adapters = list(adapters)
    if not adapters:
        raise ValueError("Give at least one adapter name to merge.")
    weights, resolved = check_merge_request(method, len(adapters), options, weights, scale, seed, LIBRARY)
    if MERGED_ADAPTER in model.peft_config:
        raise ValueError(
            f"This model already holds an adapter named {MERGED_ADAPTER!r}, the name merging gives its "
            f"result (PEFT would silently keep the old one): delete it first, "
            f"model.delete_adapter({MERGED_ADAPTER!r})."
        )
    if len(set(adapters)) != len(adapters):
        raise ValueError(f"Adapter names repeat in {adapters}; each adapter can be merged once.")
    unknown = [a for a in adapters if a not in model.peft_config]
    if unknown:
        loaded = [a for a in model.peft_config if a != MERGED_ADAPTER]
        raise ValueError(f"Adapter(s) {unknown} are not loaded in this model. Loaded adapters: {loaded}.")
    configs = [model.peft_config[a] for a in adapters]
    if method.needs_equal_rank and len({c.r for c in configs}) > 1:
        ranks = {a: c.r for a, c in zip(adapters, configs)}
        raise ValueError(
            f"Method {method.name!r} needs adapters of equal rank, got {ranks}. Use 'task_arithmetic', 'cat' or "
            "'svd', which accept different ranks."
        )
    layers = lora_layers(model)  # one walk of the model's modules for every adapter
    targets = {a: frozenset(name for name, layer in layers.items() if a in layer.lora_A) for a in adapters}
    if method.needs_equal_rank and len(set(targets.values())) > 1:
        raise ValueError(
            f"Method {method.name!r} needs adapters with the same target modules, but they differ: "
            + "; ".join(f"{a}: {len(t)} modules" for a, t in targets.items())
            + ". Use 'task_arithmetic' or 'cat', or retrain with the same target_modules."
        )
    most = sum(c.r for c in configs)
    if resolved.get("svd_rank") is not None and resolved["svd_rank"] > most:
        raise ValueError(
            f"svd_rank must be a whole number from 1 to {most} (the summed update of these adapters "
            f"has rank at most the sum of their ranks), got {resolved['svd_rank']!r}."
        )
    return weights, resolved


def merge_adapters(
    model: PeftModel,
    adapters: Sequence[str],
    weights: Sequence[float] | None = None,
    method: str = "task_arithmetic",
    *,
    density: float | None = None,
    svd_rank: int | None = None,
    majority_sign_method: str | None = None,
    seed: int = 0,
    scale: float | None = None,
    common_fraction: float | None = None,
    trim_density: float | None = None,
    unlabeled: dict[str, torch.Tensor] | None = None,
    heads: dict[str, nn.Module] | None = None,
    steps: int | None = None,
    lr: float | None = None,
    amp: bool = True,
) -> nn.Module:
    """Merge named adapters of ``model`` into a new plain backbone (no LoRA layers left).

    Each method declares the knobs it takes (:data:`~lora_merge_utils.methods.MERGE_METHODS`); a knob given to a
    method that does not take it, or out of its range, is refused before any work.

    Args:
        model: A ``PeftModel`` holding the adapters (see :func:`~lora_merge_utils.artifacts.load_adapters`);
            left unchanged.
        adapters: Names of the adapters to merge.
        weights: One weight per adapter; default equal weights ``1/K``.
        scale: Instead of ``weights``: the same weight ``scale`` for every adapter (task arithmetic's lambda:
            ``W + scale * sum_i dW_i``).
        method: One of :data:`~lora_merge_utils.methods.MERGE_METHODS` (``python -m lora_merge_utils list``).
        density: Fraction of entries kept, in (0, 1], for the TIES, DARE, magnitude-pruning and KnOTS methods.
        svd_rank: Rank of the ``svd`` result (default: the largest input rank).
        majority_sign_method: ``"total"`` (default) or ``"frequency"``, for the TIES sign election.
        seed: Seeds DARE's random drop and AdaMerging's batches, so a merge is reproducible.
        common_fraction: ``iso_cts``: the share of the spectrum given to the common subspace (default 0.8).
        trim_density: ``dare_ties``: the share of each task's entries TIES's trim keeps after DARE's drop (MergeLM's
            default, 0.2; 1.0 skips the trim).

        unlabeled, heads, steps, lr, amp: ``adamerging`` and ``adamerging_short``: unlabeled images
            ``[N, 3, H, W]`` and the head of every task, the number of Adam steps and their learning rate (default:
            the method's schedule), and mixed precision on a GPU (see :func:`lora_merge_utils.adamerging.adamerging`).

    Returns:
        A deep copy of the base backbone with the merged update folded into its weights, in eval mode.

    Example:
        >>> import copy, torch
        >>> from peft import get_peft_model
        >>> from lora_merge_utils import TINY, create_backbone
        >>> from lora_merge_utils.training import lora_config
        >>> backbone = create_backbone("tiny")
        >>> model = get_peft_model(copy.deepcopy(backbone), lora_config(TINY.lora), adapter_name="first")
        >>> model.add_adapter("second", lora_config(TINY.lora))
        >>> with torch.no_grad():  # stand-ins for trained adapters: LoRA's B starts at zero
        ...     for name, p in model.named_parameters():
        ...         if "lora_B" in name:
        ...             _ = p.normal_(std=0.01)
        >>> merged = merge_adapters(model, ["first", "second"], method="ties", density=0.5, scale=0.5)
        >>> type(merged).__name__, sorted(model.peft_config)  # a plain ViT; the adapters are left as they were
        ('VisionTransformer', ['first', 'second'])
        >>> merged(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 96])
    """
    spec = get_merge_method(method)
    weights_given = weights is not None or scale is not None
    options = {
        "density": density,
        "svd_rank": svd_rank,
        "majority_sign_method": majority_sign_method,
        "common_fraction": common_fraction,
        "trim_density": trim_density,
        "steps": steps,
        "lr": lr,
    }
    weights, resolved = _validate(model, adapters, spec, options, weights, scale, seed)
    adapters = list(adapters)
    count("merges")
    if spec.adapts is not None:
        from .adamerging import adamerging

        if unlabeled is None or heads is None or set(adapters) - set(unlabeled) - set(heads):
            raise ValueError(f"Method {spec.name!r} needs unlabeled= images and heads= for every adapter merged.")
        schedule = spec.adapts
        merged = adamerging(
            plain_copy(model),
            adapter_factors(model, adapters),
            {t: unlabeled[t] for t in adapters},
            heads,
            init=weights if schedule["init"] is None or weights_given else [schedule["init"]] * len(adapters),
            steps=schedule["steps"] if resolved["steps"] is None else resolved["steps"],
            lr=schedule["lr"] if resolved["lr"] is None else resolved["lr"],
            batch_size=schedule["batch_size"],
            seed=seed,
            amp=amp,
        )
    elif spec.combine is not None:
        options = dict(resolved, seed=seed) if spec.random else resolved
        deltas = getattr(combine, spec.combine)(adapter_factors(model, adapters), weights, **options)
        merged = _add_deltas(plain_copy(model), deltas)
    else:
        work = copy.deepcopy(model)
        kwargs = {key: value for key, value in resolved.items() if value is not None}
        with torch.random.fork_rng(devices=[]), combine.one_thread(), warnings.catch_warnings():
            torch.manual_seed(seed)  # PEFT's svd: same bytes at any thread count (one thread)
            # density 1 (keep every factor entry) is a value of the shared tuning grid, not a mistake to warn about
            warnings.filterwarnings("ignore", message=r"The density .* no pruning will be performed")
            work.add_weighted_adapter(
                adapters, weights, adapter_name=MERGED_ADAPTER, combination_type=spec.peft_combination, **kwargs
            )
        work.set_adapter(MERGED_ADAPTER)
        merged = work.merge_and_unload(adapter_names=[MERGED_ADAPTER])
    merged.eval()
    merged.requires_grad_(False)
    return merged


def _add_deltas(plain: nn.Module, deltas: dict[str, torch.Tensor]) -> nn.Module:
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


def update_error(
    model: PeftModel,
    adapters: Sequence[str],
    method: str = "task_arithmetic",
    weights: Sequence[float] | None = None,
    **kwargs,
) -> dict[str, float]:
    """How far a merge's update lands from the exact weighted sum of the adapters' updates, per layer:
    ``||dW_merged - sum_i w_i dW_i|| / ||sum_i w_i dW_i||``.

    Computed where the question is meaningful at any scale: on a float64 copy of the model on the CPU (``model``
    itself is neither changed nor moved). In float32, reading an update back as ``(W + dW) - W`` has a relative
    error of about ``1e-7 * ||W|| / ||dW||``, which for a ViT-B adapter (``||dW|| / ||W||`` near ``1e-4``) is far
    above any sensible tolerance; in float64 it is about ``1e-16 * ||W|| / ||dW||``.
    """
    model64 = copy.deepcopy(model).to("cpu", torch.float64)
    knobs = {key: value for key, value in kwargs.items() if key not in ("scale", "seed")}
    weights, _ = _validate(model64, adapters, get_merge_method(method), knobs, weights, kwargs.get("scale"))
    expected: dict[str, torch.Tensor] = {}
    for adapter, weight in zip(adapters, weights):
        for name, delta in delta_weights(model64, adapter).items():
            expected[name] = expected.get(name, 0) + weight * delta
    base = {name: layer.get_base_layer().weight.detach() for name, layer in lora_layers(model64).items()}
    options = {key: value for key, value in kwargs.items() if key != "scale"}  # already folded into weights
    merged = dict(merge_adapters(model64, adapters, weights, method, **options).named_modules())
    return {
        name: float((merged[name].weight - base[name] - exact).norm() / exact.norm())
        for name, exact in expected.items()
    }
