"""rl-baselines3-zoo: the hyperparameter files in hyperparams/ name the sparse aliases, and
``python -m rl_zoo3.train --gym-packages sparse_agents.sb3 -conf hyperparams/ppo.yml``
trains, saves and ``rl_zoo3.enjoy`` replays a sparse agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torch import nn

rl_zoo3 = pytest.importorskip("rl_zoo3")

import sparse_agents.sb3  # noqa: E402,F401 - registers the aliases
from sparse_agents.sb3 import SparsePolicyMixin  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HYPERPARAMS = ROOT / "hyperparams"
ZOO_HYPERPARAMS = Path(rl_zoo3.__file__).parent / "hyperparams"
#: tasks docs/rl.md uses (algorithm file, environment id)
REQUIRED = [("ppo", "CartPole-v1"), ("dqn", "CartPole-v1"), ("a2c", "CartPole-v1"),
            ("sac", "Pendulum-v1"), ("td3", "Pendulum-v1"), ("ppo", "HalfCheetah-v5"),
            ("sac", "HalfCheetah-v5")]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _files() -> list[Path]:
    return sorted(HYPERPARAMS.glob("*.yml"))


def test_required_tasks_are_shipped():
    have = {(f.stem, env) for f in _files() for env in _load(f)}
    assert set(REQUIRED) <= have, sorted(set(REQUIRED) - have)


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_files_are_the_zoos_with_a_sparse_policy(path):
    from rl_zoo3.utils import ALGOS

    algo = ALGOS[path.stem]
    zoo = _load(ZOO_HYPERPARAMS / path.name)
    for env_id, ours in _load(path).items():
        policy = algo.policy_aliases[ours["policy"]]
        assert issubclass(policy, SparsePolicyMixin), (path.name, env_id)
        kwargs = eval(ours["policy_kwargs"], {"nn": nn})  # as rl_zoo3 does
        assert kwargs["sparsity"] == 0.9 and kwargs["updater"] == "srigl"
        # everything else is the zoo's own tuned entry (v5 tasks: the zoo's v4 entry)
        theirs = zoo[env_id if env_id in zoo else env_id.replace("-v5", "-v4")]
        plain = {k: v for k, v in ours.items() if k not in ("policy", "policy_kwargs")}
        assert plain == {k: v for k, v in theirs.items() if k not in ("policy", "policy_kwargs")}
        assert theirs["policy"] == ours["policy"].removeprefix("Sparse")
        zoo_kwargs = eval(theirs.get("policy_kwargs", "dict()"), {"nn": nn})
        assert {k: v for k, v in kwargs.items() if k in zoo_kwargs} == zoo_kwargs


def _run(*args: str, cwd: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_then_enjoy_a_sparse_ppo_agent(tmp_path):
    from stable_baselines3 import PPO

    logs = tmp_path / "logs"
    out = _run("rl_zoo3.train", "--algo", "ppo", "--env", "CartPole-v1",
               "--gym-packages", "sparse_agents.sb3", "-conf", str(HYPERPARAMS / "ppo.yml"),
               "--n-timesteps", "2000", "--eval-freq", "-1", "--seed", "0",
               "-f", str(logs), cwd=tmp_path)
    assert "sparse/" in out  # the metrics table of the SB3 logger
    zips = sorted(logs.glob("ppo/CartPole-v1_*/CartPole-v1.zip"))
    assert len(zips) == 1, list(logs.rglob("*"))

    model = PPO.load(zips[0])
    policy = model.policy
    assert type(policy).__name__ == "SparseActorCriticPolicy"
    assert isinstance(policy, SparsePolicyMixin)
    assert policy._sparse_options["sparsity"] == 0.9
    assert policy._sparse_options["updater"] == "srigl"
    layers = policy.topology.layers
    assert layers and all(hasattr(x.module, "weight_mask") for x in layers)
    assert 0.08 <= policy.sparse_metrics()["density"] <= 0.105
    for layer in layers:
        assert not layer.weight.detach()[~layer.mask].any(), layer.module_name
    assert policy.topology.step > 0

    out = _run("rl_zoo3.enjoy", "--algo", "ppo", "--env", "CartPole-v1", "-f", str(logs),
               "--gym-packages", "sparse_agents.sb3", "--no-render", "-n", "100",
               cwd=tmp_path)
    assert "Loading" in out and "Episode Reward" in out
