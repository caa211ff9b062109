"""tqdm that picks notebook widgets when they are available, without warning when they are not."""

import warnings

from tqdm import TqdmExperimentalWarning, TqdmWarning

with warnings.catch_warnings():
    # Without ipywidgets, tqdm.auto falls back to text bars and warns on import; the fallback is fine for us.
    warnings.simplefilter("ignore", TqdmWarning)
    warnings.simplefilter("ignore", TqdmExperimentalWarning)
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
