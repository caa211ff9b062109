"""Conflicting relabellings (``data/attributes.py``): labels read back from the generator's own draws."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from lora_merge_utils import FULL, TINY
from lora_merge_utils.data import attributes, synthetic
from lora_merge_utils.data.attributes import CONFLICTING_RELABELLINGS, RecordingGenerator, attribute_labels
from lora_merge_utils.data.generated import _built_splits
from lora_merge_utils.data.tasks import RELABELLINGS
from lora_merge_utils.profiles import GeneratedData


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path))
    return TINY.replace(data=GeneratedData(train_per_class=40, val_per_class=4, test_per_class=3))


def test_the_recording_generator_draws_what_the_generator_alone_draws():
    plain = np.random.default_rng(7)
    recording = RecordingGenerator(np.random.default_rng(7), "uniform", (0.12, 0.45))
    first = [plain.uniform(0.12, 0.45), plain.uniform(0, 1, size=3), plain.integers(8), plain.uniform(0.12, 0.45)]
    second = [
        recording.uniform(0.12, 0.45),
        recording.uniform(0, 1, size=3),
        recording.integers(8),
        recording.uniform(0.12, 0.45),
    ]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert recording.draws == [first[0], first[3]]


@pytest.mark.parametrize("name", CONFLICTING_RELABELLINGS)
def test_each_image_gets_a_label_that_cuts_across_its_base_class(small, name):
    spec = CONFLICTING_RELABELLINGS[name]
    assert spec.base in TINY.tasks and name not in RELABELLINGS and name not in TINY.tasks
    labels = attribute_labels(small, name)
    splits, _, _ = _built_splits(small, spec.base)
    assert set(labels) == set(splits) == {"train", "val", "test"}
    for split, (images, _) in splits.items():
        assert labels[split].shape == (len(images),)
        assert set(np.unique(labels[split])) <= set(range(len(spec.class_names)))
    base_labels = splits["train"][1]
    table = np.zeros((base_labels.max() + 1, len(spec.class_names)), dtype=int)
    np.add.at(table, (base_labels, labels["train"]), 1)
    # Every base class holds every new class, in proportions that do not depend on the base class: the new task is
    # not a coarsening of the old one (a coarsening puts each base class in one new class, p ~ 0).
    assert (table > 0).all(), table
    assert chi2_contingency(table).pvalue > 0.001, table


def test_a_grating_labelled_fine_has_finer_stripes_in_its_pixels():
    """The recorded draw is the grating's frequency, not another ``uniform`` of the generator: the stripes' frequency
    measured in each image's spectrum follows it."""
    rng = RecordingGenerator(np.random.default_rng([0, 1]), "uniform", (0.12, 0.45))
    images, _, _ = synthetic.make_gratings(20, rng, split="test")
    drawn = np.asarray(rng.draws)
    gray = images.mean(axis=3)
    window = np.hanning(gray.shape[1])
    gray = (gray - gray.mean(axis=(1, 2), keepdims=True)) * window[:, None] * window[None, :]
    spectrum = np.abs(np.fft.fft2(gray, s=(256, 256)))
    axis = np.fft.fftfreq(256) * 2 * np.pi
    radius = np.hypot(axis[:, None], axis[None, :])
    spectrum[:, radius < 0.05] = 0  # the smooth background, not the stripes
    measured = radius.ravel()[spectrum.reshape(len(images), -1).argmax(axis=1)]
    assert np.corrcoef(measured, drawn)[0, 1] > 0.5


def test_images_the_generator_no_longer_draws_are_refused(small, monkeypatch):
    def shifted(per_class, rng, split="train"):
        rng.random()  # one extra draw: every image after it differs
        return synthetic.make_gratings(per_class, rng, split)

    spec = dataclasses.replace(CONFLICTING_RELABELLINGS["gratings_frequency"], make=shifted)
    monkeypatch.setitem(CONFLICTING_RELABELLINGS, "gratings_frequency", spec)
    with pytest.raises(RuntimeError, match="did not give its images"):
        attribute_labels(small, "gratings_frequency")


def test_a_factor_not_drawn_once_per_image_is_refused(small, monkeypatch):
    spec = dataclasses.replace(CONFLICTING_RELABELLINGS["gratings_frequency"], args=(0.1, 0.5))
    monkeypatch.setitem(CONFLICTING_RELABELLINGS, "gratings_frequency", spec)
    with pytest.raises(RuntimeError, match=r"0 draws of uniform\(0.1, 0.5\)"):
        attribute_labels(small, "gratings_frequency")


def test_unknown_names_and_hub_profiles_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="letters_font"):
        attribute_labels(TINY, "letters_italic")
    with pytest.raises(ValueError, match="'tiny'"):
        attribute_labels(FULL, "letters_font")


def test_the_module_is_outside_the_code_saved_work_is_hashed_on():
    """Defining these tasks must not refuse every saved head and adapter: the module is not hashed."""
    import inspect

    from lora_merge_utils import study

    hashed = inspect.getsource(study.trainer_code_version)
    assert attributes.__name__.rsplit(".", 2)[-2:] == ["data", "attributes"]
    assert '"data.attributes"' not in hashed and '"data.generated"' in hashed


def test_a_conflicting_task_loads_its_base_task_s_images_under_the_drawn_labels(small):
    from lora_merge_utils.data.tasks import check_profile_tasks, load_task, relabelling_of, shares_images

    profile = small.replace(related_tasks=("gratings_frequency",))
    check_profile_tasks(profile)
    task, base = load_task(profile, "gratings_frequency"), load_task(profile, "gratings")
    labels = attribute_labels(profile, "gratings_frequency")
    assert task.class_names == ["coarse stripes", "fine stripes"] and relabelling_of(task.name).base == "gratings"
    for split in ("train", "val", "test"):
        mine, theirs = task.split(split), base.split(split)
        assert mine.tensors[0] is theirs.tensors[0], "the images are shared, not copied"
        np.testing.assert_array_equal(mine.tensors[1].numpy(), labels[split])
    assert shares_images(["gratings", "gratings_frequency"]) and not shares_images(["digits", "gratings_frequency"])
