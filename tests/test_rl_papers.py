"""Paper hyperparameter tables (Graesser et al.'s DQN CartPole), their score (the mean of
the last 10% of evaluations) and the RL benchmark's methods (updater x distribution)."""

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from sparse_agents.experiments.bench import rl as bench_rl
from sparse_agents.experiments.bench import rl_report, rl_sweep, rl_timing
from sparse_agents.experiments.hyperparams import GRAESSER, hyperparameters
from sparse_agents.experiments.rl import last_fraction_score, make_agent


def test_last_fraction_score_averages_the_last_tenth_of_evaluations():
    rows = [(t, float(t), 0.0) for t in range(21)]  # 21 evaluations: the last 2 count
    assert last_fraction_score(rows) == pytest.approx(19.5)
    assert last_fraction_score(rows[:5]) == 4.0  # fewer than 10: the last one
    assert last_fraction_score(rows, fraction=1.0) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="fraction"):
        last_fraction_score(rows, fraction=0.0)


def test_graesser_dqn_cartpole_is_the_papers_configuration():
    model, _ = make_agent("dqn", "CartPole-v1", "rigl", 0.9, hyperparams="graesser")
    assert model.learning_rate == 1e-3 and model.batch_size == 128
    assert model.target_update_interval == 100 and model.train_freq.frequency == 1
    assert model.exploration_initial_eps == model.exploration_final_eps == 0.01
    assert model.policy.net_arch == [512, 512]
    assert model.policy.optimizer.defaults["weight_decay"] == 2e-6 and model.max_grad_norm > 1e30
    opts = model.policy.sparse_options
    assert (opts["delta_t"], opts["drop_fraction"], opts["t_end_fraction"]) == (1000, 0.5, 0.75)
    assert opts["schedule"] == "cosine" and opts["distribution"] == "erk"


def test_graesser_ppo_halfcheetah_updates_every_250_training_steps():
    from stable_baselines3.common.vec_env import VecNormalize

    model, _ = make_agent("ppo", "HalfCheetah-v5", "set", 0.9, hyperparams="graesser")
    assert (model.n_steps, model.batch_size, model.n_epochs) == (2048, 64, 10)
    assert isinstance(model.get_env(), VecNormalize) and model.max_grad_norm == 0.5
    opts = model.policy.sparse_options
    assert (opts["delta_t"], opts["drop_fraction"]) == (250, 0.3)
    assert opts["t_end_fraction"] == pytest.approx(0.767, abs=1e-3)


def decays(model) -> list[float]:
    """Adam's weight decay in every parameter group (SAC: actor and critic optimizers)."""
    policy = model.policy
    opts = [policy.actor.optimizer, policy.critic.optimizer] if hasattr(policy, "actor") else [
        policy.optimizer]
    return [g["weight_decay"] for opt in opts for g in opt.param_groups]


@pytest.mark.parametrize("algo, dense_l2, sparse_l2", [("ppo", 1e-6, 1e-4), ("sac", 1e-4, 1e-6)])
def test_graesser_l2_is_the_sparse_configs_in_sparse_runs_and_the_dense_configs_in_dense(
        algo, dense_l2, sparse_l2):
    # ppo/sac_mujoco_{dense,sparse}_config.gin: train_eval.weight_decay; an L2 loss c*|w|^2
    # is Adam's weight_decay 2c
    dense, _ = make_agent(algo, "HalfCheetah-v5", "dense", hyperparams="graesser")
    sparse, _ = make_agent(algo, "HalfCheetah-v5", "rigl", 0.9, hyperparams="graesser")
    assert decays(dense) == pytest.approx([2 * dense_l2] * len(decays(dense)))
    assert decays(sparse) == pytest.approx([2 * sparse_l2] * len(decays(sparse)))
    assert hyperparameters(algo, "HalfCheetah-v5", "graesser", sparse=False).keys().isdisjoint(
        {"delta_t", "sparse_init", "sparse_runs"})


