"""Sparse SB3 agents: PPO, A2C, DQN, SAC and TD3 with tiny budgets (issue 5)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from invariants import check_topology
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sparse_agents.sb3 import (
    SparseActorCriticCnnPolicy,
    SparseActorCriticPolicy,
    SparseDQNPolicy,
    SparseMultiInputActorCriticPolicy,
    SparseSACPolicy,
    SparseTD3Policy,
    SparsityCallback,
    defaults_for,
    make_sparse,
    planned_optimizer_steps,
    short_layer_names,
)

HERE = Path(__file__).parent
ALGOS = {"PPO": PPO, "A2C": A2C, "DQN": DQN, "SAC": SAC, "TD3": TD3}
POLICIES = {"PPO": SparseActorCriticPolicy, "A2C": SparseActorCriticPolicy,
            "DQN": SparseDQNPolicy, "SAC": SparseSACPolicy, "TD3": SparseTD3Policy}
STEPS = {"PPO": 256, "A2C": 256, "DQN": 300, "SAC": 200, "TD3": 200}


def env_id(name: str) -> str:
    return "CartPole-v1" if name in ("PPO", "A2C", "DQN") else "Pendulum-v1"


def make(name: str, seed: int = 0, env=None, **policy_kwargs):
    """A tiny sparse agent: small nets, a few hundred steps, frequent updates."""
    pk = dict(net_arch=[32, 32], delta_t=4, sparsity=0.9, seed=seed)
    pk.update(policy_kwargs)
    # None: the policy's default (sparse_init=None is an explicit choice)
    pk = {k: v for k, v in pk.items() if v is not None or k == "sparse_init"}
    kw: dict = dict(seed=seed, verbose=0, device="cpu", policy_kwargs=pk)
    if name == "PPO":
        kw.update(n_steps=64, batch_size=32, n_epochs=2)
    elif name == "A2C":
        kw.update(n_steps=8)
    elif name == "DQN":
        kw.update(learning_starts=50, buffer_size=1000, batch_size=32, tau=0.5,
                  target_update_interval=1)
    else:
        kw.update(learning_starts=50, buffer_size=1000, batch_size=32, tau=0.1)
    env = env if env is not None else make_vec_env(env_id(name), n_envs=1, seed=seed)
    return ALGOS[name](POLICIES[name], env, **kw)


def check_invariants(model) -> None:
    """Invariants 1-2 for every topology; target networks carry the online masks and
    zeros outside them."""
    pol = model.policy
    assert pol.topologies
    for topo in pol.topologies.values():
        check_topology(topo)
    for pairs in pol._sparse.targets.values():
        for online, target in pairs:
            assert torch.equal(online.weight_mask, target.weight_mask)
            assert torch.all(target.weight[~target.weight_mask] == 0)


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("name,updater", [
    ("PPO", "srigl"), ("PPO", "set"), ("PPO", "rigl"), ("PPO", "static"), ("A2C", "srigl"),
    ("DQN", "srigl"), ("DQN", "rigl"), ("SAC", "srigl"), ("SAC", "set"), ("TD3", "srigl"),
])
def test_learn_keeps_invariants_and_places_t_end(name, updater):
    model = make(name, updater=updater)
    model.learn(STEPS[name])
    check_invariants(model)
    for key, topo in model.policy.topologies.items():
        planned = planned_optimizer_steps(model, STEPS[name], key)
        assert topo.step == planned, (key, topo.step, planned)  # the t_end rule's count
        frac = defaults_for(type(model.policy))["t_end_fraction"]
        assert topo.schedule.t_end == math.floor(frac * planned)
        if updater != "static":
            assert topo.n_updates == topo.schedule.n_updates(topo.step) > 0
    if name in ("SAC", "TD3"):
        assert set(model.policy.topologies) == {"actor", "critic"}


def test_heads_are_output_layers():
    names = {
        "PPO": {"action_net", "value_net"},
        "DQN": {"q_net.q_net.4"},
        "SAC": {"actor.mu", "actor.log_std", "critic.qf0.4", "critic.qf1.4"},
        "TD3": {"actor.mu.4", "critic.qf0.4", "critic.qf1.4"},
    }
    for name, heads in names.items():
        pol = make(name).policy
        protected = {layer.module_name for t in pol.topologies.values() for layer in t.layers
                     if not layer.allow_ablation}
        assert protected == heads, name


@pytest.mark.parametrize("name", ["PPO", "DQN"])
def test_same_seed_same_masks_and_weights(name):
    a = make(name, updater="rigl")  # SB3 seeds the global RNGs at construction
    a.learn(STEPS[name])
    b = make(name, updater="rigl")
    b.learn(STEPS[name])
    sa_, sb_ = a.policy.state_dict(), b.policy.state_dict()
    for key, value in sa_.items():
        if torch.is_tensor(value):
            assert torch.equal(value, sb_[key]), key
    c = make(name, updater="rigl", seed=1)
    assert any(not torch.equal(m, c.policy.topology.masks[n])
               for n, m in a.policy.topology.masks.items())


@pytest.mark.parametrize("name", ["PPO", "DQN"])
def test_clip_grad_norm_sees_sparse_gradient(name, monkeypatch):
    model = make(name, updater="srigl", delta_t=2)
    layers = model.policy.topology.layers
    seen = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, *args, **kwargs):
        parameters = list(parameters)
        for layer in layers:
            grad = layer.weight.grad
            if grad is not None:
                assert torch.all(grad[~layer.mask] == 0), layer.name
        sparse = torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for p in parameters if p.grad is not None]))
        total = clip(parameters, *args, **kwargs)
        seen.append((float(total), float(sparse)))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    model.learn(STEPS[name])
    assert seen and model.policy.topology.n_updates > 0
    for total, sparse in seen:  # the norm clipped against is the sparse gradient's
        assert total == pytest.approx(sparse, rel=1e-5)


@pytest.mark.parametrize("name", ["DQN", "SAC", "TD3"])
def test_target_networks_follow_masks_with_soft_updates(name):
    model = make(name, updater="set", delta_t=3)
    pol = model.policy
    checks = []

    def check(optimizer, args, kwargs):
        for pairs in pol._sparse.targets.values():
            for online, target in pairs:
                checks.append(torch.equal(online.weight_mask, target.weight_mask)
                              and bool(torch.all(target.weight[~target.weight_mask] == 0)))

    for topo in pol.topologies.values():
        topo.optimizer.register_step_post_hook(check)
    model.learn(STEPS[name])
    assert model.tau < 1 and len(checks) > 50 and all(checks)
    # targets really are soft copies (not zeroed or copied wholesale)
    pairs = [p for ps in pol._sparse.targets.values() for p in ps]
    assert any(not torch.equal(o.weight, t.weight) for o, t in pairs)
    assert all(sum(t.n_updates for t in pol.topologies.values()) > 0 for _ in [0])


def test_critic_dense_gradient_is_its_own_loss_only():
    model = make("SAC", updater="rigl", delta_t=3)
    topo = model.policy.topologies["critic"]
    run = topo._run_update
    ok = []

    def spy(step, scheduled):
        for layer in topo.layers:
            dense = topo.dense_grad(layer)
            ok.append(torch.allclose(dense * layer.mask, layer.weight.grad, atol=1e-7))
        return run(step, scheduled)

    topo._run_update = spy
    model.learn(120)
    assert ok and all(ok)


# ---------------------------------------------------------------------------- save/load
def _child(name: str, path: Path, obs: Path, out: Path, steps: int = 0) -> dict:
    """Load the saved agent in a fresh interpreter (and continue it ``steps``)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    args = [sys.executable, str(HERE / "sb3_roundtrip_child.py"), name, str(path), str(obs),
            str(out)] + ([str(steps)] if steps else [])
    subprocess.run(args, check=True, env=env, timeout=120)
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("name", ["PPO", "DQN", "SAC"])
def test_save_load_round_trip_in_fresh_process(name, tmp_path):
    model = make(name, updater="srigl")
    model.learn(STEPS[name])
    path = tmp_path / "model.zip"
    model.save(path)
    obs = np.stack([model.observation_space.sample() for _ in range(16)])
    np.save(tmp_path / "obs.npy", obs)
    cont = 128 if name == "PPO" else 0
    res = _child(name, path, tmp_path / "obs.npy", tmp_path / "child.pt", cont)
    pol = model.policy
    assert res["class"] == type(pol).__name__
    for key, topo in pol.topologies.items():
        assert res["steps"][key] == topo.step and res["updates"][key] == topo.n_updates
        assert res["t_end"][key] == topo.schedule.t_end
        for n, m in topo.masks.items():
            assert torch.equal(res["masks"][key][n], m), n
    assert np.array_equal(res["actions"], model.predict(obs, deterministic=True)[0])
    if cont:
        # the same continuation in this process, from the model never saved: identical
        model.set_env(make_vec_env(env_id(name), n_envs=1, seed=0))
        model.set_random_seed(1)
        model._last_obs = None
        model.learn(cont, reset_num_timesteps=False)
        for key, topo in pol.topologies.items():
            assert res["steps_after"][key] == topo.step
            assert res["t_end_after"][key] == topo.schedule.t_end
            assert topo.step == planned_optimizer_steps(model, STEPS[name] + cont, key)
        for key, value in pol.state_dict().items():
            if torch.is_tensor(value):
                assert torch.equal(res["state"][key], value), key


