"""The shared interleaved timer (:mod:`sparse_agents.timing`) and the benchmark modules'
command lines (:mod:`sparse_agents.experiments.bench`)."""

from __future__ import annotations

import importlib
import json
import math
import statistics
import time
import warnings
from pathlib import Path

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


@pytest.mark.parametrize("warmup", [0, 1])
def test_a_thread_count_changed_while_timing_is_refused(warmup):
    """A candidate that resets torch's thread count (as starting numba's OpenMP pool
    once did) would make later samples run on other threads than the earlier ones."""
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    try:
        fns = {"A": lambda: None, "B": lambda: torch.set_num_threads(other)}
        with pytest.raises(RuntimeError, match=f"changed from {before} to {other}"):
            sample_interleaved(fns, rounds=2, warmup=warmup)
    finally:
        torch.set_num_threads(before)


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
    from sparse_agents.experiments.bench import rl_defaults
    from sparse_agents.experiments.rl_run import options_in_effect
    from sparse_agents.study.rl_runs import refuse_stale

    [job] = rl_defaults.make_jobs(["C"], [0], 100_000, None)
    assert job.job_id == "C-s0" and job.path(tmp_path) == tmp_path / "C-s0"
    assert job.run.options == {"delta_t": 1000, "drop_fraction": 0.1, "t_end_fraction": 0.8}
    folder = job.path(tmp_path)
    folder.mkdir()
    model, _ = job.run.build()
    options = options_in_effect(model)
    (folder / "summary.json").write_text(json.dumps({"density": 0.1, "hyperparams": "zoo"}))

    def record(sparse_options):
        config = dict(job.run.settings(), sparse_options=sparse_options)
        (folder / "config.json").write_text(json.dumps(config))

    record(options)
    refuse_stale([job], tmp_path, "")  # the same run: resumes
    [shorter] = rl_defaults.make_jobs(["C"], [0], 50_000, None)
    with pytest.raises(ValueError, match="C-s0: timesteps: 100000 != 50000"):
        refuse_stale([shorter], tmp_path, "")
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


# ------------------------------------------------------------- one sweep engine (study)
ROOT = Path(__file__).resolve().parents[1]
HC = "--hyperparams graesser --tasks ppo:HalfCheetah-v5:150000"
HC_DEFAULTS = "--hyperparams graesser --sparse-settings defaults --tasks ppo:HalfCheetah-v5:"
VARIANTS = "--variant dt250 delta_t=250 drop_fraction=0.3 --variant d0.3 drop_fraction=0.3"
#: every sweep committed under results/ -> the commands that made it, each with the text of
#: docs/rl_benchmarks.md that states it (the command itself, or where the docs give it as
#: a change of another command, that change); a resumed sweep must skip every run there
COMMITTED = {
    "rl_graesser_ppo_hc": [(
        f"{HC} --updaters dense srigl --seeds 10 --evals 20 --eval-episodes 5 --workers 2 "
        "--resume", "(`--updaters dense srigl --out results/rl_graesser_ppo_hc`")],
    "rl_graesser_ppo_hc_defaults": [(
        f"{HC_DEFAULTS}150000 --updaters dense static rigl srigl {VARIANTS} --seeds 10 "
        "--evals 20 --eval-episodes 5 --workers 2 --resume", None)],
    # the SRigL runs before the rounding fix, moved out of the folder above (no command)
    "rl_graesser_ppo_hc_defaults_thinned_head": [(
        f"{HC_DEFAULTS}150000 --updaters dense srigl {VARIANTS} --seeds 10 --evals 20 "
        "--eval-episodes 5 --workers 2 --resume",
        "The SRigL row before the fix is in `results/rl_graesser_ppo_hc_defaults_thinned_head`")],
    "rl_graesser_ppo_hc_defaults_300k": [
        (f"{HC_DEFAULTS}300000 --updaters dense static rigl srigl --seeds 5 --evals 20 "
         "--eval-episodes 5 --workers 2 --resume", None),
        (f"{HC_DEFAULTS}300000 --updaters dense static srigl --variant lr2 lr_scale=2 "
         "--seeds 5 --evals 20 --eval-episodes 5 --workers 2 --resume",
         "(`--updaters dense static srigl --variant lr2 lr_scale=2 --seeds 5`, the same `--out`")],
    "rl_graesser_ppo_hc_lr": [(
        f"{HC_DEFAULTS}150000 --updaters dense static srigl --variant lr6e-4 "
        "learning_rate=lin_6e-4 --variant lr1e-3 learning_rate=lin_1e-3 --seeds 10 --evals 20 "
        "--eval-episodes 5 --workers 2 --resume", None)],
    "rl_graesser_ppo_hc_dense_lr6e-4": [(
        f"{HC} --updaters dense --hp learning_rate=lin_6e-4 --seeds 10 --evals 20 "
        "--eval-episodes 5 --workers 2 --resume", None)],
    "rl_hc_equal16_300k": [(
        f"{HC_DEFAULTS}300000 --equal-params 16 --width-factors 2 4 --dense-factors 1 "
        "--updaters dense rigl srigl --seeds 10 --evals 20 --eval-episodes 5 --workers 2 "
        "--resume", None)],
    "rl_hc_equal8_300k": [(
        f"{HC_DEFAULTS}300000 --equal-params 8 --width-factors 2 4 --dense-factors 1 "
        "--updaters dense rigl srigl --seeds 5 --evals 20 --eval-episodes 5 --workers 2 "
        "--resume", None)],
    "rl_minatar_si_equal32": [
        ("--hyperparams minatar --tasks dqn:MinAtar/SpaceInvaders-v1:100000 --equal-params 32 "
         "--width-factors 2 4 --dense-factors 1 --updaters dense rigl srigl --seeds 3 --evals 20 "
         "--eval-episodes 10 --workers 2 --resume", None),
        ("--hyperparams minatar --tasks dqn:MinAtar/SpaceInvaders-v1:100000 --equal-params 32 "
         "--width-factors 4 --dense-factors 1 --updaters dense rigl --seeds 6 --evals 20 "
         "--eval-episodes 10 --workers 2 --resume", None)],
}
#: the RL-defaults sweeps committed (their runs lie directly under the folder)
COMMITTED_DEFAULTS = {"rl_defaults_100k_lr_scale": (
    "--timesteps 100000 --configs lr-scale-2 --seeds 0 1 2 3 4 5 6 7 8 9")}


