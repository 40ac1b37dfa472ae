"""The shared interleaved timer (:mod:`sparse_agents.timing`) and the benchmark modules'
command lines (:mod:`sparse_agents.experiments.bench`)."""

from __future__ import annotations

import importlib
import statistics
import time
import warnings

import pytest
import torch

from sparse_agents.condensed import kernels as K
from sparse_agents.timing import sample_interleaved, synchronize, time_interleaved


def _sleeper(seconds: float):
    def fn():
        time.sleep(seconds)
    return fn


def test_slower_candidate_measures_slower():
    times = time_interleaved({"fast": _sleeper(0.0), "slow": _sleeper(0.002)}, rounds=3)
    assert set(times) == {"fast", "slow"}
    assert times["slow"] > times["fast"]
    assert times["slow"] >= 0.0015


def test_rounds_interleave_candidates():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "AB"}
    samples = sample_interleaved(fns, rounds=4, calls=1, warmup=0)
    assert calls == list("ABABABAB")
    assert {n: len(s) for n, s in samples.items()} == {"A": 4, "B": 4}


def test_warmup_calls_and_calls_per_sample():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "AB"}
    sample_interleaved(fns, rounds=2, calls={"A": 2, "B": 1}, warmup=1)
    assert calls == ["A", "B"] + ["A", "A", "B"] * 2


def test_rotate_and_before_hooks():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "ABC"}
    before = {"B": lambda: calls.append("b")}
    sample_interleaved(fns, rounds=3, warmup=0, rotate=True, before=before)
    assert calls == list("AbBC" + "bBCA" + "CAbB")


def test_median_is_returned(monkeypatch):
    """Each sample lasts a scripted time; the result is their median, not the mean."""
    durations = iter([1.0, 9.0, 2.0, 3.0, 100.0])  # seconds, one per sample
    clock = [0.0]

    def fake_perf_counter():
        return clock[0]

    def fn():
        clock[0] += next(durations)

    monkeypatch.setattr(time, "perf_counter", fake_perf_counter)
    samples = sample_interleaved({"f": fn}, rounds=5, warmup=0)
    monkeypatch.undo()
    assert samples["f"] == [1.0, 9.0, 2.0, 3.0, 100.0]
    assert statistics.median(samples["f"]) == 3.0
    durations = iter([1.0, 9.0, 2.0, 3.0, 100.0])
    clock[0] = 0.0
    monkeypatch.setattr(time, "perf_counter", fake_perf_counter)
    assert time_interleaved({"f": fn}, rounds=5, warmup=0) == {"f": 3.0}


def test_per_call_seconds_and_calibration():
    counts = {"f": 0}

    def fn():
        counts["f"] += 1
        time.sleep(0.001)

    samples = sample_interleaved({"f": fn}, rounds=2, min_sample_s=0.005, warmup=0)
    # one calibration call, then at most 5 calls per sample (sleep may oversleep)
    assert 1 + 2 * 1 <= counts["f"] <= 1 + 2 * 5
    assert all(0.0009 <= s < 0.01 for s in samples["f"])


def test_drop_slower_after_first_round():
    calls: list[str] = []

    def make(name, seconds):
        def fn():
            calls.append(name)
            time.sleep(seconds)
        return fn

    samples = sample_interleaved({"fast": make("fast", 0.0), "slow": make("slow", 0.05)},
                                 rounds=3, warmup=0, drop_slower=3.0)
    assert len(samples["slow"]) == 1 and len(samples["fast"]) == 3
    assert calls == ["fast", "slow", "fast", "fast"]


def test_synchronize_cpu_is_a_no_op():
    synchronize(None)
    synchronize("cpu")
    synchronize(torch.device("cpu"))