def test_dense_checkpoint_refused_and_policy_save_load(tmp_path):
    dense = PPO("MlpPolicy", "CartPole-v1", n_steps=64, policy_kwargs=dict(net_arch=[32, 32]))
    dense.save(tmp_path / "dense.zip")
    with pytest.raises(ValueError, match="mask"):
        sparse = make("PPO")
        sparse.set_parameters(str(tmp_path / "dense.zip"))
    model = make("PPO", updater="set")
    model.learn(128)
    model.policy.save(tmp_path / "policy.pt")
    loaded = SparseActorCriticPolicy.load(tmp_path / "policy.pt")
    assert loaded.topology.step == model.policy.topology.step
    for n, m in model.policy.topology.masks.items():
        assert torch.equal(loaded.topology.masks[n], m)


# ---------------------------------------------------------------------------- metrics
def test_metrics_in_stdout_csv_and_tensorboard(tmp_path, capsys):
    model = make("PPO", updater="srigl")
    model.set_logger(configure(str(tmp_path), ["stdout", "csv", "tensorboard"]))
    callback = SparsityCallback()
    model.learn(256, callback=callback)
    out = capsys.readouterr().out
    for key in ("sparse/", "density", "itop", "updates", "alive/pi.0", "fan_in/pi.0",
                "density/action"):
        assert key in out, key
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"sparse/density", "sparse/itop", "sparse/updates", "sparse/step",
            "sparse/alive_frac/pi.0", "sparse/fan_in_min/vf.2"} <= set(header)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path)).Reload()
    assert {"sparse/density", "sparse/density/pi.0"} <= set(events.Tags()["scalars"])
    assert callback.history and callback.history[-1][1]["updates"] > 0
    m = model.policy.sparse_metrics()
    assert m["density"] <= 0.1 + 1e-9 and 0 < m["itop"] <= 1