def _docs() -> str:
    text = (ROOT / "docs" / "rl_benchmarks.md").read_text().replace("\\\n", " ")
    return " ".join(text.split())


def _tiny_run(seed: int = 0, env: str = "CartPole-v1"):
    from sparse_agents.experiments.rl_run import RLRun

    return RLRun(algo="dqn", env=env, updater="dense", seed=seed, timesteps=1000,
                 overrides={"net_arch": [8, 8], "learning_starts": 100}, eval_freq=500,
                 eval_episodes=1)


def test_every_committed_sweep_is_found_done_by_its_documented_command(capsys):
    """The dry run of each command that made a committed sweep (``--dry-run``: the checks
    of ``--resume``, nothing trained or written) finds every committed run finished and
    made with the command's settings; the runs the command adds beyond them are the ones
    the docs say were not run."""
    from sparse_agents.experiments.bench import rl as bench_rl
    from sparse_agents.experiments.bench import rl_defaults, rl_sweep

    docs = _docs()
    summary = {}
    for folder, commands in COMMITTED.items():
        root = ROOT / "results" / folder
        committed = {p.parent.name for p in (root / "runs").glob("*/summary.json")}
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        covered, done_ids = set(), set()
        for command, fragment in commands:
            assert " ".join((fragment or command).split()) in docs, (folder, fragment)
            argv = [*command.split(), "--out", str(root)]
            args = bench_rl.build_parser().parse_args(argv)
            jobs = rl_sweep.make_jobs(args, list(args.tasks))
            done = {j.job_id for j in rl_sweep.finished(jobs, root)}
            ids = {j.job_id for j in jobs}
            assert done == ids & committed, folder  # a finished run is a committed one
            covered |= ids
            done_ids |= done
            assert bench_rl.main([*argv, "--dry-run"]) == 0  # no run made with other settings
            line = capsys.readouterr().out.strip().splitlines()[-1]
            assert line.startswith(f"{len(done)} of {len(jobs)} runs finished"), line
        assert committed <= covered and committed == done_ids, folder
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # wrote nothing
        summary[folder] = (len(done_ids), len(covered))
    assert summary["rl_graesser_ppo_hc_defaults"] == (60, 80)  # rigl-<variant>: not run
    assert summary["rl_minatar_si_equal32"] == (21, 21)
    for folder, command in COMMITTED_DEFAULTS.items():
        root = ROOT / "results" / folder
        assert " ".join(command.split()) in docs
        argv = [*command.split(), "--out", str(root)]
        assert rl_defaults.main([*argv, "--dry-run"]) == 0
        n = len(list(root.glob("*/summary.json")))
        assert capsys.readouterr().out.startswith(f"{n} of {n} runs finished"), folder