SHIPPED_KEYS = ("delta_t", "drop_fraction", "t_end_fraction", "schedule", "sparse_init",
                "dense_input")


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_sparse_settings_defaults_give_a_sparse_run_the_dense_config_and_the_shipped_defaults(
        algo):
    from sparse_agents.sb3 import defaults_for

    paper, _ = make_agent(algo, "HalfCheetah-v5", "srigl", hyperparams="graesser")
    shipped, _ = make_agent(algo, "HalfCheetah-v5", "srigl", hyperparams="graesser",
                            sparse_settings="defaults")
    dense, _ = make_agent(algo, "HalfCheetah-v5", "dense", hyperparams="graesser")
    family = defaults_for(type(shipped.policy))
    assert decays(shipped) == decays(dense) != decays(paper)  # the dense config's L2
    assert [shipped.policy.sparse_options[k] for k in SHIPPED_KEYS] == [
        family[k] for k in SHIPPED_KEYS]
    assert [paper.policy.sparse_options[k] for k in SHIPPED_KEYS] != [
        family[k] for k in SHIPPED_KEYS]
    assert shipped.policy.net_arch == paper.policy.net_arch  # the task's network stays
    with pytest.raises(ValueError, match="sparse_settings must be one of"):
        make_agent(algo, "HalfCheetah-v5", "srigl", hyperparams="graesser",
                   sparse_settings="paper")


def test_bench_sparse_settings_reach_the_sparse_runs_and_resume_checks_them(tmp_path):
    argv = ["--hyperparams", "graesser", "--tasks", "dqn:CartPole-v1:1000", "--updaters",
            "dense", "rigl", "--seeds", "1", "--workers", "1", "--evals", "2",
            "--eval-episodes", "1", "--hp", "net_arch=[8,8]", "--hp", "learning_starts=100",
            "--out", str(tmp_path), "--resume", "--sparse-settings", "defaults"]
    args = bench_rl.build_parser().parse_args(argv)
    runs = {j.method: j.run for j in rl_sweep.make_jobs(args, args.tasks)}
    assert runs["dense"].sparse_settings == "table"  # dense runs are shared by both kinds
    assert runs["rigl"].sparse_settings == "defaults"
    assert bench_rl.main(argv) == 0
    run = tmp_path / "runs" / "dqn-CartPole-v1-rigl-s0"
    options = json.loads((run / "config.json").read_text())["sparse_options"]
    assert (options["delta_t"], options["t_end_fraction"]) == ("1000", "0.8")  # not 0.75
    assert "`--sparse-settings defaults`" in (tmp_path / "summary.md").read_text()
    with pytest.raises(ValueError, match="dqn-CartPole-v1-rigl-s0"):
        bench_rl.main(argv[:-2])  # the paper's sparse config: refused, not mixed in
    assert bench_rl.main(argv) == 0


def test_dense_agent_drops_the_tables_sparse_schedule_but_overrides_still_fail():
    model, _ = make_agent("dqn", "CartPole-v1", "dense", hyperparams="graesser")
    assert model.policy.net_arch == [512, 512] and not hasattr(model.policy, "sparse_options")
    with pytest.raises(ValueError, match="sparse options"):
        make_agent("dqn", "CartPole-v1", "dense", overrides={"delta_t": 10})


def test_explicit_sparse_options_beat_the_tables_schedule():
    model, _ = make_agent("dqn", "CartPole-v1", "set", 0.9, sparse_options={"delta_t": 250},
                          hyperparams="graesser")
    assert model.policy.sparse_options["delta_t"] == 250


def test_unknown_source_or_task_names_the_parameter():
    with pytest.raises(ValueError, match="hyperparams must be one of"):
        hyperparameters("dqn", "CartPole-v1", "nope")
    with pytest.raises(ValueError, match="no entry for sac on Pendulum-v1"):
        hyperparameters("sac", "Pendulum-v1", "graesser")
    assert hyperparameters("sac", "Pendulum-v1") == {"learning_rate": 1e-3}  # zoo
    assert ("ppo", "HalfCheetah-v5") in GRAESSER


def test_bench_rows_are_methods_dense_once_and_score_is_last_tenth(tmp_path):
    args = bench_rl.build_parser().parse_args(
        ["--updaters", "dense", "set", "--distributions", "erk", "uniform"])
    assert rl_sweep.methods(args) == [("dense", "erk"), ("set", "erk"), ("set", "uniform")]
    jobs = rl_sweep.make_jobs(args, ["dqn:CartPole-v1:1000"])
    assert [j.method for j in jobs[:3]] == ["dense", "set", "set-uniform"]
    assert jobs[2].job_id == "dqn-CartPole-v1-set-uniform-s0"
    assert jobs[2].path(tmp_path) == tmp_path / "runs" / "dqn-CartPole-v1-set-uniform-s0"
    rows = [dict(task="t", method=m, seed=s, final_mean=f, last10_mean=l, best_mean=f,
                 train_s=1.0, density=1.0, updates=0)
            for m, s, f, l in [("dense", 0, 100, 200), ("dense", 1, 100, 100),
                               ("set", 0, 50, 75), ("set", 1, 50, 75)]]
    table = {r["method"]: r for r in rl_report.summarise(rows, ["dense", "set"])}
    assert table["dense"]["score"] == 150 and table["set"]["score"] == 75
    assert table["set"]["vs_dense"] == pytest.approx(-0.5)
    assert table["set"]["final_return"] == 50
    for r in rows:
        r["method"] = r["method"].replace("dense", "dense-w8")
    ref = {r["method"]: r for r in rl_report.summarise(rows, ["dense-w8", "set"], "dense-w8")}
    assert ref["set"]["vs_dense"] == pytest.approx(-0.5)  # against the base width's dense


