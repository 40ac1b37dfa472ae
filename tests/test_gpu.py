"""Sparse training on CUDA (issue 14): SB3 agents, condensed rollout, Avalanche plugins and
device-independent masks. Every test is marked ``gpu`` and skipped without CUDA.

``SPARSE_AGENTS_TEST_DEVICE`` (default ``cuda``) names the device, so the same test bodies
can be checked on a machine without a GPU::

    SPARSE_AGENTS_TEST_DEVICE=cpu pytest -q -m gpu tests/test_gpu.py

(the CPU-vs-device mask comparison then compares CPU with CPU).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from avalanche_helpers import Capture, Net
from helpers import batch, mlp
from invariants import check_topology
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sparse_agents.sb3 import SparseActorCriticPolicy, SparseDQNPolicy, SparseSACPolicy
from sparse_agents.topology import SparseTopology

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.core import SupervisedPlugin
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

from continual import DSTPlugin, TaskMaskPlugin
from continual.streams import split_digits
from continual.task_masks import OWNER_BUFFER

DEVICE = os.environ.get("SPARSE_AGENTS_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.device(DEVICE).type == "cuda" and not torch.cuda.is_available(),
                       reason="needs CUDA"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

ALGOS = {"PPO": PPO, "DQN": DQN, "SAC": SAC}
POLICIES = {"PPO": SparseActorCriticPolicy, "DQN": SparseDQNPolicy, "SAC": SparseSACPolicy}
STEPS = {"PPO": 256, "DQN": 300, "SAC": 200}


def env_id(name: str) -> str:
    return "Pendulum-v1" if name == "SAC" else "CartPole-v1"


def make(name: str, seed: int = 0, device: str = DEVICE, **policy_kwargs):
    """A tiny sparse agent on ``device``: small nets, frequent topology updates."""
    pk = dict(net_arch=[32, 32], delta_t=4, sparsity=0.9, seed=seed)
    pk.update(policy_kwargs)
    kw: dict = dict(seed=seed, verbose=0, device=device, policy_kwargs=pk)
    if name == "PPO":
        kw.update(n_steps=64, batch_size=32, n_epochs=2)
    elif name == "DQN":
        kw.update(learning_starts=50, buffer_size=1000, batch_size=32, tau=0.5,
                  target_update_interval=1)
    else:
        kw.update(learning_starts=50, buffer_size=1000, batch_size=32, tau=0.1)
    env = make_vec_env(env_id(name), n_envs=1, seed=seed)
    return ALGOS[name](POLICIES[name], env, **kw)


def fixed_obs(model, n: int = 32) -> np.ndarray:
    space = model.observation_space
    space.seed(123)
    return np.stack([space.sample() for _ in range(n)])


def held_tensors(topo: SparseTopology):
    """``(name, tensor)`` for every tensor ``topo`` holds per layer."""
    for layer in topo.layers:
        yield f"{layer.name}: weight", layer.weight
        yield f"{layer.name}: mask", layer.mask
        yield f"{layer.name}: ever_active", layer.ever_active
        for attr in ("allowed", "frozen", "frozen_values"):
            value = getattr(layer, attr)
            if value is not None:
                yield f"{layer.name}: {attr}", value


def assert_on_device(topo: SparseTopology, device: torch.device) -> None:
    wrong = [f"{name} on {t.device}" for name, t in held_tensors(topo) if t.device != device]
    assert not wrong, f"tensors not on {device}: {wrong}"


def model_device(module: nn.Module) -> torch.device:
    device = next(module.parameters()).device
    assert device.type == torch.device(DEVICE).type, device
    return device


def check_agent(model, device: torch.device) -> None:
    """Invariants 1-2 for every topology, every held tensor on ``device``, target
    networks carrying the online masks."""
    pol = model.policy
    assert pol.topologies
    for topo in pol.topologies.values():
        check_topology(topo)
        assert_on_device(topo, device)
    for pairs in pol._sparse.targets.values():
        for online, target in pairs:
            assert target.weight_mask.device == device
            assert torch.equal(online.weight_mask, target.weight_mask)
            assert torch.all(target.weight[~target.weight_mask] == 0)


def assert_same_actions(name: str, got: np.ndarray, want: np.ndarray) -> None:
    """Discrete actions exactly; SAC's continuous actions up to float32 rounding
    (another device or kernel sums in another order)."""
    if name == "SAC":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    else:
        assert np.array_equal(got, want)


# ---------------------------------------------------------------------------- SB3
@pytest.mark.parametrize("name,updater", [
    ("PPO", "srigl"), ("PPO", "rigl"), ("DQN", "srigl"), ("SAC", "srigl"), ("SAC", "set"),
])
def test_learn_on_device_keeps_invariants_and_tensors_on_device(name, updater):
    model = make(name, updater=updater)
    model.learn(STEPS[name])
    device = model_device(model.policy)
    for key, topo in model.policy.topologies.items():
        assert topo.n_updates > 0, (key, topo.step, topo.schedule.t_end)
    check_agent(model, device)


@pytest.mark.parametrize("name", ["PPO", "DQN", "SAC"])
def test_save_on_device_load_on_cpu_same_actions(name, tmp_path):
    model = make(name, updater="srigl")
    model.learn(STEPS[name])
    path = tmp_path / "model.zip"
    model.save(path)
    obs = fixed_obs(model)
    want, _ = model.predict(obs, deterministic=True)

    env = make_vec_env(env_id(name), n_envs=1, seed=1)
    loaded = ALGOS[name].load(path, env=env, device="cpu")
    pol = loaded.policy
    assert next(pol.parameters()).device == torch.device("cpu")
    got, _ = loaded.predict(obs, deterministic=True)
    assert_same_actions(name, got, want)
    for key, topo in model.policy.topologies.items():
        other = pol.topologies[key]
        assert other.step == topo.step and other.n_updates == topo.n_updates
        for layer, cpu_layer in zip(topo.layers, other.layers, strict=True):
            assert torch.equal(cpu_layer.mask, layer.mask.cpu()), layer.name
            assert torch.equal(cpu_layer.ever_active, layer.ever_active.cpu()), layer.name
            assert torch.equal(cpu_layer.weight, layer.weight.detach().cpu()), layer.name
    check_agent(loaded, torch.device("cpu"))
    # training goes on on the CPU (optimizer state moved there by SB3's load)
    before = {k: t.step for k, t in pol.topologies.items()}
    loaded.learn(128 if name == "PPO" else 100, reset_num_timesteps=False)
    assert all(t.step > before[k] for k, t in pol.topologies.items())
    check_agent(loaded, torch.device("cpu"))


@pytest.mark.parametrize("name", ["PPO", "DQN", "SAC"])
def test_condensed_rollout_on_device_same_actions(name, monkeypatch):
    from sparse_agents.condensed import kernels

    # the automatic kernel choice times each new (shape, batch) briefly, not 0.25 s
    monkeypatch.setattr(kernels, "MEASURE_BUDGET_S", 0.02)
    model = make(name, updater="srigl", condensed_rollout=True)
    model.learn(STEPS[name])
    pol = model.policy
    device = model_device(pol)
    check_agent(model, device)
    rollout = pol._sparse.rollout
    assert rollout.copy is not None and rollout.refreshes > 0
    copy_tensors = list(rollout.copy.parameters()) + list(rollout.copy.buffers())
    assert copy_tensors and all(t.device == device for t in copy_tensors)
    obs = fixed_obs(model)
    fast, _ = model.predict(obs, deterministic=True)
    rollout.available = False  # the masked dense policy itself
    try:
        plain, _ = model.predict(obs, deterministic=True)
    finally:
        rollout.available = True
    assert_same_actions(name, fast, plain)


# ---------------------------------------------------------------------------- Avalanche
@pytest.fixture(scope="module")
def bench():
    return split_digits(n_tasks=3, seed=0, task_incremental=True, max_train_per_task=80)


class Check(SupervisedPlugin):
    """After every optimizer step: invariants 1-2 and every held tensor on the model's
    device, for the plugin's current topology."""

    def __init__(self, plugin) -> None:
        super().__init__()
        self.plugin = plugin
        self.checked = 0

    def after_update(self, strategy, **kwargs):
        topo = self.plugin.topology
        assert topo.optimizer is strategy.optimizer
        check_topology(topo, strategy.optimizer)
        assert_on_device(topo, model_device(strategy.model))
        self.checked += 1


