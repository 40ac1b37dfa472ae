"""The tests claims name (docs/protocol.md): window score, non-inferiority, Holm-corrected
differences, IQM and probability of improvement, and a sweep's report."""

import json

import numpy as np
import pytest

from sparse_agents.experiments import evidence as ev
from sparse_agents.experiments.rl import MIN_EVALS, window_score

REPS = 1000


def test_window_score_is_the_mean_of_the_evaluations_in_the_last_tenth():
    t = np.arange(0, 101_000, 1000)  # evaluations every 1000 steps of 100k
    r = t / 1000.0
    assert ev.window_score(t, r, 100_000) == pytest.approx(np.mean(np.arange(90, 101)))


def test_window_with_too_few_evaluations_is_refused_naming_min_evals():
    t = np.arange(0, 300_001, 15_000)
    with pytest.raises(ValueError, match="holds 3 evaluations, min_evals is 5"):
        ev.window_score(t, t, 300_000)


def test_noninferiority_holds_for_a_clearly_equal_pair_and_not_for_a_worse_one():
    rng = np.random.default_rng(0)
    dense = 100 + rng.normal(0, 2, 10)
    same = 100 + rng.normal(0, 2, 10)
    worse = 80 + rng.normal(0, 2, 10)
    assert ev.noninferiority(same, dense, reps=REPS).holds
    bad = ev.noninferiority(worse, dense, reps=REPS)
    assert not bad.holds and bad.high < 0  # 80 - 90 = -10
    assert bad.estimate == pytest.approx(worse.mean() - 0.9 * dense.mean())


def test_noninferiority_is_not_shown_when_the_seeds_spread_widely():
    rng = np.random.default_rng(1)
    dense = 100 + rng.normal(0, 80, 5)
    sparse = 100 + rng.normal(0, 80, 5)
    result = ev.noninferiority(sparse, dense, reps=REPS)
    assert result.low < 0 < result.high and not result.holds


def test_holm_adjusts_the_p_values_of_one_claims_contrasts():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 8)
    contrasts = {f"c{i}": ev.difference(base + shift + rng.normal(0, 1, 8), base, REPS)
                 for i, shift in enumerate([0.0, 0.0, 3.0])}
    adjusted = ev.holm(contrasts)
    raw = sorted(c.p for c in contrasts.values())
    assert min(a.p for a in adjusted.values()) == pytest.approx(min(1.0, 3 * raw[0]))
    assert adjusted["c2"].holds and adjusted["c2"].estimate > 0
    assert all(a.p >= contrasts[k].p for k, a in adjusted.items())


def test_iqm_and_improvement_probability_come_from_rliable():
    from rliable import metrics

    scores = np.arange(20, dtype=float).reshape(10, 2)
    out = ev.iqm({"m": scores}, reps=REPS)["m"]
    assert out.estimate == pytest.approx(metrics.aggregate_iqm(scores))
    assert out.low <= out.estimate <= out.high
    p = ev.improvement_probability(scores + 100, scores, reps=REPS)
    assert p.estimate == pytest.approx(1.0) and p.holds


def _write_run(root, name, seed, total, returns, extra=None):
    folder = root / "runs" / f"{name}-s{seed}"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"seed": seed, "timesteps": total,
                                                     **(extra or {})}))
    steps = np.linspace(0, total, len(returns))
    rows = ["timesteps,mean,std"] + [f"{t},{r},0" for t, r in zip(steps, returns,
                                                                   strict=True)]
    (folder / "evaluations.csv").write_text("\n".join(rows) + "\n")


def test_sweep_report_tests_every_group_against_dense_and_dst_against_static(tmp_path):
    rng = np.random.default_rng(3)
    for seed in range(6):
        for name, level in [("x-dense", 100), ("x-srigl", 99), ("x-static", 60)]:
            _write_run(tmp_path, name, seed, 1000, level + rng.normal(0, 2, 51))
    text = ev.sweep_report(tmp_path, reps=REPS)
    against_dense, dst = text.split("## Against dense")[1].split("## DST against static")
    rows = {line.split(" | ")[0]: line for line in against_dense.splitlines()
            if line.startswith("| x-")}
    assert "| yes |" in rows["| x-srigl"]  # matches dense
    assert "below dense" in rows["| x-static"]
    assert "| x-srigl |" in dst and "above static" in dst
    assert "Below the protocol" not in text  # 6 evaluations in the last tenth