def test_first_seed_trains_a_share_of_the_sweep_with_the_same_run_folders():
    parse = bench_rl.build_parser().parse_args
    whole = rl_sweep.make_jobs(parse(["--updaters", "dense", "--seeds", "4"]),
                               ["dqn:CartPole-v1:1000"])
    share = rl_sweep.make_jobs(parse(["--updaters", "dense", "--seeds", "4", "--first-seed",
                                      "2"]), ["dqn:CartPole-v1:1000"])
    assert [j.seed for j in share] == [2, 3] and share == whole[2:]
    with pytest.raises(ValueError, match="--first-seed must be in \\[0, 3\\]"):
        rl_sweep.make_jobs(parse(["--seeds", "4", "--first-seed", "4"]), ["dqn:CartPole-v1:1000"])


def test_score_differences_compare_each_row_to_dense_and_dynamic_updaters_to_static():
    scores = {"dense": [100, 110, 120], "static": [50, 55, 60], "rigl": [90, 100, 110],
              "rigl-uniform": [10, 20, 30]}
    kinds = {"dense": ("dense", "erk", 0.0), "static": ("static", "erk", 0.9),
             "rigl": ("rigl", "erk", 0.9), "rigl-uniform": ("rigl", "uniform", 0.9)}
    rows = [dict(task="t", method=m, seed=i, final_mean=v, last10_mean=v)
            for m, vs in scores.items() for i, v in enumerate(vs)]
    table = {(c["method"], c["baseline"]): c for c in rl_report.contrasts(rows, kinds)}
    # static-uniform did not run: rigl-uniform is compared to dense only
    assert set(table) == {("static", "dense"), ("rigl", "dense"), ("rigl", "static"),
                          ("rigl-uniform", "dense")}
    lead = table[("rigl", "static")]
    ci = stats.ttest_ind(scores["rigl"], scores["static"], equal_var=False
                         ).confidence_interval(0.95)
    assert lead["diff"] == 45 and lead["excludes_zero"]
    assert lead["diff"] - lead["ci95"] == pytest.approx(ci.low)
    assert not table[("rigl", "dense")]["excludes_zero"]  # -10, inside the spread
    md = rl_report.contrast_markdown(list(table.values()))
    assert "| t | rigl − static | 3/3 | +45.0 | [" in md
    one = rl_report.contrasts(rows[:1] + rows[3:4], kinds)
    assert "| – | no |" in rl_report.contrast_markdown(one)  # one seed a side: no interval


def test_bench_run_writes_the_score_and_resumes(tmp_path):
    argv = ["--hyperparams", "graesser", "--tasks", "dqn:CartPole-v1:1000", "--updaters",
            "dense", "rigl", "--distributions", "uniform", "--seeds", "1", "--workers", "1",
            "--evals", "10", "--eval-episodes", "1", "--hp", "net_arch=[8,8]",
            "--hp", "learning_starts=100", "--out", str(tmp_path), "--resume"]
    assert bench_rl.main(argv) == 0
    run = tmp_path / "runs" / "dqn-CartPole-v1-rigl-uniform-s0"
    summary = json.loads((run / "summary.json").read_text())
    evals = [float(line.split(",")[1]) for line in
             (run / "evaluations.csv").read_text().splitlines()[1:]]
    assert summary["last10_mean"] == pytest.approx(evals[-1])  # 11 evaluations: the last
    assert summary["distribution"] == "uniform" and summary["hyperparams"] == "graesser"
    assert "| rigl-uniform |" in (tmp_path / "summary.md").read_text()
    stamp = (run / "model.zip").stat().st_mtime_ns
    assert bench_rl.main(argv) == 0  # resumed: nothing retrained
    assert (run / "model.zip").stat().st_mtime_ns == stamp


