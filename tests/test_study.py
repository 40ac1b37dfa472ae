"""Study harness: grid expansion, job ids, resumability after SIGKILL, failures, Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sparse_agents.distributions import METHODS
from sparse_agents.experiments.rl_stream import checkpointed_tasks
from sparse_agents.study import aggregate, expand_grid, load_results, run_study
from sparse_agents.study.cli import build_parser, main
from sparse_agents.study.grid import Job, load_grid_file
from sparse_agents.study.report import best_updater, compare, seed_verdict, summary_text
from sparse_agents.study.runner import execute, store
from sparse_agents.study.store import write_json_atomic
from sparse_agents.study.workloads import run_cl, run_rl_stream
from sparse_agents.updaters import updater_names

ROOT = Path(__file__).resolve().parents[1]
TINY = {"epochs": 1, "hidden": 32}


def tiny_grid(**over):
    spec = dict(workloads=["digits"], distributions=["erk", "uniform"], sparsities=[0.5, 0.9],
                updaters=["srigl"], seeds=2, **TINY)
    spec.update(over)
    return expand_grid(spec)


def test_grid_expansion_and_stable_ids():
    jobs = tiny_grid()
    assert len(jobs) == 2 * 2 * 2
    ids = [j.job_id for j in jobs]
    assert len(set(ids)) == len(ids)
    assert ids == [j.job_id for j in tiny_grid()]  # stable across calls
    assert tiny_grid(epochs=2)[0].job_id != jobs[0].job_id  # settings are part of the id
    assert jobs[0].job_id.startswith("digits__erk__srigl__s0.5__seed0__")
    dense = expand_grid(dict(workloads=["digits"], updaters=["dense", "set"], seeds=[3],
                             sparsities=[0.5, 0.9], distributions=["erk", "uniform"]))
    # One dense job per workload and seed, whatever the other axes.
    assert sum(j.updater == "dense" for j in dense) == 1
    assert len(dense) == 1 + 4


@pytest.mark.parametrize("spec, match", [
    (dict(sparsities=[1.0]), "sparsity"),
    (dict(distributions=["gauss"]), "distribution"),
    (dict(updaters=["magic"]), "updater"),
    (dict(workloads=["nope"]), "workload"),
    (dict(seeds=0), "seeds"),
])
def test_grid_bad_input(spec, match):
    with pytest.raises(ValueError, match=match):
        expand_grid(spec)


def test_grid_files(tmp_path):
    (tmp_path / "g.yaml").write_text("workloads: [digits]\nsparsities: [0.5]\nseeds: 2\n")
    (tmp_path / "g.toml").write_text('workloads = ["digits"]\nsparsities = [0.5]\nseeds = 2\n')
    a = expand_grid(load_grid_file(tmp_path / "g.yaml"))
    b = expand_grid(load_grid_file(tmp_path / "g.toml"))
    assert [j.job_id for j in a] == [j.job_id for j in b]
    (tmp_path / "g.json").write_text("{}")
    with pytest.raises(ValueError, match="yaml"):
        load_grid_file(tmp_path / "g.json")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object.__new__(type("X", (), {"__str__": None}))})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failing_job_is_recorded_and_others_finish(tmp_path):
    jobs = tiny_grid(sparsities=[0.5]) + expand_grid(
        dict(workloads=["digits"], sparsities=[0.5], seeds=[0], distributions=["erk"],
             hidden=-1, epochs=1))
    records = run_study(jobs, tmp_path, workers=2, show_progress=False)
    status = {r["job_id"]: r["status"] for r in records}
    assert status[jobs[-1].job_id] == "failed"
    assert "hidden" in records[-1]["error"] or "negative" in records[-1]["error"].lower()
    assert all(status[j.job_id] == "ok" for j in jobs[:-1])
    ok = records[0]
    assert ok["versions"]["torch"] and ok["wall_time"] > 0
    assert 0 <= ok["metrics"]["metric"] <= 1 and ok["masks"]["density"] > 0
    # A re-run skips the finished jobs and retries only the failed one.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    run_study(jobs, tmp_path, workers=2, show_progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {f"{jobs[-1].job_id}.json"}
    summary = summary_text(compare(load_results(tmp_path)),
                           load_results(tmp_path).query("status != 'ok'"))
    assert "failed" in summary


def _cli(out: Path, workers: int = 2) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "init_study.py"), "--workloads", "digits",
            "--sparsities", "0.5", "0.9", "--updaters", "srigl", "--seeds", "1",
            "--set", "epochs=1", "hidden=32", "--workers", str(workers), "--quiet",
            "--out", str(out)]


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(_cli(killed, workers=1), start_new_session=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    runs = killed / "runs"
    while time.time() < deadline:
        done = list(runs.glob("*.json")) if runs.exists() else []
        if done:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(runs.glob("*.json")))
    assert 1 <= n_before < 4, "the study must be killed in the middle"
    subprocess.run(_cli(killed), check=True, env=env, capture_output=True)
    subprocess.run(_cli(full), check=True, env=env, capture_output=True)
    a = pd.read_csv(full / "summary_table.csv")
    b = pd.read_csv(killed / "summary_table.csv")
    pd.testing.assert_frame_equal(a, b)
    assert (killed / "metric_vs_sparsity.png").exists()
    assert (killed / "erk_minus_uniform.png").exists()
    assert not list(runs.glob("*.tmp"))


def test_report_aggregates_over_seeds(tmp_path):
    main(["--workloads", "digits", "--sparsities", "0.5", "--updaters", "set", "--seeds", "2",
          "--set", "epochs=1", "hidden=16", "--workers", "2", "--quiet", "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "summary_table.csv")
    assert set(table["n"]) == {2}
    df = load_results(tmp_path)
    for dist in ("erk", "uniform"):
        vals = df[df["distribution"] == dist]["metric"]
        row = table[table["distribution"] == dist].iloc[0]
        assert row["mean"] == pytest.approx(vals.mean())
        assert row["std"] == pytest.approx(vals.std(ddof=1))
    assert len(aggregate(df)) == 2
    assert "Study summary" in (tmp_path / "summary.md").read_text()
    # another metric of the same runs, reported into its own folder
    main(["--out", str(tmp_path), "--report-only", "--metric", "test_accuracy", "--quiet"])
    other = pd.read_csv(tmp_path / "report-test_accuracy" / "summary_table.csv")
    assert other["mean"].tolist() == pytest.approx(table["mean"].tolist())
    with pytest.raises(ValueError, match="metric must be"):
        main(["--out", str(tmp_path), "--report-only", "--metric", "bogus", "--quiet"])


def test_ray_backend_matches_process_pool(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install "
                                            "'sparse-agents[ray]')")
    jobs = tiny_grid(sparsities=[0.9], seeds=[0])
    try:
        via_ray = run_study(jobs, tmp_path / "ray", workers=2, backend="ray",
                            show_progress=False)
    finally:
        ray.shutdown()
    via_pool = run_study(jobs, tmp_path / "pool", workers=2, show_progress=False)
    for a, b in zip(via_ray, via_pool, strict=True):
        assert a["status"] == b["status"] == "ok"
        assert a["metrics"]["metric"] == b["metrics"]["metric"]
        assert a["masks"] == b["masks"]


@pytest.mark.parametrize("diffs,sig,expected", [
    ((+1, +1, -1), (True, True, True), "reproduced"),
    ((+1, +1, -1), (True, False, False), "same direction everywhere, outside the CI only at 0.5"),
    ((+1, +1, -1), (False, False, False), "not established"),
    ((+1, -1, -1), (False, False, False), "partly: only the high-sparsity side"),
    ((+1, +1, +1), (False, False, False), "partly: only the low-sparsity side"),
    ((-1, +1, +1), (False, False, False), "not reproduced"),
    ((-1, +1, -1), (True, False, False), "contradicted"),
])
def test_seed_verdict_names_direction_and_significance(diffs, sig, expected):
    rows = pd.DataFrame({"sparsity": [0.5, 0.8, 0.95], "diff": diffs, "significant": sig})
    assert expected in seed_verdict(rows.iloc[:2], rows.iloc[2:])


def test_paired_ci_uses_per_seed_differences():
    base = [0.70, 0.80, 0.90, 0.60]  # large spread between seeds, constant gain
    rows = [{"workload": "w", "updater": "set", "sparsity": 0.9, "seed": i, "status": "ok",
             "distribution": d, "metric": b + (0.01 if d == "erk" else 0.0)}
            for i, b in enumerate(base) for d in ("erk", "uniform")]
    paired = compare(pd.DataFrame(rows)).iloc[0]
    assert paired["test"] == "paired" and paired["diff"] == pytest.approx(0.01)
    assert paired["ci95"] == pytest.approx(0.0, abs=1e-9) and paired["significant"]
    unpaired = compare(pd.DataFrame(rows[:-1])).iloc[0]  # seed 3 lacks uniform: Welch
    assert unpaired["test"] == "welch" and not unpaired["significant"]


def test_cl_workload_sparsity_scope():
    settings = {"epochs": 1, "hidden": 16, "n_tasks": 2, "sparsity_scope": "network"}
    out = run_cl(Job("cl:split-digits", "uniform", 0.6, "set", 0, settings))
    assert out["task_sparsity"] == pytest.approx(0.8)  # each of 2 tasks owns 0.2
    assert 0.0 <= out["metric"] <= 1.0 and out["metric_name"] == "avg_accuracy"
    assert out["forgetting"] == 0.0  # per-task masks
    with pytest.raises(ValueError, match="sparsity_scope"):
        run_cl(Job("cl:split-digits", "uniform", 0.6, "set", 0, {"sparsity_scope": "layer"}))


def test_cl_workload_task_count_after_the_stream_name():
    settings = {"epochs": 1, "hidden": 16, "n_tasks": 5}  # the workload's count wins
    out = run_cl(Job("cl:permuted-digits:3", "uniform", 0.8, "set", 0, settings))
    assert out["n_tasks"] == 3
    jobs = expand_grid({"workloads": ["cl:permuted-digits:3", "cl:permuted-digits"],
                        "updaters": ["set"], "sparsities": [0.8], "seeds": 1})
    assert len({j.job_id for j in jobs}) == 4  # two task counts x two distributions
    for bad in ("cl:permuted-digits:1", "cl:permuted-digits:ten"):
        with pytest.raises(ValueError, match="task count after the stream"):
            expand_grid({"workloads": [bad]})


def test_best_updater_names_winner_and_lead():
    gain = {"set": 0.0, "rigl": 0.02, "srigl": 0.01, "dense": 0.5}
    rows = [{"workload": "w", "distribution": "erk", "sparsity": 0.9, "seed": i,
             "status": "ok", "updater": u, "metric": b + g}
            for i, b in enumerate([0.6, 0.7, 0.8]) for u, g in gain.items()]
    best = best_updater(pd.DataFrame(rows)).iloc[0]
    assert (best["best"], best["runner_up"]) == ("rigl", "srigl")  # dense is not a rule
    assert best["lead"] == pytest.approx(0.01) and best["significant"]


def test_rl_stream_workload():
    settings = {"steps_per_task": 128, "n_tasks": 2, "eval_episodes": 1}
    out = run_rl_stream(Job("rlstream:cartpole-physics", "erk", 0.8, "set", 0, settings))
    assert out["metric_name"] == "average_final_return" and out["metric"] > 0
    assert {"final_return_task0", "final_return_task1", "forgetting"} <= set(out)
    assert out["forgetting"] == pytest.approx(0.0, abs=1e-9)  # per-task masks
    assert all(isinstance(v, float) for v in out["masks"].values())


def test_a_stream_job_checkpoints_in_its_scratch_folder_which_goes_once_it_is_ok(tmp_path):
    settings = {"steps_per_task": 64, "n_tasks": 2, "eval_episodes": 1,
                "algo_kwargs": {"n_envs": 2, "n_steps": 32}}
    job = Job("rlstream:cartpole-permuted", "erk", 0.8, "srigl", 0, settings)
    record = execute(job, tmp_path)
    assert record["status"] == "ok", record["error"]
    assert checkpointed_tasks(job.scratch(tmp_path)) == 2  # a killed job resumes from it
    store(job, tmp_path, record)
    assert job.read_record(tmp_path)["status"] == "ok"
    assert not job.scratch(tmp_path).exists()


def test_cli_choices_come_from_the_registries():
    actions = {a.dest: a for a in build_parser()._actions}
    assert tuple(actions["updaters"].choices) == updater_names(dense=True)
    assert tuple(actions["distributions"].choices) == tuple(METHODS)
