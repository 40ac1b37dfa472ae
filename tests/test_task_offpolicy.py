"""Per-task masks for the off-policy agents (``TaskMaskDQNPolicy``, ``TaskMaskSACPolicy``):
earlier tasks' outputs (online and target networks) bit-identical after later tasks
train, targets following the masks through polyak updates, per-task budgets, save/load
mid-stream, per-task heads, the ``start_task`` helper and argument errors (tiny nets, a
few hundred steps per task)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import polyak_update
from torch import nn

from sparse_agents.sb3 import (
    TaskExploration,
    TaskMaskDQNPolicy,
    TaskMaskSACPolicy,
    TaskTarget,
    start_task,
)
from sparse_agents.task_masks import FREE

OFF_TINY = dict(learning_starts=64, buffer_size=2_000, batch_size=32, train_freq=1,
                gradient_steps=1, learning_rate=3e-3, seed=0)
STEPS = 256


def _dqn(tau: float = 1.0, **policy_kwargs) -> DQN:
    kwargs = dict(net_arch=[32, 32], sparsity=0.8, updater="srigl", delta_t=10, n_tasks=3)
    kwargs.update(policy_kwargs)
    return DQN(TaskMaskDQNPolicy, "CartPole-v1", target_update_interval=20, tau=tau,
               policy_kwargs=kwargs, **OFF_TINY)


def _sac(**policy_kwargs) -> SAC:
    kwargs = dict(net_arch=[32, 32], sparsity=0.8, updater="srigl", delta_t=10, n_tasks=3)
    kwargs.update(policy_kwargs)
    return SAC(TaskMaskSACPolicy, "Pendulum-v1", policy_kwargs=kwargs, **OFF_TINY)


def _train(model, task_id: int, steps: int = STEPS, end: bool = True) -> None:
    start_task(model, task_id)
    model.learn(steps)
    if end:
        model.policy.end_task()


def _obs(model, n: int = 16) -> torch.Tensor:
    space = model.observation_space
    space.seed(123)
    return torch.as_tensor(np.stack([space.sample() for _ in range(n)]))


def _actions(model, n: int = 16) -> torch.Tensor:
    space = model.action_space
    space.seed(7)
    return torch.as_tensor(np.stack([space.sample() for _ in range(n)]))


@torch.no_grad()
def _outputs(model, obs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every output of the selected task: online and target networks."""
    policy = model.policy
    actions, _ = policy.predict(obs.numpy(), deterministic=True)
    out = {"action": torch.as_tensor(actions)}
    if isinstance(model, DQN):
        out["q"] = policy.q_net(obs)
        out["q_target"] = policy.q_net_target(obs)
        return out
    mean, log_std, _ = policy.actor.get_action_dist_params(obs)
    act = _actions(model, len(obs))
    out.update(mean=mean, log_std=log_std,
               q=torch.cat(policy.critic(obs, act), dim=1),
               q_target=torch.cat(policy.critic_target(obs, act), dim=1))
    return out


def _assert_same(before: dict, after: dict) -> None:
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def _targets(model) -> list[tuple[nn.Module, nn.Module, object]]:
    """(online module, target module, its TaskMasks)."""
    policy = model.policy
    if isinstance(model, DQN):
        return [(policy.q_net, policy.q_net_target, policy.task_masks)]
    return [(policy.critic, policy.critic_target, policy.task_masks_by_optimizer["critic"])]


DQN_CASES = [
    pytest.param({}, 1.0, id="srigl-transfer-hard-target"),
    pytest.param({"updater": "rigl", "per_task_heads": True, "transfer": False}, 0.005,
                 id="rigl-heads-no-transfer-polyak"),
    pytest.param({"updater": "set", "dense_layers": ["q_net.q_net.0"]}, 0.3,
                 id="set-dense-input"),
]


@pytest.mark.parametrize(("policy_kwargs", "tau"), DQN_CASES)
def test_dqn_earlier_tasks_bit_identical(policy_kwargs, tau):
    model = _dqn(tau=tau, **policy_kwargs)
    obs = _obs(model)
    _train(model, 0)
    with model.policy.use_task(0):
        first = _outputs(model, obs)
    # a finished task's target is its online network
    assert torch.equal(first["q"], first["q_target"])
    weights = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    topo = model.policy.task_masks.topology
    _train(model, 1)
    assert topo.n_updates > 0
    assert any(not torch.equal(weights[n], p) for n, p in model.policy.named_parameters())
    with model.policy.use_task(1):
        second = _outputs(model, obs)
    assert not torch.equal(second["q"], first["q"])
    with model.policy.use_task(0):
        _assert_same(first, _outputs(model, obs))
    _train(model, 2)
    for task, expected in ((0, first), (1, second)):
        with model.policy.use_task(task):
            _assert_same(expected, _outputs(model, obs))
    assert model.policy.task_ids == [0, 1, 2] and model.policy.active_task is None