def test_resume_refuses_finished_runs_made_with_other_settings(tmp_path):
    argv = ["--tasks", "dqn:CartPole-v1:1000", "--updaters", "rigl", "--seeds", "1",
            "--workers", "1", "--evals", "2", "--eval-episodes", "1", "--hp",
            "net_arch=[8,8]", "--hp", "learning_starts=100", "--out", str(tmp_path),
            "--resume"]
    assert bench_rl.main(argv) == 0
    config = json.loads((tmp_path / "runs" / "dqn-CartPole-v1-rigl-s0" / "config.json")
                        .read_text())
    assert config["sparse_options"]["sparse_init"] == "None"  # a default, recorded
    i, j = argv.index("--evals") + 1, argv.index("net_arch=[8,8]")
    for other in [[*argv[:i], "3", *argv[i + 1:]],                        # eval_freq
                  [*argv[:j], "net_arch=[16,16]", *argv[j + 1:]],         # a table key
                  [*argv, "--sparse-hp", "sparse_init='fan_avg'"]]:       # an option
        with pytest.raises(ValueError, match="dqn-CartPole-v1-rigl-s0"):
            bench_rl.main(other)
    assert bench_rl.main(argv) == 0  # the same settings resume
    path = tmp_path / "runs" / "dqn-CartPole-v1-rigl-s0" / "config.json"
    path.write_text(json.dumps({**config, "sparse_options": {
        **config["sparse_options"], "drop_fraction": "0.3"}}))  # another default then
    with pytest.raises(ValueError, match="drop_fraction: 0.3 != 0.5"):
        bench_rl.main(argv)
    kept = config["initial_kept"]  # the weights the library allocated to each layer
    assert sum(kept.values()) == pytest.approx(0.1 * (4 * 8 + 8 * 8 + 8 * 2), abs=2)
    layer = next(iter(kept))
    path.write_text(json.dumps({**config, "initial_kept": {**kept, layer: kept[layer] + 1}}))
    with pytest.raises(ValueError, match=f"initial kept weights of {layer}"):
        bench_rl.main(argv)  # an allocation changed since: refused, not mixed in


def test_equal_params_rows_have_the_nonzero_weights_of_dense_at_the_base_width():
    args = bench_rl.build_parser().parse_args(
        ["--equal-params", "32", "--updaters", "dense", "rigl"])
    rows = {v["method"]: v for v in rl_sweep.variants(args, "ppo", "CartPole-v1")}
    assert list(rows) == ["dense-w32", "dense-w64", "rigl-w64", "dense-w128", "rigl-w128"]
    budget = rows["dense-w32"]["masked_total"]
    for name in ("rigl-w64", "rigl-w128"):
        row = rows[name]
        width = int(rl_report.split_width(name)[1])
        assert row["extra"]["dense_input"] is False  # the budget counts input layers
        model, _ = make_agent("ppo", "CartPole-v1", "rigl", row["sparsity"],
                              overrides={"net_arch": [width, width]},
                              sparse_options={"dense_input": False})
        active = sum(int(m.sum()) for t in model.policy.topologies.values()
                     for m in t.masks.values())
        assert row["masked_total"] > budget and abs(active - budget) <= 0.01 * budget, name
    args.dense_factors = [1]  # the sparse wide rows against dense at the base width only
    assert [v["method"] for v in rl_sweep.variants(args, "ppo", "CartPole-v1")] == [
        "dense-w32", "rigl-w64", "rigl-w128"]
    args.dense_factors = [3]
    with pytest.raises(ValueError, match="--dense-factors must be among"):
        rl_sweep.variants(args, "ppo", "CartPole-v1")


def test_equal_params_with_minatar_widens_the_cnn_and_keeps_dense_w_nonzero_weights():
    args = bench_rl.build_parser().parse_args(
        ["--equal-params", "16", "--width-factors", "2", "--hyperparams", "minatar",
         "--updaters", "dense", "static"])
    rows = {v["method"]: v for v in rl_sweep.variants(args, "dqn", "MinAtar/Breakout-v1")}
    assert list(rows) == ["dense-w16", "dense-w32", "static-w32"]
    budget = rows["dense-w16"]["masked_total"]
    assert budget == 4 * 2 * 9 + 2 * 8 * 8 * 16 + 16 * 3  # conv, linear, output (3 actions)
    row = rows["static-w32"]
    overrides = {k: v for k, v in row["extra"].items() if k != "dense_input"}
    assert overrides == {"features_extractor_kwargs": {"channels": 4, "features_dim": 32}}
    model, _ = make_agent("dqn", "MinAtar/Breakout-v1", "static", row["sparsity"],
                          overrides=overrides, hyperparams="minatar", timesteps=10**5)
    masks = model.policy.topologies["policy"].masks
    assert masks["q_net.features_extractor.conv.0.weight"].shape == (4, 4, 3, 3)
    active = sum(int(m.sum()) for m in masks.values())
    assert row["masked_total"] > budget and abs(active - budget) <= 0.01 * budget
    with pytest.raises(ValueError, match="--width-factors must be >= 1"):
        rl_sweep.variants(bench_rl.build_parser().parse_args(
            ["--equal-params", "16", "--width-factors", "0"]), "ppo", "CartPole-v1")


