"""A practitioner's base model and PEFT adapters, read offline and checked against each other before any work.

Two families of base model:

* **timm**: a model name with a local weights file (``load_base("vit_small_patch16_224", weights="vit.safetensors")``,
  with ``base_args`` for a non-default architecture), or a folder timm wrote with ``save_for_hf`` (``config.json``
  naming an ``architecture``);
* **transformers**: a local folder of a ``ViTForImageClassification`` (or any ``AutoModelForImageClassification`` whose
  backbone returns a ``last_hidden_state``), as ``save_pretrained`` writes it (``config.json`` naming a
  ``model_type``).

Either way the base becomes a frozen feature extractor (images in, the features its classifier reads out), and each
adapter folder (``adapter_config.json`` and ``adapter_model.safetensors``, as PEFT's ``save_pretrained`` writes them)
brings its LoRA weights and its task's head: the module PEFT kept in ``modules_to_save`` (timm's ``head``,
transformers' ``classifier``), or a head file beside it, or one given by the caller. The heads stay outside PEFT, so
that every adapter's head survives a merge.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from torch import nn

PREFIX = "base_model.model."
"""How PEFT's ``save_pretrained`` starts every key of an adapter's weights."""
HEAD_FILES = ("head.safetensors", "head.pt", "head.pth", "head.bin")
"""A head file beside an adapter, when its head is not in the adapter's ``modules_to_save``."""


@dataclass
class OwnBase:
    """A frozen base model as a feature extractor, and how its images are prepared."""

    backbone: nn.Module
    """Normalised images ``[N, 3, S, S]`` in, features ``[N, D]`` out (what the classifier head reads)."""
    family: str
    """``"timm"`` or ``"transformers"``."""
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)


