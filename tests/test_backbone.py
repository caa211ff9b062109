import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from lora_merge_utils import FULL, TINY, create_backbone
from lora_merge_utils.backbone import asset_path, backbone_identity
from lora_merge_utils.profiles import BackboneSpec


def test_tiny_backbone_loads_shipped_weights(backbone):
    manifest = json.loads(asset_path("tiny_vit_formula.json").read_text())
    assert asset_path("tiny_vit_formula.safetensors").stat().st_size < 10 * 2**20
    assert manifest["parameters"] == sum(p.numel() for p in backbone.state_dict().values())
    assert backbone.num_classes == 0
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 96)
    assert not any(p.requires_grad for p in backbone.parameters())


def test_random_backbone_differs_and_has_another_identity(backbone):
    random = create_backbone(TINY, pretrained=False)
    assert backbone_identity(random) != backbone_identity(backbone)
    assert backbone_identity(create_backbone(TINY)) == backbone_identity(backbone)


def test_corrupt_shipped_weights_are_refused(tmp_path, monkeypatch):
    weights = tmp_path / "tiny_vit_formula.safetensors"
    weights.write_bytes(asset_path("tiny_vit_formula.safetensors").read_bytes()[:-10] + b"0" * 10)
    (tmp_path / "tiny_vit_formula.json").write_text(asset_path("tiny_vit_formula.json").read_text())
    monkeypatch.setattr("lora_merge_utils.backbone.asset_path", lambda name: tmp_path / name)
    with pytest.raises(ValueError, match="corrupt"):
        create_backbone(TINY)


SMALL = dict(img_size=32, depth=1, embed_dim=64, num_heads=2)


def _hub_like_checkpoint(path):
    """A stand-in for the Hub checkpoint: same timm architecture family and keys, including the 21k head."""
    reference = timm.create_model(FULL.backbone.model_name, pretrained=False, num_classes=21843, **SMALL)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    return reference


def test_full_backbone_loads_a_local_weights_file(tmp_path):
    reference = _hub_like_checkpoint(tmp_path / "model.safetensors")
    profile = FULL.replace(
        image_size=32, backbone=BackboneSpec(FULL.backbone.model_name, str(tmp_path / "model.safetensors"), SMALL)
    )
    model = create_backbone(profile)
    assert model.num_classes == 0
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, reference.state_dict()[name])


def test_full_backbone_reads_weights_file_from_environment(tmp_path, monkeypatch):
    reference = _hub_like_checkpoint(tmp_path / "model.safetensors")
    monkeypatch.setenv("LORA_BOOK_BACKBONE_FILE", str(tmp_path / "model.safetensors"))
    model = create_backbone(FULL.replace(image_size=32, backbone=BackboneSpec(FULL.backbone.model_name, "hub", SMALL)))
    torch.testing.assert_close(model.state_dict()["pos_embed"], reference.state_dict()["pos_embed"])


def test_full_backbone_offline_without_local_copy_says_how_to_get_one():
    profile = FULL.replace(image_size=32, backbone=BackboneSpec(FULL.backbone.model_name, "hub", SMALL))
    with pytest.raises(FileNotFoundError, match="LORA_BOOK_BACKBONE_FILE"):
        create_backbone(profile)


def test_missing_local_weights_file(tmp_path):
    profile = FULL.replace(
        image_size=32, backbone=BackboneSpec(FULL.backbone.model_name, str(tmp_path / "nope.safetensors"), SMALL)
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_backbone(profile)


def test_a_randomly_initialised_backbone_is_the_same_on_every_run():
    """Chapter 1's control: drawn from the profile's seed, whatever random numbers were drawn before."""
    import torch

    from lora_merge_utils import TINY, create_backbone

    first = create_backbone(TINY, pretrained=False)
    torch.rand(1000)  # the caller's random state moves on
    again = create_backbone(TINY, pretrained=False)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first.state_dict()["cls_token"], create_backbone(TINY).state_dict()["cls_token"])


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("pickled object", "cannot be loaded safely|is not a checkpoint .* that can be loaded safely"),
        ("another model's weights", "lacks weights of .*pos_embed.*a checkpoint of another model"),
        ("not a checkpoint", "is not a checkpoint of"),
    ],
)
def test_a_backbone_file_that_is_not_this_models_checkpoint_is_one_line(tmp_path, capsys, content, message):
    """A pickled object is refused without running it, and a file of another model is refused rather than loaded
    half (timm drops strictness with the classifier, so its missing layers stayed random and the run exited 0)."""
    path = tmp_path / "weights.pth"
    if content == "pickled object":
        torch.save({"pos_embed": _RunsCode()}, path)
    elif content == "another model's weights":
        torch.save({"weight": torch.zeros(3)}, path)
    else:
        path.write_bytes(b"not a checkpoint")
    profile = FULL.replace(image_size=32, backbone=BackboneSpec(FULL.backbone.model_name, str(path), SMALL))
    with pytest.raises(ValueError, match=message) as error:
        create_backbone(profile)
    assert "\n" not in str(error.value) and "this must never run" not in capsys.readouterr().out


def test_a_plain_state_dict_saved_with_torch_save_loads(tmp_path):
    reference = timm.create_model(FULL.backbone.model_name, pretrained=False, num_classes=0, **SMALL)
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    profile = FULL.replace(
        image_size=32, backbone=BackboneSpec(FULL.backbone.model_name, str(tmp_path / "weights.pth"), SMALL)
    )
    torch.testing.assert_close(create_backbone(profile).state_dict()["pos_embed"], reference.state_dict()["pos_embed"])