def test_equal_params_plot_sets_methods_at_one_x_side_by_side_on_an_axis_of_readable_span():
    offsets = [rl_report.dodge(i, 3) for i in range(3)]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3  # apart, in legend order
    assert math.isclose(math.prod(offsets), 1.0) and rl_report.dodge(0, 1) == 1.0  # centred
    assert max(offsets) / min(offsets) < 1.1  # a few percent, not another parameter count
    lo, hi = rl_report.log_xlim([1168, 1168, 1144])  # every method with dense W's weights
    assert hi / lo >= 4 and lo < 1144 and hi > 1168
    assert math.isclose(math.sqrt(lo * hi), math.sqrt(1144 * 1168))  # centred on them
    lo, hi = rl_report.log_xlim([216, 2400])  # dense across widths: the points' own span
    assert (lo, hi) == (216 / 1.25, 2400 * 1.25)


@pytest.mark.parametrize("nonzero", [[439, 456, 460], [1144, 1168], [216, 2400], [30, 31]])
def test_equal_params_plot_labels_a_value_on_every_x_axis(nonzero):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    lo, hi = rl_report.log_xlim(nonzero)
    ax.set_xlim(lo, hi)
    rl_report.label_log_x(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    plt.close(fig)
    assert any(labels), (nonzero, labels)  # 439-460 spans no power of 10: 300-800 shown


def test_equal_params_report_draws_the_score_against_nonzero_weights(tmp_path):
    summary = [{"task": "ppo-HalfCheetah-v5", "method": m, "nonzero": n, "score": sc,
                "score_std": sd}
               for m, n, sc, sd in [("dense-w16", 1168, 1455.1, 852.4),
                                    ("rigl-w32", 1168, 1257.3, 93.8),
                                    ("rigl-w64", 1168, 2021.9, 474.6),
                                    ("srigl-w64", 1144, 1528.0, 735.8)]]
    rl_report.plot_equal_params(summary, tmp_path / "equal_params.png")
    assert (tmp_path / "equal_params.png").stat().st_size > 10_000


def test_reward_scale_scales_training_rewards_not_evaluation():
    import numpy as np

    model, eval_env = make_agent("sac", "HalfCheetah-v5", "rigl", 0.9,
                                 hyperparams="graesser")
    assert model.learning_starts == 1000 and model.policy.sparse_options["drop_fraction"] == 0.5
    train, action = model.get_env(), np.full((1, 6), 0.5, dtype=np.float32)
    for env in (train, eval_env):
        env.seed(3)
        env.reset()
    r_train = train.step(action)[1][0]
    r_eval = eval_env.step(action)[1][0]
    assert r_train == pytest.approx(0.1 * r_eval, rel=1e-5) and r_eval != 0.0


def test_minatar_source_is_young_and_tians_dqn_with_their_network_sparse():
    import math

    import torch

    from sparse_agents.sb3 import MinAtarCNN

    model, _ = make_agent("dqn", "MinAtar/Breakout-v1", "srigl", 0.9, hyperparams="minatar",
                          timesteps=500_000)
    opt = model.policy.optimizer
    assert isinstance(opt, torch.optim.RMSprop)
    assert {k: opt.defaults[k] for k in ("lr", "alpha", "eps", "momentum", "centered")} == {
        "lr": 2.5e-4, "alpha": 0.95, "eps": 0.01, "momentum": 0.95, "centered": True}
    assert (model.batch_size, model.target_update_interval, model.learning_starts) == (
        32, 1000, 5000)
    assert model.exploration_fraction == pytest.approx(105_000 / 500_000)
    assert (model.exploration_initial_eps, model.exploration_final_eps) == (1.0, 0.1)
    assert math.isinf(model.max_grad_norm)
    assert isinstance(model.q_net.features_extractor, MinAtarCNN)
    masks = model.policy.topology.masks
    assert any("conv.0" in n for n in masks) and any("q_net.0" in n for n in masks)
    # no sparse schedule in the table: the library's off-policy defaults
    assert model.policy.sparse_options["delta_t"] == 1000


def test_exploration_steps_become_the_fraction_of_the_runs_budget():
    short, _ = make_agent("dqn", "MinAtar/SpaceInvaders-v1", "dense", hyperparams="minatar",
                          timesteps=50_000)
    assert short.exploration_fraction == 1.0  # capped: the anneal outlasts the run
    with pytest.raises(ValueError, match="needs the run's budget"):
        make_agent("dqn", "MinAtar/Breakout-v1", "dense", hyperparams="minatar")
    with pytest.raises(ValueError, match="no entry for dqn on CartPole-v1"):
        hyperparameters("dqn", "CartPole-v1", "minatar")


def test_minatar_dense_and_sparse_train_through_the_factory():
    for updater in ("dense", "rigl"):
        model, eval_env = make_agent("dqn", "MinAtar/Breakout-v1", updater, 0.9,
                                     hyperparams="minatar", timesteps=300,
                                     overrides={"learning_starts": 100, "buffer_size": 500},
                                     sparse_options=None if updater == "dense"
                                     else {"delta_t": 50})
        model.learn(300)
        assert eval_env.observation_space.shape == (10, 10, 4)
        if updater != "dense":
            assert model.policy.topology.n_updates > 0


def test_atari_games_get_sb3s_wrappers_stacked_frames_and_the_cnn_policy():
    from stable_baselines3.dqn.policies import CnnPolicy

    from sparse_agents.sb3 import SparseDQNCnnPolicy

    model, eval_env = make_agent("dqn", "ALE/Pong-v5", "rigl", 0.9,
                                 overrides={"buffer_size": 200, "learning_starts": 16,
                                            "batch_size": 8},
                                 sparse_options={"delta_t": 4})
    assert isinstance(model.policy, SparseDQNCnnPolicy)
    assert eval_env.observation_space.shape == (84, 84, 4)  # 4 stacked 84x84 frames
    assert model.observation_space.shape == (4, 84, 84)  # SB3 transposes images
    model.learn(48)
    assert model.policy.topology.n_updates > 0
    dense, _ = make_agent("dqn", "ALE/Pong-v5", "dense", overrides={"buffer_size": 200})
    assert type(dense.policy) is CnnPolicy


def test_bench_run_folders_flatten_namespaced_env_ids(tmp_path):
    args = bench_rl.build_parser().parse_args(["--updaters", "srigl"])
    jobs = rl_sweep.make_jobs(args, ["dqn:MinAtar/Breakout-v1:1000"])
    assert jobs[0].task == "dqn-MinAtar/Breakout-v1"
    assert jobs[0].path(tmp_path) == tmp_path / "runs" / "dqn-MinAtar-Breakout-v1-srigl-s0"


def test_overhead_times_the_agent_of_the_chosen_table(monkeypatch):
    built, real = [], rl_timing._train_chunk

    def recording(*args):
        chunk, n_steps, model = real(*args)
        built.append(model)
        return chunk, n_steps, model

    monkeypatch.setattr(rl_timing, "_train_chunk", recording)
    rows = rl_timing.overhead(["dqn:CartPole-v1:100000"], ["dense", "static"], rounds=1,
                             steps=2, fused_adam=False, hyperparams="graesser")
    assert [r["updater"] for r in rows] == ["dense", "static"]
    assert all(r["hyperparams"] == "graesser" for r in rows)
    assert [m.policy.net_arch for m in built] == [[512, 512]] * 2
    assert all(m.batch_size == 128 for m in built)


def test_report_tabulates_a_sweep_under_way_and_names_what_is_missing(tmp_path, capsys):
    argv = ["--tasks", "dqn:CartPole-v1:1000", "--updaters", "dense", "set", "--seeds", "2",
            "--out", str(tmp_path)]
    jobs = rl_sweep.make_jobs(bench_rl.build_parser().parse_args(argv), ["dqn:CartPole-v1:1000"])
    for job in jobs[:3]:  # dense s0, set s0, dense s1 finished; set s1 not
        out = job.path(tmp_path)
        out.mkdir(parents=True)
        (out / "evaluations.csv").write_text("timesteps,mean,std\n0,10,0\n1000,20,0\n")
        (out / "summary.json").write_text(json.dumps(dict(
            final_mean=20.0, final_std=0.0, best_mean=20.0, last10_mean=20.0, train_s=1.0,
            density=1.0, updates=0, itop=0.0, flops_forward=1.0, flops_ratio=1.0)))
    assert bench_rl.main([*argv, "--report"]) == 0
    assert "1 of 4 runs not finished, left out: dqn-CartPole-v1-set-s1" in capsys.readouterr().out
    md = (tmp_path / "summary.md").read_text()
    assert "seeds per row: dqn-CartPole-v1 dense 2, dqn-CartPole-v1 set 1" in md
    assert "optimizers: dense not recorded; set not recorded" in md  # older summaries
    for job in jobs:
        (job.path(tmp_path) / "summary.json").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="no finished run"):
        bench_rl.main([*argv, "--report"])