@pytest.mark.parametrize("policy_kwargs", [
    pytest.param({}, id="srigl-transfer"),
    pytest.param({"updater": "set", "per_task_heads": True, "transfer": False},
                 id="set-heads-no-transfer"),
])
def test_sac_earlier_tasks_bit_identical(policy_kwargs):
    model = _sac(**policy_kwargs)
    obs = _obs(model)
    _train(model, 0, steps=200)
    with model.policy.use_task(0):
        first = _outputs(model, obs)
    assert torch.equal(first["q"], first["q_target"])
    topologies = model.policy.topologies
    assert set(topologies) == {"actor", "critic"}
    _train(model, 1, steps=200)
    assert all(t.n_updates > 0 for t in topologies.values())
    with model.policy.use_task(1):
        second = _outputs(model, obs)
    assert not torch.equal(second["q"], first["q"])
    assert not torch.equal(second["mean"], first["mean"])
    with model.policy.use_task(0):
        _assert_same(first, _outputs(model, obs))


@pytest.mark.parametrize("make", [_dqn, _sac], ids=["dqn", "sac"])
def test_target_follows_masks_and_polyak_cannot_move_frozen_weights(make):
    model = make(tau=0.005) if make is _dqn else make()
    _train(model, 0, steps=160)
    _train(model, 1, steps=160, end=False)  # task 1 still training: the base view
    obs = _obs(model)
    for online, target, tm in _targets(model):
        owners = tm.owners
        frozen = {name: (o != FREE) & (o < len(tm.finished_tasks)) for name, o in owners.items()}
        # a polyak step at SAC's tau moves some frozen target weights by rounding ...
        polyak_update(online.parameters(), target.parameters(), 0.005)
        drifted = sum(int((target.get_parameter(n)[f] != online.get_parameter(n)[f]).sum())
                      for n, f in frozen.items())
        assert drifted > 0
        # ... the next target forward puts them back, bit-exactly
        with torch.no_grad():
            target(obs) if isinstance(model, DQN) else target(obs, _actions(model))
        lagging = 0
        for name, f in frozen.items():
            w, t = online.get_parameter(name), target.get_parameter(name)
            assert f.any() and torch.equal(t[f], w[f])
            assert not t[owners[name] == FREE].any()  # free weights: 0 in both
            trainable = tm.topology.layer(name).mask
            assert torch.equal(t[~trainable], w[~trainable])
            lagging += int((t[trainable] != w[trainable]).sum())
        assert lagging > 0  # the training task's own target weights lag behind (polyak)
    model.policy.end_task()
    for online, target, _ in _targets(model):  # between tasks: target == online
        for (n, p), (_, q) in zip(online.named_parameters(), target.named_parameters(),
                                  strict=True):
            assert torch.equal(p, q), n


@pytest.mark.parametrize("make", [_dqn, _sac], ids=["dqn", "sac"])
@pytest.mark.parametrize(("transfer", "updater"), [(True, "srigl"), (False, "set")])
def test_per_task_sparsity_and_disjoint_masks(make, transfer, updater):
    model = make(transfer=transfer, updater=updater)
    for t in range(3):
        _train(model, t, steps=128)
    policy = model.policy
    by_opt = policy.task_masks_by_optimizer
    assert set(by_opt) == ({"policy"} if make is _dqn else {"actor", "critic"})
    for tm in by_opt.values():
        owners = tm.owners
        for name, o in owners.items():
            owned = [o == i for i in range(3)]
            for i in range(3):
                n = int(owned[i].sum())
                # SRigL's constant fan-in: budget // alive neurons per neuron
                assert 0 < n <= tm.budgets[name] if updater == "srigl" \
                    else n == tm.budgets[name], (name, i)
                for j in range(i):
                    assert not (owned[i] & owned[j]).any()
        for t in range(3):
            forward = tm.forward_masks(t)
            for name, o in owners.items():
                expected = (o >= 0) & (o <= t) if transfer else o == t
                assert torch.equal(forward[name], expected)
            with policy.use_task(t):
                for layer in tm.layers:  # nothing outside the task's forward mask
                    assert not layer.weight[~forward[layer.name]].any()
    # each target in each view: the online network's weights, so the same zeros
    for online, target, tm in _targets(model):
        for t in range(3):
            with policy.use_task(t):
                for name, f in tm.forward_masks(t).items():
                    w = target.get_parameter(name)
                    assert torch.equal(w, online.get_parameter(name))
                    assert not w[~f].any()


