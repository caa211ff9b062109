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
    assert default_profile_name() == "tiny"  # no Colab, no GPU here


def test_similar_pairs_are_tasks_of_the_profile():
    for profile in (TINY, FULL):
        for a, b in profile.similar_pairs:
            assert a in profile.tasks and b in profile.tasks


def test_profile_is_frozen():
    with pytest.raises(AttributeError):
        TINY.name = "other"
    assert TINY.replace(image_size=16).image_size == 16 and TINY.image_size == 32