def naive(model, plugin, *extra):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    check = Check(plugin)
    strat = Naive(model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(),
                  train_mb_size=16, train_epochs=1, eval_mb_size=64, device=DEVICE,
                  plugins=[plugin, check, *extra], evaluator=evaluator)
    return strat, check


@pytest.mark.parametrize("updater", ["srigl", "rigl"])
def test_task_mask_plugin_on_device_earlier_tasks_bit_identical(bench, updater):
    model = Net().to(DEVICE)
    plugin = TaskMaskPlugin(sparsity=0.8, updater=updater, n_tasks=3, delta_t=2, seed=0)
    cap = Capture()
    strat, check = naive(model, plugin, cap)
    exps = list(bench.train_stream)
    for i, exp in enumerate(exps):
        strat.train(exp, eval_streams=[])
        strat.eval(bench.test_stream[: i + 1])  # round i evaluates tasks 0..i
    assert check.checked > 0
    device = model_device(model)
    for j in range(len(exps)):
        first = cap.outputs[(j, j)]
        assert first and all(t.device == device for t in first)
        for r in range(j + 1, len(exps)):
            later = cap.outputs[(r, j)]
            assert len(later) == len(first)
            assert all(torch.equal(a, b) for a, b in zip(first, later, strict=True)), \
                f"task {j}: outputs changed after training task {r}"
    tm = plugin.task_masks
    assert tm.task_ids == [0, 1, 2]
    assert_on_device(tm.topology, device)
    for layer in tm.layers:
        assert getattr(layer.module, OWNER_BUFFER).device == device
    # topology updates ran while training every task (history: taken before end_task)
    assert [h["updates"] > 0 for h in plugin.history] == [True] * len(exps), plugin.history


