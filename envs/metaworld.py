"""Continual World task streams on Meta-World v3 (``metaworld-cw10``, ``metaworld-cw3``).

Continual World (Wołczyk et al., NeurIPS 2021; ``awarelab/continual_world``) trains on
ten Meta-World tasks in sequence (CW10)::

    hammer, push-wall, faucet-close, push-back, stick-pull, handle-press-side, push,
    shelf-place, window-close, peg-unplug-side

here in their Meta-World v3 versions (``<task>-v3``, ``metaworld>=3.1.1``, extra ``cw``);
``metaworld-cw3`` is the first three. The v3 tasks are not CW's v1 tasks (other
observations, 39 entries here, other reward shaping), so results are not comparable with
the paper's numbers. What follows CW's code (``continualworld/envs.py``,
``continualworld/utils/wrappers.py``):

* the goal is observable (CW builds the tasks from ``metaworld.MT50``), and the goal's
  bounds are removed from the observation space (CW's ``remove_goal_bounds``), so all
  tasks share one space;
* ``randomization="random_init_all"`` (CW's default): the object and goal positions are
  drawn anew at every reset, from the environment's random state, which
  ``reset(seed=s)`` seeds (Meta-World would otherwise draw them from numpy's global
  state); ``"deterministic"``: the positions drawn at the first reset after seeding are
  kept for every later reset (one fixed task variant per seed);
* episodes of 200 steps (CW's ``META_WORLD_TIME_HORIZON``; Meta-World's own
  ``max_path_length`` is 500: pass ``max_episode_steps=500`` to ``gymnasium.make`` or
  ``stream.make`` for it);
* success: an episode succeeds if Meta-World's ``info["success"]`` is true at **any**
  step of it (CW's ``SuccessCounter``), not only at its last step;
* the task identity: ``stream.make(t, one_hot=True)`` appends a one-hot task index of
  length ``n_tasks`` (CW's ``OneHotAdder``), the CW protocol.

Meta-World is imported when an environment is built (``import envs`` works without it).
"""

from __future__ import annotations

import functools
import pickle
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.streams import NAMESPACE, TaskStream, register_stream

__all__ = ["CW10", "CW_HORIZON", "RANDOMIZATIONS", "STREAMS", "MetaWorldTask"]

#: Continual World's CW10 sequence (Wołczyk et al. 2021) in Meta-World v3 names
CW10: tuple[str, ...] = (
    "hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3",
    "handle-press-side-v3", "push-v3", "shelf-place-v3", "window-close-v3",
    "peg-unplug-side-v3",
)
#: Continual World's episode length (``META_WORLD_TIME_HORIZON``)
CW_HORIZON = 200
#: the randomization kinds supported (CW's default first)
RANDOMIZATIONS = ("random_init_all", "deterministic")
#: goal entries of Meta-World's 39-entry observation
_GOAL = slice(36, 39)
#: Meta-World raises once ``max_path_length`` steps are taken: gymnasium's time limit
#: ends the episodes instead
_NO_LIMIT = 2 ** 62


def _import_metaworld() -> Any:
    try:
        import metaworld
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("the Meta-World streams need the metaworld package: pip install "
                          "'sparse-agents[cw]'") from err
    return metaworld


@functools.cache
def _continual_world_class(env_cls: type) -> type:
    """``env_cls`` (a Meta-World task class) with :meth:`draw_positions_at_reset`; a
    subclass, as Meta-World's own goal-observable classes (``env_dict``) are."""

    class ContinualWorldEnv(env_cls):  # type: ignore[misc, valid-type]
        def draw_positions_at_reset(self, draw: bool) -> None:
            """``True``: draw object and goal positions at every reset from the env's
            seeded random state (CW's ``random_init_all``); ``False``: keep the last."""
            self.seeded_rand_vec = True
            self._freeze_rand_vec = not draw

    return ContinualWorldEnv


