"""Continual RL with SB3: per-task isolation of a sparse PPO agent, the stream runner's
outputs and its argument errors (tiny budgets)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import envs
from sparse_agents.experiments.rl_stream import checkpointed_tasks
from sparse_agents.sb3 import SparseActorCriticPolicy
from sparse_agents.sb3.continual import DENSE_INPUT, TaskMaskActorCriticPolicy, train_stream

PPO_TINY = dict(n_steps=64, batch_size=64, n_epochs=2, learning_rate=3e-3)


def _agent(stream, **policy_kwargs) -> PPO:
    env = make_vec_env(lambda: stream.make(0), n_envs=2, seed=0)
    kwargs = dict(sparsity=0.8, updater="srigl", delta_t=2, n_tasks=stream.n_tasks)
    kwargs.update(policy_kwargs)
    return PPO(TaskMaskActorCriticPolicy, env, seed=0, policy_kwargs=kwargs, **PPO_TINY)


def _outputs(model: PPO, obs: np.ndarray) -> tuple[torch.Tensor, ...]:
    policy = model.policy
    with torch.no_grad():
        x = torch.as_tensor(obs)
        dist = policy.get_distribution(x)
        actions, _ = policy.predict(obs, deterministic=True)
        return (torch.as_tensor(actions), policy.predict_values(x), dist.distribution.logits
                if hasattr(dist.distribution, "logits") else dist.distribution.mean)


def _train_task(model: PPO, stream, task_id: int, steps: int = 256) -> None:
    model.policy.start_task(task_id)
    model.set_env(make_vec_env(lambda: stream.make(task_id), n_envs=2, seed=task_id))
    model.learn(steps)
    model.policy.end_task()


@pytest.mark.parametrize(("stream_name", "policy_kwargs"), [
    ("cartpole-physics", {}),
    ("cartpole-physics", {"updater": "rigl", "per_task_heads": True,
                          "dense_layers": list(DENSE_INPUT)}),
    ("pendulum-physics", {"updater": "set", "transfer": False}),
])
def test_later_task_leaves_earlier_task_bit_identical(stream_name, policy_kwargs):
    stream = envs.get_stream(stream_name)
    model = _agent(stream, **policy_kwargs)
    _train_task(model, stream, 0)
    env = stream.make(0)
    obs = np.stack([env.reset(seed=s)[0] for s in range(16)])
    with model.policy.use_task(0):
        before = _outputs(model, obs)
    weights_before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    topo = model.policy.task_masks.topology
    _train_task(model, stream, 1)
    # task 1 really trained: its weights moved and DST ran
    assert topo.n_updates > 0
    assert any(not torch.equal(weights_before[n], p) for n, p in
               model.policy.named_parameters())
    with model.policy.use_task(1):
        other = _outputs(model, obs)
    assert not torch.equal(other[1], before[1])
    with model.policy.use_task(0):
        after = _outputs(model, obs)
    for b, a in zip(before, after, strict=True):
        assert torch.equal(b, a)
    assert model.policy.task_ids == [0, 1] and model.policy.active_task is None


def test_unknown_task_id_is_an_error():
    stream = envs.get_stream("cartpole-physics")
    model = _agent(stream)
    _train_task(model, stream, 0, steps=128)
    with pytest.raises(KeyError, match=r"task id 3 has no mask: known task ids are \[0\]"):
        model.policy.set_task(3)


def test_save_load_keeps_tasks(tmp_path):
    stream = envs.get_stream("cartpole-physics")
    model = _agent(stream)
    _train_task(model, stream, 0, steps=128)
    _train_task(model, stream, 1, steps=128)
    obs = np.stack([stream.make(0).reset(seed=s)[0] for s in range(8)])
    expected = {}
    for t in (0, 1):
        with model.policy.use_task(t):
            expected[t] = _outputs(model, obs)
    model.save(tmp_path / "agent")
    loaded = PPO.load(tmp_path / "agent")
    assert isinstance(loaded.policy, TaskMaskActorCriticPolicy)
    assert loaded.policy.task_ids == [0, 1]
    for t in (0, 1):
        with loaded.policy.use_task(t):
            got = _outputs(loaded, obs)
        for e, g in zip(expected[t], got, strict=True):
            assert torch.equal(e, g)


@pytest.mark.parametrize(("updater", "task_masks", "one_hot"), [
    ("srigl", True, False), ("dense", False, False), ("set", False, True)])
def test_train_stream_outputs(tmp_path, updater, task_masks, one_hot):
    result = train_stream("cartpole-physics", updater=updater, task_masks=task_masks,
                          sparsity=0.8, steps_per_task=256, seed=1, n_tasks=2,
                          eval_episodes=2, one_hot=one_hot,
                          algo_kwargs=dict(n_envs=2, **PPO_TINY))
    assert result.model.observation_space.shape == ((4 + 4,) if one_hot else (4,))
    r = result.returns
    assert r.shape == (2, 2) and math.isnan(r[0, 1]) and not np.isnan(r[1]).any()
    policy = result.model.policy
    if updater == "dense":
        assert not isinstance(policy, SparseActorCriticPolicy)
    else:
        assert isinstance(policy, TaskMaskActorCriticPolicy) == task_masks
    paths = result.save(tmp_path)
    summary = json.loads(paths["json"].read_text())
    assert summary["final_returns"] == pytest.approx(list(r[1]))
    assert summary["forgetting"] == pytest.approx(r[0, 0] - r[1, 0])
    assert summary["task_forgetting"] == pytest.approx([r[0, 0] - r[1, 0]])
    lines = paths["csv"].read_text().splitlines()
    assert lines[0] == "after_task,task_0,task_1" and lines[1].endswith(",")
    assert paths["png"].stat().st_size > 0
    if task_masks:
        assert summary["density"]["task_density/0"] == pytest.approx(
            summary["density"]["task_density/1"], rel=0.05)


def test_train_stream_argument_errors():
    with pytest.raises(ValueError, match="stream must be one of"):
        train_stream("nope", steps_per_task=8)
    with pytest.raises(ValueError, match="algo must be one of"):
        train_stream("cartpole-physics", algo="td3", steps_per_task=8)
    with pytest.raises(ValueError, match="updater must be one of"):
        train_stream("cartpole-physics", updater="magic", steps_per_task=8)
    with pytest.raises(ValueError, match="task_masks=True needs a sparse updater"):
        train_stream("cartpole-physics", updater="dense", task_masks=True, steps_per_task=8)
    with pytest.raises(ValueError, match=r"n_tasks must be an integer in \[1, 4\]"):
        train_stream("cartpole-physics", n_tasks=9, steps_per_task=8)
    with pytest.raises(ValueError, match="steps_per_task must be an integer >= 1"):
        train_stream("cartpole-physics", steps_per_task=0)
    with pytest.raises(ValueError, match="regularizer must be one of"):
        train_stream("cartpole-physics", updater="dense", regularizer="si", steps_per_task=8)
    with pytest.raises(ValueError, match="need task_masks=False"):
        train_stream("cartpole-physics", task_masks=True, reset_per_task=True,
                     steps_per_task=8)
    with pytest.raises(ValueError, match="no regularizer"):
        train_stream("cartpole-physics", updater="dense", reset_per_task=True,
                     regularizer="l2", steps_per_task=8)
    with pytest.raises(ValueError, match="curve_evals must be an integer >= 0"):
        train_stream("cartpole-physics", curve_evals=-1, steps_per_task=8)
    with pytest.raises(ValueError, match="reg_coef"):
        train_stream("cartpole-physics", updater="dense", regularizer="l2", reg_coef=0.0,
                     steps_per_task=8)


def test_per_task_policy_applies_lr_scale_and_the_fused_adam_default():
    """Every sparse option reaches the per-task policy: one optimizer step with
    lr_scale=2 moves its weights about twice as far as with lr_scale=1."""
    stream = envs.get_stream("cartpole-physics")
    moved = {}
    for scale in (1.0, 2.0):
        model = _agent(stream, lr_scale=scale)
        policy = model.policy
        assert policy.optimizer.defaults.get("fused") is True
        policy.start_task(0)
        before = [p.detach().clone() for p in policy.parameters()]
        obs = torch.randn(32, 4)
        actions = torch.randint(0, 2, (32,))
        values, log_prob, _ = policy.evaluate_actions(obs, actions)
        loss = -(log_prob.mean()) + values.pow(2).mean()
        policy.optimizer.zero_grad()
        loss.backward()
        policy.optimizer.step()
        moved[scale] = sum(float((p.detach() - b).abs().sum())
                           for p, b in zip(policy.parameters(), before, strict=True))
    assert moved[2.0] / moved[1.0] == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize(("algo", "stream", "extra"), [
    ("dqn", "cartpole-permuted", {"learning_starts": 100, "train_freq": 4}),
    ("sac", "pendulum-physics", {"learning_starts": 100}),
])
def test_off_policy_task_masks_leave_earlier_tasks_exactly_unforgotten(algo, stream, extra):
    """DQN and SAC through the runner with per-task masks: the evaluation of every
    earlier task is bit-identical after later tasks trained (forgetting 0 exactly), the
    dormant fraction is recorded per task, each network holds both tasks' budgets."""
    result = train_stream(stream, algo=algo, updater="srigl", sparsity=0.8,
                          steps_per_task=400, n_tasks=2, eval_episodes=2, seed=0,
                          algo_kwargs=extra, policy_kwargs={"net_arch": [32, 32]})
    r = result.returns
    assert r[1, 0] == r[0, 0]
    assert result.summary()["forgetting"] == 0.0
    assert len(result.dormant) == 2 and all(0.0 <= d <= 1.0 for d in result.dormant)
    used = [v for k, v in result.density.items() if k.endswith("used")]
    assert used and all(0.15 < u < 0.45 for u in used)


