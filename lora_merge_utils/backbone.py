"""Build the frozen ViT backbone of a profile, with its pretrained weights, as a timm model with ``num_classes=0``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

from .profiles import BackboneSpec, Profile, get_profile

ASSET_PREFIX = "asset:"


def asset_path(filename: str) -> Path:
    """Path of a file shipped in ``lora_merge_utils/assets``."""
    return Path(str(resources.files("lora_merge_utils") / "assets" / filename))


def state_dict_fingerprint(model: torch.nn.Module) -> str:
    """A short sha256 of every parameter and buffer: two backbones with the same fingerprint compute the same thing."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_asset_weights(model: torch.nn.Module, filename: str) -> None:
    path = asset_path(filename)
    if not path.is_file():
        raise FileNotFoundError(
            f"The shipped backbone weights {path} are missing. Reinstall the package, or regenerate them with "
            "`python scripts/pretrain_tiny_backbone.py`."
        )
    manifest_file = path.with_suffix(".json")
    if manifest_file.is_file():
        expected = json.loads(manifest_file.read_text())["sha256"]
        actual = file_sha256(path)
        if actual != expected:
            raise ValueError(
                f"The shipped backbone weights {path} do not match their manifest (sha256 {actual[:12]}... instead of "
                f"{expected[:12]}...). The file is corrupt: reinstall the package or rerun "
                "`python scripts/pretrain_tiny_backbone.py`."
            )
    model.load_state_dict(load_file(str(path)), strict=True)


def _local_weights_file(spec: BackboneSpec) -> Path | None:
    candidate = os.environ.get(spec.local_weights_env) or (
        spec.weights if spec.weights not in ("hub",) and not spec.weights.startswith(ASSET_PREFIX) else None
    )
    if not candidate:
        return None
    path = Path(candidate).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Backbone weights file {path} does not exist. Point ${spec.local_weights_env} (or the profile's "
            "backbone.weights) at a timm checkpoint (.safetensors, .bin or .pth), or unset it to download from the hub."
        )
    return path


def _architecture(spec: BackboneSpec) -> torch.nn.Module:
    """The profile's ViT with random weights; a model name timm lacks, or ``backbone.overrides`` it cannot build
    (an unknown keyword, a width that the number of heads does not divide), as one ``ValueError`` naming them."""
    try:
        return timm.create_model(spec.model_name, pretrained=False, num_classes=0, **spec.overrides)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise ValueError(f"timm does not know the model {spec.model_name!r}: {error}") from None
        raise
    except (TypeError, AssertionError, ValueError) as error:
        raise ValueError(
            f"timm cannot build {spec.model_name!r} with backbone.overrides {dict(spec.overrides)}: "
            f"{type(error).__name__}: {error}. Remove or correct those overrides."
        ) from None


def _create_from_timm(spec: BackboneSpec, pretrained: bool) -> torch.nn.Module:
    local = _local_weights_file(spec) if pretrained else None
    if local is not None:
        # custom_load=False: some in21k tags default to timm's .npz loader, but a local file is a plain state dict.
        overlay = dict(file=str(local), custom_load=local.suffix == ".npz")
        _architecture_on_meta(spec)  # a name or overrides timm cannot build: told as such, not as a bad file
        try:
            with _missing_keys() as missing:
                model = timm.create_model(
                    spec.model_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **spec.overrides
                )
        except (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"Backbone weights file {local} is not a checkpoint of {spec.model_name!r} that can be loaded safely "
                f"({type(error).__name__}: {first[:300]}). Give its .safetensors file, or a plain state dict "
                "(torch.save(model.state_dict(), ...)); pickled objects are never run."
            ) from None
        if missing:
            # timm loads without strictness when it drops the classifier (num_classes=0), so a file of another model
            # would leave these layers at their random initialisation and every number after would be wrong
            raise ValueError(
                f"Backbone weights file {local} lacks weights of {spec.model_name!r} ({missing[0]}): it is a "
                "checkpoint of another model. Give the checkpoint of this model."
            )
        return model
    if not pretrained:
        return _architecture(spec)
    _architecture_on_meta(spec)  # a name or overrides timm cannot build: told as such, not as missing weights
    try:
        return timm.create_model(spec.model_name, pretrained=pretrained, num_classes=0, **spec.overrides)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise ValueError(f"timm does not know the model {spec.model_name!r}: {error}") from None
        raise _no_weights_error(spec, error) from error
    except (OSError, ValueError) as error:
        raise _no_weights_error(spec, error) from error


