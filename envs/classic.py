"""Classic-control physics variants and their task streams.

Every environment takes its physical parameters and a ``task_id`` as keyword
arguments, adds ``info["task_id"]`` on reset and step, and otherwise behaves exactly
as the gymnasium original (same spaces, rewards, termination, time limits).

* :class:`CartPoleTask`: ``gravity``, ``length`` (half the pole's length, as in
  gymnasium), ``masspole``, ``masscart``, ``force_mag``; ``total_mass`` and
  ``polemass_length`` are recomputed from them.
* :class:`AcrobotTask`: ``link_mass_1``, ``link_mass_2``.
* :class:`PendulumTask`: ``g`` (gravity), ``m`` (mass).
"""

from __future__ import annotations

import math
from typing import Any

from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from envs.streams import NAMESPACE, TaskStream, register_stream
from envs.wrappers import TaskInfo

__all__ = ["STREAMS", "AcrobotTask", "CartPoleTask", "PendulumTask"]


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _task_id(task_id: int) -> int:
    if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 0:
        raise ValueError(f"task_id must be an integer >= 0, got {task_id!r}")
    return task_id


class CartPoleTask(TaskInfo, CartPoleEnv):
    """CartPole-v1 with changed physics (defaults are gymnasium's)."""

    def __init__(self, task_id: int = 0, gravity: float = 9.8, length: float = 0.5,
                 masspole: float = 0.1, masscart: float = 1.0, force_mag: float = 10.0,
                 render_mode: str | None = None, **kwargs: Any) -> None:
        super().__init__(render_mode=render_mode, **kwargs)
        self.task_id = _task_id(task_id)
        self.gravity = _positive("gravity", gravity)
        self.length = _positive("length", length)
        self.masspole = _positive("masspole", masspole)
        self.masscart = _positive("masscart", masscart)
        force_mag = float(force_mag)
        if not math.isfinite(force_mag) or force_mag == 0:
            raise ValueError(f"force_mag must be a finite non-zero number (negative: the "
                             f"actuator pushes the other way), got {force_mag!r}")
        self.force_mag = force_mag
        # derived quantities the dynamics read: must follow the parameters
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length


class AcrobotTask(TaskInfo, AcrobotEnv):
    """Acrobot-v1 with changed link masses (defaults 1 kg each)."""

    def __init__(self, task_id: int = 0, link_mass_1: float = 1.0, link_mass_2: float = 1.0,
                 render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        self.task_id = _task_id(task_id)
        # the dynamics read these class attributes through self: instance values win
        self.LINK_MASS_1 = _positive("link_mass_1", link_mass_1)
        self.LINK_MASS_2 = _positive("link_mass_2", link_mass_2)


class PendulumTask(TaskInfo, PendulumEnv):
    """Pendulum-v1 with changed gravity ``g`` and mass ``m`` (defaults 10.0, 1.0)."""

    def __init__(self, task_id: int = 0, g: float = 10.0, m: float = 1.0,
                 render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, g=_positive("g", g))
        self.task_id = _task_id(task_id)
        self.m = _positive("m", m)


_CARTPOLE = {"gravity": 9.8, "length": 0.5, "masspole": 0.1, "masscart": 1.0,
             "force_mag": 10.0}
_ACROBOT = {"link_mass_1": 1.0, "link_mass_2": 1.0}
_PENDULUM = {"g": 10.0, "m": 1.0}


def _cartpole(name: str, id_name: str, summary: str, tasks: list[dict]) -> TaskStream:
    return TaskStream(name=name, env_id=f"{NAMESPACE}/CartPole-{id_name}-v0",
                      entry_point="envs.classic:CartPoleTask", tasks=tuple(tasks),
                      summary=summary, max_episode_steps=500, reward_threshold=475.0,
                      defaults=_CARTPOLE)


STREAMS: tuple[TaskStream, ...] = (
    _cartpole("cartpole-gravity", "gravity", "CartPole with gravity x1, x0.5, x2, x3",
              [{"gravity": 9.8}, {"gravity": 4.9}, {"gravity": 19.6}, {"gravity": 29.4}]),
    _cartpole("cartpole-length", "length", "CartPole with pole length x1, x0.5, x2, x4",
              [{"length": 0.5}, {"length": 0.25}, {"length": 1.0}, {"length": 2.0}]),
    _cartpole("cartpole-masscart", "masscart", "CartPole with cart mass x1, x0.5, x3, x5",
              [{"masscart": 1.0}, {"masscart": 0.5}, {"masscart": 3.0}, {"masscart": 5.0}]),
    _cartpole("cartpole-physics", "physics",
              "CartPole: long pole, heavy gravity, short pole, heavy cart",
              [{"length": 2.0}, {"gravity": 19.6}, {"length": 0.25}, {"masscart": 3.0}]),
    TaskStream(name="acrobot-mass", env_id=f"{NAMESPACE}/Acrobot-mass-v0",
               entry_point="envs.classic:AcrobotTask",
               tasks=({}, {"link_mass_1": 0.5}, {"link_mass_2": 2.0},
                      {"link_mass_1": 2.0, "link_mass_2": 0.5}),
               summary="Acrobot with changed link masses", max_episode_steps=500,
               reward_threshold=-100.0, defaults=_ACROBOT),
    TaskStream(name="pendulum-physics", env_id=f"{NAMESPACE}/Pendulum-physics-v0",
               entry_point="envs.classic:PendulumTask",
               tasks=({}, {"g": 5.0}, {"g": 15.0}, {"m": 0.5}, {"m": 1.5}),
               summary="Pendulum (continuous torque) with changed gravity and mass",
               max_episode_steps=200, defaults=_PENDULUM),
)

for _stream in STREAMS:
    register_stream(_stream)
del _stream