def test_intervals_are_reproducible_for_a_seed_and_leave_numpys_generator_alone():
    rng = np.random.default_rng(4)
    x, y = rng.normal(0, 1, 8), rng.normal(0.5, 1, 8)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = ev.difference(x, y, reps=REPS)
    assert ev.difference(x, y, reps=REPS) == first
    assert ev.noninferiority(x, y, reps=REPS) == ev.noninferiority(x, y, reps=REPS)
    assert (np.random.get_state()[1] == before).all()
    assert ev.difference(x, y, reps=REPS, seed=1) != first


def test_window_steps_spread_the_evaluations_over_the_last_tenth():
    from sparse_agents.experiments.rl import window_steps

    assert window_steps(100_000, 5) == [92_000, 94_000, 96_000, 98_000, 100_000]
    assert window_steps(1000, 0) == []
    with pytest.raises(ValueError, match="window_evals"):
        window_steps(1000, -1)


def test_a_run_with_window_evals_holds_the_protocols_evaluations_in_its_window(tmp_path):
    """Without ``window_evals`` a run evaluating 5 times over training has 1 evaluation in
    its last 10%; with 5 it has >= 5, so ``window_score`` accepts it and the summary's
    ``window_score`` equals it; a resumed sweep compares ``window_evals``."""
    from sparse_agents.experiments.rl_run import RLRun

    run = RLRun(algo="ppo", env="CartPole-v1", updater="static", timesteps=2048,
                eval_freq=512, eval_episodes=1, window_evals=5)
    summary = run.train(tmp_path / "run", plot=False)
    rows = np.loadtxt(tmp_path / "run" / "evaluations.csv", delimiter=",", skiprows=1)
    t, r = rows[:, 0], rows[:, 1]
    assert (t >= 0.9 * 2048).sum() >= MIN_EVALS
    assert summary["window_score"] == pytest.approx(window_score(t, r, 2048))
    other = RLRun(algo="ppo", env="CartPole-v1", updater="static", timesteps=2048,
                  eval_freq=512, eval_episodes=1)
    assert any("window_evals" in d for d in other.differences(tmp_path / "run"))


def test_width_report_compares_sparse_widths_with_the_best_dense_width_and_its_cpu(tmp_path):
    """A sparse wide network that beats the best dense width at less CPU time is said
    to; one that beats it at more CPU time is said to need more; the figure is drawn."""
    rng = np.random.default_rng(5)
    rows = [("x-dense-w64", 100, 10.0), ("x-dense-w256", 120, 40.0),
            ("x-srigl-w256", 150, 30.0), ("x-rigl-w1024", 150, 90.0),
            ("x-srigl-w64", 90, 9.0)]
    for seed in range(6):
        for name, level, cpu in rows:
            _write_run(tmp_path, name, seed, 1000, level + rng.normal(0, 2, 51),
                       {"cpu_s": cpu, "nonzero_params": 1000})
    assert ev.width_of("x-srigl-w256") == ("x-srigl", 256) and ev.width_of("x-dense") is None
    text = ev.sweep_report(tmp_path, reps=REPS)
    section = text.split("## Width scaling: against the best dense network (x-dense-w256)")[1]
    rows = {line.split(" | ")[0]: line for line in section.splitlines()
            if line.startswith("| x-")}
    assert rows["| x-srigl-w256"].endswith("| beats the best dense at no more CPU time |")
    assert rows["| x-rigl-w1024"].endswith("| beats the best dense, at more CPU time |")
    assert "below the best dense" in rows["| x-srigl-w64"]
    assert "## Against dense (x-dense-w256)" in text  # the default reference
    ev.plot_width_scaling(tmp_path, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 0