class _TransformersFeatures(nn.Module):
    """A transformers image classifier with its ``classifier`` replaced by the identity, returning what the
    classifier read: the model's own pooling (the first token for ViT and DeiT, the mean for BEiT and Swin). Its
    modules are this module's children under their own names, so the layer names an adapter was trained under
    still match."""

    def __init__(self, model: nn.Module):
        super().__init__()
        classifier = getattr(model, "classifier", None)
        if not isinstance(classifier, nn.Linear):
            raise ValueError(
                f"{type(model).__name__} has no linear `classifier` to read features before: the report reads "
                "image classifiers whose head is one linear layer (ViT, DeiT, BEiT, Swin, ...)."
            )
        self.num_features = int(classifier.in_features)
        model.classifier = nn.Identity()
        for name, child in model.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_model", model)  # not a child: its modules are already this module's

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._model(pixel_values=pixel_values).logits


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a PyTorch file read with ``weights_only`` (no code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle with code in it, or not a torch file at all
        raise ValueError(f"Could not read the weights file {path}: {error}. Save it with safetensors.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"The weights file {path} does not hold a state dict (names to tensors).")
    return state


def _config(directory: Path) -> dict:
    path = directory / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Could not read {path}: {error}.") from None


def load_base(base: str | Path, weights: str | Path | None = None, base_args: dict | None = None) -> OwnBase:
    """The base model ``base`` as a frozen feature extractor, in eval mode, on the CPU.

    Args:
        base: A timm model name (with ``weights``), or a local folder: timm's (``config.json`` with an
            ``architecture``) or transformers' (``config.json`` with a ``model_type``).
        weights: For a timm model name: its weights file (``.safetensors``, or a PyTorch state dict).
        base_args: For a timm model name: the keyword arguments it was created with (``img_size``, ...).
    """
    folder = Path(base)
    if folder.is_dir():
        if weights is not None or base_args:
            raise ValueError(f"{folder} is a model folder: it carries its own weights and settings; drop --weights.")
        config = _config(folder)
        if "architecture" in config:
            return _timm_folder(folder)
        if "model_type" in config:
            return _transformers_folder(folder)
        raise ValueError(
            f"{folder / 'config.json'} names neither a timm 'architecture' nor a transformers 'model_type': give a "
            "folder timm's save_for_hf or transformers' save_pretrained wrote, or a timm model name with --weights."
        )
    if any(sep in str(base) for sep in ("/", "\\")) or str(base).startswith("."):
        raise FileNotFoundError(
            f"No model folder {base}: give an existing folder, or a timm model name with --weights."
        )
    return _timm_named(str(base), weights, base_args or {})


def _timm_ready(model: nn.Module, description: str) -> OwnBase:
    import timm.data

    data = timm.data.resolve_data_config({}, model=model)
    _, height, width = data["input_size"]
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if built is not None:  # a ViT made for other images than its pretrained config's (img_size=...)
        height, width = built
    if height != width:
        raise ValueError(f"{description} takes {height}x{width} images; the report handles square inputs only.")
    model.eval().requires_grad_(False)
    return OwnBase(model, "timm", int(height), tuple(data["mean"]), tuple(data["std"]), description)


def _timm_named(name: str, weights: str | Path | None, base_args: dict) -> OwnBase:
    import timm

    if weights is None:
        raise ValueError(
            f"The timm model {name!r} needs its weights file (--weights FILE): the report runs offline and never "
            "downloads."
        )
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file {path}.")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, **base_args)
    except RuntimeError as error:  # timm: "Unknown model (...)"
        raise ValueError(f"timm has no model {name!r} ({error}); `timm.list_models()` lists them.") from None
    except TypeError as error:
        raise ValueError(f"timm's {name!r} does not take these arguments {base_args}: {error}.") from None
    state = _read_state(path)
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "head"
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    # the file's classifier belongs to its pretraining task, not to any of the adapters' tasks: left out
    state = {k: v for k, v in state.items() if not any(k == h or k.startswith(f"{h}.") for h in heads)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        said = []
        if missing:
            said.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            said.append(f"unknown {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        if wrong:
            said.append(
                "other shapes: "
                + ", ".join(f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})" for k in wrong[:3])
            )
        raise ValueError(
            f"{path} is not the weights of timm's {name!r} with {base_args or 'its default arguments'}: "
            + "; ".join(said)
            + ". Give the model name and --base-args it was created with."
        )
    model.load_state_dict(state)
    return _timm_ready(model, f"timm {name} ({path.name})")


def _timm_folder(folder: Path) -> OwnBase:
    import timm

    try:
        model = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True, num_classes=0)
    except Exception as error:
        raise ValueError(f"timm could not load the model folder {folder}: {error}") from None
    return _timm_ready(
        model, f"timm folder {folder.name} ({model.default_cfg.get('architecture', type(model).__name__)})"
    )


def _transformers_folder(folder: Path) -> OwnBase:
    from transformers import AutoModelForImageClassification

    try:
        model = AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:
        raise ValueError(f"transformers could not load the model folder {folder}: {error}") from None
    model = model.float()  # a folder saved in half precision loads as such; the heads and the report work in float32
    size = model.config.image_size
    if not isinstance(size, int):
        if len(set(size)) != 1:
            raise ValueError(f"{folder} takes {size} images; the report handles square inputs only.")
        size = int(size[0])
    mean, std, said = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), ""
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        settings = json.loads(processor.read_text(encoding="utf-8"))
        if settings.get("do_normalize", True):
            mean = tuple(settings.get("image_mean", mean))
            std = tuple(settings.get("image_std", std))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:  # said in the report: a wrong guess here moves every number
        said = "; no preprocessor_config.json, so images are normalised with mean = std = 0.5"
    backbone = _TransformersFeatures(model).eval().requires_grad_(False)
    name = f"transformers {type(model).__name__} ({folder.name}{said})"
    return OwnBase(backbone, "transformers", size, mean, std, name)


@dataclass
class OwnAdapter:
    """One PEFT LoRA adapter as saved, split into its LoRA weights and its task's head."""

    name: str
    directory: Path
    config: LoraConfig
    """Its configuration with ``modules_to_save`` taken out (the head is kept apart)."""
    lora: dict[str, torch.Tensor]
    """Its LoRA weights, keyed as PEFT saves them (``base_model.model.<layer>.lora_A.weight``)."""
    head: nn.Linear
    layers: frozenset[str] = field(default_factory=frozenset)
    """The layers it adapts."""


def _linear(state: dict[str, torch.Tensor], where: str) -> nn.Linear:
    weight, bias = state.get("weight"), state.get("bias")
    if weight is None or weight.ndim != 2:
        raise ValueError(f"{where} holds no linear head (a 2-D 'weight' and a 'bias').")
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    return head.eval().requires_grad_(False)


def read_adapter(name: str, directory: str | Path, head_file: str | Path | None = None) -> OwnAdapter:
    """The adapter saved in ``directory`` and its head: ``head_file`` if given, else the head in its
    ``modules_to_save``, else a head file beside it (:data:`HEAD_FILES`)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"Adapter {name!r}: no folder {folder}.")
    if not (folder / "adapter_config.json").is_file():
        raise ValueError(
            f"Adapter {name!r}: {folder} has no adapter_config.json; give the folder PEFT's save_pretrained wrote."
        )
    try:
        config = LoraConfig.from_pretrained(str(folder))
    except Exception as error:
        raise ValueError(
            f"Adapter {name!r}: {folder / 'adapter_config.json'} is not a LoRA configuration ({error})."
        ) from None
    unsupported = [
        what
        for what, used in (
            ("DoRA (use_dora)", getattr(config, "use_dora", False)),
            ("LoRA biases (lora_bias)", getattr(config, "lora_bias", False)),
            ("biases trained with it (bias != 'none')", getattr(config, "bias", "none") != "none"),
        )
        if used
    ]
    if unsupported:
        raise ValueError(
            f"Adapter {name!r} uses {', '.join(unsupported)}: the merge methods add plain LoRA updates B A and would "
            "drop those parts silently. Train it as plain LoRA to merge it."
        )
    weights = [folder / f for f in ("adapter_model.safetensors", "adapter_model.bin") if (folder / f).is_file()]
    if not weights:
        raise ValueError(f"Adapter {name!r}: {folder} has no adapter_model.safetensors.")
    state = _read_state(weights[0])
    saved = set(config.modules_to_save or [])
    lora, kept = {}, {}
    for key, value in state.items():
        inner = key.removeprefix(PREFIX)
        module = next((m for m in saved if inner.startswith(f"{m}.")), None)
        if module is not None:
            kept.setdefault(module, {})[inner.rsplit(".", 1)[-1]] = value
        elif "lora_" in key:
            lora[key] = value
        else:
            raise ValueError(
                f"Adapter {name!r}: {weights[0].name} holds {key!r}, which is neither LoRA nor a saved module."
            )
    if not lora:
        raise ValueError(f"Adapter {name!r}: {weights[0].name} holds no LoRA weights.")
    if len(kept) > 1:
        raise ValueError(
            f"Adapter {name!r} trained modules besides LoRA ({', '.join(sorted(kept))}), not only its head: a merge "
            "adds LoRA updates only, so a trained module other than the head would be silently dropped. Give "
            "adapters whose only saved module is their head (or none, with the head beside it or in --head)."
        )
    if head_file is not None:
        path = Path(head_file)
        if not path.is_file():
            raise FileNotFoundError(f"Adapter {name!r}: no head file {path}.")
        head = _linear(_read_state(path), f"Adapter {name!r}'s head file {path}")
    elif kept:
        ((module, tensors),) = kept.items()
        head = _linear(tensors, f"Adapter {name!r}'s saved module {module!r}")
    else:
        beside = [folder / f for f in HEAD_FILES if (folder / f).is_file()]
        if not beside:
            raise ValueError(
                f"Adapter {name!r} has no head: none in its modules_to_save, no {' or '.join(HEAD_FILES[:2])} beside "
                f"it. Give one with --head {name}=FILE."
            )
        head = _linear(_read_state(beside[0]), f"Adapter {name!r}'s head file {beside[0]}")
    layers = frozenset(k.removeprefix(PREFIX).split(".lora_")[0] for k in lora)
    config = copy.deepcopy(config)
    config.modules_to_save = None
    config.inference_mode = True
    config.base_model_name_or_path = None  # the base is the one the report loads, whatever path trained it
    # the layers it adapts, named in full: a regex in one adapter and a list in another cannot be combined by PEFT
    config.target_modules = set(layers)
    return OwnAdapter(name, folder, config, lora, head, layers)


def load_onto(base: OwnBase, adapters: list[OwnAdapter]) -> PeftModel:
    """One ``PeftModel`` over a copy of ``base``'s backbone holding every adapter under its name; an adapter that
    does not fit the base (layers it does not have, tensors of other shapes) is refused with the cause."""
    if not adapters:
        raise ValueError("load_onto needs at least one adapter.")
    model = None
    for adapter in adapters:
        try:
            with warnings.catch_warnings():  # the libraries' own deprecations between each other: not the user's
                warnings.simplefilter("ignore", FutureWarning)
                if model is None:
                    model = get_peft_model(copy.deepcopy(base.backbone), adapter.config, adapter_name=adapter.name)
                else:
                    model.add_adapter(adapter.name, adapter.config)
        except ValueError as error:
            raise ValueError(
                f"Adapter {adapter.name!r} adapts layers {base.description} does not have ({error}): it was trained "
                "on another base model."
            ) from None
        wanted = {k: v.shape for k, v in _adapter_state(model, adapter.name).items()}
        missing = sorted(set(wanted) - set(adapter.lora))
        unknown = sorted(set(adapter.lora) - set(wanted))
        wrong = sorted(k for k in set(wanted) & set(adapter.lora) if wanted[k] != adapter.lora[k].shape)
        if missing or unknown or wrong:
            if wrong:
                shapes = [f"{k} {tuple(adapter.lora[k].shape)}, base wants {tuple(wanted[k])}" for k in wrong[:3]]
                what = f"{len(wrong)} tensors of other shapes ({'; '.join(shapes)})"
            else:
                named = ", ".join((missing or unknown)[:3])
                what = f"{len(missing)} LoRA tensors missing, {len(unknown)} unknown ({named})"
            raise ValueError(
                f"Adapter {adapter.name!r} does not fit {base.description}: {what}. It was trained on another base "
                "model (or with another rank than its adapter_config.json says)."
            )
        set_peft_model_state_dict(model, adapter.lora, adapter_name=adapter.name)
    from ..merging import lora_layers

    other = sorted(name for name, layer in lora_layers(model).items() if not isinstance(layer.base_layer, nn.Linear))
    if other:
        raise ValueError(
            f"The adapters adapt layers that are not linear ({', '.join(other[:3])}): the merge methods handle LoRA "
            "on linear layers only. Fix: train them with target_modules that name linear layers only. A bare name "
            "matches every layer whose name ends with it: 'proj' matches a timm ViT's patch_embed.proj (a "
            "convolution) as well as attn.proj; write 'attn.proj', or a regular expression."
        )
    model.eval()
    model.requires_grad_(False)
    return model


def _adapter_state(model: PeftModel, adapter: str) -> dict[str, torch.Tensor]:
    """The LoRA tensors ``adapter`` has in ``model``, keyed as ``save_pretrained`` saves them (the adapter's name
    taken out: ``base_model.model.<layer>.lora_A.weight``)."""
    pattern = re.compile(rf"\.(lora_[A-Za-z_]+)\.{re.escape(adapter)}(?=\.|$)")
    return {pattern.sub(r".\1", key): value for key, value in model.state_dict().items() if pattern.search(key)}