@pytest.mark.parametrize("algo", [DQN, SAC], ids=["dqn", "sac"])
def test_save_load_mid_stream(tmp_path, algo):
    make = _dqn if algo is DQN else _sac
    model = make()
    obs = _obs(model)
    _train(model, 0, steps=160)
    with model.policy.use_task(0):
        first = _outputs(model, obs)
    base = _outputs(model, obs)  # between tasks: the last task's view, target included
    model.save(tmp_path / "agent")
    loaded = algo.load(tmp_path / "agent")
    policy = loaded.policy
    assert isinstance(policy, TaskMaskDQNPolicy if algo is DQN else TaskMaskSACPolicy)
    assert policy.task_ids == [0] and policy.training_task is None
    _assert_same(base, _outputs(loaded, obs))
    with policy.use_task(0):
        _assert_same(first, _outputs(loaded, obs))
    loaded.set_env(model.get_env())
    _train(loaded, 1, steps=160)
    assert policy.task_ids == [0, 1]
    with policy.use_task(1):
        assert not torch.equal(_outputs(loaded, obs)["q"], first["q"])
    with policy.use_task(0):
        _assert_same(first, _outputs(loaded, obs))


def test_save_inside_use_task_mid_task_then_resume(tmp_path):
    model = _dqn(tau=0.005)
    obs = _obs(model)
    _train(model, 0, steps=160)
    with model.policy.use_task(0):
        first = _outputs(model, obs)
    _train(model, 1, steps=160, end=False)
    live = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    with model.policy.use_task(0):
        model.save(tmp_path / "agent")  # task 0's view installed in q_net and its target
    for n, p in model.policy.named_parameters():  # and the live networks came back
        assert torch.equal(live[n], p), n
    loaded = DQN.load(tmp_path / "agent", env=model.get_env())
    # the saved weights are the full live ones (not task 0's view), the target's included
    for n, p in loaded.policy.named_parameters():
        assert torch.equal(live[n], p), n
    policy = loaded.policy
    assert policy.task_ids == [0] and policy.task_masks.pending_task == 1
    with pytest.raises(ValueError, match="call resume_task"):
        policy.start_task(2)
    policy.resume_task()
    assert policy.training_task == 1
    loaded.learn(96)
    policy.end_task()
    assert policy.task_ids == [0, 1]
    with policy.use_task(0):
        _assert_same(first, _outputs(loaded, obs))
    with pytest.raises(ValueError, match="no task to resume"):
        policy.resume_task()


def test_per_task_heads_are_dense_and_per_task():
    model = _dqn(per_task_heads=True)
    tm = model.policy.task_masks
    head = "q_net.4.weight"
    assert head in tm.topology.dense_names and head not in tm.budgets
    _train(model, 0, steps=160)
    _train(model, 1, steps=160)
    policy = model.policy
    heads = {}
    for t in (0, 1):
        with policy.use_task(t):
            heads[t] = policy.q_net.q_net[4].weight.detach().clone()
            assert heads[t].count_nonzero() == heads[t].numel()  # dense
            assert torch.equal(policy.q_net_target.q_net[4].weight, heads[t])
    assert not torch.equal(heads[0], heads[1])  # wholly per task

    sac = _sac(per_task_heads=True)
    dense = {key: tm.topology.dense_names for key, tm in
             sac.policy.task_masks_by_optimizer.items()}
    assert dense == {"actor": ["mu.weight", "log_std.weight"],
                     "critic": ["qf0.4.weight", "qf1.4.weight"]}


def test_start_task_helper_buffer_and_exploration():
    model = _dqn(n_tasks=4)
    _train(model, 0, steps=160)
    assert model.replay_buffer.size() == 160
    start_task(model, 1, keep_buffer=True)
    assert model.replay_buffer.size() == 160
    model.policy.end_task()
    with pytest.raises(ValueError, match="task_id 1 was trained already"):
        start_task(model, 1)
    assert model.replay_buffer.size() == 160  # a failed start changes nothing
    with pytest.raises(ValueError, match="keep_buffer must be True or False"):
        start_task(model, 2, keep_buffer="no")
    assert model.policy.training_task is None

    rates = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            rates.append(self.model.exploration_rate)
            return True

    start_task(model, 2)
    assert model.replay_buffer.size() == 0
    assert isinstance(model.exploration_schedule, TaskExploration)
    assert model.exploration_rate == model.exploration_initial_eps
    # reset_num_timesteps=False: SB3's schedule would be half way through, at its final
    # eps (callbacks see the rate before each step's update: rates[1] is the first one)
    model.learn(160, reset_num_timesteps=False, callback=Record())
    assert rates[1] > 0.9 and rates[-1] == pytest.approx(model.exploration_final_eps)
    model.policy.end_task()
    schedule = model.exploration_schedule
    start_task(model, 3, restart_exploration=False)
    assert model.exploration_schedule is schedule

    with pytest.raises(ValueError, match="model.policy must be a policy with per-task masks"):
        start_task(DQN("MlpPolicy", "CartPole-v1", buffer_size=100), 0)