def test_multi_topology_metrics_and_short_names():
    model = make("SAC")
    model.learn(100)
    m = model.policy.sparse_metrics()
    assert {"actor/density", "critic/density", "actor/step", "density", "updates"} <= set(m)
    names = ["mlp_extractor.policy_net.0", "mlp_extractor.policy_net.2", "critic.qf0.0",
             "actor.features_extractor.cnn.0", "critic.features_extractor.cnn.0",
             "x" * 40 + ".0", "x" * 40 + ".2"]
    short = short_layer_names(names)
    assert len(set(short.values())) == len(names)
    assert all(len(s) <= 20 for s in short.values())


# ---------------------------------------------------------------------------- API
def test_bad_input_raises_value_error():
    env = "CartPole-v1"
    for kwargs, match in [
        (dict(sparsity=1.5), "sparsity"), (dict(sparsity=-0.1), "sparsity"),
        (dict(sparsity=1.0), "sparsity"), (dict(updater="foo"), "updater"),
        (dict(updater="dense"), "updater"), (dict(distribution="gauss"), "distribution"),
        (dict(delta_t=0), "delta_t"), (dict(t_end_fraction=0.0), "t_end_fraction"),
        (dict(dense_layers=["nope"]), "dense_layers"), (dict(dense_layers=[".*"]), "dense"),
        (dict(condensed_rollout="yes"), "condensed_rollout"),
        (dict(topology_kwargs=dict(grad_masking="step")), "topology_kwargs"),
    ]:
        with pytest.raises(ValueError, match=match):
            PPO(SparseActorCriticPolicy, env, policy_kwargs=kwargs)

    class NothingToMask(ActorCriticPolicy):
        def _build(self, lr_schedule):
            super()._build(lr_schedule)
            self.scale = nn.Parameter(torch.ones(1))
            self.optimizer = torch.optim.Adam([self.scale], lr=1e-3)

    with pytest.raises(ValueError, match="no maskable layer"):
        PPO(make_sparse(NothingToMask), env)
    with pytest.raises(ValueError, match="policy_class"):
        make_sparse(nn.Linear)


