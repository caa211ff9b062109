import json
import re

import pytest

from lora_merge_utils import FULL, TINY, get_profile
from lora_merge_utils.profiles import default_profile_name


def test_profiles_by_name():
    assert get_profile("tiny") is TINY
    assert get_profile("full") is FULL
    assert get_profile(TINY) is TINY
    assert len(TINY.tasks) == len(FULL.tasks) == 6


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid profiles: full, tiny"):
        get_profile("huge")


def test_default_profile_follows_environment(monkeypatch):
    monkeypatch.setenv("LORA_BOOK_PROFILE", "full")
    assert get_profile(None) is FULL
    monkeypatch.delenv("LORA_BOOK_PROFILE")
    # Whatever machine runs the tests (Colab included): the default follows the runtime.
    monkeypatch.setattr("lora_merge_utils.profiles._running_on_colab_gpu", lambda: False)
    assert default_profile_name() == "tiny"
    monkeypatch.setattr("lora_merge_utils.profiles._running_on_colab_gpu", lambda: True)
    assert default_profile_name() == "full"


def test_similar_pairs_are_tasks_of_the_profile():
    for profile in (TINY, FULL):
        for a, b in profile.similar_pairs:
            assert a in profile.tasks and b in profile.tasks


def test_profile_is_frozen():
    with pytest.raises(AttributeError):
        TINY.name = "other"
    assert TINY.replace(seeds=5).seeds == 5 and TINY.seeds != 5


def test_overrides_change_fields_by_dotted_name(monkeypatch, tmp_path):
    from lora_merge_utils.artifacts import default_root

    overrides = {
        "data.train_size": 500,
        "train.adapter_epochs": 1,
        "backbone.overrides.depth": 2,
        "smoke": True,
        "train.adapter_lr": 1,
    }
    monkeypatch.setenv("LORA_BOOK_OVERRIDES", json.dumps(overrides))
    profile = get_profile("full")
    assert profile.data.train_size == 500 and profile.data.val_size == FULL.data.val_size
    assert profile.train.adapter_epochs == 1 and profile.train.adapter_lr == 1.0
    assert profile.backbone.overrides == {"depth": 2} and profile.smoke
    assert dict(profile.overrides)["data.train_size"] == "500"
    assert profile.label.startswith("full-") and default_root(profile).name == profile.label, (
        "a changed profile never writes into the real profile's artifacts"
    )
    monkeypatch.setenv("LORA_BOOK_PROFILE", "full")
    assert get_profile(None) == profile, "applied to the profile picked by the environment too"
    monkeypatch.delenv("LORA_BOOK_PROFILE")
    file = tmp_path / "smoke.json"
    file.write_text(json.dumps(overrides))
    monkeypatch.setenv("LORA_BOOK_OVERRIDES", str(file))
    assert get_profile("full") == profile


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.trian_size": 5}, "HubData has no field 'trian_size'. Valid: train_size, val_size"),
        ({"train.adapter_epochs": "two"}, "expected int, got 'two'"),
        ({"smoke": 1}, "expected bool, got 1"),
        ({"image_size.x": 1}, "int has no fields"),
        ({"overrides": []}, "Profile has no field 'overrides'"),
    ],
)
def test_bad_overrides_are_refused_clearly(monkeypatch, overrides, message):
    monkeypatch.setenv("LORA_BOOK_OVERRIDES", json.dumps(overrides))
    with pytest.raises(ValueError, match=re.escape(message)):
        get_profile("full")


def test_overrides_that_are_not_json_are_refused(monkeypatch):
    monkeypatch.setenv("LORA_BOOK_OVERRIDES", "{data.train_size: 5}")
    with pytest.raises(ValueError, match="not valid JSON"):
        get_profile("full")
    monkeypatch.setenv("LORA_BOOK_OVERRIDES", "no-such-file.json")
    with pytest.raises(ValueError, match="neither a JSON object nor an existing file"):
        get_profile("full")


@pytest.mark.parametrize(
    ("profile", "overrides", "message"),
    [
        ("tiny", {"image_size": 16}, "image_size 16 does not apply to generated tasks: they are drawn at 32 px"),
        ("tiny", {"backbone.overrides.img_size": 64}, "backbone.overrides.img_size 64 is not image_size 32"),
    ],
)
def test_an_image_size_the_run_would_ignore_is_refused(monkeypatch, profile, overrides, message):
    """The tiny tasks are drawn at 32 px whatever image_size says: 16 used to be ignored while the artifacts folder
    was labelled with it."""
    monkeypatch.setenv("LORA_BOOK_OVERRIDES", json.dumps(overrides))
    with pytest.raises(ValueError, match=re.escape(message)):
        get_profile(profile)


def test_image_size_and_the_backbone_s_img_size_change_together_in_one_override(monkeypatch):
    """The overrides are applied one key at a time: the check that relates the two waits for the last key."""
    monkeypatch.setenv("LORA_BOOK_OVERRIDES", json.dumps({"image_size": 384, "backbone.overrides.img_size": 384}))
    profile = get_profile("full")
    assert profile.image_size == 384 and profile.backbone.overrides["img_size"] == 384
