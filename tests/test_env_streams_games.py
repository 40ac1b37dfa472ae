"""The MinAtar, permuted and Meta-World (Continual World) task streams of ``envs/``:
registration, equal spaces, padding and permutations against the unmodified games, the
full action set, ``info["task_id"]``, seeding, success as Continual World counts it."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest

import envs
from envs import get_stream, list_streams

NEW_STREAMS = {"minatar-games": 5, "minatar-permuted": 20, "cartpole-permuted": 20,
               "metaworld-cw10": 10, "metaworld-cw3": 3}
CW10 = ["hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3",
        "handle-press-side-v3", "push-v3", "shelf-place-v3", "window-close-v3",
        "peg-unplug-side-v3"]


def _rollout(env: gymnasium.Env, seed: int, actions: list, reset_on_end: bool = True
             ) -> tuple[list, list, list]:
    """Observations, rewards and infos of ``actions`` after ``reset(seed=seed)``."""
    obs, info = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            if not reset_on_end:
                break
            obs, info = env.reset()
            observations.append(obs)
            infos.append(info)
    return observations, rewards, infos


def _assert_spaces_equal(stream_name: str, task_ids=None) -> gymnasium.Env:
    stream = get_stream(stream_name)
    made = [stream.make(t) for t in (task_ids or range(stream.n_tasks))]
    for env in made:
        assert env.observation_space == made[0].observation_space
        assert env.action_space == made[0].action_space
    return made[0]


# ---------------------------------------------------------------------- registration
def test_registered_with_metric_and_tasks():
    for name, n_tasks in NEW_STREAMS.items():
        stream = get_stream(name)
        assert name in list_streams() and stream.n_tasks == n_tasks
        assert stream.env_id.startswith("sparse_agents/") and stream.env_id in gymnasium.registry
        assert stream.metric == ("success" if name.startswith("metaworld") else "return")
    assert get_stream("cartpole-physics").metric == "return"
    assert [t["task_name"] for t in get_stream("metaworld-cw10").tasks] == CW10
    assert [t["task_name"] for t in get_stream("metaworld-cw3").tasks] == CW10[:3]
    games = [get_stream("minatar-games").params(t)["game"] for t in range(5)]
    assert games == ["breakout", "space_invaders", "asterix", "freeway", "seaquest"]
    assert gymnasium.spec(get_stream("metaworld-cw10").env_id).max_episode_steps == 200


def test_registration_imports_neither_metaworld_nor_minatar():
    """``import envs`` works without both packages; building an env names the extra."""
    code = (
        "import sys\n"
        "sys.modules['metaworld'] = None\n"  # makes `import metaworld` fail
        "sys.modules['minatar'] = None\n"
        "import gymnasium, envs\n"
        "assert 'metaworld-cw10' in envs.list_streams()\n"
        "assert 'sparse_agents/MetaWorld-CW3-v0' in gymnasium.registry\n"
        "for name, extra in (('metaworld-cw3', 'cw'), ('minatar-games', 'envs')):\n"
        "    try:\n"
        "        envs.get_stream(name).make(0)\n"
        "    except ImportError as err:\n"
        "        assert f'sparse-agents[{extra}]' in str(err), err\n"
        "    else:\n"
        "        raise AssertionError(name)\n"
        "envs.get_stream('cartpole-permuted').make(1).reset(seed=0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------- cartpole-permuted
def test_cartpole_permuted_is_cartpole_with_permuted_signed_observation(no_network):
    stream = get_stream("cartpole-permuted")
    env0 = _assert_spaces_equal("cartpole-permuted")
    assert env0.observation_space.shape == (4,) and env0.action_space.n == 2
    pairs = [(stream.params(t)["permutation"], stream.params(t)["signs"])
             for t in range(stream.n_tasks)]
    assert pairs[0] == ((0, 1, 2, 3), (1, 1, 1, 1)) and len(set(pairs)) == stream.n_tasks
    actions = list(np.random.default_rng(0).integers(0, 2, 40))
    base = _rollout(gymnasium.make(stream.env_id, task_id=0), 5, actions)
    plain = _rollout(gymnasium.make("CartPole-v1"), 5, actions)
    np.testing.assert_array_equal(np.stack(base[0]), np.stack(plain[0]))  # task 0: identity
    for t in (1, 7, 19):
        perm, signs = pairs[t]
        obs, rewards, infos = _rollout(stream.make(t), 5, actions)
        expected = np.stack(base[0])[:, list(perm)] * np.asarray(signs, np.float32)
        np.testing.assert_array_equal(np.stack(obs), expected)
        assert rewards == base[1] and all(i["task_id"] == t for i in infos)
        assert not np.array_equal(np.stack(obs), np.stack(base[0]))
    again = _rollout(stream.make(3), 5, actions)
    np.testing.assert_array_equal(np.stack(again[0]), np.stack(_rollout(stream.make(3), 5,
                                                                         actions)[0]))
    with pytest.raises(ValueError, match="permutation"):
        stream.make(0, permutation=(0, 0, 1, 2))
    with pytest.raises(ValueError, match="signs"):
        stream.make(0, signs=(1, 2, 1, 1))


# ---------------------------------------------------------------------- MinAtar
def _minatar_reference(game: str):
    """MinAtar's own gymnasium env with the full action set (``MinAtar/<Game>-v0``)."""
    gym_module = pytest.importorskip("minatar.gym")
    return gym_module.BaseEnv(game, use_minimal_action_set=False)