class TinyPolicy(ActorCriticPolicy):
    """A user's own policy class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("net_arch", dict(pi=[16], vf=[16]))
        super().__init__(*args, **kwargs)


SparseTinyPolicy = make_sparse(TinyPolicy)


def test_make_sparse_any_policy(tmp_path):
    assert make_sparse(ActorCriticPolicy) is SparseActorCriticPolicy
    assert make_sparse(TinyPolicy) is SparseTinyPolicy
    assert SparseTinyPolicy.__name__ == "SparseTinyPolicy"
    model = PPO(SparseTinyPolicy, "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1,
                policy_kwargs=dict(updater="set", delta_t=2, sparsity=0.8))
    model.learn(64)
    check_invariants(model)
    model.save(tmp_path / "tiny.zip")
    loaded = PPO.load(tmp_path / "tiny.zip")
    assert type(loaded.policy) is SparseTinyPolicy
    for n, m in model.policy.topology.masks.items():
        assert torch.equal(loaded.policy.topology.masks[n], m)


def test_cnn_and_multi_input_policies_mask_their_layers():
    image = gym.spaces.Box(0, 255, (3, 40, 40), dtype=np.uint8)
    pol = SparseActorCriticCnnPolicy(image, gym.spaces.Discrete(3), lambda _: 1e-3,
                                     sparsity=0.8, dense_layers=["features_extractor.cnn.0"])
    masked = {layer.module_name for layer in pol.topology.layers}
    assert "features_extractor.cnn.2" in masked and "features_extractor.cnn.0" not in masked
    # SAC's critic shares the actor's (masked) extractor; critic_target's copy follows
    from sparse_agents.sb3 import SparseSACCnnPolicy

    pol = SparseSACCnnPolicy(image, gym.spaces.Box(-1, 1, (2,)), lambda _: 1e-3,
                             share_features_extractor=True)
    online = pol.actor.features_extractor.cnn[2]
    target = pol.critic_target.features_extractor.cnn[2]
    assert torch.equal(online.weight_mask, target.weight_mask)
    assert torch.all(target.weight[~target.weight_mask] == 0)
    space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (5,)), "b": gym.spaces.Discrete(4)})
    pol = SparseMultiInputActorCriticPolicy(space, gym.spaces.Discrete(2), lambda _: 1e-3)
    assert len(pol.topology.layers) == 6
    obs = {"a": np.zeros((2, 5), np.float32), "b": np.array([1, 2])}
    assert pol.predict(obs)[0].shape == (2,)


def test_reset_num_timesteps_true_continues_topology_and_restarts_schedule():
    model = make("PPO")
    model.learn(128)
    topo = model.policy.topology
    step = topo.step
    model.learn(128)  # a fresh count: the schedule restarts from the current step
    frac = defaults_for(type(model.policy))["t_end_fraction"]
    assert topo.schedule.t_end == step + math.floor(frac * planned_optimizer_steps(model, 128))


# ---------------------------------------------------------------------------- condensed
@pytest.mark.parametrize("name,updater", [
    ("PPO", "set"), ("PPO", "srigl"),
    ("DQN", "srigl"), ("SAC", "srigl"),
])
def test_condensed_rollout_same_deterministic_actions(name, updater):
    pytest.importorskip("sparse_agents.condensed")
    model = make(name, updater=updater, condensed_rollout=True)
    model.learn(STEPS[name])
    pol = model.policy
    rollout = pol._sparse.rollout
    assert rollout.copy is not None and rollout.refreshes > 0
    obs = np.stack([model.observation_space.sample() for _ in range(32)])
    fast, _ = model.predict(obs, deterministic=True)
    rollout.available = False  # the masked dense policy itself
    dense, _ = model.predict(obs, deterministic=True)
    rollout.available = True
    if name == "SAC":
        np.testing.assert_allclose(fast, dense, rtol=1e-5, atol=1e-6)
    else:
        assert np.array_equal(fast, dense)


def test_user_output_layers_go_to_their_topology():
    model = make("SAC", output_layers=["actor.mu"])
    protected = {key: [x.module_name for x in t.layers if not x.allow_ablation]
                 for key, t in model.policy.topologies.items()}
    assert protected == {"actor": ["actor.mu"], "critic": []}
    with pytest.raises(ValueError, match="output_layers"):
        make("SAC", output_layers=["nope"])
    with pytest.raises(ValueError, match="SparsityCallback needs a sparse policy"):
        PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).learn(
            32, callback=SparsityCallback())


# ---------------------------------------------------------------------------- CLI
def test_train_agent_cli_writes_model_csv_and_plot(tmp_path):
    from sparse_agents.cli.train_agent import main

    out = tmp_path / "run"
    tiny = ["--hp", "n_envs=1", "--hp", "n_steps=64", "--hp", "batch_size=64",
            "--hp", "n_epochs=1", "--hp", "net_arch=[16,16]", "--eval-episodes", "2",
            "--eval-freq", "128", "--no-progress", "--timesteps", "256", "--delta-t", "2"]
    assert main(tiny + ["--out", str(out)]) == 0
    for name in ("model.zip", "evaluations.csv", "learning_curve.png", "summary.json",
                 "progress.csv", "config.json"):
        assert (out / name).exists(), name
    rows = (out / "evaluations.csv").read_text().splitlines()
    assert rows[0] == "timesteps,mean,std" and len(rows) >= 3
    model = PPO.load(out / "model.zip")
    assert type(model.policy) is SparseActorCriticPolicy
    assert model.policy.topology.updater == "srigl" and model.policy.topology.n_updates > 0
    assert main(tiny + ["--updater", "dense", "--out", str(tmp_path / "dense"),
                        "--no-plot"]) == 0
    assert type(PPO.load(tmp_path / "dense" / "model.zip").policy) is ActorCriticPolicy
    optimizers = [json.loads((d / "summary.json").read_text())["optimizer"]
                  for d in (out, tmp_path / "dense")]
    assert optimizers == ["Adam(fused)", "Adam"]  # what trained each run is recorded
    with pytest.raises(SystemExit):
        main(["--sparsity", "1.5", "--out", str(tmp_path / "bad")])


def test_train_and_evaluate_one_call_experiment():
    from sparse_agents.experiments.rl import train_and_evaluate

    # 4 rollouts of 2 x 64 steps, 2 epochs of 2 mini-batches: 16 optimizer steps;
    # t_end = 0.8 * 16 = 12.8 -> 12, so updates at steps 4 and 8
    out = train_and_evaluate("ppo", "CartPole-v1", "srigl", 0.8, "uniform", timesteps=512,
                             seed=3, eval_episodes=2, n_evals=2,
                             overrides=dict(n_envs=2, n_steps=64, batch_size=64, n_epochs=2),
                             sparse_options=dict(delta_t=4))
    assert out["timesteps"] >= 512 and len(out["curve"]) >= 3
    assert out["mean_return"] == out["curve"][-1][1] and out["mean_return"] > 0
    # SRigL: k = budget // n_alive per row, so a layer may keep up to n_alive - 1 fewer
    assert 0.17 < out["masks"]["density"] <= 0.2
    assert out["masks"]["step"] == 16 and out["masks"]["updates"] == 2
    dense = train_and_evaluate("ppo", "CartPole-v1", "dense", 0.0, timesteps=256, seed=3,
                               eval_episodes=1, n_evals=1,
                               overrides=dict(n_envs=2, n_steps=64, batch_size=64))
    assert dense["masks"] == {}
    with pytest.raises(ValueError, match="sparsity"):
        train_and_evaluate(sparsity=1.0, timesteps=10)


# ---------------------------------------------------------------------------- SB3 coupling
@pytest.mark.parametrize("name", list(ALGOS))
def test_calling_algorithm_finds_the_model_from_train_and_not_from_predict(name, monkeypatch):
    """The one place that reads SB3's call stack: it must find the algorithm when SB3's
    train()/collect_rollouts() switch the policy's mode, and tell predict() apart."""
    import sparse_agents.sb3.mixin as mixin

    seen: list[tuple[object, bool, str]] = []
    real = mixin.calling_algorithm

    def spy(policy, frame, depth=4):
        found, from_training = real(policy, frame, depth)
        seen.append((found, from_training, frame.f_code.co_name))
        return found, from_training

    monkeypatch.setattr(mixin, "calling_algorithm", spy)
    model = make(name)
    model.learn(STEPS[name])
    callers = {caller for found, from_training, caller in seen if found is model and from_training}
    assert "train" in callers, seen
    assert model.policy._sparse.algo_ref() is model
    seen.clear()
    model.predict(np.zeros(model.observation_space.shape, dtype=np.float32))
    assert seen and all(not from_training for _, from_training, _ in seen), seen