def test_reset_per_task_trains_every_task_from_scratch_and_keeps_its_score():
    """A new agent per task: task 1 starts from fresh weights (not task 0's), and each
    finished task keeps the score of the agent that trained it."""
    seen = []

    def grab(task, result):
        seen.append(result.model)

    result = train_stream("cartpole-permuted", algo="ppo", updater="dense",
                          reset_per_task=True, steps_per_task=256, n_tasks=2,
                          eval_episodes=2, algo_kwargs={"n_envs": 2, "n_steps": 64},
                          on_task_end=grab)
    assert result.model is not None and result.config["reset_per_task"] is True
    assert result.returns[1, 0] == result.returns[0, 0]
    assert result.summary()["forgetting"] == 0.0
    assert seen[0] is not seen[1]  # task 1 was trained by a new agent
    assert seen[1].num_timesteps == 256  # from scratch: its own task's steps only


def test_curve_evals_record_the_training_tasks_curve_for_forward_transfer():
    result = train_stream("cartpole-permuted", algo="ppo", updater="srigl",
                          steps_per_task=256, n_tasks=2, eval_episodes=1, curve_evals=2,
                          algo_kwargs={"n_envs": 2, "n_steps": 64})
    assert [len(c) for c in result.curves] == [3, 3]  # start, middle, end
    assert [c[0][0] for c in result.curves] == [0, 0]
    auc = result.curve_auc
    assert auc[0] == pytest.approx(np.mean([v for _, v in result.curves[0]]))
    assert result.summary()["curve_auc"] == auc


