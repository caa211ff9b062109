"""The method registry: every method declares its implementation and knobs, the declarations match the code behind
them, and one check serves the library and the command line (they accept and refuse the same requests)."""

from __future__ import annotations

import inspect

import pytest

from lora_merge_utils import combine
from lora_merge_utils.cli import build_parser
from lora_merge_utils.methods import (
    COMMAND_LINE,
    DEFAULT_METHODS,
    KNOBS,
    LIBRARY,
    MERGE_METHODS,
    SEED,
    check_merge_request,
    takers,
)


@pytest.mark.parametrize("name", [m.name for m in MERGE_METHODS.values() if m.combine is not None])
def test_every_combine_function_takes_exactly_the_knobs_its_method_declares(name):
    method = MERGE_METHODS[name]
    parameters = set(inspect.signature(getattr(combine, method.combine)).parameters) - {"factors", "weights"}
    assert parameters == set(method.knobs) | ({"seed"} if method.random else set())


def test_declarations_are_consistent():
    assert set(DEFAULT_METHODS) <= set(MERGE_METHODS)
    for method in MERGE_METHODS.values():
        assert sum(x is not None for x in (method.combine, method.peft_combination, method.adapts)) == 1
        assert method.level in ("updates", "factors")
        assert (method.level == "factors") == method.needs_equal_rank
        assert (method.data != "none") == (method.adapts is not None)
    assert takers("density") and all("density" in MERGE_METHODS[m].knobs for m in takers("density"))


def test_a_method_s_family_is_declared_once_on_the_method():
    """Chapter 5's data-free families come from the methods' own ``family`` field: one method per family, each data-
    free, and the tuning grids hold exactly those families beside the data-light ones (the compact grid all but the
    official dense recipes and KnOTS's DARE-TIES, which the full profile's T4 budget leaves out)."""
    from lora_merge_utils import tuning

    families = [m.family for m in MERGE_METHODS.values() if m.family is not None]
    assert len(families) == len(set(families)) == len(tuning.DATA_FREE) > 0
    assert all(MERGE_METHODS[name].data == "none" for name in tuning.DATA_FREE.values())
    assert set(tuning.tuning_grids("shared")) == set(tuning.DATA_FREE) | set(tuning.DATA_LIGHT)
    dense = {family for family, name in tuning.DATA_FREE.items() if any(MERGE_METHODS[name].dense_svd_sets)}
    assert dense == {"TSV-Merge (official)", "Iso-C (official)", "Iso-CTS (official)"}
    left_out = {family for family, name in tuning.DATA_FREE.items() if not MERGE_METHODS[name].compact_grid}
    assert left_out == dense | {"DARE-TIES (KnOTS config, no trim)"}
    assert set(tuning.tuning_grids("compact")) == set(tuning.DATA_FREE) - left_out | set(tuning.DATA_LIGHT)


def test_the_command_line_has_one_flag_per_knob():
    merge = build_parser()._subparsers._group_actions[0].choices["merge"]
    flags = {option for action in merge._actions for option in action.option_strings}
    assert {COMMAND_LINE.knob(k) for k in KNOBS} <= flags


def test_every_knob_is_a_keyword_of_the_library_s_merge():
    """A knob is declared once, in KNOBS: the command line's flags derive from it (above), and merge_adapters must take
    each one as a keyword, or a new knob would get a flag that the library cannot pass on."""
    import inspect

    from lora_merge_utils.merging import merge_adapters

    keywords = {
        name
        for name, parameter in inspect.signature(merge_adapters).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(KNOBS) <= keywords, f"merge_adapters lacks {sorted(set(KNOBS) - keywords)}"


REQUESTS = [
    ("ties", {"density": 0.5}, None, None, 0),
    ("ties", {}, None, None, 0),
    ("ties", {"density": 0.5, "common_fraction": 0.5}, None, None, 0),
    ("iso_cts", {"common_fraction": 1.0}, None, None, 0),
    ("iso_cts", {"common_fraction": 1.5}, None, None, 0),
    ("task_arithmetic", {}, [0.5, 0.5], 0.5, 0),
    ("task_arithmetic", {}, [2e3, 1.0], None, 0),
    ("dare_ties", {"density": 0.5, "trim_density": 1.0}, None, 3.0, 7),
    ("dare_linear", {"density": 0.5}, None, None, -1),
    ("svd", {"svd_rank": 0}, None, None, 0),
    ("adamerging", {"steps": 3, "lr": 1e-3}, None, None, 0),
    ("linear", {"majority_sign_method": "total"}, None, None, 0),
]


@pytest.mark.parametrize("method, knobs, weights, scale, seed", REQUESTS)
def test_the_library_and_the_command_line_agree(method, knobs, weights, scale, seed):
    """Each request is accepted by both namings or refused by both, with the same message up to how names are
    written."""
    outcomes = []
    for naming in (LIBRARY, COMMAND_LINE):
        try:
            outcomes.append(("ok", check_merge_request(method, 2, knobs, weights, scale, seed, naming)))
        except ValueError as error:
            outcomes.append(("refused", str(error)))
    assert outcomes[0][0] == outcomes[1][0], outcomes
    if outcomes[0][0] == "ok":
        assert outcomes[0][1] == outcomes[1][1]
    else:
        assert "\n" not in outcomes[0][1] and "--" in outcomes[1][1]


def test_defaults_are_filled_and_the_seed_is_checked():
    weights, resolved = check_merge_request("dare_ties", 3, {"density": 0.3})
    assert weights == [pytest.approx(1 / 3)] * 3
    assert resolved == {"density": 0.3, "trim_density": 0.2, "majority_sign_method": "total"}
    with pytest.raises(ValueError, match="seed must be"):
        check_merge_request("dare_ties", 3, {"density": 0.3}, seed=SEED.values.high + 1)
