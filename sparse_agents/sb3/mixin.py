"""``SparsePolicyMixin``: makes an SB3 policy class train sparse with ``SparseTopology``.

The adapter is thin: every algorithm lives in :class:`sparse_agents.SparseTopology`;
this module only wires it into SB3's life cycle.

* Options come through ``policy_kwargs`` and are checked at construction.
* ``_build`` runs the base class's ``_build`` (networks and optimizers), then creates
  one topology per optimizer (``policy.optimizer``; SAC/TD3: ``actor.optimizer`` and
  ``critic.optimizer``), each masking the layers its optimizer trains. So
  ``Algo.load`` (which calls ``_setup_model`` then loads state dicts) rebuilds it, and
  the masks (buffers) and the topology state (``sparse_state._extra_state``) come
  back with ``policy.load_state_dict``.
* Adam and AdamW run fused (``optimizer_kwargs`` ``fused=True``) unless the user chose
  an implementation: see :data:`FUSED_BY_DEFAULT`.
* Gradients are masked during backward (``grad_masking="backward"``), so SB3's
  ``clip_grad_norm_`` sees the sparse gradient; the dense gradient is kept aside only
  for update steps (RigL/SRigL growth).
* Target networks (``<x>_target`` next to ``<x>``: DQN's ``q_net_target``, SAC's
  ``critic_target``, TD3's ``actor_target`` and ``critic_target``) carry a copy of the
  online masks. Rule: after every optimizer step that followed a topology update, the
  target's masks are set to the online masks and its weights multiplied by them.
  Polyak averaging (any ``tau``) is linear, so target weights outside the mask stay
  exactly 0 in between: online and target agree on masks and zeros at all times.
* ``t_end`` (when not given): at the first ``train()`` of every ``learn()`` call (SB3
  calls ``policy.set_training_mode(True)`` there, and the algorithm is the caller) the
  policy reads the algorithm's total timesteps and sets
  ``t_end = t_end_fraction * planned optimizer steps`` (see
  :mod:`sparse_agents.sb3.schedule`), counted from the start of training, so
  ``learn(..., reset_num_timesteps=False)`` continues the same schedule.
* Metrics are recorded under ``sparse/`` in the algorithm's logger whenever the
  policy switches mode (start of rollouts and of ``train()``) and the topology moved.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import sys
import warnings
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces as gym_spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel, BasePolicy
from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN
from torch import nn

from sparse_agents.compute import CondensedLinearTraining, condensed_linear
from sparse_agents.config import SparseConfig
from sparse_agents.distributions import dense_fits_budget
from sparse_agents.flops import flops
from sparse_agents.sb3.lr import check_lr_scale, scale_learning_rate
from sparse_agents.sb3.schedule import planned_optimizer_steps
from sparse_agents.topology import (
    MASK_BUFFER,
    SparseTopology,
    find_maskable,
    masked_layers,
    match_layer,
    unwrap,
)
from sparse_agents.updaters import get_updater

__all__ = ["FUSED_BY_DEFAULT", "SPARSE_DEFAULTS", "SparsePolicyMixin", "TopologyState",
           "fused_optimizer_kwargs", "make_sparse", "record_metrics", "short_layer_names"]

#: the options a sparse policy takes through ``policy_kwargs``, with their defaults (the
#: algorithm family's RL schedule, ``FAMILY_DEFAULTS``, replaces delta_t, drop_fraction
#: and t_end_fraction: see :func:`defaults_for`)
#: the topology options a sparse policy takes as its own keywords (the others go
#: through ``topology_kwargs``); their defaults are :class:`SparseConfig`'s
POLICY_TOPOLOGY_OPTIONS = ("sparsity", "updater", "distribution", "delta_t", "t_end",
                           "drop_fraction", "schedule", "gamma_sal", "sparse_init",
                           "dense_layers", "output_layers", "seed", "compute")
#: the options only a policy has, with their defaults
POLICY_OPTIONS: dict[str, Any] = {
    "t_end_fraction": 0.75,  # t_end=None: this fraction of the optimizer steps learn() takes
    "dense_input": False,  # keep the layers that read the observation dense (None: if they fit)
    "condensed_rollout": False,
    "log_sparsity": True,
    "topology_kwargs": None,  # more SparseTopology options (power, renormalise, ...)
    # the optimizers step at lr_scale x the algorithm's learning rate (sparse_agents.sb3.lr)
    "lr_scale": 1.0,
}
#: the options a sparse policy takes through ``policy_kwargs``, with their defaults (the
#: algorithm family's RL schedule, ``FAMILY_DEFAULTS``, replaces delta_t, drop_fraction
#: and t_end_fraction: see :func:`defaults_for`). ``output_layers=None``: the policy's
#: heads (action_net, value_net, q-heads...)
SPARSE_DEFAULTS: dict[str, Any] = {
    **{k: getattr(SparseConfig(), k) for k in POLICY_TOPOLOGY_OPTIONS}, **POLICY_OPTIONS}

#: RL defaults per algorithm family, replacing the image-classification ones (update every
#: 100 steps, drop 0.3). On-policy (PPO, A2C): measured in docs/rl_benchmarks.md ("PPO
#: CartPole: the on-policy defaults"), input layers dense and Graesser et al.'s sparse init
#: (fan_avg) included;
#: off-policy (DQN, SAC, TD3): Graesser et al. 2022's configs (update every 1000
#: training steps, drop fraction 0.5 cosine, updates stop at 80%).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "on_policy": {"delta_t": 1000, "drop_fraction": 0.1, "t_end_fraction": 0.8,
                  "dense_input": None, "sparse_init": "fan_avg"},
    "off_policy": {"delta_t": 1000, "drop_fraction": 0.5, "t_end_fraction": 0.8},
}


#: optimizers a sparse policy runs in their fused implementation unless told otherwise:
#: on the CPU the default (single-tensor) kernels take a slow path on the exact zeros
#: masked weights keep in their second moments (``sqrt`` of 0 costs ~6x), which made
#: sparse training 10-25% slower than dense; the fused kernel computes the same update
#: without it (docs/rl_benchmarks.md, "Wall-time overhead").
FUSED_BY_DEFAULT = (torch.optim.Adam, torch.optim.AdamW)
#: optimizer keywords that choose an implementation (the user's choice is kept)
_IMPLEMENTATION_KEYS = ("fused", "foreach", "differentiable", "capturable")


def fused_optimizer_kwargs(optimizer_class: type, kwargs: Mapping[str, Any] | None
                           ) -> dict[str, Any]:
    """``kwargs`` plus ``fused=True`` for :data:`FUSED_BY_DEFAULT` optimizers, unless
    ``kwargs`` already chooses an implementation (``fused=False`` opts out)."""
    out = dict(kwargs or {})
    if optimizer_class in FUSED_BY_DEFAULT and not set(out) & set(_IMPLEMENTATION_KEYS):
        out["fused"] = True
    return out


def defaults_for(policy_class: type) -> dict[str, Any]:
    """The sparse options' defaults for a policy class: :data:`SPARSE_DEFAULTS` with its
    family's RL schedule (actor-critic policies are on-policy, the others off-policy),
    then the class's own ``sparse_defaults`` (e.g. per-task masks keep no shared dense
    input layer)."""
    family = "on_policy" if issubclass(policy_class, ActorCriticPolicy) else "off_policy"
    return {**SPARSE_DEFAULTS, **FAMILY_DEFAULTS[family],
            **getattr(policy_class, "sparse_defaults", {})}


#: module names (last component) that are heads when they are a Linear ...
_HEAD_LINEARS = ("action_net", "value_net", "mu", "log_std")
#: ... or whose last Linear is the head when they are a Sequential
_HEAD_SEQUENTIALS = re.compile(r"q_net|qf\d+|mu")
#: the MLPs SB3 builds on the features: their first Linear reads the observation when no
#: features extractor with weights comes before it
_INPUT_SEQUENTIALS = re.compile(r"policy_net|value_net|q_net|latent_pi|qf\d+|mu")


def topology_config(opts: Mapping[str, Any]) -> SparseConfig:
    """The topology options of a policy's ``opts`` (its own keywords, then
    ``topology_kwargs``) as one config; masks are always applied in backward."""
    return SparseConfig.from_dict({**{k: opts[k] for k in POLICY_TOPOLOGY_OPTIONS},
                                   **(opts["topology_kwargs"] or {}),
                                   "grad_masking": "backward"}, what="topology_kwargs")


def check_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Validate the sparse options; ``ValueError`` names the parameter and its range
    (the topology options are :class:`SparseConfig`'s checks)."""
    opts = dict(opts)
    try:
        get_updater(opts["updater"])
    except ValueError as err:
        raise ValueError(f"{err} (for a dense agent use the plain SB3 policy)") from None
    kw = opts["topology_kwargs"]
    if kw is not None and not isinstance(kw, Mapping):
        raise ValueError(f"topology_kwargs must be a dict or None, got {type(kw).__name__}")
    clash = set(kw or {}) & (set(SPARSE_DEFAULTS) | {"grad_masking", "model", "optimizer"})
    if clash:
        raise ValueError(f"topology_kwargs must not repeat {sorted(clash)}: "
                         "pass them as policy_kwargs (grad_masking is always 'backward')")
    config = topology_config(opts)  # unknown topology_kwargs keys are named
    opts.update({k: getattr(config, k) for k in POLICY_TOPOLOGY_OPTIONS})
    frac = opts["t_end_fraction"]
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < frac <= 1.0:
        raise ValueError(f"t_end_fraction must be a number in (0, 1], got {frac!r}")
    if opts["condensed_rollout"] not in (True, False):
        raise ValueError(
            f"condensed_rollout must be True or False, got {opts['condensed_rollout']!r}")
    if opts["dense_input"] not in (True, False, None):
        raise ValueError("dense_input must be True, False or None (dense if they fit in the "
                         f"budget), got {opts['dense_input']!r}")
    opts["lr_scale"] = check_lr_scale(opts["lr_scale"])
    if opts["log_sparsity"] not in (True, False):
        raise ValueError(f"log_sparsity must be True or False, got {opts['log_sparsity']!r}")
    return opts


