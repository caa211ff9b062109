import numpy as np

from lora_merge_utils.data.fractals import make_fractal_dataset, render, sample_ifs


def test_fractal_dataset_is_deterministic_and_balanced():
    x1, y1 = make_fractal_dataset(3, 4, seed=1)
    x2, y2 = make_fractal_dataset(3, 4, seed=1)
    assert x1.shape == (12, 32, 32, 3) and x1.dtype == np.uint8
    np.testing.assert_array_equal(x1, x2)
    assert np.bincount(y1).tolist() == [4, 4, 4]
    assert not np.array_equal(x1, make_fractal_dataset(3, 4, seed=2)[0])


def test_sampled_ifs_draws_a_visible_fractal():
    rng = np.random.default_rng(0)
    image = render(sample_ifs(rng), rng)
    assert image.std() > 10  # not a blank canvas