def test_task_api_errors_and_atomic_start():
    model = _sac()
    policy = model.policy
    with pytest.raises(ValueError, match="no task is training"):
        policy.end_task()
    _train(model, 0, steps=96)
    with pytest.raises(KeyError, match=r"task id 5 has no mask: known task ids are \[0\]"):
        policy.set_task(5)
    with pytest.raises(AttributeError):
        policy.task_masks  # noqa: B018 - two TaskMasks: task_masks_by_optimizer
    with policy.use_task(0):
        assert policy.active_task == 0
    assert policy.active_task is None
    optimizers = [policy.actor.optimizer, policy.critic.optimizer]
    assert all(opt.state for opt in optimizers)
    by_opt = policy.task_masks_by_optimizer
    # the critic's first layer is full: task 1 fits the actor but not the critic
    owner = by_opt["critic"].model.get_submodule("qf0.0").weight_owner
    taken = owner.clone()
    owner.fill_(0)
    free = {k: tm.free_capacity() for k, tm in by_opt.items()}
    with pytest.raises(ValueError, match="task 1 .* cannot get its budget: layer 'qf0.0.weight'"):
        policy.start_task(1)
    # checked in both TaskMasks first: nothing changed, optimizer state kept
    assert policy.training_task is None and policy.task_ids == [0]
    assert all(tm.training_task is None for tm in by_opt.values())
    assert free == {k: tm.free_capacity() for k, tm in by_opt.items()}
    assert all(opt.state for opt in optimizers)
    owner.copy_(taken)
    policy.start_task(1, reset_optimizer=False)
    assert all(opt.state for opt in optimizers)
    assert all(tm.training_task == 1 for tm in by_opt.values())
    policy.end_task()
    policy.start_task(2)  # reset_optimizer=True: both optimizers start afresh
    assert not any(opt.state for opt in optimizers)


def test_load_inside_use_task_keeps_the_loaded_target():
    model = _dqn(tau=0.005)
    _train(model, 0, steps=128)
    _train(model, 1, steps=128)
    saved = copy.deepcopy(model.policy.state_dict())
    _train(model, 2, steps=128)
    policy = model.policy
    with policy.use_task(0):
        policy.load_state_dict(saved)
    assert policy.task_ids == [0, 1]
    for name, p in policy.q_net_target.named_parameters():
        assert torch.equal(p, saved[f"q_net_target.{name}"]), name


@pytest.mark.parametrize(("make", "kwargs", "match"), [
    (_dqn, {"per_task_heads": "yes"}, "per_task_heads must be True or False, got 'yes'"),
    (_dqn, {"transfer": "yes"}, "transfer must be True or False, got 'yes'"),
    (_dqn, {"n_tasks": 0}, r"n_tasks must be None or an integer >= 1, got 0"),
    (_sac, {"overflow": "share"}, r"overflow must be one of \('raise', 'shrink'\)"),
    (_sac, {"sparsity": 0.5, "n_tasks": 5}, r"sparsity must be in \[0.8, 1\) for 5 tasks"),
    (_dqn, {"condensed_rollout": True}, "condensed_rollout must be False with per-task"),
    (_sac, {"sparse_init": "fan_in"}, "sparse_init must be None with per-task masks"),
    (_dqn, {"dense_layers": ["q_net.0"]}, "dense_layers pattern 'q_net.0' matches no "
                                          "maskable layer; layers are"),
    (_sac, {"output_layers": ["nope"]}, "output_layers pattern 'nope' matches no"),
    (_sac, {"gamma_sal": {"critic.qf9.0": 0.1}}, "gamma_sal pattern 'critic.qf9.0'"),
])
def test_bad_options_name_the_parameter(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


class _LinearExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=8)
        self.linear = nn.Linear(int(np.prod(observation_space.shape)), 8)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(obs)


def test_shared_features_extractor_with_weights_is_refused():
    with pytest.raises(ValueError, match="share_features_extractor=False"):
        _sac(features_extractor_class=_LinearExtractor, share_features_extractor=True)


def test_policy_level_layer_names_and_separate_topologies():
    model = _sac(dense_layers=["actor.latent_pi.0", "critic.qf1.0"],
                 gamma_sal={"critic.qf0.2": 0.1})
    by_opt = model.policy.task_masks_by_optimizer
    assert by_opt["actor"].topology.dense_names == ["latent_pi.0.weight"]
    assert by_opt["critic"].topology.dense_names == ["qf1.0.weight"]
    assert by_opt["critic"].topology.layer("qf0.2").gamma_sal == 0.1
    assert by_opt["actor"].topology.seed + 1 == by_opt["critic"].topology.seed
    with pytest.raises(ValueError, match="does not match its online network"):
        TaskTarget(by_opt["critic"], model.policy.critic, model.policy.actor)