def test_fused_adam_flag_leaves_an_rmsprop_table_alone():
    import torch

    model, _ = make_agent("dqn", "MinAtar/Breakout-v1", "srigl", 0.9, hyperparams="minatar",
                          timesteps=1000, fused_adam=True)
    assert isinstance(model.policy.optimizer, torch.optim.RMSprop)
    assert not model.policy.optimizer.defaults.get("fused")
    dense, _ = make_agent("dqn", "CartPole-v1", "dense", fused_adam=True)
    assert dense.policy.optimizer.defaults["fused"] is True


def test_runs_record_which_optimizer_trained_them():
    from sparse_agents.experiments.rl import optimizer_label

    sparse_sac, _ = make_agent("sac", "Pendulum-v1", "rigl", 0.9)
    dense_dqn, _ = make_agent("dqn", "CartPole-v1", "dense")
    minatar, _ = make_agent("dqn", "MinAtar/Breakout-v1", "rigl", 0.9, hyperparams="minatar",
                            timesteps=1000)
    assert [optimizer_label(m.policy) for m in (sparse_sac, dense_dqn, minatar)] == [
        "Adam(fused)", "Adam", "RMSprop"]
    rows = [dict(method="dense", optimizer="Adam"), dict(method="rigl", optimizer="Adam(fused)"),
            dict(method="rigl")]
    assert rl_report.optimizer_note(rows) == (
        "optimizers: dense Adam; rigl Adam(fused), not recorded")