def _split_patterns(patterns, groups: list[list[str]], what: str) -> list[list]:
    """Give each topology the patterns that match its layers; every pattern must
    match somewhere (integer patterns index each topology's own layers)."""
    out: list[list] = [[] for _ in groups]
    for pattern in patterns:
        hit = False
        for g, names in enumerate(groups):
            if any(match_layer(pattern, i, n) for i, n in enumerate(names)):
                out[g].append(pattern)
                hit = True
        if not hit:
            all_names = [n for names in groups for n in names]
            raise ValueError(f"{what} pattern {pattern!r} matches no maskable layer; "
                             f"layers are {all_names}")
    return out


def _split_named(extra: Mapping[str, Any], groups: list[list[str]]) -> list[dict | None]:
    """Each topology's share of the topology_kwargs keyed by layer (``masks`` and
    ``budgets`` dicts: parameter or module names); every key must name a layer some
    optimizer trains. ``None``: a topology none of whose layers a ``masks`` dict names
    (not built: its layers train dense)."""
    owner: dict[str, int] = {}
    for g, names in enumerate(groups):
        for n in names:
            owner[n] = owner[f"{n}.weight"] = g
    shares: list[dict] = [{} for _ in groups]
    for kw in ("masks", "budgets"):
        given = extra.get(kw)
        if not isinstance(given, Mapping):
            continue
        unknown = [k for k in given if k not in owner]
        if unknown:
            raise ValueError(f"topology_kwargs[{kw!r}] names {unknown}, which no optimizer "
                             f"trains; layers are {[n for g in groups for n in g]}")
        for g, share in enumerate(shares):
            share[kw] = {k: v for k, v in given.items() if owner[k] == g}
    if isinstance(extra.get("masks"), Mapping):
        if not extra["masks"]:
            raise ValueError("topology_kwargs['masks'] is empty")
        return [s if s["masks"] else None for s in shares]
    return list(shares)


