"""Task streams in ``envs/``: registration, both env checkers, determinism, physics
that really differs between tasks, ``info["task_id"]``, the one-hot wrapper, errors."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import TaskOneHot, get_stream, list_streams

#: warnings the gymnasium originals raise themselves (CartPole's infinite observation
#: bounds, Pendulum's [-2, 2] torque), and the checker's note that a wrapper is checked
KNOWN_WARNINGS = ("infinity", "symmetric and normalized", "different from the unwrapped")

#: the physics streams (one base environment, changed dynamics); the game, permuted and
#: Meta-World streams have their own tests (tests/test_env_streams_games.py)
PHYSICS = [n for n in list_streams() if get_stream(n).entry_point.startswith("envs.classic")]
ALL_TASKS = [(name, t) for name in PHYSICS for t in range(get_stream(name).n_tasks)]


def _check_quietly(fn, env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(env)
    unexpected = [str(w.message) for w in caught
                  if not any(k in str(w.message) for k in KNOWN_WARNINGS)]
    assert not unexpected, unexpected


def _rollout(env: gymnasium.Env, seed: int, n: int = 60) -> tuple[list, list, list]:
    """Observations, rewards and infos under a fixed, seeded action sequence."""
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards, infos = [obs], [], [info]
    for _ in range(n):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            obs, info = env.reset()
            observations.append(obs)
            infos.append(info)
    return observations, rewards, infos


def test_streams_registered_under_namespace():
    ids = {get_stream(n).env_id for n in list_streams()}
    assert {"cartpole-gravity", "cartpole-length", "cartpole-masscart", "cartpole-physics",
            "acrobot-mass", "pendulum-physics"} <= set(list_streams())
    for env_id in ids:
        assert env_id.startswith("sparse_agents/") and env_id in gymnasium.registry
    # importing again (or registering again) is harmless
    import importlib

    importlib.reload(envs.classic)
    assert {get_stream(n).env_id for n in list_streams()} == ids


@pytest.mark.parametrize(("name", "task_id"), ALL_TASKS)
def test_env_checkers(name, task_id):
    stream = get_stream(name)
    _check_quietly(lambda e: check_env(e.unwrapped, skip_render_check=True),
                   stream.make(task_id))
    _check_quietly(sb3_check_env, stream.make(task_id))
    # the one-hot wrapper passes both checkers too
    _check_quietly(lambda e: check_env(e, skip_render_check=True),
                   stream.make(task_id, one_hot=True))
    _check_quietly(sb3_check_env, stream.make(task_id, one_hot=True))


@pytest.mark.parametrize(("name", "task_id"), ALL_TASKS)
def test_deterministic_under_seed_and_task_id_in_info(name, task_id):
    stream = get_stream(name)
    a = _rollout(stream.make(task_id), seed=3)
    b = _rollout(stream.make(task_id), seed=3)
    np.testing.assert_array_equal(np.stack(a[0]), np.stack(b[0]))
    assert a[1] == b[1]
    assert all(info["task_id"] == task_id for info in a[2])
    c = _rollout(stream.make(task_id), seed=4)
    assert not np.array_equal(np.stack(a[0][:5]), np.stack(c[0][:5]))


@pytest.mark.parametrize("name", PHYSICS)
def test_physics_differs_between_tasks(name):
    """Same seed and actions: the first observation agrees, the trajectories part."""
    stream = get_stream(name)
    envs_ = [stream.make(t) for t in range(stream.n_tasks)]
    for t, env in enumerate(envs_):
        assert env.observation_space == envs_[0].observation_space
        assert env.action_space == envs_[0].action_space
        assert stream.describe(t) != stream.describe(0) or t == 0
    trajectories = []
    for env in envs_:
        obs, _ = env.reset(seed=7)
        env.action_space.seed(7)
        traj = [obs]
        for _ in range(8):
            obs, _, terminated, *_ = env.step(env.action_space.sample())
            traj.append(obs)
            if terminated:
                break
        trajectories.append(np.stack(traj))
    for t in range(1, stream.n_tasks):
        n = min(len(trajectories[t]), len(trajectories[0]))
        assert n >= 3
        np.testing.assert_array_equal(trajectories[t][0], trajectories[0][0])
        assert not np.allclose(trajectories[t][1:n], trajectories[0][1:n]), (name, t)


def test_cartpole_derived_quantities_recomputed():
    env = gymnasium.make("sparse_agents/CartPole-physics-v0", task_id=0).unwrapped
    assert env.length == 2.0 and env.masspole == 0.1
    assert env.polemass_length == pytest.approx(0.2)
    env = get_stream("cartpole-gravity").make(0, length=1.0, masspole=0.3).unwrapped
    assert env.total_mass == pytest.approx(1.3)
    assert env.polemass_length == pytest.approx(0.3)
    env = get_stream("cartpole-masscart").make(3).unwrapped
    assert env.total_mass == pytest.approx(5.1)
    # keyword overrides reach the physics
    env = get_stream("cartpole-gravity").make(0, gravity=3.0, length=0.7).unwrapped
    assert (env.gravity, env.polemass_length) == (3.0, pytest.approx(0.07))
    assert get_stream("acrobot-mass").make(3).unwrapped.LINK_MASS_1 == 2.0
    pendulum = get_stream("pendulum-physics").make(2).unwrapped
    assert (pendulum.g, pendulum.m) == (15.0, 1.0)


def test_stream_api_and_descriptions():
    stream = get_stream("cartpole-physics")
    assert stream.n_tasks >= 3
    assert len(stream.descriptions) == stream.n_tasks
    assert "gravity=19.6*" in stream.describe(1)
    assert stream.params(3)["masscart"] == 3.0
    env = gymnasium.make(stream.env_id, task_id=1)
    assert env.unwrapped.gravity == 19.6 and env.spec.max_episode_steps == 500


def test_one_hot_wrapper():
    stream = get_stream("cartpole-gravity")
    env = stream.make(2, one_hot=True)
    base = stream.make(2).observation_space
    space = env.observation_space
    assert space.shape == (base.shape[0] + stream.n_tasks,) and space.dtype == base.dtype
    np.testing.assert_array_equal(space.low[-stream.n_tasks:], 0)
    np.testing.assert_array_equal(space.high[-stream.n_tasks:], 1)
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs[-stream.n_tasks:], [0, 0, 1, 0])
    plain, _ = stream.make(2).reset(seed=0)
    np.testing.assert_array_equal(obs[: base.shape[0]], plain)
    assert info["task_id"] == 2 and space.contains(obs)
    obs, *_, info = env.step(0)
    np.testing.assert_array_equal(obs[-stream.n_tasks:], [0, 0, 1, 0])
    assert info["task_id"] == 2
    with pytest.raises(KeyError, match=r"task_id must be an integer in \[0, 3\]"):
        TaskOneHot(stream.make(0), task_id=4, n_tasks=4)
    with pytest.raises(ValueError, match="n_tasks"):
        TaskOneHot(stream.make(0), task_id=0, n_tasks=0)
    with pytest.raises(ValueError, match="1-D Box"):
        TaskOneHot(gymnasium.make("FrozenLake-v1"), task_id=0, n_tasks=2)


def test_unknown_stream_and_task_errors():
    with pytest.raises(ValueError, match=r"stream must be one of \[.*'cartpole-physics'"):
        get_stream("cartpole-nope")
    stream = get_stream("cartpole-physics")
    for bad in (stream.n_tasks, -1, 1.0, "0", True):
        with pytest.raises(KeyError, match=r"task_id must be an integer in \[0, 3\]"):
            stream.make(bad)
        with pytest.raises(KeyError, match=r"\[0, 3\]"):
            stream.describe(bad)
    with pytest.raises(KeyError, match=r"\[0, 3\]"):
        gymnasium.make(stream.env_id, task_id=7)
    with pytest.raises(ValueError, match="gravity must be a finite number > 0"):
        stream.make(0, gravity=-1.0)
    with pytest.raises(ValueError, match="force_mag"):
        stream.make(0, force_mag=0.0)