def test_sparsity_curve_and_width_rows_name_their_sparsity_and_width():
    from sparse_agents.experiments.bench import rl as bench_rl
    from sparse_agents.experiments.bench import rl_sweep

    def jobs(*extra):
        argv = ["--tasks", "sac:Pendulum-v1:1000", "--updaters", "dense", "srigl",
                "--seeds", "1", *extra]
        return rl_sweep.make_jobs(bench_rl.build_parser().parse_args(argv),
                                  ["sac:Pendulum-v1:1000"])

    curve = jobs("--sparsities", "0.5", "0.95", "--distributions", "erk", "uniform")
    assert [(j.method, j.run.sparsity, j.run.distribution) for j in curve] == [
        ("dense", 0.9, "erk"), ("srigl-s50", 0.5, "erk"), ("srigl-s95", 0.95, "erk"),
        ("srigl-uniform-s50", 0.5, "uniform"), ("srigl-uniform-s95", 0.95, "uniform")]
    assert [j.method for j in jobs("--sparsity", "0.8")] == ["dense", "srigl"]  # unchanged
    wide = jobs("--widths", "16", "64")
    assert [(j.method, j.run.overrides.get("net_arch")) for j in wide] == [
        ("dense-w16", [16, 16]), ("srigl-w16", [16, 16]),
        ("dense-w64", [64, 64]), ("srigl-w64", [64, 64])]
    assert wide[3].run.sparsity == 0.9
    for bad, match in [(["--sparsities", "1.0"], "--sparsities"),
                       (["--widths", "16", "16"], "--widths"),
                       (["--widths", "16", "--equal-params", "8"], "--widths")]:
        with pytest.raises(ValueError, match=match):
            jobs(*bad)


def test_a_sweep_expands_to_typed_jobs_with_stable_ids(tmp_path):
    from sparse_agents.experiments.bench import rl as bench_rl
    from sparse_agents.experiments.bench import rl_sweep
    from sparse_agents.experiments.rl_run import RLRun
    from sparse_agents.study.rl_runs import RLRunJob

    argv = ["--tasks", "ppo:CartPole-v1:1000", "--updaters", "dense", "rigl", "--seeds", "2",
            "--distributions", "erk", "uniform", "--hp", "net_arch=[8,8]",
            "--variant", "dt50", "delta_t=50"]
    jobs = rl_sweep.make_jobs(bench_rl.build_parser().parse_args(argv), ["ppo:CartPole-v1:1000"])
    assert all(isinstance(j, RLRunJob) and isinstance(j.run, RLRun) for j in jobs)
    assert [j.job_id for j in jobs[:5]] == [  # the folder names of the committed sweeps
        "ppo-CartPole-v1-dense-s0", "ppo-CartPole-v1-rigl-s0", "ppo-CartPole-v1-rigl-dt50-s0",
        "ppo-CartPole-v1-rigl-uniform-s0", "ppo-CartPole-v1-rigl-uniform-dt50-s0"]
    assert len({j.job_id for j in jobs}) == len(jobs) == 10
    again = rl_sweep.make_jobs(bench_rl.build_parser().parse_args(argv), ["ppo:CartPole-v1:1000"])
    assert again == jobs and [j.config() for j in again] == [j.config() for j in jobs]
    run = jobs[2].run  # typed: the settings, not an argument list
    assert (run.updater, run.distribution, run.sparsity, run.seed) == ("rigl", "erk", 0.9, 0)
    assert run.overrides == {"net_arch": [8, 8], "delta_t": 50} and run.eval_freq == 200
    # options are checked once, when the sweep expands, before anything trains
    for bad, match in [(["--sparse-hp", "drop_fraction=2"], "drop_fraction"),
                       (["--hp", "delta_t=5"], "given with --updater dense"),
                       (["--updaters", "rigl", "--hp", "gamma_sal=7"], "gamma_sal")]:
        with pytest.raises(ValueError, match=match):
            rl_sweep.make_jobs(bench_rl.build_parser().parse_args([*argv, *bad]),
                               ["ppo:CartPole-v1:1000"])
    with pytest.raises(ValueError, match="folder"):
        RLRunJob(run, "/abs/path")