def short_layer_names(names: Iterable[str], limit: int = 20) -> dict[str, str]:
    """Short, unique logger names for module names (SB3's stdout table truncates keys
    and refuses two keys that truncate alike)."""
    subs = [("mlp_extractor.policy_net.", "pi."), ("mlp_extractor.value_net.", "vf."),
            ("mlp_extractor.", ""), ("q_net.q_net.", "q."), ("actor.latent_pi.", "pi."),
            ("critic.features_extractor.", "qf_fe."), ("features_extractor.", "fe."),
            ("actor.", ""), ("critic.", ""), ("action_net", "action"),
            ("value_net", "value")]
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        short = name
        for old, new in subs:
            short = short.replace(old, new)
        short = short[-limit:]
        base, i = short, 1
        while short in used:
            short, i = f"{base[: limit - 3]}~{i}", i + 1
        used.add(short)
        out[name] = short
    return out


class TopologyState(nn.Module):
    """Holds the policy's topologies' state in the policy's ``state_dict`` (as
    ``sparse_state._extra_state``): step, RNG, update count, ITOP record, ``t_end``."""

    def __init__(self, runtime: SparseRuntime | None, snapshot: dict | None = None) -> None:
        super().__init__()
        self._runtime = runtime
        self._snapshot = snapshot

    def get_extra_state(self) -> dict:
        if self._runtime is None:
            return copy.deepcopy(self._snapshot or {})
        return {"version": 1, "topologies": {
            key: dict(topo.state_dict(), t_end=topo.schedule.t_end)
            for key, topo in self._runtime.topologies.items()}}

    def set_extra_state(self, state: Any) -> None:
        if self._runtime is None:
            self._snapshot = copy.deepcopy(state)
            return
        self._runtime.load_state(state)

    def __deepcopy__(self, memo):
        # an (inference) copy of the policy carries the state, not the live topologies
        return TopologyState(None, self.get_extra_state())

    def extra_repr(self) -> str:
        if self._runtime is None:
            return "inert copy"
        return ", ".join(repr(t) for t in self._runtime.topologies.values())


