"""The RL hyperparameter tables: rl-baselines3-zoo's values (``hyperparams/<algo>.yml``)
for the tasks the runners, the CLI, the benchmarks and continual RL use (``"zoo"``), and
the papers' own configurations that the benchmarks reproduce (``"graesser"``).

``"lin_X"`` is a linear schedule from X to 0; ``normalize`` wraps the environment in
``VecNormalize``; ``reward_scale`` multiplies the training rewards; ``n_envs`` goes to
the vectorised environment; ``action_noise`` is
``("normal", std)``; ``exploration_steps`` anneals DQN's epsilon over that many steps
(the agent factory turns it into SB3's ``exploration_fraction`` of the run's budget).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sparse_agents.sb3.extractors import MinAtarCNN
from sparse_agents.sb3.mixin import SPARSE_DEFAULTS

#: a table entry's key for the values only its sparse runs take (a paper whose sparse
#: configuration overrides its dense one)
SPARSE_RUNS = "sparse_runs"
#: what a sparse run takes from a table: ``"table"`` its sparse schedule and ``SPARSE_RUNS``
#: values (a paper's sparse config), ``"defaults"`` its dense configuration and the sparse
#: policy's shipped defaults (a user who changes only the policy class)
SPARSE_SETTINGS = ("table", "defaults")

#: (algorithm, environment id) -> zoo hyperparameters
HYPERPARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("ppo", "CartPole-v1"): dict(n_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8,
                                 gamma=0.98, n_epochs=20, ent_coef=0.0,
                                 learning_rate="lin_0.001", clip_range="lin_0.2"),
    ("ppo", "Acrobot-v1"): dict(normalize=True, n_envs=16, n_steps=256, gae_lambda=0.94,
                                gamma=0.99, n_epochs=4, ent_coef=0.0),
    ("ppo", "Pendulum-v1"): dict(n_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9,
                                 n_epochs=10, ent_coef=0.0, learning_rate=1e-3,
                                 clip_range=0.2),
    ("a2c", "CartPole-v1"): dict(n_envs=8, ent_coef=0.0),
    ("a2c", "Acrobot-v1"): dict(normalize=True, n_envs=16, ent_coef=0.0),
    ("a2c", "Pendulum-v1"): dict(normalize=True, n_envs=8, n_steps=8, gae_lambda=0.9,
                                 gamma=0.9, ent_coef=0.0, max_grad_norm=0.5,
                                 learning_rate="lin_7e-4"),
    ("dqn", "CartPole-v1"): dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                                 learning_starts=1000, gamma=0.99, target_update_interval=10,
                                 train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                                 exploration_final_eps=0.04, net_arch=[256, 256]),
    ("dqn", "Acrobot-v1"): dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
                                learning_starts=0, gamma=0.99, target_update_interval=250,
                                train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
                                exploration_final_eps=0.1, net_arch=[256, 256]),
    ("sac", "Pendulum-v1"): dict(learning_rate=1e-3),
    ("td3", "Pendulum-v1"): dict(learning_rate=1e-3, gamma=0.98, buffer_size=200_000,
                                 learning_starts=10_000, action_noise=("normal", 0.1),
                                 gradient_steps=1, train_freq=1, net_arch=[400, 300]),
}

#: Graesser, Evci, Elsen, Castro, "The State of Sparse Training in Deep RL" (ICML 2022),
#: from google-research/rigl ``rigl/rl/tfagents/configs/{dqn_gym,ppo_mujoco}_*.gin`` at
#: its newest commit (ce92eab, 2022-08-10) and the ``train_eval`` defaults of
#: ``dqn_train_eval.py``/``ppo_train_eval.py``. The sparse schedule is part of each entry
#: (DQN: update every 1000 training steps, drop fraction 0.5, cosine, last update at 75%;
#: PPO: every 250, drop 0.3, last at 120000 of 156480 steps; SAC: every 1000, drop 0.5,
#: last at 80%; ERK, output layers sparse; every sparse config sets
#: ``init_masks.fixed_sparse_init = True``: ``sparse_init="fan_avg"``). ``reward_scale``
#: multiplies the training rewards (SAC's ``reward_scale_factor=0.1``).
#: An L2 loss ``c * sum(w**2)`` on the kernels (Keras' ``L2(c)``, TF-Agents' PPO
#: ``*_l2_reg``) is Adam's ``weight_decay=2c``. The L2 differs between a paper's dense
#: and sparse configs (``SPARSE_RUNS``): DQN 1e-6 in both, PPO 1e-6 dense and 1e-4
#: sparse, SAC 1e-4 dense and 1e-6 sparse. TF-Agents' DQN does not clip gradients
#: (``max_grad_norm=inf``). What SB3 cannot express is listed in docs/rl.md, "Known
#: limitations" (the squared TD loss, He/orthogonal inits, an L2 on kernels only: Adam's
#: covers biases too).
GRAESSER: dict[tuple[str, str], dict[str, Any]] = {
    ("dqn", "CartPole-v1"): dict(net_arch=[512, 512], learning_rate=1e-3, batch_size=128,
                                 buffer_size=100_000, learning_starts=1000, gamma=0.99,
                                 target_update_interval=100, train_freq=1, gradient_steps=1,
                                 exploration_initial_eps=0.01, exploration_final_eps=0.01,
                                 max_grad_norm=math.inf, optimizer_kwargs={"weight_decay": 2e-6},
                                 delta_t=1000, drop_fraction=0.5, t_end_fraction=0.75,
                                 schedule="cosine", sparse_init="fan_avg"),
    ("ppo", "HalfCheetah-v5"): dict(normalize=True, n_envs=1, n_steps=2048, batch_size=64,
                                    n_epochs=10, learning_rate="lin_3e-4", clip_range=0.2,
                                    gae_lambda=0.95, gamma=0.99, ent_coef=0.0, vf_coef=0.5,
                                    max_grad_norm=0.5, optimizer_kwargs={"weight_decay": 2e-6},
                                    delta_t=250, drop_fraction=0.3,
                                    t_end_fraction=120_000 / 156_480, schedule="cosine",
                                    sparse_init="fan_avg",
                                    sparse_runs={"optimizer_kwargs": {"weight_decay": 2e-4}}),
    ("sac", "HalfCheetah-v5"): dict(net_arch=[256, 256], learning_rate=3e-4, batch_size=256,
                                    buffer_size=1_000_000, learning_starts=1000,
                                    gamma=0.99, tau=0.005, train_freq=1, gradient_steps=1,
                                    reward_scale=0.1, optimizer_kwargs={"weight_decay": 2e-4},
                                    delta_t=1000, drop_fraction=0.5, t_end_fraction=0.8,
                                    schedule="cosine", sparse_init="fan_avg",
                                    sparse_runs={"optimizer_kwargs": {"weight_decay": 2e-6}}),
}

#: Young & Tian, "MinAtar" (2019), ``examples/dqn.py`` of kenjyoung/MinAtar: their
#: network (:class:`~sparse_agents.sb3.MinAtarCNN`, then the output layer), centered
#: RMSprop (lr 2.5e-4, squared-gradient momentum 0.95, min squared gradient 0.01,
#: momentum 0.95), Huber loss, batch 32, buffer 100k, 5000 random steps, a hard target
#: update every 1000 steps, one gradient step per env step, no gradient clipping, epsilon
#: 1 -> 0.1 over the 100k steps after the random ones (SB3 anneals from step 0, so the
#: anneal ends at the same step, 105k, from 0.96 at step 5000). No sparse schedule: the
#: sparse runs use the library's off-policy defaults. Their budget is 5M frames.
_MINATAR_DQN: dict[str, Any] = dict(
    features_extractor_class=MinAtarCNN, net_arch=[], optimizer_class=torch.optim.RMSprop,
    optimizer_kwargs={"alpha": 0.95, "eps": 0.01, "momentum": 0.95, "centered": True},
    learning_rate=2.5e-4, batch_size=32, buffer_size=100_000, learning_starts=5000,
    gamma=0.99, target_update_interval=1000, train_freq=1, gradient_steps=1,
    exploration_initial_eps=1.0, exploration_final_eps=0.1, exploration_steps=105_000,
    max_grad_norm=math.inf)
MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
YOUNG_TIAN: dict[tuple[str, str], dict[str, Any]] = {
    ("dqn", f"MinAtar/{game}-v1"): _MINATAR_DQN for game in MINATAR_GAMES}

#: hyperparameter sources by name
SOURCES: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
    "zoo": HYPERPARAMS, "graesser": GRAESSER, "minatar": YOUNG_TIAN}

#: keys of the table that are policy options (they go to ``policy_kwargs``)
POLICY_KEYS = ("net_arch", "activation_fn", "ortho_init", "log_std_init", "n_critics",
               "share_features_extractor", "optimizer_class", "optimizer_kwargs",
               "features_extractor_class", "features_extractor_kwargs")
#: keys that may hold a ``"lin_X"`` schedule
SCHEDULE_KEYS = ("learning_rate", "clip_range")


def zoo_hyperparameters(algo: str, env_id: str) -> dict[str, Any]:
    """A copy of the zoo table's entry (``{}`` for a task it does not list)."""
    return dict(HYPERPARAMS.get((algo, env_id), {}))