def test_pool_of_two_workers_trains_rl_runs_and_a_resume_skips_the_finished(tmp_path):
    from sparse_agents.study.rl_runs import RLRunJob
    from sparse_agents.study.runner import pending, run_study

    good = [RLRunJob(_tiny_run(seed), f"runs/dense-s{seed}", task="t", method="dense")
            for seed in (0, 1)]
    bad = RLRunJob(_tiny_run(env="NoSuchEnv-v0"), "runs/nosuchenv-s0", task="t", method="x")
    jobs = [*good, bad]
    records = run_study(jobs, tmp_path, workers=2, show_progress=False)
    assert [r["status"] for r in records] == ["ok", "ok", "failed"]
    assert "NoSuchEnv" in records[2]["error"]  # the traceback, in the run's failed.json
    assert (bad.path(tmp_path) / "failed.json").exists()
    for job, record in zip(good, records[:2], strict=True):
        summary = json.loads((job.path(tmp_path) / "summary.json").read_text())
        assert summary["final_mean"] == record["metrics"]["final_mean"]
        assert summary["seed"] == job.seed
        assert summary["method"] == "dense" and summary["flops_forward"] > 0
    assert json.loads((tmp_path / "study.json").read_text())["jobs"][2]["job_id"] == \
        "nosuchenv-s0"
    stamps = [(j.path(tmp_path) / "model.zip").stat().st_mtime_ns for j in good]
    assert pending(jobs, tmp_path) == [bad]  # finished runs are skipped, failures retried
    (good[1].path(tmp_path) / "summary.json").unlink()  # a run that did not finish
    records = run_study(jobs, tmp_path, workers=2, show_progress=False)
    assert [r["status"] for r in records] == ["ok", "ok", "failed"]
    after = [(j.path(tmp_path) / "model.zip").stat().st_mtime_ns for j in good]
    assert after[0] == stamps[0] and after[1] != stamps[1]  # only the unfinished one trained


def test_rl_stream_bench_runs_study_jobs_and_resumes(tmp_path, capsys):
    from sparse_agents.experiments.bench import rl_stream

    argv = ["--stream", "cartpole-physics", "--seeds", "0", "--steps-per-task", "256",
            "--eval-episodes", "1", "--jobs", "2", "--out", str(tmp_path)]
    runs = rl_stream.run(argv)
    assert [(r["method"], r["seed"], len(r["final_returns"])) for r in runs] == [
        ("masks", 0, 4), ("dense", 0, 4)]
    assert runs[0]["forgetting"] == 0.0  # per-task masks: earlier tasks frozen
    records = sorted((tmp_path / "runs").glob("*.json"))
    assert len(records) == 2 and "| dense, fine-tuned |" in (tmp_path / "table.md").read_text()
    stamps = [p.stat().st_mtime_ns for p in records]
    again = rl_stream.run([*argv, "--resume"])  # nothing retrained
    assert [p.stat().st_mtime_ns for p in records] == stamps
    assert [r["final_returns"] for r in again] == [r["final_returns"] for r in runs]
    records[1].unlink()  # a sweep under way: --report tabulates the finished run only
    table = rl_stream.run([*argv, "--report"])
    assert [r["method"] for r in table] == ["masks"] and not records[1].exists()


def test_continual_world_metrics_against_the_from_scratch_agent():
    from sparse_agents.experiments.bench import rl_stream

    # success rates: (AUC - ref) / (1 - ref): (0.6 - 0.2) / 0.8 = 0.5 and (0.5 - 0.5) / 0.5
    assert rl_stream.forward_transfer([0.6, 0.5], [0.2, 0.5], success=True) == pytest.approx(0.25)
    # returns: divided by |ref|: (150 - 100) / 100
    assert rl_stream.forward_transfer([150.0], [100.0], success=False) == 0.5
    # plasticity: the second half's values right after training over the reference's
    assert rl_stream.plasticity([1.0, 1.0, 40.0, 90.0], [9.0, 9.0, 80.0, 100.0]) == \
        pytest.approx((0.5 + 0.9) / 2)