class SparseRuntime:
    """Everything live of a sparse policy: topologies, target pairs, the algorithm it
    trains under, metric cache, condensed rollout copy. Not copied with the policy."""

    def __init__(self, policy: nn.Module, opts: dict[str, Any],
                 topologies: Mapping[str, SparseTopology] | None = None) -> None:
        """``topologies``: use these (built elsewhere, e.g. by ``TaskMasks``) instead of
        building one per optimizer in :meth:`build`."""
        self.opts = opts
        self.policy_ref = weakref.ref(policy)
        self.topologies: dict[str, SparseTopology] = {}
        #: (topology key, online module, target module) per masked layer with a target
        self.targets: dict[str, list[tuple[nn.Module, nn.Module]]] = {}
        self._synced: dict[str, int] = {}
        self.algo_ref: weakref.ReferenceType | None = None
        self._learn_key: tuple | None = None
        self._logged: tuple | None = None
        self._metrics_key: tuple | None = None
        self._metrics: dict[str, float] = {}
        self._recorded_key: tuple | None = None
        self._short: dict[str, str] = {}
        self.rollout = None  # CondensedRollout, set by the policy when enabled
        if topologies is not None:
            self.topologies = dict(topologies)
            self._short = self._short_names()

    def _short_names(self) -> dict[str, str]:
        return short_layer_names(
            layer.module_name for topo in self.topologies.values() for layer in topo.layers)

    def restart_schedule(self) -> None:
        """Place ``t_end`` afresh at the next ``learn()`` (e.g. when a new task starts)."""
        self._learn_key = None

    def __deepcopy__(self, memo):
        return None

    # ------------------------------------------------------------------ build
    def build(self, policy: nn.Module) -> None:
        opts = self.opts
        groups = policy_optimizers(policy)
        if not groups:
            raise ValueError(f"{type(policy).__name__} has no optimizer after _build: "
                             "a sparse policy needs one (policy.optimizer or "
                             "<module>.optimizer)")
        # a layer two optimizers train (TD3's features extractor shared by actor and
        # critic) belongs to the first one's topology; the others leave it alone
        names: list[list[str]] = []
        shared: list[list[str]] = []
        owner: dict[str, int] = {}
        for i, (_, opt) in enumerate(groups):
            trained = {id(p) for g in opt.param_groups for p in g["params"]}
            mine = [n for n, m in find_maskable(policy) if id(m.weight) in trained]
            names.append([n for n in mine if n not in owner])
            shared.append([n for n in mine if n in owner])
            owner.update({n: i for n in mine if n not in owner})
        # another optimizer steps these layers' weights: they train masked (a condensed
        # layer's trainable values would be in its owner's optimizer only)
        masked_owners = {owner[n] for names_i in shared for n in names_i}
        if not any(names):
            raise ValueError(
                f"{type(policy).__name__} has no maskable layer (nn.Linear or "
                "nn.Conv1d/2d/3d trained by its optimizer): nothing to sparsify")
        dense = _split_patterns(opts["dense_layers"], names, "dense_layers")
        dense = [pats + input_patterns(policy, group, pats, opts)
                 for pats, group in zip(dense, names, strict=True)]
        if opts["output_layers"] is None:
            # the heads, or (none found) the topology's default: its last masked layer
            outputs = [default_heads(policy, n) or None for n in names]
        else:
            outputs = _split_patterns(opts["output_layers"], names, "output_layers")
        gamma = opts["gamma_sal"]
        if isinstance(gamma, Mapping):
            split = _split_patterns(list(gamma), names, "gamma_sal")
            gammas = [{p: gamma[p] for p in pats} for pats in split]
        else:
            gammas = [gamma] * len(groups)
        config = topology_config(opts)
        shares = _split_named(opts["topology_kwargs"] or {}, names)
        for i, (key, opt) in enumerate(groups):
            if not names[i] or shares[i] is None:
                continue
            own = config.replace(
                gamma_sal=gammas[i], dense_layers=dense[i], seed=opts["seed"] + i,
                output_layers=outputs[i], exclude_layers=(
                    *config.exclude_layers, *map(re.escape, shared[i])),
                compute="masked" if i in masked_owners else config.compute, **shares[i])
            self.topologies[key] = SparseTopology.from_config(policy, opt, own)
        self._build_targets(policy)
        self._short = self._short_names()
        warn_thin_layers(self.topologies, opts["sparsity"], reading_input=[
            n for group in names for n in input_layer_names(policy, group)])

    def _build_targets(self, policy: nn.Module) -> None:
        """Pair every masked module reachable from ``<x>`` with the module at the same
        path in ``<x>_target`` (so a features extractor that SAC's critic shares with
        the actor follows the actor's masks in ``critic_target``)."""
        children = dict(policy.named_children())
        owner = {id(layer.module): (key, layer) for key, topo in self.topologies.items()
                 for layer in topo.layers}
        for name, target in children.items():
            online = children.get(name[: -len("_target")]) if name.endswith("_target") \
                else None
            if online is None:
                continue
            for rel, module in online.named_modules():
                hit = owner.get(id(module))
                if hit is None:
                    continue
                key, layer = hit
                t_mod = target.get_submodule(rel)
                if t_mod is module:
                    continue
                if tuple(t_mod.weight.shape) != tuple(layer.weight.shape):
                    raise ValueError(f"target layer {name}.{rel} does not match "
                                     f"{layer.module_name!r}")
                if not hasattr(t_mod, MASK_BUFFER):
                    t_mod.register_buffer(MASK_BUFFER, layer.mask.clone())
                with torch.no_grad():  # SB3 built it a copy; sparse_init may have rescaled
                    t_mod.weight.copy_(module.weight)
                if layer.condensed is not None and condensed_linear(t_mod) is None:
                    # the target trains nothing, but computes condensed and its parameters
                    # line up with the online network's for SB3's polyak_update
                    CondensedLinearTraining(t_mod, layer.mask, mask_name=MASK_BUFFER).install()
                self.targets.setdefault(key, []).append((module, t_mod))
        for key in self.targets:
            self.topologies[key].optimizer.register_step_post_hook(self._post_step_hook(key))
            self.sync_targets(key, force=True)

    def _post_step_hook(self, key: str):
        def hook(optimizer, args, kwargs) -> None:
            self.sync_targets(key)
        return hook

    @torch.no_grad()
    def sync_targets(self, key: str | None = None, force: bool = False) -> None:
        """Give target networks the online masks and zero their weights outside them
        (after a topology update; ``force``: now)."""
        for k in (self.targets if key is None else [key]):
            topo = self.topologies[k]
            if not force and self._synced.get(k) == topo.n_updates:
                continue
            for online, target in self.targets.get(k, []):
                mask = getattr(online, MASK_BUFFER)
                condensed = condensed_linear(target)
                if condensed is not None:  # polyak moved its values: bring weight up to date
                    condensed.sync_weight()
                getattr(target, MASK_BUFFER).copy_(mask)
                target.weight.mul_(mask)
                if condensed is not None:
                    condensed.follow_mask(None)
            self._synced[k] = topo.n_updates

    # ------------------------------------------------------------------ state
    def load_state(self, state: Any) -> None:
        if not isinstance(state, Mapping) or "topologies" not in state:
            raise ValueError("sparse_state holds no topology state: the checkpoint was not "
                             "saved from a sparse policy")
        saved = state["topologies"]
        if set(saved) != set(self.topologies):
            raise ValueError(f"checkpoint has topologies {sorted(saved)}, the policy has "
                             f"{sorted(self.topologies)}")
        for key, topo in self.topologies.items():
            sd = dict(saved[key])
            t_end = sd.pop("t_end", topo.schedule.t_end)
            topo.load_state_dict(sd)
            topo.set_t_end(t_end)
        self.sync_targets(force=True)
        self._learn_key = None
        self._metrics_key = None
        self._recorded_key = None

    # ------------------------------------------------------------------ algorithm
    def on_mode(self, policy: nn.Module, mode: bool, frame) -> None:
        """Called from ``set_training_mode``: find the algorithm, place ``t_end`` at
        the start of ``train()``, record metrics."""
        found, from_training = calling_algorithm(policy, frame)
        algo = self.algo_ref() if self.algo_ref is not None else None
        if algo is None:
            if found is None:
                return
            algo = found
            self.algo_ref = weakref.ref(algo)
            recommend_cpu(policy, algo)
        if mode:
            self._place_t_end(algo)
        # record from the algorithm's own calls (train, collect_rollouts), not predict()
        if self.opts["log_sparsity"] and from_training:
            self.record(algo)

    def _place_t_end(self, algo) -> None:
        if self.opts["t_end"] is not None:
            return
        learn_key = (getattr(algo, "start_time", None), getattr(algo, "_total_timesteps", None))
        if learn_key == self._learn_key:
            return
        self._learn_key = learn_key

        total = int(algo._total_timesteps)
        resumed = int(getattr(algo, "_num_timesteps_at_start", 0)) > 0
        frac = float(self.opts["t_end_fraction"])
        for key, topo in self.topologies.items():
            planned = planned_optimizer_steps(algo, total, key)
            # a fresh count (reset_num_timesteps=True) on a trained topology starts now
            start = 0 if resumed else topo.step
            t_end = max(1, start + int(math.floor(frac * planned)))
            topo.set_t_end(t_end)

    # ------------------------------------------------------------------ metrics
    def _mask_key(self) -> tuple:
        """Changes whenever a mask may have changed (update, load, manual edit)."""
        return tuple((t.n_updates, tuple(x.mask._version for x in t.layers))
                     for t in self.topologies.values())

    def metrics(self) -> dict[str, float]:
        """Flat metrics (keys without the ``sparse/`` prefix). The mask-derived values
        are recomputed only when a mask changed; counters are read live."""
        key = self._mask_key()
        multi = len(self.topologies) > 1
        if key != self._metrics_key:
            out: dict[str, float] = {}
            totals = []
            policy = self.policy_ref()
            for tkey, topo in self.topologies.items():
                m = topo.metrics()
                numel = sum(layer.weight.numel() for layer in topo.layers)
                # dense names are relative to the topology's model (the policy, or the
                # sub-network a TaskMasks masks: DQN's q_net, SAC's actor and critic)
                model = unwrap(topo.model)
                numel += sum(model.get_parameter(n).numel() for n in topo.dense_names)
                totals.append((m["density"], numel))
                prefix = f"{tkey}/" if multi else ""
                out[prefix + "density"] = m["density"]
                out[prefix + "itop"] = m["itop"]
                for layer in topo.layers:
                    short = self._short.get(layer.module_name, layer.module_name)
                    mod = layer.module_name
                    out[f"density/{short}"] = m[f"density/{mod}"]
                    out[f"alive/{short}"] = m[f"alive/{mod}"]
                    out[f"alive_frac/{short}"] = m[f"alive_frac/{mod}"]
                    out[f"fan_in/{short}"] = m[f"fan_in_mean/{mod}"]
                    out[f"fan_in_min/{short}"] = m[f"fan_in_min/{mod}"]
                    out[f"fan_in_max/{short}"] = m[f"fan_in_max/{mod}"]
            if multi:
                out["density"] = sum(d * n for d, n in totals) / sum(n for _, n in totals)
            if policy is not None:
                out.update(_forward_flops(policy))
            self._metrics_key, self._metrics = key, out
        out = dict(self._metrics)
        out.update(self._counters())
        return out

    def _counters(self) -> dict[str, float]:
        """The values that change at every optimizer step or learn() call (the
        dormant-neuron fractions too)."""
        out: dict[str, float] = {}
        multi = len(self.topologies) > 1
        for tkey, topo in self.topologies.items():
            prefix = f"{tkey}/" if multi else ""
            out[prefix + "updates"] = topo.n_updates
            out[prefix + "step"] = topo.step
            out[prefix + "t_end"] = topo.schedule.t_end or 0
            for key, value in topo.dormant().items():  # changes with every batch
                layer = key.partition("/")[2]
                out[f"dormant/{self._short.get(layer, layer)}" if layer
                    else prefix + key] = value
        if multi:
            out["updates"] = sum(t.n_updates for t in self.topologies.values())
        return out

    def record(self, algo) -> None:
        """Record the metrics into ``algo``'s logger (stdout shows the global ones and
        per-layer density, alive neurons and mean fan-in). Between two dumps of the
        logger, only the counters are re-recorded unless a mask changed."""
        logger = getattr(algo, "_logger", None)
        if logger is None:
            return
        stamp = (id(logger), tuple(t.step for t in self.topologies.values()))
        if stamp == self._logged:
            return
        self._logged = stamp
        key = self._mask_key()
        pending = getattr(logger, "name_to_value", {})
        if key == self._recorded_key and "sparse/density" in pending:
            record_metrics(logger, self._counters())
        else:
            record_metrics(logger, self.metrics())
            self._recorded_key = key


