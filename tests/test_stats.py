import numpy as np
import pandas as pd
import pytest

from lora_merge_utils.coverage import simulate_intervals, simulated_estimates, simulated_grid
from lora_merge_utils.similarity import leave_one_out, permutation_test
from lora_merge_utils.stats import Bootstrap, difference, estimate, pack, row_values, unpack, verdict


def test_pack_round_trips():
    rng = np.random.default_rng(0)
    bits = rng.random(37) > 0.5
    assert np.array_equal(unpack(pack(bits), 37), bits)


def _rows(method: str, right: dict[str, list[bool]], seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for task, correct in right.items():
        for seed in seeds:
            rows.append(
                {
                    "method": method,
                    "task": task,
                    "seed": seed,
                    "num_images": len(correct),
                    "num_classes": 10,
                    "correct": pack(correct),
                    "adapter_correct": pack([True] * len(correct)),
                    "head_correct": pack([False] * len(correct)),
                }
            )
    return pd.DataFrame(rows)


def test_estimate_matches_the_mean_and_brackets_it():
    rng = np.random.default_rng(1)
    right = {t: list(rng.random(200) < p) for t, p in (("a", 0.6), ("b", 0.8), ("c", 0.7))}
    rows = _rows("m", right)
    boot = Bootstrap({t: 200 for t in right}, seeds=[0, 1, 2], replicates=500)
    e = estimate(rows, "accuracy", boot)
    assert e.value == pytest.approx(np.mean([np.mean(v) for v in right.values()]))
    assert e.low < e.value < e.high and e.high - e.low > 0.02, "tasks and images vary: the interval has width"
    assert row_values(rows, "chance_normalized")[0] == pytest.approx((np.mean(right["a"]) - 0.1) / 0.9)
    assert row_values(rows, "minus_head")[0] == pytest.approx(np.mean(right["a"]))


def test_paired_difference_resolves_a_consistent_gap_that_unpaired_noise_would_hide():
    """Method b is right on exactly the images a is right on, plus 3% more: a tiny but consistent gain. Paired on
    the same resampled images, the interval excludes 0; and a difference of 0 is reported as not resolved."""
    rng = np.random.default_rng(2)
    base = {t: rng.random(300) < 0.7 for t in "abcdef"}
    better = {t: v | (rng.random(300) < 0.1) for t, v in base.items()}
    boot = Bootstrap({t: 300 for t in base}, seeds=[0, 1, 2], replicates=500)
    rows_a, rows_b = (
        _rows("a", {t: list(v) for t, v in base.items()}),
        _rows("b", {t: list(v) for t, v in better.items()}),
    )
    gain = difference(rows_b, rows_a, "accuracy", boot)
    assert gain.value > 0 and gain.resolved and "b beats a" in verdict(gain, "b", "a")
    same = difference(rows_a, rows_a, "accuracy", boot)
    assert same.value == 0 and not same.resolved and "not resolved" in verdict(same, "a", "a")


def test_permutation_test_over_task_labels():
    tasks = list("abcdef")
    pairs = [f"{a}+{b}" for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
    rng = np.random.default_rng(0)
    retention = pd.Series(rng.random(len(pairs)), index=pairs)
    same = permutation_test(retention, retention, tasks)
    assert same["rho"] == pytest.approx(1.0) and same["permutations"] == 720 and same["n"] == 15
    assert same["p"] < 0.05
    noise = permutation_test(pd.Series(rng.random(len(pairs)), index=pairs), retention, tasks)
    assert noise["p"] > 0.05
    low, high = leave_one_out(retention, retention)
    assert low == high == pytest.approx(1.0)


def test_intervals_cover_the_truth_at_the_rate_they_claim_in_this_design():
    """A simulation of the book's design (6 tasks, 3 seeds, pairs and triples, known true values, no heterogeneity
    beyond the rows' own noise): the 95% intervals of a mean, of a paired difference between two methods and of the
    share of the gain kept cover the truth in at least 91% of 240 simulated studies. (600 studies measured 0.940,
    0.933 and 0.957; 240 studies estimate a rate to about +-0.016, so the bar sits 1.4 of those below the measured
    0.93. Resampling only the scored task with percentile intervals, as the first editions did, covered about 78%.)"""
    table = simulate_intervals(studies=240, method_effect=0.3, variances=("noise_corrected",)).set_index("kind")
    coverage = table["coverage"]
    print(f"coverage of 95% intervals: {coverage.round(3).to_dict()}")
    assert (coverage >= 0.91).all(), coverage


def test_a_simulated_study_has_the_books_design():
    rows_a, rows_b, names = simulated_grid(np.random.default_rng(0), method_effect=0.3)
    assert len(names) == 6 and len(rows_a) == len(rows_b) == (15 * 2 + 20 * 3) * 3, "every member task of 35 merges"
    assert rows_a["members"].nunique() == 35 and set(rows_a["seed"]) == {0, 1, 2}
    assert row_values(rows_b, "accuracy").mean() > row_values(rows_a, "accuracy").mean(), "b is a better method"


def test_holm_reads_verdicts_as_one_family():
    from lora_merge_utils.stats import Estimate, holm

    weak = Estimate(0.029, 0.0007, 0.0573, 0.011, 5)  # p = 0.046: resolved alone
    strong, unclear = Estimate(0.05, 0.029, 0.071, 0.008, 5), Estimate(0.01, -0.02, 0.04, 0.012, 5)
    assert weak.resolved and holm({"triples": weak}) == {"triples": True}, "alone, it is resolved"
    assert holm({"pairs": strong, "triples": weak}) == {"pairs": True, "triples": True}, "after a strong one, too"
    assert holm({"pairs": unclear, "triples": weak}) == {"pairs": False, "triples": False}, (
        "beside an unclear verdict, p = 0.046 does not clear 0.05 / 2"
    )
    assert "once corrected" in verdict(weak, "triples", "the floor", resolved=False)


def test_noise_corrected_intervals_count_each_rows_noise_once():
    """Two methods that differ by nothing but their rows' own noise: summing the task jackknife, the seed jackknife
    and the image bootstrap counts that noise about five times (each row sits in two or three tasks' deletions); the
    noise-corrected interval counts it once, so it is much narrower, and a mean's interval barely changes."""
    rng = np.random.default_rng(11)
    rows_a, rows_b, names = simulated_grid(rng, references=True)
    sizes = {t: 100 for t in names}
    plain = Bootstrap(sizes, seeds=[0, 1, 2], replicates=200, variance="sum")
    corrected = Bootstrap(sizes, seeds=[0, 1, 2], replicates=200)  # the default
    gap_sum, gap_once = difference(rows_b, rows_a, "accuracy", plain), difference(rows_b, rows_a, "accuracy", corrected)
    assert gap_once.value == gap_sum.value and gap_once.se < 0.8 * gap_sum.se, (gap_once, gap_sum)
    assert gap_once.image_var > 0 and gap_once.low < gap_once.value < gap_once.high
    mean_sum, mean_once = estimate(rows_a, "gain_kept", plain), estimate(rows_a, "gain_kept", corrected)
    assert 0.7 < mean_once.se / mean_sum.se <= 1.0, "a mean's variance is the tasks', which stays"
    with pytest.raises(ValueError, match="Unknown variance"):
        Bootstrap(sizes, seeds=[0], variance="robust")


def test_noise_corrected_falls_back_to_the_sum_without_a_full_table_of_seeds():
    rng = np.random.default_rng(12)
    rows_a, rows_b, names = simulated_grid(rng, seeds=1)
    sizes = {t: 100 for t in names}
    plain = difference(rows_b, rows_a, "accuracy", Bootstrap(sizes, seeds=[0], replicates=100, variance="sum"))
    corrected = difference(rows_b, rows_a, "accuracy", Bootstrap(sizes, seeds=[0], replicates=100))
    assert (plain.low, plain.high) == (corrected.low, corrected.high), "one seed: no noise estimate, no correction"


def test_jackknife_noise_is_the_trace_of_the_jackknife_form_times_the_noise_covariance():
    """On a small paired design, the sparse forms equal their dense definitions: ``trace(Q S)`` with ``Q`` the
    delete-one-task jackknife's quadratic form of the linearised statistic and ``S`` the estimated noise covariance."""
    from lora_merge_utils.row_noise import jackknife_noise, linearise, noise_covariance

    rng = np.random.default_rng(13)
    rows_a, rows_b, names = simulated_grid(rng, tasks=4, seeds=2, images=40)
    values = [(row_values(rows_b, "accuracy"), 1.0), (row_values(rows_a, "accuracy"), -1.0)]
    lin = linearise(values)
    noise = noise_covariance([rows_b, rows_a], lin)
    assert noise is not None and len(noise.first) == len(rows_a), "each row of b is matched with its row of a"
    dense = np.diag(noise.variance)
    dense[noise.first, noise.second] = dense[noise.second, noise.first] = noise.covariance
    assert noise.form(lin.w) == pytest.approx(lin.w @ dense @ lin.w)
    members = [set(m.split("+")) for m in pd.concat([rows_b, rows_a])["members"]]
    keeps = [np.array([t not in m for m in members]) for t in names]
    weights = []
    for keep in keeps:
        w = np.where(keep, lin.w, 0.0)
        for part in (0, 1):
            in_part = lin.part == part
            w[in_part] *= in_part.sum() / (keep & in_part).sum()
        weights.append(w)
    weights = np.asarray(weights)
    centred = weights - weights.mean(axis=0)
    q = (len(keeps) - 1) / len(keeps) * centred.T @ centred
    assert jackknife_noise(noise, lin, keeps) == pytest.approx(np.trace(q @ dense))


def test_heterogeneity_recovers_the_simulated_designs_own_values():
    """Averaged over simulated studies, the estimates' squares come near the variances the design was drawn with, on
    the design's own scale (the logit of each image), and near zero where there is none."""
    from lora_merge_utils.coverage import heterogeneity

    def mean_variance(method_task_sd: float, task_seed_sd: float) -> dict[str, float]:
        found = []
        for seed in range(8):
            rows_a, rows_b, _ = simulated_grid(
                np.random.default_rng(seed), images=400, method_task_sd=method_task_sd, task_seed_sd=task_seed_sd
            )
            both = pd.concat([rows_a.assign(method="a"), rows_b.assign(method="b")])
            found.append(heterogeneity(both.assign(accuracy=row_values(both, "accuracy")), "a", "b"))
        return {key: float(np.mean([f[key] ** 2 for f in found])) for key in found[0]}

    none, some = mean_variance(0.0, 0.0), mean_variance(0.4, 0.3)
    assert none["method x task"] < 0.01 and none["task x seed"] < 0.01, none
    assert 0.5 * 0.16 < some["method x task"] < 1.5 * 0.16, some
    assert 0.7 * 0.09 < some["task x seed"] < 1.3 * 0.09, some
    rows_a, _, _ = simulated_grid(np.random.default_rng(0))
    with pytest.raises(ValueError, match="rows of both"):
        heterogeneity(rows_a.assign(method="a", accuracy=0.5), "a", "c")


def test_simulate_intervals_measures_coverage_width_and_power():
    from lora_merge_utils.coverage import simulate_intervals

    table = simulate_intervals(studies=30, method_effect=0.2, method_task_sd=0.05).set_index(["variance", "kind"])
    assert set(table.index) == {(v, k) for v in ("sum", "noise_corrected") for k in ("mean", "difference", "gain kept")}
    assert (table["coverage"].between(0.0, 1.0)).all() and (table["width / spread"] > 0).all()
    sum_gap, once_gap = table.loc[("sum", "difference")], table.loc[("noise_corrected", "difference")]
    assert once_gap["width / spread"] < sum_gap["width / spread"] and once_gap["resolved"] >= sum_gap["resolved"]
    with pytest.raises(ValueError, match="at least one study"):
        simulate_intervals(studies=0)


def test_noise_estimate_falls_back_instead_of_failing_on_rows_that_do_not_count():
    """A part whose counting rows all belong to one merge gives no noise estimate (None), whatever the unit of a row
    of weight 0 (a value that is not finite) would have been."""
    from lora_merge_utils.row_noise import linearise, noise_covariance

    rows = pd.DataFrame({"members": ["a+b", "a+b", "a+c", "a+c"], "task": "a", "seed": [0, 1, 0, 1]})
    lin = linearise([(np.array([np.nan, np.nan, 0.8, 0.9]), 1.0)])
    assert noise_covariance([rows], lin) is None


def test_a_task_in_every_row_keeps_the_image_bootstrap():
    """Rows that all contain one task never leave it out, so its test images' draw is in no jackknife: the interval
    keeps the sum of parts, image bootstrap included, rather than drop that variance."""
    rng = np.random.default_rng(15)
    rows_a, _, names = simulated_grid(rng)
    with_t0 = rows_a[rows_a["members"].str.split("+").map(lambda m: "t0" in m)]
    sizes = {t: 100 for t in names}
    corrected = estimate(with_t0, "accuracy", Bootstrap(sizes, seeds=[0, 1, 2], replicates=200))
    summed = estimate(with_t0, "accuracy", Bootstrap(sizes, seeds=[0, 1, 2], replicates=200, variance="sum"))
    assert (corrected.low, corrected.high) == (summed.low, summed.high)


def test_heterogeneity_with_one_seed_and_refusing_duplicates():
    from lora_merge_utils.coverage import heterogeneity

    rows_a, rows_b, _ = simulated_grid(np.random.default_rng(16), seeds=1)
    both = pd.concat([rows_a.assign(method="a"), rows_b.assign(method="b")]).assign(accuracy=0.8)
    one_seed = heterogeneity(both, "a", "b")
    assert one_seed["task x seed"] == 0.0 and np.isfinite(one_seed["method x task"]), "one seed: no task x seed"
    rows_a, rows_b, _ = simulated_grid(np.random.default_rng(16))
    twice = pd.concat([rows_a.assign(method="a")] * 2 + [rows_b.assign(method="b")]).assign(accuracy=0.8)
    with pytest.raises(ValueError, match="one row per merge"):
        heterogeneity(twice, "a", "b")


def test_simulate_intervals_with_one_seed_as_the_full_profile_has():
    """One seed: no noise estimate from the rows, so both ways of adding the parts give the same intervals."""
    from lora_merge_utils.coverage import simulate_intervals

    table = simulate_intervals(studies=5, seeds=1, method_task_sd=0.1).set_index(["variance", "kind"])
    for kind in ("mean", "difference", "gain kept"):
        assert table.loc[("sum", kind), "coverage"] == table.loc[("noise_corrected", kind), "coverage"]
        assert table.loc[("sum", kind), "width / spread"] == table.loc[("noise_corrected", kind), "width / spread"]


def test_image_draws_are_made_on_first_use_in_task_order():
    """The image draws cost memory and time that the noise-corrected intervals never use: none is made until an
    accuracy is asked for, and then every task's, in task order, so asking for ``b`` first gives the draw it had when
    they were made at construction."""
    sizes = {"a": 50, "b": 70}
    boot = Bootstrap(sizes, seeds=[0], replicates=20, seed=3)
    assert not boot._counts, "nothing drawn before it is needed"
    correct = np.arange(70) % 3 == 0
    rng = np.random.default_rng(3)
    rng.multinomial(50, np.full(50, 1 / 50), size=20)
    expected = rng.multinomial(70, np.full(70, 1 / 70), size=20) @ correct / 70
    np.testing.assert_allclose(boot.accuracy("b", correct), expected, rtol=1e-6)


def test_observed_values_a_column_at_a_time_are_the_row_by_row_formula():
    """The fast path of row_values (packed accuracies computed once, a column at a time) against the definition."""
    from lora_merge_utils.stats import METRICS

    rows, _, _ = simulated_grid(np.random.default_rng(5), seeds=2, references=True)
    for metric in METRICS:
        expected = []
        for row in rows.itertuples(index=False):
            n = int(row.num_images)
            merged, single, head = (unpack(b, n).mean() for b in (row.correct, row.adapter_correct, row.head_correct))
            if metric == "accuracy":
                expected.append(merged)
            elif metric == "minus_head":
                expected.append(merged - head)
            elif metric == "gain_kept":
                expected.append((merged - head) / (single - head) if abs(single - head) >= 1e-9 else np.nan)
            else:
                chance = 1.0 / row.num_classes if metric == "chance_normalized" else 0.0
                expected.append((merged - chance) / (single - chance) if single - chance > 1e-9 else np.nan)
        np.testing.assert_array_equal(row_values(rows, metric), np.asarray(expected), err_msg=metric)


def test_simulated_estimates_give_each_interval_with_its_parts():
    rows = simulated_estimates(studies=3, method_effect=0.1, variances=("noise_corrected",))
    assert len(rows) == 9 and set(rows["kind"]) == {"mean", "difference", "gain kept"}
    np.testing.assert_allclose(rows["se"] ** 2, rows["image_var"] + rows["task_var"] + rows["seed_var"], rtol=1e-9)
    assert (rows["low"] < rows["value"]).all() and (rows["value"] < rows["high"]).all()
    assert rows.groupby("kind")["truth"].nunique().eq(1).all() and rows["truth"].nunique() == 3
    assert (rows["tasks_resampled"] == 6).all(), "every kind's tasks are left out in turn"


def test_a_row_without_a_value_makes_the_interval_undefined_not_the_mean_of_the_others():
    """An adapter at chance has no share to keep: its rows' chance-normalised value is NaN. The plain summaries show
    NaN for such a group, and so must its interval, its verdict and its p-value (never resolved in a Holm family)."""
    from lora_merge_utils.stats import holm

    rng = np.random.default_rng(3)
    right = {t: list(rng.random(100) < 0.7) for t in "abcd"}
    rows = _rows("m", right)
    boot = Bootstrap({t: 100 for t in right}, seeds=[0, 1, 2], replicates=50)
    assert np.isfinite(estimate(rows, "chance_normalized", boot).value)
    at_chance = rows.copy()
    at_chance.loc[at_chance["task"] == "b", "adapter_correct"] = pack([True] * 10 + [False] * 90)  # 10%: chance
    e = estimate(at_chance, "chance_normalized", boot)
    assert np.isnan(e.value) and np.isnan(e.low) and np.isnan(e.high), e
    assert np.isfinite(estimate(at_chance, "accuracy", boot).value), "metrics that are defined stay defined"
    d = difference(at_chance, rows, "chance_normalized", boot)
    assert np.isnan(d.value) and not d.resolved and d.p_value == 1.0
    assert verdict(d, "b", "a").startswith("undefined:")
    assert holm({"undefined": d, "clear": difference(rows, rows, "accuracy", boot)}) == {
        "undefined": False,
        "clear": False,
    }


def test_a_simulation_of_differences_alone_draws_the_same_studies():
    every = simulated_estimates(6, 0.2, 0.1, 0.05, ("noise_corrected",), seed=5)
    alone = simulated_estimates(6, 0.2, 0.1, 0.05, ("noise_corrected",), seed=5, kinds=("difference",))
    assert set(alone["kind"]) == {"difference"}
    differences = every[every["kind"] == "difference"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone.reset_index(drop=True), differences)
    with pytest.raises(ValueError, match="kinds must name"):
        simulated_estimates(1, kinds=("means",))


def test_a_packed_strings_accuracy_is_its_first_n_bits_mean():
    """Counted as an integer's bits, not unpacked: the same float, padding bits beyond ``n`` ignored."""
    from lora_merge_utils.stats import _observed_accuracy

    rng = np.random.default_rng(4)
    for n in (1, 7, 8, 9, 100, 333):
        raw = bytearray(np.packbits(rng.random(n) < 0.6).tobytes())
        raw[-1] |= 0xFF >> (n % 8 or 8)  # set every padding bit: they must not count
        bits = bytes(raw).hex()
        assert _observed_accuracy(bits, n) == unpack(bits, n).mean()
        assert _observed_accuracy(bits, n - 1 if n > 1 else 1) == unpack(bits, n - 1 if n > 1 else 1).mean()


def test_row_units_are_told_apart_by_their_text_in_order_of_first_appearance():
    from lora_merge_utils.row_noise import _codes

    rows = pd.DataFrame(
        {
            "members": ["a+b", "a+b", "b+c", "c+a", "a+b"],
            "params": [{"x": 1}, {"x": 1}, {"x": 2}, {}, {"x": 1}],
            "weights": [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [1, 0], [0.5, 0.5]],
            "size": [2, 2, 2, 3, 2],
            "method": ["m", "m", "m", "m", 1.0],
        }
    )
    assert _codes(rows, ("members",)).tolist() == [0, 0, 1, 2, 0]
    assert _codes(rows, ("params", "weights", "size")).tolist() == [0, 0, 1, 2, 0]
    assert _codes(rows, ("members", "method")).tolist() == [0, 0, 1, 2, 3], "1.0 and 'm' differ as text"
    assert _codes(rows, ("absent",)).tolist() == [0] * 5


def test_a_task_s_scored_and_partner_effects_can_be_drawn_correlated():
    """0 draws the numbers the design always drew; 1 makes each task's partner effect its scored effect, rescaled,
    so a task's rows as a partner move with its own rows; outside [-1, 1] is refused."""
    plain = simulated_grid(np.random.default_rng(2))
    again = simulated_grid(np.random.default_rng(2), scored_partner_correlation=0.0)
    assert all(a.equals(b) for a, b in zip(plain[:2], again[:2]))
    tied = simulated_grid(np.random.default_rng(2), scored_partner_correlation=1.0)
    assert not tied[0].equals(plain[0])
    with pytest.raises(ValueError, match="scored_partner_correlation"):
        simulated_grid(np.random.default_rng(2), scored_partner_correlation=1.5)
    rows = tied[0].assign(accuracy=[unpack(b, n).mean() for b, n in zip(tied[0]["correct"], tied[0]["num_images"])])
    own = rows.groupby("task")["accuracy"].mean()
    as_partner = pd.Series(
        {
            t: rows[rows["members"].str.split("+").map(lambda m, t=t: t in m) & (rows["task"] != t)]["accuracy"].mean()
            for t in own.index
        }
    )
    assert np.corrcoef(own, as_partner)[0, 1] > 0, "a task hard to score is a hard partner"