def test_plasticity_is_lost_where_every_later_window_of_tasks_stays_below_the_share():
    from sparse_agents.experiments.bench.rl_stream import plasticity_lost_at

    # windows of 4: [1, 0.875, 0.75, 0.625, 0.5, 0.5]: below 0.9 from task 1 on
    assert plasticity_lost_at([[1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5]]) == 1
    # a dip that recovers is not a loss; the mean over seeds decides
    assert plasticity_lost_at([[1, 0.2, 0.2, 1, 1, 1, 1]]) is None
    assert plasticity_lost_at([[1, 1, 1, 1, 0.4], [1, 1, 1, 1, 1.0]]) is None
    assert plasticity_lost_at([[1, 1, 1, 1, 0.4], [1, 1, 1, 0.6, 0.6]]) == 1
    assert plasticity_lost_at([[0.9] * 4]) is None  # 0.9 kept is not lost
    assert plasticity_lost_at([[0.5] * 3]) is None  # shorter than a window


def test_rl_stream_bench_reports_baselines_transfer_and_differences(tmp_path):
    from sparse_agents.experiments.bench import rl_stream

    argv = ["--stream", "cartpole-permuted", "--n-tasks", "2", "--seeds", "0", "1",
            "--steps-per-task", "256", "--eval-episodes", "1", "--curve-evals", "2",
            "--methods", "masks", "l2", "reset", "reset-sparse", "--algo-kwargs",
            '{"n_envs": 2, "n_steps": 64}', "--out", str(tmp_path)]
    runs = rl_stream.run(argv)
    assert [r["method"] for r in runs] == ["masks", "l2", "reset", "reset-sparse"] * 2
    reset = [r for r in runs if r["method"] == "reset"]
    assert all(r["forward_transfer"] == 0.0 and r["plasticity"] == 1.0 for r in reset)
    assert all(math.isfinite(r["forward_transfer"]) for r in runs)
    text = (tmp_path / "table.md").read_text()
    assert "| dense, fine-tuned with L2 |" in text and "forward transfer" in text
    assert "| masks − reset |" in text  # differences with CIs (no dense run: vs reset)
    plasticity_table = text.split("Plasticity (value right after training")[1]
    assert "| l2 − reset |" in plasticity_table
    # a sparse agent's plasticity also against its own architecture from scratch
    assert "| masks − reset-sparse |" in plasticity_table
    assert "| reset-sparse − reset |" in text and "| reset − reset-sparse |" not in text
    assert (tmp_path / "plasticity.png").stat().st_size > 0


def test_every_evidence_sweep_expands_to_checked_jobs_on_the_test_seeds():
    from sparse_agents.experiments.bench import rl as bench_rl
    from sparse_agents.experiments.bench import rl_sweep
    from sparse_agents.experiments.bench.suite import SWEEPS

    for name, sweep in SWEEPS.items():
        args = bench_rl.build_parser().parse_args(sweep.argv("/tmp/unused", 1))
        jobs = rl_sweep.make_jobs(args, args.tasks)
        assert jobs, name
        assert {j.run.seed for j in jobs} <= set(range(10)), name  # test seeds only
        assert all(j.run.window_evals == 5 and j.run.eval_episodes == 10 for j in jobs)
        assert all(j.run.sparse_settings == "defaults" for j in jobs if j.run.sparse)
    widths = {j.method for j in rl_sweep.make_jobs(
        *(lambda a: (a, a.tasks))(bench_rl.build_parser().parse_args(
            SWEEPS["width-sac-hc"].argv("/tmp/unused", 1))))}
    assert {"dense-w2048", "rigl-s95-w2048", "srigl-s90-w256"} <= widths


def test_committed_evidence_runs_are_found_done_by_their_suite_sweep(capsys):
    """Every run committed under results/evidence/<sweep> was made with the settings of
    the suite's sweep (a dry run of it finds them all finished, refuses none)."""
    from sparse_agents.experiments.bench import rl as bench_rl
    from sparse_agents.experiments.bench.suite import SWEEPS

    for sweep in SWEEPS.values():
        root = ROOT / "results" / "evidence" / sweep.folder
        committed = list((root / "runs").glob("*/summary.json"))
        if not committed:
            continue
        argv = sweep.argv(str(ROOT / "results" / "evidence"), 1)
        assert bench_rl.main([*argv, "--dry-run"]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith(f"{len(committed)} of "), line