def recommend_cpu(policy: nn.Module, algo: BaseAlgorithm) -> None:
    """SB3's hint for PPO/A2C with an MLP policy on the GPU, which SB3 gives only when
    the policy class is named ``ActorCriticPolicy``; here for its sparse class."""
    if isinstance(algo, OnPolicyAlgorithm) and algo.device != torch.device("cpu") and \
            type(policy).__mro__[type(policy).__mro__.index(SparsePolicyMixin) + 1] \
            is ActorCriticPolicy:
        warnings.warn(
            f"You are trying to run {type(algo).__name__} on the GPU, but it is primarily "
            "intended to run on the CPU when not using a CNN policy (you are using "
            f"{type(policy).__name__}, a sparse MlpPolicy). See "
            "https://github.com/DLR-RM/stable-baselines3/issues/1245 for more info. You "
            "can pass `device='cpu'` or `export CUDA_VISIBLE_DEVICES=` to force using the "
            "CPU.", UserWarning, stacklevel=2)


def _zero_observation(space) -> Any:
    sub = getattr(space, "spaces", None)
    if isinstance(sub, Mapping):
        return {k: _zero_observation(s) for k, s in sub.items()}
    return np.zeros(space.shape, dtype=space.dtype)


def _forward_flops(policy: nn.Module) -> dict[str, float]:
    """Forward FLOPs per observation (:func:`sparse_agents.flops`): one deterministic
    forward of a zero observation, past the condensed rollout copy; ``{}`` for a policy
    whose ``forward`` takes other arguments."""

    def plain_forward(p, x):
        base = super(SparsePolicyMixin, p) if isinstance(p, SparsePolicyMixin) else p
        return base.forward(x, deterministic=True)

    obs, _ = policy.obs_to_tensor(_zero_observation(policy.observation_space))
    try:
        report = flops(policy, inputs=obs, forward=plain_forward)
    except TypeError:  # e.g. a recurrent policy's forward(obs, states, starts)
        return {}
    return {"flops_forward": report.sparse, "flops_dense_forward": report.dense}


def record_metrics(logger, metrics: Mapping[str, float]) -> None:
    """Record ``metrics`` under ``sparse/``: stdout gets the global values and per-layer
    density, alive neurons and mean fan-in; csv/tensorboard/json get everything."""
    for key, value in metrics.items():
        quiet = key.startswith(("alive_frac/", "fan_in_min/", "fan_in_max/", "dormant/")) or \
            key.endswith("t_end")
        logger.record(f"sparse/{key}", value, exclude=("stdout", "log") if quiet else None)


def policy_optimizers(policy: nn.Module) -> list[tuple[str, torch.optim.Optimizer]]:
    """``(key, optimizer)``: ``policy.optimizer`` as ``"policy"``, then every direct
    child's ``optimizer`` under the child's name (SAC/TD3: actor, critic)."""
    out: list[tuple[str, torch.optim.Optimizer]] = []
    seen: set[int] = set()
    opt = policy.__dict__.get("optimizer")
    if isinstance(opt, torch.optim.Optimizer):
        out.append(("policy", opt))
        seen.add(id(opt))
    for name, child in policy.named_children():
        opt = child.__dict__.get("optimizer")
        if isinstance(opt, torch.optim.Optimizer) and id(opt) not in seen:
            out.append((name, opt))
            seen.add(id(opt))
    return out


