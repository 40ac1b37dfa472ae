"""MinAtar task streams and the permuted-observation (plasticity) streams.

* ``minatar-games``: the five MinAtar games (Breakout, SpaceInvaders, Asterix, Freeway,
  Seaquest) behind one interface, so that one network serves all of them: the full
  6-action set in every game (MinAtar's ``use_minimal_action_set=False``, as its
  ``MinAtar/<Game>-v0`` ids) and observations zero-padded to 10 channels (``(10, 10, 10)``
  bool, channels last, as MinAtar gives them and ``MinAtarCNN`` reads them; the game's
  own channels first, in MinAtar's order).
* ``minatar-permuted``: Breakout (full action set, its own 4 channels) whose observation
  channels are permuted by a fixed permutation per task (task 0: identity); the 20
  permutations are distinct (24 exist).
* ``cartpole-permuted``: CartPole-v1 whose observation is permuted and sign-flipped by a
  fixed permutation and sign vector per task (task 0: identity); 20 distinct tasks.

The permuted tasks keep the dynamics, the actions and the rewards of task 0: only the
observation changes, so the streams measure how well a network relearns the input
mapping (loss of plasticity). With the same seed and actions, task ``t``'s observation is
``obs0[..., perm]`` (MinAtar) or ``obs0[perm] * signs`` (CartPole), ``obs0`` being task
0's. The permutations come from ``numpy.random.default_rng(PERMUTATION_SEED)``.

MinAtar is imported when an environment is built (``import envs`` works without it).
MinAtar has no time limit of its own; the streams cap episodes at 10,000 steps.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from envs.streams import NAMESPACE, TaskStream, register_stream

__all__ = ["MINATAR_GAMES", "MINATAR_N_CHANNELS", "PERMUTATION_SEED", "STREAMS",
           "MinAtarTask", "PermutedCartPole", "channel_permutations", "signed_permutations"]

#: the games of ``minatar-games`` in stream order (MinAtar's module names)
MINATAR_GAMES: tuple[str, ...] = ("breakout", "space_invaders", "asterix", "freeway",
                                  "seaquest")
#: observation channels of each game (MinAtar 1.0.15); Seaquest has the most, 10
MINATAR_N_CHANNELS: dict[str, int] = {"breakout": 4, "space_invaders": 6, "asterix": 4,
                                      "freeway": 7, "seaquest": 10}
#: seed of the fixed permutations of the permuted streams
PERMUTATION_SEED = 0
#: tasks of each permuted stream
N_PERMUTED_TASKS = 20
#: episode cap of the MinAtar streams (MinAtar itself has none)
MINATAR_MAX_EPISODE_STEPS = 10_000


def channel_permutations(n: int, n_tasks: int, seed: int = PERMUTATION_SEED
                         ) -> list[tuple[int, ...]]:
    """``n_tasks`` distinct permutations of ``range(n)``, the identity first, the others
    drawn without replacement from the rest with ``default_rng(seed)``."""
    if n_tasks > math.factorial(n):
        raise ValueError(f"only {math.factorial(n)} permutations of {n} items, "
                         f"{n_tasks} asked")
    others = [p for p in itertools.permutations(range(n)) if p != tuple(range(n))]
    chosen = np.random.default_rng(seed).choice(len(others), n_tasks - 1, replace=False)
    return [tuple(range(n))] + [others[int(i)] for i in chosen]


def signed_permutations(n: int, n_tasks: int, seed: int = PERMUTATION_SEED
                        ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``n_tasks`` distinct ``(permutation, signs)`` pairs on ``n`` entries, the identity
    (no permutation, all signs +1) first, the others drawn with ``default_rng(seed)``."""
    if n_tasks > math.factorial(n) * 2 ** n:
        raise ValueError(f"only {math.factorial(n) * 2 ** n} signed permutations of {n} "
                         f"entries, {n_tasks} asked")
    rng = np.random.default_rng(seed)
    tasks = [(tuple(range(n)), (1,) * n)]
    while len(tasks) < n_tasks:
        pair = (tuple(int(i) for i in rng.permutation(n)),
                tuple(int(s) for s in rng.choice([-1, 1], n)))
        if pair not in tasks:
            tasks.append(pair)
    return tasks


def _permutation(name: str, perm: Any, n: int) -> np.ndarray:
    perm = np.asarray(perm)
    if perm.shape != (n,) or sorted(perm.tolist()) != list(range(n)):
        raise ValueError(f"{name} must be a permutation of range({n}), got {perm!r}")
    return perm.astype(np.intp)