@pytest.mark.parametrize("updater", ["srigl", "rigl"])
def test_dst_plugin_on_device(bench, updater):
    model = Net().to(DEVICE)
    plugin = DSTPlugin(sparsity=0.8, updater=updater, delta_t=2, seed=0)
    cap = Capture()
    strat, check = naive(model, plugin, cap)
    for exp in list(bench.train_stream)[:2]:
        strat.train(exp, eval_streams=[])
    strat.eval(bench.test_stream[:2])
    topo = plugin.topology
    assert check.checked > 0 and topo.n_updates > 0
    device = model_device(model)
    check_topology(topo)
    assert_on_device(topo, device)
    assert {x.module_name for x in topo.layers} == {"backbone.0", "backbone.2"}
    assert all(t.device == device for outs in cap.outputs.values() for t in outs)
    assert len(plugin.history) == 2


# ---------------------------------------------------------------------------- seeds
def _steps_on(device: str, updater: str, n_steps: int) -> tuple[list[dict], SparseTopology]:
    """A small MLP + SparseTopology(seed=0) on ``device``, trained ``n_steps`` SGD steps
    on fixed data; the masks after every step (on the CPU)."""
    model = mlp(seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    topo = SparseTopology(model, opt, sparsity=0.8, updater=updater, delta_t=2, seed=0)
    masks = [{n: m.detach().cpu().clone() for n, m in topo.masks.items()}]
    for step in range(n_steps):
        x, y = batch(model, step)
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        check_topology(topo, opt)
        assert_on_device(topo, next(model.parameters()).device)
        masks.append({n: m.detach().cpu().clone() for n, m in topo.masks.items()})
    return masks, topo


@pytest.mark.parametrize("updater", ["srigl", "rigl"])
def test_same_seed_same_masks_on_cpu_and_device(updater):
    n_steps = 8
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: fp32 on both devices
    try:
        cpu_masks, cpu_topo = _steps_on("cpu", updater, n_steps)
        dev_masks, dev_topo = _steps_on(DEVICE, updater, n_steps)
    finally:
        torch.set_float32_matmul_precision(precision)
    assert cpu_topo.n_updates == dev_topo.n_updates == n_steps // 2
    for step, (a, b) in enumerate(zip(cpu_masks, dev_masks, strict=True)):
        for name, mask in a.items():
            assert torch.equal(mask, b[name]), f"{name} differs after step {step}"
    # the updates really moved the masks
    assert any(not torch.equal(cpu_masks[0][n], cpu_masks[-1][n]) for n in cpu_masks[0])
    for layer in dev_topo.layers:
        assert layer.mask.device.type == torch.device(DEVICE).type


@pytest.mark.parametrize("engine", ["torch", "avalanche"])
def test_cl_experiment_on_device_matches_its_invariants(engine):
    from continual.experiment import run_experiment

    out = run_experiment("split-digits", updater="rigl", sparsity=0.8, epochs=1, seed=0,
                         n_tasks=3, engine=engine, device=DEVICE, backbone="cnn",
                         max_train_per_task=64)
    assert out["device"] == DEVICE and out["forgetting"] == 0.0  # earlier tasks frozen
    assert out["fwt"] is not None and all(v is not None for v in out["next_task_accuracies"][1:])
    assert 0.0 <= out["avg_accuracy"] <= 1.0