def default_heads(policy: nn.Module, names: list[str]) -> list[str]:
    """The policy's output layers among ``names``: Linears called action_net,
    value_net, mu, log_std, and the last Linear of Sequentials called q_net, qf<i>, mu."""
    heads = [n for n in names if n.rpartition(".")[2] in _HEAD_LINEARS]
    by_parent: dict[str, str] = {}
    for n in names:
        parent, _, _ = n.rpartition(".")
        if parent and _HEAD_SEQUENTIALS.fullmatch(parent.rpartition(".")[2]) and \
                isinstance(policy.get_submodule(parent), nn.Sequential):
            by_parent[parent] = n  # model order: the last one wins
    return [re.escape(n) for n in heads + list(by_parent.values())]


def input_layer_names(policy: nn.Module, names: list[str]) -> list[str]:
    """The layers among ``names`` that read the observation: the first Linear of each MLP
    SB3 builds on the features (policy_net, value_net, q_net, latent_pi, qf<i>, mu), heads
    excepted; none when a features extractor has weights (CNN policies: its first layer
    is not tiny, and the MLPs read its output)."""
    if any(find_maskable(module) for name, module in policy.named_modules()
           if name.rpartition(".")[2].endswith("features_extractor")):
        return []
    heads = set(default_heads(policy, names))
    first: dict[str, str] = {}
    for n in names:
        parent = n.rpartition(".")[0]
        if parent and _INPUT_SEQUENTIALS.fullmatch(parent.rpartition(".")[2]) and \
                isinstance(policy.get_submodule(parent), nn.Sequential):
            first.setdefault(parent, n)  # model order: the first one wins
    return [n for n in first.values() if re.escape(n) not in heads]


def input_layers(policy: nn.Module, names: list[str]) -> list[str]:
    """:func:`input_layer_names` as layer patterns (escaped regexes)."""
    return [re.escape(n) for n in input_layer_names(policy, names)]


def input_patterns(policy: nn.Module, names: list[str], dense: list,
                   opts: Mapping[str, Any]) -> list[str]:
    """The :func:`input_layers` of one topology's ``names`` to keep dense besides the
    ``dense`` patterns, by ``opts["dense_input"]``: all (``True``), none (``False``), or
    (``None``) all if the dense layers then fit in the topology's budget of ``1 -
    sparsity`` of the weights and the other layers pay for them (ERK, ER, or uniform with
    ``renormalise``), else none: small networks at high sparsity, and plain uniform (every
    masked layer at ``1 - sparsity``), keep every layer masked."""
    if opts["dense_input"] is False:
        return []
    extra = [p for p in input_layers(policy, names) if p not in dense]
    if opts["dense_input"] is None:
        if opts["distribution"] == "uniform" and \
                not (opts["topology_kwargs"] or {}).get("renormalise"):
            return []
        sizes = [policy.get_submodule(n).weight.numel() for n in names]
        kept = [i for i, n in enumerate(names) if any(match_layer(p, i, n)
                                                      for p in dense + extra)]
        if not dense_fits_budget(sizes, kept, opts["sparsity"]):
            return []
    return extra


def calling_algorithm(policy: nn.Module, frame, depth: int = 4
                      ) -> tuple[BaseAlgorithm | None, bool]:
    """The SB3 algorithm that called ``policy.set_training_mode`` and whether the call
    came from its training (``train``/``collect_rollouts``) rather than ``predict``.

    SB3 gives a policy no reference to its algorithm and no hook at the start of
    ``train()``, so this is the one place that reads the call stack: the first of
    ``depth`` frames whose ``self`` is a ``BaseAlgorithm`` owning ``policy``, and the
    name of the calling function (``frame``). ``tests/test_sb3.py`` checks it for PPO,
    A2C, DQN, SAC and TD3, so an SB3 release that changes the call chain fails there.
    """
    from_training = frame is not None and frame.f_code.co_name != "predict"
    while frame is not None and depth > 0:
        owner = frame.f_locals.get("self")
        if isinstance(owner, BaseAlgorithm) and owner.__dict__.get("policy") is policy:
            return owner, from_training
        frame = frame.f_back
        depth -= 1
    return None, from_training


def _refuse_dict_observations(cls: type, args: tuple, kwargs: dict) -> None:
    """SB3's hint for a Dict observation space on an Mlp/Cnn policy (SB3 gives it only
    for the strings "MlpPolicy" and "CnnPolicy"): a ``ValueError`` naming the
    ``SparseMultiInputPolicy`` alias instead of an error deep inside the extractor."""
    space = kwargs.get("observation_space", args[0] if args else None)
    if not isinstance(space, gym_spaces.Dict):
        return
    extractor = kwargs.get("features_extractor_class")
    if extractor is None:
        for klass in cls.__mro__:
            if klass.__init__ is SparsePolicyMixin.__init__:
                continue
            param = inspect.signature(klass.__init__).parameters.get(
                "features_extractor_class")
            if param is not None:
                extractor = param.default
                break
    plain = {FlattenExtractor: "SparseMlpPolicy", NatureCNN: "SparseCnnPolicy"}
    if extractor in plain:
        raise ValueError("You must use `SparseMultiInputPolicy` when working with dict "
                         f"observation space, not {plain[extractor]} (a {cls.__name__} "
                         f"with {extractor.__name__})")


#: sub-network (``policy.actor``, ``policy.q_net``, ...) -> its policy, for the load hooks
#: of :func:`keep_subnetworks_plain` (a deep copy of a sub-network is not in it)
_SUBNETWORK_OWNER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _drop_masks_at_root(module: nn.Module, state_dict: dict, prefix: str,
                        local_metadata: dict) -> None:
    """A sub-network's own ``state_dict()`` (``actor.save``) holds no mask buffers, so
    its plain SB3 class loads it (weights outside the masks are 0 in it)."""
    if prefix:
        return
    # modules the sub-network passes to its constructor (a CNN's features extractor) are
    # pickled with the saved constructor parameters, masks included: their masks stay
    params = module._get_constructor_parameters().values()
    carried = {id(m) for v in params if isinstance(v, nn.Module) for m in v.modules()}
    for name, m in masked_layers(module).items():
        if id(m) not in carried:
            state_dict.pop(f"{name}.{MASK_BUFFER}" if name else MASK_BUFFER, None)