def test_minatar_games_padded_full_action_set(no_network):
    _minatar_reference("breakout")
    stream = get_stream("minatar-games")
    env0 = _assert_spaces_equal("minatar-games")
    space = env0.observation_space
    assert space.shape == (10, 10, 10) and space.dtype == np.bool_
    assert env0.action_space == gymnasium.spaces.Discrete(6)
    actions = [a % 6 for a in range(30)]  # every action, also those outside minimal sets
    for t, game in enumerate(["breakout", "space_invaders", "asterix", "freeway",
                              "seaquest"]):
        obs, rewards, infos = _rollout(stream.make(t), 11, actions)
        ref_obs, ref_rewards, _ = _rollout(_minatar_reference(game), 11, actions)
        own = ref_obs[0].shape[-1]
        obs = np.stack(obs)
        assert obs.dtype == np.bool_ and obs.shape[1:] == (10, 10, 10)
        np.testing.assert_array_equal(obs[..., :own], np.stack(ref_obs))
        assert not obs[..., own:].any()  # zero padding
        assert rewards == ref_rewards and all(i["task_id"] == t for i in infos)
        assert all(space.contains(o) for o in obs)
    # Breakout's minimal action set is [0, 1, 3]: "right" (3) and "left" (1) move the
    # paddle, and actions 2, 4, 5 are accepted (no-ops for Breakout)
    env = stream.make(0, sticky_action_prob=0.0)
    env.reset(seed=0)
    paddle = [env.step(a)[0][9, :, 0].argmax() for a in (3, 3, 1, 5, 2, 4)]
    assert paddle[1] == paddle[0] + 1 and paddle[2] == paddle[1] - 1
    assert paddle[2] == paddle[3] == paddle[4] == paddle[5]


def test_minatar_seeding_and_cnn():
    pytest.importorskip("minatar")
    torch = pytest.importorskip("torch")
    stream = get_stream("minatar-games")
    actions = list(np.random.default_rng(1).integers(0, 6, 80))
    a = _rollout(stream.make(1), 3, actions)
    env = stream.make(1)
    _rollout(env, 9, actions[:17])  # history does not leak into a seeded episode
    b = _rollout(env, 3, actions)
    np.testing.assert_array_equal(np.stack(a[0]), np.stack(b[0]))
    assert a[1] == b[1]
    c = _rollout(stream.make(1), 4, actions)
    assert not np.array_equal(np.stack(a[0]), np.stack(c[0]))
    # a seeded reset clears the sticky action (repeated half of the time here): a fresh
    # env and one whose last action was "right" play the same episodes
    env = stream.make(0, sticky_action_prob=0.5)
    for seed in range(4):
        fresh = _rollout(stream.make(0, sticky_action_prob=0.5), seed, [1] * 4)
        _rollout(env, 100 + seed, [3] * 8)
        used = _rollout(env, seed, [1] * 4)
        np.testing.assert_array_equal(np.stack(fresh[0]), np.stack(used[0]))

    from sparse_agents.sb3.extractors import MinAtarCNN

    cnn = MinAtarCNN(stream.make(0).observation_space)
    batch = torch.as_tensor(np.stack([stream.make(t).reset(seed=0)[0] for t in range(5)]))
    assert cnn(batch).shape == (5, 128)


def test_minatar_permuted_channels(no_network):
    _minatar_reference("breakout")
    stream = get_stream("minatar-permuted")
    env0 = _assert_spaces_equal("minatar-permuted", task_ids=[0, 1, 10, 19])
    assert env0.observation_space.shape == (10, 10, 4) and env0.action_space.n == 6
    perms = [stream.params(t)["channel_permutation"] for t in range(stream.n_tasks)]
    assert perms[0] == (0, 1, 2, 3) and len(set(perms)) == 20
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms)
    actions = [a % 6 for a in range(40)]
    base, base_rewards, _ = _rollout(stream.make(0), 2, actions)
    ref, _, _ = _rollout(_minatar_reference("breakout"), 2, actions)
    np.testing.assert_array_equal(np.stack(base), np.stack(ref))  # task 0: identity
    for t in (1, 5, 19):
        obs, rewards, infos = _rollout(gymnasium.make(stream.env_id, task_id=t), 2, actions)
        np.testing.assert_array_equal(np.stack(obs), np.stack(base)[..., list(perms[t])])
        assert rewards == base_rewards and all(i["task_id"] == t for i in infos)
    with pytest.raises(ValueError, match="channel_permutation"):
        stream.make(0, channel_permutation=(0, 1, 2))