class MetaWorldTask(gymnasium.Env):
    """One Meta-World v3 task set up as Continual World does (see the module docstring).

    Args:
        task_id: reported in ``info["task_id"]``.
        task_name: a Meta-World v3 task, e.g. ``"hammer-v3"``.
        randomization: ``"random_init_all"`` (object and goal positions drawn at every
            reset) or ``"deterministic"`` (drawn once per seed).
        render_mode, camera_name: passed to the Meta-World environment.

    Observations are Meta-World's 39 floats (as ``float32``), actions its 4 in
    ``[-1, 1]``. ``info["success"]`` is Meta-World's per-step success and
    ``info["is_success"]`` (on every step) whether any step of the episode so far has
    succeeded: at the last step of an episode it is the episode's success as Continual
    World counts it, which SB3 reads there (``rollout/success_rate``, ``EvalCallback``).
    The environment does not end episodes itself: the registered time limit does.
    """

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"]}

    def __init__(self, task_id: int = 0, task_name: str = CW10[0],
                 randomization: str = "random_init_all", render_mode: str | None = None,
                 camera_name: str | None = None) -> None:
        if randomization not in RANDOMIZATIONS:
            raise ValueError(f"randomization must be one of {RANDOMIZATIONS}, got "
                             f"{randomization!r}")
        _import_metaworld()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        from metaworld.types import Task

        if task_name not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"task_name must be a Meta-World v3 task (e.g. 'hammer-v3'), "
                             f"got {task_name!r}")
        env_cls = ALL_V3_ENVIRONMENTS[task_name]
        env = _continual_world_class(env_cls)(render_mode=render_mode,
                                              camera_name=camera_name)
        reset_space = env._random_reset_space
        # a goal-observable task as metaworld.MT1/MT50 build them (_make_tasks); the
        # positions in it are replaced at the first reset
        data = {"env_cls": env_cls, "partially_observable": False,
                "rand_vec": (reset_space.low + reset_space.high) / 2}
        env.set_task(Task(env_name=task_name, data=pickle.dumps(data)))
        env.draw_positions_at_reset(True)
        env.max_path_length = _NO_LIMIT
        self._env = env
        self.task_id = task_id
        self.task_name = task_name
        self.randomization = randomization
        self.render_mode = render_mode
        self._success = False

        space = env.observation_space
        low = np.asarray(space.low, dtype=np.float32).copy()
        high = np.asarray(space.high, dtype=np.float32).copy()
        low[_GOAL], high[_GOAL] = -np.inf, np.inf  # CW's remove_goal_bounds
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(seed)
            self._env.draw_positions_at_reset(True)  # a new seed draws a new variant
        obs, info = self._env.reset()
        if self.randomization == "deterministic":
            self._env.draw_positions_at_reset(False)
        self._success = False
        return obs.astype(np.float32), {**info, "task_id": self.task_id}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self._env.step(action)
        self._success = self._success or bool(info.get("success", False))
        info = {**info, "task_id": self.task_id, "is_success": self._success}
        return obs.astype(np.float32), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> Any:
        """Meta-World's rendering (``render_mode`` given at construction)."""
        return self._env.render()

    def close(self) -> None:
        self._env.close()


def _cw_stream(name: str, id_name: str, tasks: tuple[str, ...], summary: str) -> TaskStream:
    return TaskStream(name=name, env_id=f"{NAMESPACE}/MetaWorld-{id_name}-v0",
                      entry_point="envs.metaworld:MetaWorldTask",
                      tasks=tuple({"task_name": task} for task in tasks), summary=summary,
                      max_episode_steps=CW_HORIZON,
                      defaults={"task_name": tasks[0], "randomization": "random_init_all"},
                      metric="success")


STREAMS: tuple[TaskStream, ...] = (
    _cw_stream("metaworld-cw10", "CW10", CW10,
               "Continual World CW10 on Meta-World v3 (success rate; one_hot=True for CW)"),
    _cw_stream("metaworld-cw3", "CW3", CW10[:3],
               "the first three tasks of CW10 on Meta-World v3 (success rate)"),
)

for _stream in STREAMS:
    register_stream(_stream)
del _stream