def test_rl_defaults_per_algorithm_family():
    """The image-classification schedule (every 100 steps, drop 0.3) is not the RL one."""
    from sparse_agents.sb3 import FAMILY_DEFAULTS

    on, off = FAMILY_DEFAULTS["on_policy"], FAMILY_DEFAULTS["off_policy"]
    for name in ALGOS:
        model = make(name, delta_t=None)  # make() passes delta_t=4 unless told otherwise
        opts = model.policy._sparse_options
        want = on if name in ("PPO", "A2C") else off
        assert {k: opts[k] for k in want} == want, name
        for topo in model.policy.topologies.values():
            assert topo.schedule.delta_t == want["delta_t"]
            assert topo.schedule.drop_fraction == want["drop_fraction"]


def test_on_policy_sparse_policies_start_from_the_fan_avg_sparse_init_by_default():
    """Each kept weight of a freshly built PPO/A2C policy is SB3's initial value times
    sparse_init_scale(mask, "fan_avg"); sparse_init=None (the off-policy default) keeps
    SB3's values."""
    from sparse_agents.sparse_init import sparse_init_scale

    for name in ("DQN", "SAC", "TD3"):
        assert make(name).policy._sparse_options["sparse_init"] is None, name
    for name in ALGOS:
        scaled, kept = make(name, sparse_init="fan_avg"), make(name, sparse_init=None)
        if name in ("PPO", "A2C"):
            assert make(name).policy._sparse_options["sparse_init"] == "fan_avg", name
        for key, topo in scaled.policy.topologies.items():
            other = kept.policy.topologies[key]
            for layer, plain in zip(topo.layers, other.layers, strict=True):
                assert torch.equal(layer.mask, plain.mask), (name, layer.name)
                want = plain.weight.detach() * sparse_init_scale(plain.mask, "fan_avg")
                torch.testing.assert_close(layer.weight.detach(), want)