def test_metaworld_cw3_first_task_runs_with_sac_and_reports_success():
    pytest.importorskip("metaworld")
    result = train_stream("metaworld-cw3", algo="sac", updater="srigl", sparsity=0.9,
                          steps_per_task=300, n_tasks=1, eval_episodes=1, one_hot=True,
                          algo_kwargs={"learning_starts": 100, "batch_size": 32},
                          policy_kwargs={"net_arch": [64, 64]})
    assert result.metric == "success" and result.summary()["metric"] == "success"
    assert result.returns[0, 0] in (0.0, 1.0)
    assert result.config["algo_kwargs"]["learning_rate"] == 1e-3  # Continual World's SAC


def test_packnet_through_the_runner_holds_each_tasks_budget_and_forgets_nothing():
    result = train_stream("cartpole-permuted", algo="dqn", updater="static", sparsity=0.75,
                          packnet=True, steps_per_task=400, n_tasks=2, eval_episodes=2,
                          algo_kwargs={"learning_starts": 100, "train_freq": 4},
                          policy_kwargs={"net_arch": [32, 32]})
    assert result.returns[1, 0] == result.returns[0, 0]
    assert result.density["used"] == pytest.approx(0.5, abs=0.02)  # two budgets of 25%
    with pytest.raises(ValueError, match="packnet"):
        train_stream("cartpole-permuted", updater="dense", packnet=True, steps_per_task=8)