def test_nonzero_params_count_what_the_agent_stores_without_target_networks():
    from sparse_agents.experiments.rl import nonzero_params

    dense, _ = make_agent("dqn", "CartPole-v1", "dense")
    sparse, _ = make_agent("dqn", "CartPole-v1", "rigl", 0.9)
    q_net = sum(p.numel() for p in dense.policy.q_net.parameters())
    assert nonzero_params(dense.policy) == q_net  # the target network is not counted
    masks = sparse.policy.topologies
    active = sum(int(m.sum()) for t in masks.values() for m in t.masks.values())
    masked = sum(m.numel() for t in masks.values() for m in t.masks.values())
    biases = sum(p.numel() for n, p in sparse.policy.q_net.named_parameters()
                 if not n.endswith(("weight", "weight_values")))
    assert nonzero_params(sparse.policy) == active + biases
    assert active < 0.11 * masked


def test_sparse_hp_reaches_the_sparse_runs_only():
    args = bench_rl.build_parser().parse_args(
        ["--tasks", "dqn:CartPole-v1:1000", "--updaters", "dense", "rigl", "--seeds", "1",
         "--hp", "learning_rate=0.001", "--sparse-hp", "sparse_init=None"])
    jobs = {j.method: j.run.overrides for j in rl_sweep.make_jobs(args, args.tasks)}
    assert jobs == {"dense": {"learning_rate": 0.001},
                    "rigl": {"learning_rate": 0.001, "sparse_init": None}}


def test_variants_add_a_row_per_dynamic_updater_compared_with_dense_and_static():
    args = bench_rl.build_parser().parse_args(
        ["--tasks", "ppo:CartPole-v1:1000", "--updaters", "dense", "static", "srigl",
         "--seeds", "2", "--sparse-hp", "delta_t=500",
         "--variant", "dt250", "delta_t=250", "drop_fraction=0.3"])
    jobs = rl_sweep.make_jobs(args, args.tasks)
    hp = {j.method: j.run.overrides for j in jobs}
    assert hp == {"dense": {}, "static": {"delta_t": 500}, "srigl": {"delta_t": 500},
                  "srigl-dt250": {"delta_t": 250, "drop_fraction": 0.3}}  # the variant wins
    scores = {"dense": [5, 6], "static": [1, 2], "srigl": [3, 4], "srigl-dt250": [9, 11]}
    rows = [dict(task=jobs[0].task, method=m, seed=i, last10_mean=float(v))
            for m, vs in scores.items() for i, v in enumerate(vs)]
    table = rl_report.contrasts(rows, rl_report.row_kinds(jobs))
    pairs = {(c["method"], c["baseline"]): c["diff"] for c in table}
    assert pairs == pytest.approx({("static", "dense"): -4.0, ("srigl", "dense"): -2.0,
                                   ("srigl", "static"): 2.0, ("srigl-dt250", "dense"): 4.5,
                                   ("srigl-dt250", "static"): 8.5})
    for bad in [["--variant", "x"], ["--variant", "a=1", "delta_t=2"],
                ["--variant", "x", "delta_t=1", "--variant", "x", "delta_t=2"],
                ["--variant", "x", "delta_t=1", "--equal-params", "8"]]:
        with pytest.raises(ValueError, match="--variant"):
            rl_sweep.make_jobs(bench_rl.build_parser().parse_args(bad), ["ppo:CartPole-v1:1"])