def test_adam_runs_fused_unless_the_user_chose_an_implementation():
    """Single-tensor Adam is slow on the zero moments of masked weights (docs/rl.md)."""
    def optimizers(model):
        return [topo.optimizer for topo in model.policy.topologies.values()]

    for name in ALGOS:
        model = make(name)
        for opt in optimizers(model):
            want = None if isinstance(opt, torch.optim.RMSprop) else True  # A2C: RMSprop
            assert opt.defaults.get("fused") is want, name
        if name == "PPO":  # SB3's PPO eps survives
            assert optimizers(model)[0].defaults["eps"] == 1e-5
    for kwargs in ({"fused": False}, {"foreach": True}):
        model = make("DQN", optimizer_kwargs=kwargs)
        opt = optimizers(model)[0]
        assert opt.defaults["fused"] in (False, None) and opt.defaults.get("foreach") \
            is kwargs.get("foreach")
    model = make("PPO")
    model.learn(STEPS["PPO"])
    check_invariants(model)  # fused Adam keeps masked weights and moments at 0


@pytest.mark.parametrize("name", ["PPO", "TD3"])
def test_lr_scale_trains_as_the_algorithm_at_that_multiple_of_its_learning_rate(name):
    """lr c with ``lr_scale=2`` steps exactly as lr 2c (doubling is exact in floating
    point), every optimizer of the policy (TD3: actor and critic) included; between steps
    the groups hold the algorithm's value."""
    def train(lr: float, **policy_kwargs):
        kw = dict(n_steps=64, batch_size=32, n_epochs=2) if name == "PPO" else \
            dict(learning_starts=50, buffer_size=1000, batch_size=32)
        model = ALGOS[name](POLICIES[name], make_vec_env(env_id(name), n_envs=1, seed=0),
                            learning_rate=lr, seed=0, device="cpu",
                            policy_kwargs=dict(net_arch=[32, 32], delta_t=4, **policy_kwargs),
                            **kw)
        model.learn(STEPS[name])
        return model

    scaled, doubled, plain = train(1e-3, lr_scale=2), train(2e-3), train(1e-3)
    params = [dict(m.policy.named_parameters()) for m in (scaled, doubled, plain)]
    for key, value in params[0].items():
        torch.testing.assert_close(value, params[1][key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(value, params[2][key]) for key, value in params[0].items())
    for topo in scaled.policy.topologies.values():
        assert [g["lr"] for g in topo.optimizer.param_groups] == [1e-3]
    check_invariants(scaled)


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_lr_scale_must_be_a_finite_positive_number(scale):
    with pytest.raises(ValueError, match="lr_scale"):
        make("PPO", lr_scale=scale)