def hyperparameters(algo: str, env_id: str, source: str = "zoo",
                    sparse: bool = True) -> dict[str, Any]:
    """A copy of the values ``source`` gives a run on (algo, env): a sparse run its sparse
    schedule and ``SPARSE_RUNS`` values, a dense run neither. ``{}`` for a task the zoo
    does not list, ``ValueError`` for a paper that did not run it."""
    if source not in SOURCES:
        raise ValueError(f"hyperparams must be one of {tuple(SOURCES)}, got {source!r}")
    table = SOURCES[source]
    if source != "zoo" and (algo, env_id) not in table:
        raise ValueError(f"hyperparams={source!r} has no entry for {algo} on {env_id}; "
                         f"it has {sorted(f'{a}:{e}' for a, e in table)}")
    entry = dict(table.get((algo, env_id), {}))
    only_sparse = entry.pop(SPARSE_RUNS, {})
    if sparse:
        entry.update(only_sparse)
    else:
        entry = {k: v for k, v in entry.items() if k not in SPARSE_DEFAULTS}
    return {k: dict(v) if isinstance(v, dict) else v for k, v in entry.items()}


def resolve_schedules(hp: dict[str, Any], constant: bool = False) -> dict[str, Any]:
    """Replace ``"lin_X"`` values by SB3 schedules (``constant``: by X itself, as continual
    RL does, where a schedule would restart at every task)."""
    out = dict(hp)
    for key in SCHEDULE_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value.startswith("lin_"):
            start = float(value[4:])
            out[key] = start if constant else _linear(start)
    return out


def _linear(start: float):
    def linear(progress_remaining: float) -> float:
        return progress_remaining * start

    return linear