def test_measure_uses_the_timer_and_checks_outputs():
    x = torch.randn(4, 8)
    w = torch.randn(3, 8)
    fns = {"dense": lambda x: x @ w.T, "same": lambda x: (w @ x.T).T,
           "wrong": lambda x: x @ w.T + 1.0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        times = K.measure(fns, x, budget_s=0.01, rounds=3)
    assert set(times) == {"dense", "same"}
    assert all(t > 0 for t in times.values())
    assert any("'wrong' disagrees" in str(w.message) for w in caught)


@pytest.mark.parametrize("name", ["condensed", "topology", "cl", "rl", "rl_stream",
                                  "profile_gpu"])
def test_bench_modules_parse_and_describe_reruns(name, capsys):
    mod = importlib.import_module(f"sparse_agents.experiments.bench.{name}")
    with pytest.raises(SystemExit) as exit_info:
        mod.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out.replace("\n", " ")
    assert "overwrite" in text or "finished runs are skipped" in text or "no files" in text


def test_rl_defaults_report_scores_final_and_last_ten_percent(tmp_path, capsys):
    # 21 evaluations would average the last 2 (tests/test_rl_papers.py)
    import json

    from sparse_agents.experiments.bench import rl_defaults

    for seed, curve in ((0, [10, 300, 400, 500]), (1, [10, 200, 300, 100])):
        run = tmp_path / f"C-s{seed}"
        run.mkdir()
        rows = "\n".join(f"{t},{m},0" for t, m in zip((0, 30, 95, 100), curve, strict=True))
        (run / "evaluations.csv").write_text("timesteps,mean,std\n" + rows + "\n")
        recorded = {"nonzero_params": 1081} if seed == 0 else {}  # older runs: none
        (run / "summary.json").write_text(json.dumps({"density": 0.1, **recorded}))
    assert rl_defaults.main(["--out", str(tmp_path), "--configs", "C", "--seeds", "0", "1",
                             "--report-only"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    # finals 500 and 100; the last 10% of 4 evaluations is the last one; std ÷ (n - 1)
    assert row == "| C | 500, 100 | 300.0 ± 282.8 | 300.0 ± 282.8 | 0.100 | 1081 |"
    assert (tmp_path / "summary.md").read_text().endswith(row + "\n")


def test_tables_show_the_sample_std_over_seeds():
    """Every ``mean ± std`` over seeds of a benchmark table is the sample std (ddof=1):
    for 500, 100, 300 that is 200.0, where the population std (ddof=0) is 163.3."""
    import math

    import numpy as np

    from sparse_agents.experiments.bench import rl_defaults, rl_stream
    from sparse_agents.intervals import mean_std

    values = [500.0, 100.0, 300.0]
    assert mean_std(values) == (300.0, pytest.approx(np.std(values, ddof=1)))
    assert mean_std(np.array(values))[1] == pytest.approx(200.0)
    assert rl_defaults._mean_std(values) == "300.0 ± 200.0"   # RL-defaults sweep tables
    assert rl_stream._fmt(values) == "300.0 ± 200.0"          # continual-RL stream table
    assert math.isnan(mean_std([4.0])[1])                      # one seed: no spread
    assert all(math.isnan(v) for v in mean_std([]))


def test_rl_defaults_refuses_finished_runs_made_under_another_default(tmp_path):
    import json

    from sparse_agents.cli.train_agent import build_agent, build_parser, options_in_effect
    from sparse_agents.experiments.bench import rl_defaults

    folder = tmp_path / "C-s0"
    folder.mkdir()
    args = build_parser().parse_args(rl_defaults.run_argv(folder, "C", 0, 100_000, None))
    model, _ = build_agent(args)
    options = options_in_effect(model)
    (folder / "summary.json").write_text(json.dumps({"density": 0.1, "hyperparams": "zoo"}))

    def record(sparse_options):
        config = dict(vars(args), env="CartPole-v1", sparse_options=sparse_options)
        (folder / "config.json").write_text(json.dumps(config))

    record(options)
    rl_defaults.check_resumable(tmp_path, ["C"], [0], 100_000, None)  # the same run: resumes
    with pytest.raises(ValueError, match="C-s0: timesteps: 100000 != 50000"):
        rl_defaults.check_resumable(tmp_path, ["C"], [0], 50_000, None)
    record({**options, "gamma_sal": "0.5"})  # a default C does not set, changed since
    with pytest.raises(ValueError, match="gamma_sal: 0.5 != 0.3"):
        rl_defaults.main(["--out", str(tmp_path), "--configs", "C", "--seeds", "0"])


def test_zero_state_bench_steps_on_dense_and_on_ninety_percent_zero_state():
    from sparse_agents.experiments.bench.topology import (
        STEP_OPTIMIZERS,
        _optimizer_step,
        _sqrt_where_nonzero,
        bench_zero_state,
    )

    for _, cls, kwargs in STEP_OPTIMIZERS:
        for keep, zeros in ((1.0, 0.0), (0.1, 0.9)):
            opt = _optimizer_step(cls, kwargs, keep).__self__
            state = next(iter(opt.state.values()))
            second = state["exp_avg_sq" if "exp_avg_sq" in state else "square_avg"]
            assert (second == 0).float().mean().item() == pytest.approx(zeros, abs=0.01)
    x = torch.tensor([0.0, -0.0, 4.0, 2.0, float("nan"), -1.0])
    assert torch.equal(_sqrt_where_nonzero(x).nan_to_num(7.0), x.sqrt().nan_to_num(7.0))
    rows = bench_zero_state(repeats=1)
    assert len(rows) == 2 * len(STEP_OPTIMIZERS) + 4
    assert all(r["ms"] > 0 for r in rows)