class _Killed(Exception):
    """Stands for a job killed after a task's evaluation, before its checkpoint."""


@pytest.mark.parametrize(("algo", "stream", "kwargs"), [
    # per-task masks: the next task's mask is drawn by the loaded topology's generator
    ("ppo", "cartpole-permuted", {"updater": "srigl", "algo_kwargs": {"n_envs": 2,
                                                                      "n_steps": 64}}),
    # random actions before learning_starts come from the action space's generator
    ("dqn", "cartpole-permuted", {"updater": "srigl", "task_masks": False,
                                  "algo_kwargs": {"learning_starts": 100, "train_freq": 4}}),
    # the EWC anchor and Fisher sums, and a replay buffer kept across tasks
    ("sac", "pendulum-physics", {"updater": "dense", "regularizer": "ewc", "keep_buffer": True,
                                 "algo_kwargs": {"learning_starts": 100}}),
    # a new agent per task: the finished run's model is the last task's agent
    ("ppo", "cartpole-permuted", {"updater": "dense", "reset_per_task": True,
                                  "algo_kwargs": {"n_envs": 2, "n_steps": 64}}),
])
def test_stream_resumed_from_its_checkpoint_matches_the_uninterrupted_run(tmp_path, algo,
                                                                          stream, kwargs):
    common = dict(algo=algo, steps_per_task=256, n_tasks=3, eval_episodes=2, curve_evals=2,
                  policy_kwargs={"net_arch": [32, 32]}, **kwargs)
    whole = train_stream(stream, **common).summary()

    def kill(task, _):
        if task == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train_stream(stream, checkpoint=tmp_path, on_task_end=kill, **common)
    assert checkpointed_tasks(tmp_path) == 1
    trained: list[int] = []
    resumed = train_stream(stream, checkpoint=tmp_path,
                           on_task_end=lambda task, _: trained.append(task), **common)
    assert trained == [1, 2] and checkpointed_tasks(tmp_path) == 3
    summary = resumed.summary()
    for key, value in whole.items():
        if key != "train_seconds":
            assert summary[key] == value, key
    again = train_stream(stream, checkpoint=tmp_path,
                         on_task_end=lambda task, _: trained.append(task), **common)
    assert trained == [1, 2] and again.summary()["return_matrix"] == whole["return_matrix"]
    assert again.model.num_timesteps == resumed.model.num_timesteps
    for a, b in zip(again.model.policy.parameters(), resumed.model.policy.parameters(),
                    strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    common = dict(updater="srigl", steps_per_task=64, n_tasks=1, eval_episodes=1,
                  algo_kwargs={"n_envs": 2, "n_steps": 32}, checkpoint=tmp_path)
    train_stream("cartpole-permuted", **common)
    with pytest.raises(ValueError, match=r"other settings .*seed: 0 there, 1 here"):
        train_stream("cartpole-permuted", seed=1, **common)