def test_summary_legend_states_the_equal_params_sparsity_not_the_sweep_default():
    row = dict(task="t", method="rigl-w64", score=1.0, score_std=0.0, vs_dense=0.1,
               final_return=1.0, best_return=1.0, train_s=1.0, train_s_std=0.0,
               time_vs_dense=1.0, density=0.25, updates=3, flops_forward=math.nan)
    assert "Sparse rows at 90% sparsity" in rl_report.markdown([row], 0.9)
    legend = rl_report.markdown([row], None)
    assert "90%" not in legend and "nonzero weights of dense at the base width" in legend


def test_finished_runs_under_results_are_tracked_by_git_and_models_are_not():
    # a later session resumes a sweep from the committed summary.json/config.json/curve
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    run = "results/rl_x/runs/ppo-HalfCheetah-v5-srigl-s0/"
    kept = [run + f for f in ("summary.json", "config.json", "evaluations.csv")]
    dropped = [run + f for f in ("model.zip", "vecnormalize.pkl", ".summary.json.x.tmp")]
    dropped.append("results/rl_x/curves.png")
    out = subprocess.run(["git", "check-ignore", "--no-index", *kept, *dropped], cwd=root,
                         capture_output=True, text=True).stdout.split()
    assert out == dropped


def test_srigl_keeps_the_value_head_dense_as_erk_does_on_graessers_ppo_halfcheetah():
    # ERK gives the 64->1 value head density 1; constant fan-in rounding must not thin it
    rigl, _ = make_agent("ppo", "HalfCheetah-v5", "rigl", hyperparams="graesser")
    srigl, _ = make_agent("ppo", "HalfCheetah-v5", "srigl", hyperparams="graesser")
    assert bool(rigl.policy.topology.masks["value_net.weight"].all())
    masks = srigl.policy.topology.masks
    assert bool(masks["value_net.weight"].all())
    kept = sum(int(m.sum()) for m in masks.values())
    assert abs(kept - sum(int(m.sum()) for m in rigl.policy.topology.masks.values())) <= 3


def test_update_size_table_gives_each_methods_mean_ppo_step_and_its_ratio_to_dense(tmp_path):
    from sparse_agents.experiments.bench.update_size import (
        update_size_markdown,
        update_size_rows,
    )

    def progress(name: str, kls: list[float], clips: list[float]) -> Path:
        path = tmp_path / f"{name}.csv"
        # rollout-only rows (no train/ keys) come between SB3's train() logs
        lines = ["time/total_timesteps,train/approx_kl,train/clip_fraction", "2048,,"]
        lines += [f"{i},{k},{c}" for i, (k, c) in enumerate(zip(kls, clips, strict=True))]
        path.write_text("\n".join(lines) + "\n")
        return path

    runs = {("t", "dense"): [progress("d0", [0.01, 0.03], [0.2, 0.2]),
                             progress("d1", [0.02], [0.1])],
            ("t", "srigl"): [progress("s0", [0.005], [0.05]), progress("s1", [0.015], [0.05])],
            ("u", "dqn"): [tmp_path / "missing.csv"]}
    rows = {r["method"]: r for r in update_size_rows(runs, "dense")}
    assert set(rows) == {"dense", "srigl"}  # a run without train/approx_kl logs: no row
    assert rows["dense"]["train/approx_kl"] == pytest.approx(0.02)  # per run, then seeds
    assert rows["dense"]["train/clip_fraction"] == pytest.approx(0.15)
    assert rows["srigl"]["train/approx_kl"] == pytest.approx(0.01)
    assert rows["srigl"]["train/approx_kl_std"] == pytest.approx(0.005 * 2**0.5)  # ddof=1
    assert rows["srigl"]["train/approx_kl_ratio"] == pytest.approx(0.5)
    assert rows["srigl"]["train/clip_fraction_ratio"] == pytest.approx(1 / 3)
    md = update_size_markdown(list(rows.values()))
    assert "| t | srigl | 2 | 0.0100 ± 0.0071 | 0.50 | 0.0500 ± 0.0000 | 0.33 |" in md
    assert update_size_markdown([]) == ""