@contextmanager
def _missing_keys() -> Iterator[list[str]]:
    """Collect the layers timm reports it found no pretrained weights for while loading a checkpoint (it says so only
    in its log, at level INFO)."""
    found: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("Missing keys ("):
                found.append(message[len("Missing keys (") :].split(")")[0][:300])

    logger = logging.getLogger("timm.models._builder")
    handler, level = _Catch(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _architecture_on_meta(spec: BackboneSpec) -> None:
    """:func:`_architecture` on the meta device: the same checks, no memory and no time."""
    with torch.device("meta"):
        _architecture(spec)


def _no_weights_error(spec: BackboneSpec, error: Exception) -> FileNotFoundError:
    return FileNotFoundError(
        f"Could not get pretrained weights for {spec.model_name!r} ({type(error).__name__}: {error}). "
        "This needs the Hugging Face Hub. Without network, download them once elsewhere, e.g. "
        f"`hf download timm/{spec.model_name} model.safetensors --local-dir vit_weights`, copy the file "
        f"here and set ${spec.local_weights_env}=vit_weights/model.safetensors; or use the offline profile "
        "(`--profile tiny`, or LORA_BOOK_PROFILE=tiny)."
    )


def create_backbone(profile: Profile | str | None = None, pretrained: bool = True) -> torch.nn.Module:
    """Create the profile's ViT with ``num_classes=0`` (it returns pooled features) and its pretrained weights.

    Args:
        profile: A :class:`~lora_merge_utils.profiles.Profile` or its name (default: the environment's profile).
        pretrained: ``False`` gives the same architecture randomly initialised (the control of chapter 1).

    The returned model is in eval mode with every parameter frozen; a random one is drawn from the profile's seed, the
    same on every run. Its attribute ``lora_book_identity`` is a
    fingerprint of its weights: adapters remember it, and merging refuses adapters of different backbones.

    Example:
        >>> import torch
        >>> backbone = create_backbone("tiny")
        >>> backbone(torch.zeros(2, 3, 32, 32)).shape  # pooled features, no classifier
        torch.Size([2, 96])
        >>> any(p.requires_grad for p in backbone.parameters())
        False
    """
    profile = get_profile(profile)
    spec = profile.backbone
    # A random initialisation (the control of chapter 1) is drawn from the profile's seed, not from whatever the
    # caller's random state happens to be: the same weights on every run.
    with torch.random.fork_rng(devices=[], enabled=not pretrained):
        if not pretrained:
            torch.manual_seed(profile.train.seed)
        if spec.weights.startswith(ASSET_PREFIX):
            model = _architecture(spec)
            if pretrained:
                try:
                    _load_asset_weights(model, spec.weights[len(ASSET_PREFIX) :])
                except RuntimeError as error:  # strict loading: another depth, width or patch size
                    raise ValueError(
                        f"The shipped weights of {spec.model_name!r} do not fit the backbone these overrides build "
                        f"({', '.join(f'{k}={v!r}' for k, v in spec.overrides.items())}): "
                        f"{' '.join(str(error).split())[:200]}. Leave the architecture as it is (no "
                        "backbone.overrides that change its shape), or pass pretrained=False."
                    ) from None
        else:
            model = _create_from_timm(spec, pretrained)
    model.eval()
    model.requires_grad_(False)
    model.lora_book_identity = f"{spec.model_name}@{state_dict_fingerprint(model)}"
    return model


def backbone_identity(model: torch.nn.Module) -> str:
    """The fingerprint set by :func:`create_backbone` (computed if the model was built elsewhere)."""
    identity = getattr(model, "lora_book_identity", None)
    return identity if identity else f"{type(model).__name__}@{state_dict_fingerprint(model)}"