class MinAtarTask(gymnasium.Env):
    """A MinAtar game with the full 6-action set, its channels optionally permuted and
    zero-padded.

    Args:
        task_id: reported in ``info["task_id"]``.
        game: MinAtar's module name (``"breakout"``, ``"space_invaders"``, ...).
        n_channels: pad the observation with zero channels to this many (``None``: the
            game's own count).
        channel_permutation: observation channel ``i`` is the game's channel
            ``channel_permutation[i]`` (``None``: identity); applied before padding.
        sticky_action_prob, difficulty_ramping: MinAtar's (defaults 0.1, True).

    Observations are ``(10, 10, n_channels)`` bool, channels last. ``reset(seed=s)``
    seeds MinAtar's random state (sticky actions and the game) and clears the sticky
    action, so a seed fixes the episode whatever came before.
    """

    metadata = {"render_modes": []}

    def __init__(self, task_id: int = 0, game: str = "breakout", n_channels: int | None = None,
                 channel_permutation: tuple[int, ...] | None = None,
                 sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
                 render_mode: str | None = None) -> None:
        if game not in MINATAR_N_CHANNELS:
            raise ValueError(f"game must be one of {sorted(MINATAR_N_CHANNELS)}, got {game!r}")
        if render_mode is not None:
            raise ValueError("MinAtarTask does not render (render_mode must be None)")
        try:
            from minatar import Environment
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ImportError("the MinAtar streams need the minatar package: pip install "
                              "'sparse-agents[envs]'") from err
        self.task_id = task_id
        self.game_name = game
        self._game = Environment(env_name=game, sticky_action_prob=sticky_action_prob,
                                 difficulty_ramping=difficulty_ramping)
        height, width, own = self._game.state_shape()
        self._perm = (None if channel_permutation is None
                      else _permutation("channel_permutation", channel_permutation, own))
        n_channels = own if n_channels is None else int(n_channels)
        if n_channels < own:
            raise ValueError(f"n_channels must be >= {own} (the channels of {game}), "
                             f"got {n_channels}")
        self.n_channels = n_channels
        self._own_channels = own
        self.action_space = spaces.Discrete(self._game.num_actions())  # 6: the full set
        self.observation_space = spaces.Box(0, 1, (height, width, n_channels), dtype=bool)

    def _observation(self) -> np.ndarray:
        state = self._game.state()
        if self._perm is not None:
            state = state[..., self._perm]
        if self.n_channels == self._own_channels:
            return np.ascontiguousarray(state, dtype=bool)
        obs = np.zeros(self.observation_space.shape, dtype=bool)
        obs[..., : self._own_channels] = state
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._game.seed(seed)
            self._game.last_action = 0
        self._game.reset()
        return self._observation(), {"task_id": self.task_id}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in [0, 5], got {action!r}")
        reward, terminated = self._game.act(int(action))
        return (self._observation(), float(reward), bool(terminated), False,
                {"task_id": self.task_id})


class PermutedCartPole(CartPoleEnv):
    """CartPole-v1 whose observation is ``obs[permutation] * signs`` (the dynamics, the
    actions, the reward and the termination are CartPole's). The observation space is
    ``Box(-inf, inf, (4,), float32)`` for every task, so that all tasks share it."""

    def __init__(self, task_id: int = 0, permutation: tuple[int, ...] = (0, 1, 2, 3),
                 signs: tuple[int, ...] = (1, 1, 1, 1), render_mode: str | None = None
                 ) -> None:
        super().__init__(render_mode=render_mode)
        self.task_id = task_id
        self._perm = _permutation("permutation", permutation, 4)
        signs_ = np.asarray(signs, dtype=np.float32)
        if signs_.shape != (4,) or not np.all(np.abs(signs_) == 1):
            raise ValueError(f"signs must be four values +1 or -1, got {signs!r}")
        self._signs = signs_
        self.observation_space = spaces.Box(-np.inf, np.inf, (4,), dtype=np.float32)

    def _observation(self, obs: np.ndarray) -> np.ndarray:
        return (np.asarray(obs, dtype=np.float32)[self._perm] * self._signs).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        return self._observation(obs), {**info, "task_id": self.task_id}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        return (self._observation(obs), reward, terminated, truncated,
                {**info, "task_id": self.task_id})


_BREAKOUT_PERMS = channel_permutations(MINATAR_N_CHANNELS["breakout"], N_PERMUTED_TASKS)
_CARTPOLE_PERMS = signed_permutations(4, N_PERMUTED_TASKS)

STREAMS: tuple[TaskStream, ...] = (
    TaskStream(name="minatar-games", env_id=f"{NAMESPACE}/MinAtar-games-v0",
               entry_point="envs.minatar:MinAtarTask",
               tasks=tuple({"game": game} for game in MINATAR_GAMES),
               summary="MinAtar Breakout, SpaceInvaders, Asterix, Freeway, Seaquest: "
                       "6 actions, 10 channels",
               max_episode_steps=MINATAR_MAX_EPISODE_STEPS,
               defaults={"game": "breakout", "n_channels": 10}),
    TaskStream(name="minatar-permuted", env_id=f"{NAMESPACE}/MinAtar-Breakout-permuted-v0",
               entry_point="envs.minatar:MinAtarTask",
               tasks=tuple({"channel_permutation": p} for p in _BREAKOUT_PERMS),
               summary="MinAtar Breakout with its 4 observation channels permuted per task",
               max_episode_steps=MINATAR_MAX_EPISODE_STEPS,
               defaults={"game": "breakout", "channel_permutation": _BREAKOUT_PERMS[0]}),
    TaskStream(name="cartpole-permuted", env_id=f"{NAMESPACE}/CartPole-permuted-v0",
               entry_point="envs.minatar:PermutedCartPole",
               tasks=tuple({"permutation": p, "signs": s} for p, s in _CARTPOLE_PERMS),
               summary="CartPole with its observation permuted and sign-flipped per task",
               max_episode_steps=500, reward_threshold=475.0,
               defaults={"permutation": _CARTPOLE_PERMS[0][0],
                         "signs": _CARTPOLE_PERMS[0][1]}),
)

for _stream in STREAMS:
    register_stream(_stream)
del _stream