def _keep_masks_at_root(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Loading a sub-network's own state (no mask buffers) keeps its masks."""
    if prefix:
        return
    _LOADED_ALONE.add(module)
    for name, m in masked_layers(module).items():
        key = f"{name}.{MASK_BUFFER}" if name else MASK_BUFFER
        if key not in state_dict:
            state_dict[key] = getattr(m, MASK_BUFFER).clone()


#: sub-networks being loaded on their own (set by the pre-hook, read by the post-hook)
_LOADED_ALONE: weakref.WeakSet = weakref.WeakSet()


def _remask_after_load(module: nn.Module, incompatible_keys) -> None:
    """After a ``load_state_dict`` without the topology state (``strict=False`` without
    ``sparse_state``, or a sub-network's own state): the topologies zero the loaded
    weights outside the masks, so the policy acts as it will after save and load. A
    state with the topology state is consistent already (it was saved masked)."""
    if isinstance(module, SparsePolicyMixin):
        policy = module
        if not any(k.endswith("sparse_state._extra_state")
                   for k in incompatible_keys.missing_keys):
            return
    else:
        if module not in _LOADED_ALONE:
            return
        _LOADED_ALONE.discard(module)
        ref = _SUBNETWORK_OWNER.get(module)
        policy = ref() if ref is not None else None
    runtime = None if policy is None else policy.__dict__.get("_sparse")
    if runtime is None:
        return
    for topo in runtime.topologies.values():
        topo.remask()
    runtime.sync_targets(force=True)


#: a masked layer whose units keep fewer active inputs than this on average (at
#: initialisation) barely carries signal: its output hardly depends on the observation
MIN_FAN_IN = 2.0


#: only layers at least this wide on both sides are checked (a head with a few outputs
#: reading one unit each still carries the signal)
_MIN_WIDTH = 8


def warn_thin_layers(topologies: Mapping[str, SparseTopology], sparsity: float,
                     reading_input: Iterable[str] = ()) -> None:
    """Warn (once per policy) when a masked hidden-to-hidden layer (8+ units on both
    sides) keeps under :data:`MIN_FAN_IN` active inputs per unit: chains of single
    connections through ReLUs carry almost no signal, so the network is too small for its
    sparsity and learns nothing (every gradient is ~0). Layers in ``reading_input`` (they
    read the observation) are not checked. Names the layers, their fan-in and the
    sparsity at which their units keep about ``MIN_FAN_IN`` inputs."""
    thin = []
    skip = set(reading_input)
    for topo in topologies.values():
        for layer in topo.layers:
            if layer.module_name in skip:
                continue
            mask = layer.mask
            fan_in = float(mask.sum()) / mask.shape[0]
            if fan_in < MIN_FAN_IN and min(mask.shape[0], mask[0].numel()) >= _MIN_WIDTH:
                # layer densities scale with 1 - sparsity (ERK/ER/uniform, uncapped)
                needed = 1.0 - (1.0 - sparsity) * MIN_FAN_IN / max(fan_in, 1e-9)
                thin.append((layer.module_name, fan_in, mask[0].numel(),
                             max(0.0, math.floor(needed * 20) / 20)))
    if not thin:
        return
    worst = min(s for *_, s in thin)
    names = ", ".join(f"{n} keeps {f:.1f} of {k} inputs per unit" for n, f, k, _ in thin)
    warnings.warn(
        f"sparsity={sparsity:g} is too high for this network: {names}, so its output "
        f"hardly depends on the observation and it may learn nothing. Use sparsity <= "
        f"{worst:g} (each unit then keeps about {MIN_FAN_IN:g} inputs), a wider net_arch, "
        "or dense_layers for these layers.", UserWarning, stacklevel=2)


def keep_subnetworks_plain(policy: nn.Module) -> None:
    """Hooks for SB3's sub-network save/load (``policy.actor.save(path)`` then
    ``Actor.load(path)``; likewise ``critic``, ``q_net`` and the targets): the state of a
    sub-network saved on its own has no masks, loads into the plain class, and loads
    back into the sparse sub-network keeping its masks. After a load without the
    topology state (``strict=False`` without ``sparse_state``, or a sub-network's own
    state) the topologies re-mask the weights."""
    policy.register_load_state_dict_post_hook(_remask_after_load)
    for child in policy.children():
        if not isinstance(child, BaseModel) or not masked_layers(child):
            continue
        _SUBNETWORK_OWNER[child] = weakref.ref(policy)
        child.register_state_dict_post_hook(_drop_masks_at_root)
        child.register_load_state_dict_pre_hook(_keep_masks_at_root)
        child.register_load_state_dict_post_hook(_remask_after_load)


class SparsePolicyMixin:
    """Mix into an SB3 policy class (first base) to train it sparse. See the module
    docstring; options (``policy_kwargs``) and defaults are :func:`defaults_for` the
    class (``SPARSE_DEFAULTS`` with the family's RL schedule, ``FAMILY_DEFAULTS``):

    Args:
        sparsity: global sparsity of the masked layers, in [0, 1).
        updater: ``"static"``, ``"set"``, ``"rigl"`` or ``"srigl"``.
        distribution: ``"erk"``, ``"er"`` or ``"uniform"`` layer-wise densities.
        delta_t: optimizer steps between topology updates (1000).
        t_end: last optimizer step (exclusive) with updates; ``None``: derived from
            ``learn()``'s total timesteps as ``t_end_fraction`` of its optimizer steps.
        t_end_fraction: see ``t_end`` (0.8).
        drop_fraction, schedule, gamma_sal: as in ``SparseTopology``.
        dense_layers: module names/regexes (or indices) of layers kept dense.
        dense_input: keep dense the layers that read the observation (the first Linear
            of each MLP on a weightless features extractor; :func:`input_layers`).
            ``None`` (PPO/A2C's default): dense if they fit in the weight budget, else
            masked; ``False``: DQN/SAC/TD3's default.
        output_layers: layers SRigL never ablates (default: the heads: action_net,
            value_net, the last Linear of q_net / qf<i>, actor mu and log_std).
        seed: seed of the topology RNG (the i-th optimizer's topology gets seed + i).
        condensed_rollout: roll out and predict with a condensed copy of the policy
            (refreshed whenever the weights changed). Off by default: see docs/rl.md.
        log_sparsity: record metrics under ``sparse/`` in the algorithm's logger.
        topology_kwargs: more ``SparseTopology`` keyword arguments (``power``,
            ``renormalise``, ``ablate_output``).
        lr_scale: the optimizers step at ``lr_scale`` x the learning rate the
            algorithm sets (its schedule and logs keep the unscaled value).
        compute: ``"auto"`` (default), ``"condensed"`` or ``"masked"``: which linear
            layers train (and predict) on their active weights only; as in
            ``SparseTopology``. Target networks compute like their online network.
    """

    def __init__(self, *args, **kwargs) -> None:
        opts = {k: kwargs.pop(k, v) for k, v in defaults_for(type(self)).items()}
        self._sparse_options = check_options(opts)
        _refuse_dict_observations(type(self), args, kwargs)
        self._sparse: SparseRuntime | None = None
        super().__init__(*args, **kwargs)

    def _build(self, *args, **kwargs) -> None:
        self.optimizer_kwargs = fused_optimizer_kwargs(self.optimizer_class,
                                                       self.optimizer_kwargs)
        super()._build(*args, **kwargs)
        runtime = self._make_runtime()
        for _, optimizer in policy_optimizers(self):
            scale_learning_rate(optimizer, self._sparse_options["lr_scale"])
        self._sparse = runtime
        self._keep_state(runtime)
        keep_subnetworks_plain(self)

    def _make_runtime(self) -> SparseRuntime:
        """The topologies of the built networks (a subclass may build them otherwise,
        e.g. per-task masks), in a runtime."""
        runtime = SparseRuntime(self, self._sparse_options)
        runtime.build(self)
        return runtime

    def _keep_state(self, runtime: SparseRuntime) -> None:
        """What a checkpoint carries of the runtime, and the condensed rollout copy."""
        self.sparse_state = TopologyState(runtime)
        if self._sparse_options["condensed_rollout"]:
            from sparse_agents.sb3.rollout import CondensedRollout

            runtime.rollout = CondensedRollout(
                self, [topo.optimizer for topo in runtime.topologies.values()
                       if topo.optimizer is not None])

    # ------------------------------------------------------------------ public
    @property
    def sparse_options(self) -> dict[str, Any]:
        """The sparse options in effect (a copy): the user's, else the family defaults."""
        return copy.deepcopy(self._sparse_options)

    @property
    def topologies(self) -> dict[str, SparseTopology]:
        """Optimizer key (``"policy"``; SAC/TD3: ``"actor"``, ``"critic"``) ->
        topology."""
        return {} if self._sparse is None else dict(self._sparse.topologies)

    @property
    def topology(self) -> SparseTopology:
        """The policy's only topology (SAC/TD3 have two: use ``topologies``)."""
        topos = self.topologies
        if len(topos) != 1:
            raise AttributeError(
                f"{type(self).__name__} has {len(topos)} topologies {sorted(topos)}: "
                "use policy.topologies[key]")
        return next(iter(topos.values()))

    def sparse_metrics(self) -> dict[str, float]:
        """The metrics recorded under ``sparse/`` (keys without the prefix)."""
        return {} if self._sparse is None else dict(self._sparse.metrics())

    def sync_target_masks(self) -> None:
        """Copy online masks to the target networks and zero the targets outside them
        (done automatically after every topology update and on load)."""
        if self._sparse is not None:
            self._sparse.sync_targets(force=True)

    # ------------------------------------------------------------------ SB3 hooks
    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        runtime = self.__dict__.get("_sparse")
        if runtime is not None:
            runtime.on_mode(self, mode, sys._getframe(1))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(copy.deepcopy(self._sparse_options))
        return data

    def _fast(self):
        runtime = self.__dict__.get("_sparse")
        if runtime is None or runtime.rollout is None or self.training \
                or torch.is_grad_enabled():
            return None
        return runtime.rollout.get()

    def forward(self, *args, **kwargs):
        fast = self._fast()
        if fast is not None:
            return fast.forward(*args, **kwargs)
        return super().forward(*args, **kwargs)

    def _predict(self, *args, **kwargs):
        fast = self._fast()
        if fast is not None:
            return fast._predict(*args, **kwargs)
        return super()._predict(*args, **kwargs)


_CACHE: dict[type, type] = {}


def make_sparse(policy_class: type, name: str | None = None) -> type:
    """A sparse version of an SB3 policy class (a subclass with
    :class:`SparsePolicyMixin` first). Cached: the same class comes back for the
    same input. For ``model.save``/``Algo.load`` by reference, assign the result to
    a module-level name equal to its ``__name__`` (``Sparse<Name>``); otherwise SB3's
    cloudpickle stores the class by value, which also loads."""
    if not isinstance(policy_class, type) or not issubclass(policy_class, BasePolicy):
        raise ValueError(f"policy_class must be an SB3 policy class (a BasePolicy subclass), "
                         f"got {policy_class!r}")
    if issubclass(policy_class, SparsePolicyMixin):
        return policy_class
    if policy_class in _CACHE:
        return _CACHE[policy_class]
    name = name or f"Sparse{policy_class.__name__}"
    caller = sys._getframe(1).f_globals.get("__name__", policy_class.__module__)
    cls = type(name, (SparsePolicyMixin, policy_class), {
        "__module__": caller, "__qualname__": name,
        "__doc__": f"Sparse {policy_class.__name__} (see SparsePolicyMixin for options).",
    })
    _CACHE[policy_class] = cls
    return cls


def register_sparse_class(policy_class: type, sparse_class: type) -> None:
    """Make :func:`make_sparse` return ``sparse_class`` for ``policy_class``."""
    _CACHE[policy_class] = sparse_class