# ---------------------------------------------------------------------- Meta-World
def test_metaworld_cw3_runs_resets_and_reports_success(no_network):
    pytest.importorskip("metaworld")
    stream = get_stream("metaworld-cw3")
    env0 = _assert_spaces_equal("metaworld-cw3")
    assert env0.observation_space.shape == (39,) and env0.action_space.shape == (4,)
    assert np.isinf(env0.observation_space.high[36:]).all()  # goal bounds removed (CW)
    env = stream.make(0)
    assert env.spec.max_episode_steps == 200
    obs, info = env.reset(seed=0)
    assert info["task_id"] == 0 and env.observation_space.contains(obs)
    env.action_space.seed(0)
    steps, infos = 0, []
    while True:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        infos.append(info)
        if terminated or truncated:
            break
    assert steps == 200 and truncated and not terminated
    assert "is_success" in infos[-1] and infos[-1]["is_success"] in (True, False)
    assert all(i["task_id"] == 0 for i in infos)
    obs, info = env.reset()
    assert env.observation_space.contains(obs)
    env.step(env.action_space.sample())


def test_metaworld_success_at_any_step():
    """An episode succeeds if any step succeeds (CW's SuccessCounter); the time limit
    (here 6 steps) ends the episode and its last info carries ``is_success``."""
    pytest.importorskip("metaworld")
    env = get_stream("metaworld-cw3").make(1, max_episode_steps=6)
    inner = env.unwrapped._env
    evaluate = inner.evaluate_state
    calls = []

    def succeed_at_step_3(obs, action):
        reward, info = evaluate(obs, action)
        calls.append(1)
        return reward, {**info, "success": float(len(calls) == 3)}

    inner.evaluate_state = succeed_at_step_3
    env.reset(seed=0)
    flags = []
    for _ in range(6):
        *_, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        flags.append((info["success"], info["is_success"]))
    assert truncated and flags[-1] == (0.0, True)
    assert [f[1] for f in flags] == [False, False, True, True, True, True]
    env.reset()  # a new episode starts unsuccessful
    calls.clear()
    calls.extend([1] * 10)
    assert env.step(np.zeros(4, np.float32))[-1]["is_success"] is False


def test_metaworld_one_hot_and_seeding():
    pytest.importorskip("metaworld")
    stream = get_stream("metaworld-cw3")
    env = stream.make(2, one_hot=True)
    assert env.observation_space.shape == (39 + 3,)
    obs, info = env.reset(seed=4)
    np.testing.assert_array_equal(obs[-3:], [0, 0, 1])
    plain, _ = stream.make(2).reset(seed=4)
    np.testing.assert_array_equal(obs[:39], plain)
    obs, *_, info = env.step(np.zeros(4, np.float32))
    np.testing.assert_array_equal(obs[-3:], [0, 0, 1])
    assert info["task_id"] == 2 and env.observation_space.contains(obs)

    # same seed and actions: the same trajectory; another seed: other positions
    actions = list(np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float32))
    a = np.stack(_rollout(stream.make(1), 3, actions)[0])
    b = np.stack(_rollout(stream.make(1), 3, actions)[0])
    c = np.stack(_rollout(stream.make(1), 8, actions)[0])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0, 36:], c[0, 36:])  # push-wall: another goal
    # random_init_all (CW's default) redraws the positions at each reset;
    # "deterministic" keeps the ones of the seeded reset
    env = stream.make(1)
    first, _ = env.reset(seed=3)
    assert not np.allclose(env.reset()[0][36:], first[36:])
    env = stream.make(1, randomization="deterministic")
    first, _ = env.reset(seed=3)
    np.testing.assert_array_equal(env.reset()[0], first)
    np.testing.assert_array_equal(first, a[0])  # the same draw as random_init_all's
    with pytest.raises(ValueError, match="randomization"):
        stream.make(0, randomization="random_init_fixed20")
    with pytest.raises(ValueError, match="Meta-World v3 task"):
        stream.make(0, task_name="hammer-v2")


def test_metaworld_cw10_spaces_equal():
    pytest.importorskip("metaworld")
    env = _assert_spaces_equal("metaworld-cw10")
    assert env.observation_space.dtype == np.float32
    assert envs.get_stream("metaworld-cw10").make(9, one_hot=True).observation_space.shape == (49,)


@pytest.mark.parametrize("name", sorted(NEW_STREAMS))
def test_first_and_last_tasks_pass_the_env_checkers(name):
    if name.startswith("minatar"):
        pytest.importorskip("minatar")
    if name.startswith("metaworld"):
        pytest.importorskip("metaworld")
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    stream = get_stream(name)
    for task_id in (0, stream.n_tasks - 1):
        check_env(stream.make(task_id).unwrapped, skip_render_check=True)
        sb3_check_env(stream.make(task_id), warn=False)
