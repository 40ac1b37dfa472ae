"""``continue_sparse``: go on training a dense (pruned) SB3 agent sparse, e.g. with RigL.

A user trains a dense agent, prunes its policy (``torch.nn.utils.prune``, a
``weight_mask`` buffer of their own, or zeroed weights) and wants to continue
training at that sparsity with dynamic sparse training::

    model = PPO("MlpPolicy", "CartPole-v1").learn(50_000)
    layers = [(m, "weight") for m in model.policy.modules() if isinstance(m, nn.Linear)]
    prune.global_unstructured(layers, prune.L1Unstructured, amount=0.8)
    sparse = continue_sparse(model, updater="rigl")    # masks="existing" (the default)
    sparse.learn(50_000)

The new algorithm is rebuilt as ``Algo.load`` rebuilds a saved one (constructed with
``_init_setup_model=False``, the dense model's attributes copied in, ``_setup_model()``),
with the sparse version of the policy class (:func:`make_sparse`) whose topologies start
from the masks read from the dense policy (``policy_kwargs["topology_kwargs"]["masks"]``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import recursive_getattr
from torch import Tensor, nn
from torch.nn.utils import prune

from sparse_agents.sb3.mixin import (
    SPARSE_DEFAULTS,
    SparsePolicyMixin,
    check_options,
    defaults_for,
    input_layers,
    make_sparse,
    policy_optimizers,
)
from sparse_agents.topology import MASK_BUFFER, MASK_SOURCES, MASKABLE, match_layer

__all__ = ["continue_sparse"]

#: counters a new ``learn()`` starts from (``reset_num_timesteps=True``)
_COUNTERS = {"num_timesteps": 0, "_episode_num": 0, "_n_updates": 0, "_n_calls": 0,
             "_num_timesteps_at_start": 0, "_current_progress_remaining": 1.0}


def continue_sparse(model: BaseAlgorithm, masks: str | Mapping[str, Tensor] = "existing", *,
                    reset_num_timesteps: bool = True, **sparse_options: Any) -> BaseAlgorithm:
    """A new algorithm of ``model``'s class that trains its (pruned) policy sparse.

    Args:
        model: a dense SB3 algorithm (PPO, A2C, DQN, SAC, TD3, ...). It is left as it is
            (its pruning too: only its state is read).
        masks: where the masks come from: ``"existing"``, the policy's ``weight_mask``
            buffers (bool or 0/1; ``torch.nn.utils.prune``'s ``weight_orig * weight_mask``
            become the weights); ``"nonzero"``, the weights' nonzero pattern; or a dict
            ``{parameter name: bool (or 0/1) mask}`` such as ``"mlp_extractor.policy_net.0
            .weight"``. Only layers an optimizer trains are masked: masks of target
            networks are ignored (targets follow the online masks), and with a string
            source so are other untrained layers. A trained layer without a mask stays
            dense; so does one named in ``dense_layers``. The masks set every layer's
            budget and the sparsity. They stay in the new model's
            ``policy_kwargs["topology_kwargs"]["masks"]``, so ``save``/``load`` rebuild it.
        reset_num_timesteps: ``True``: the new model starts its counters (``num_timesteps``,
            episodes, updates) at 0, as a new ``learn()``; ``False``: it keeps the dense
            model's, for ``learn(..., reset_num_timesteps=False)`` to continue the
            schedules (learning rate, exploration) where they were (``t_end`` is then
            placed as a fraction of all the optimizer steps, the dense ones included:
            pass ``t_end`` to place it exactly).
        **sparse_options: the sparse policy's options (``updater``, ``delta_t``,
            ``t_end``, ``drop_fraction``, ``topology_kwargs``, ...: see
            :class:`SparsePolicyMixin`), except ``sparsity``, which the masks set.

    Returns:
        The new algorithm: same class, env, hyperparameters and seed; policy class
        ``make_sparse(type(model.policy))`` with the dense policy's weights (zero outside
        the masks; target networks get the online masks and zeros outside them).
        Fresh: the optimizers (moments of dense training are dropped) and, for
        off-policy algorithms, the replay buffer (``new.replay_buffer =
        model.replay_buffer`` reuses the old one). Carried over: SAC's entropy
        coefficient and its optimizer, a custom logger.

    Raises:
        ValueError: ``model`` is no SB3 algorithm or its policy is already sparse; an
            unknown ``masks`` value; masks that name no trained layer of the policy, have
            the wrong shape or are not 0/1; an unknown option or ``sparsity``. SAC/TD3
            (two topologies), until SparseRuntime splits ``masks`` per topology: masks
            that leave all of one optimizer's layers out.
    """
    if not isinstance(model, BaseAlgorithm):
        raise ValueError(f"model must be an SB3 algorithm (BaseAlgorithm), got {model!r}")
    if isinstance(model.policy, SparsePolicyMixin):
        raise ValueError(f"model: its policy {type(model.policy).__name__} is already sparse; "
                         "continue_sparse starts from a dense (pruned) policy")
    if not (isinstance(masks, Mapping) or (isinstance(masks, str) and masks in MASK_SOURCES)):
        raise ValueError(f"masks must be a dict {{parameter name: bool mask}} or one of "
                         f"{MASK_SOURCES}, got {masks!r}")
    policy_class = make_sparse(type(model.policy))
    options = _options(sparse_options, policy_class)

    layers = _maskable(model.policy)
    weights, buffers = _dense_state(model.policy)  # the user's model is not touched
    dense = list(options.get("dense_layers", ()))
    if options["dense_input"]:
        dense += [p for names in layers for p in input_layers(model.policy, names)]
    chosen = _read_masks(model.policy, masks, layers, weights, buffers, tuple(dense))
    sparsity = _sparsity(chosen, layers, weights)

    topology_kwargs = dict(options.pop("topology_kwargs", None) or {}, masks=chosen)
    policy_kwargs = dict(copy.deepcopy(model.policy_kwargs), **options, sparsity=sparsity,
                         topology_kwargs=topology_kwargs)
    new = _rebuild(model, policy_class, policy_kwargs, reset_num_timesteps)
    _load_weights(new.policy, weights)
    _check_built(new.policy, chosen)
    return new


# ---------------------------------------------------------------------------- options
def _options(options: Mapping[str, Any], policy_class: type) -> dict[str, Any]:
    """The sparse options given, checked now (as the sparse policy will check them), so
    that a bad one is reported before anything is built."""
    unknown = sorted(set(options) - set(SPARSE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown sparse options {unknown}; the options are "
                         f"{sorted(set(SPARSE_DEFAULTS) - {'sparsity'})}")
    if "sparsity" in options:
        raise ValueError("sparsity: the masks set it (prune the dense policy to the sparsity "
                         "you want)")
    kw = options.get("topology_kwargs")
    if isinstance(kw, Mapping) and {"masks", "budgets"} & set(kw):
        raise ValueError("topology_kwargs must not give masks or budgets: continue_sparse's "
                         "masks argument sets both")
    check_options({**defaults_for(policy_class), **options})
    out = dict(options)
    dense = out.get("dense_layers", ())
    out["dense_layers"] = (dense,) if isinstance(dense, (str, int)) else tuple(dense or ())
    if not out["dense_layers"]:
        del out["dense_layers"]
    out["dense_input"] = out.get("dense_input") is True  # else the masks decide every layer
    return out


# ---------------------------------------------------------------------------- masks
def _maskable(policy: nn.Module) -> list[list[str]]:
    """Per optimizer of the policy (one topology each), the module names of the
    Linear/Conv layers whose weight it trains (``weight_orig`` for a pruned one)."""
    modules = [(n, m) for n, m in policy.named_modules() if isinstance(m, MASKABLE)]
    out = []
    for _, opt in policy_optimizers(policy):
        trained = {id(p) for g in opt.param_groups for p in g["params"]}
        out.append([n for n, m in modules
                    if id(m._parameters.get("weight", m._parameters.get("weight_orig")))
                    in trained])
    return out


def _dense_state(policy: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(state, masks)``: the policy's state dict with every ``torch.nn.utils.prune``
    re-parametrisation made permanent (``name = name_orig * name_mask``, as
    ``prune.remove`` would) and the ``weight_mask`` buffers of Linear/Conv layers taken
    out into ``masks`` (parameter name -> mask). Read only: ``policy`` keeps its pruning
    (and a deep copy of a pruned module is refused by torch)."""
    state = policy.state_dict()
    masks: dict[str, Tensor] = {}
    for name, module in policy.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                tensor = hook._tensor_name
                orig = state.pop(f"{prefix}{tensor}_orig")
                mask = state.pop(f"{prefix}{tensor}_mask")
                state[prefix + tensor] = orig * mask
                if tensor == "weight" and isinstance(module, MASKABLE):
                    masks[f"{prefix}weight"] = mask
        if isinstance(module, MASKABLE) and f"{prefix}{MASK_BUFFER}" in state:
            masks[f"{prefix}weight"] = state.pop(f"{prefix}{MASK_BUFFER}")
    return state, masks


def _is_target(policy: nn.Module, name: str) -> bool:
    """``name`` lies in a target network (a child ``<x>_target`` next to ``<x>``)."""
    top = name.split(".", 1)[0]
    return top.endswith("_target") and top[: -len("_target")] in dict(policy.named_children())


def _read_masks(policy: nn.Module, masks: str | Mapping[str, Tensor], layers: list[list[str]],
                weights: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                dense_layers: tuple) -> dict[str, Tensor]:
    """Parameter name -> bool mask (on the CPU) of every trained layer that gets one."""
    shapes = {f"{n}.weight": tuple(weights[f"{n}.weight"].shape)
              for n, m in policy.named_modules() if isinstance(m, MASKABLE)}
    if masks == "existing":
        read = dict(buffers)
        if not read:
            raise ValueError("masks='existing': the policy has no weight_mask buffer (prune "
                             "it with torch.nn.utils.prune, or use masks='nonzero')")
    elif masks == "nonzero":
        read = {k: weights[k] != 0 for k in shapes}
    else:
        read = dict(masks)
        for name in read:
            if name not in shapes:
                raise ValueError(f"masks names {name!r}, which is no Linear/Conv weight of "
                                 f"the policy; they are {sorted(shapes)}")
    trained = {f"{n}.weight" for names in layers for n in names}
    if not isinstance(masks, str):
        untrained = sorted(k for k in read if k not in trained and not _is_target(policy, k))
        if untrained:
            raise ValueError(f"masks names {untrained}, which no optimizer of the policy "
                             f"trains; the trained layers are {sorted(trained)}")
    dense = {f"{n}.weight" for names in layers for i, n in enumerate(names)
             if any(match_layer(p, i, n) for p in dense_layers)}
    out = {}
    for name, mask in read.items():
        if name not in trained or name in dense:
            continue  # target networks follow the online masks
        if not isinstance(mask, Tensor):
            raise ValueError(f"masks[{name!r}] must be a tensor, got {type(mask).__name__}")
        if tuple(mask.shape) != shapes[name]:
            raise ValueError(f"masks[{name!r}] has shape {tuple(mask.shape)}, expected the "
                             f"weight's shape {shapes[name]}")
        if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"masks[{name!r}] must be a bool or 0/1 mask")
        out[name] = mask.detach().to("cpu") != 0
    if not out:
        source = f"masks={masks!r}" if isinstance(masks, str) else "masks"
        raise ValueError(f"{source}: no layer an optimizer of the policy trains has a mask "
                         f"(target networks follow the online masks); the trained layers "
                         f"are {sorted(trained)}")
    return out


def _sparsity(masks: Mapping[str, Tensor], layers: list[list[str]],
              weights: Mapping[str, Tensor]) -> float:
    """Global sparsity of the trained Linear/Conv layers (those without a mask dense)."""
    active = total = 0
    for name in {f"{n}.weight" for names in layers for n in names}:
        numel = weights[name].numel()
        total += numel
        active += numel if name not in masks else int(masks[name].sum())
    if active == 0:
        raise ValueError("masks: every weight is pruned; nothing left to train")
    return 1.0 - active / total


# ---------------------------------------------------------------------------- build
def _rebuild(model: BaseAlgorithm, policy_class: type, policy_kwargs: dict[str, Any],
             reset_num_timesteps: bool) -> BaseAlgorithm:
    """``model``'s class rebuilt as ``BaseAlgorithm.load`` does, from the attributes
    ``save`` would store, with another policy class and policy_kwargs."""
    data = model.__dict__.copy()
    state_dicts, torch_variables = model._get_torch_save_params()
    for name in {*model._excluded_save_params(),
                 *(n.split(".")[0] for n in state_dicts + torch_variables)}:
        data.pop(name, None)
    data = copy.deepcopy(data)  # nothing shared with the dense model (deques, arrays)
    data.update(policy_class=policy_class, policy_kwargs=policy_kwargs)
    if reset_num_timesteps:
        data.update({k: v for k, v in _COUNTERS.items() if k in data})

    new = type(model)(policy=policy_class, env=model.get_env(), device=model.device,
                      _init_setup_model=False)
    new.__dict__.update(data)
    new._setup_model()

    # what load() puts back besides the policy: torch variables (SAC's log_ent_coef) and
    # the state of optimizers outside the policy (SAC's ent_coef_optimizer)
    for name in torch_variables:
        value = recursive_getattr(model, name)
        if value is not None:
            recursive_getattr(new, name).data.copy_(value.data)
    trained_by_policy = {id(opt) for _, opt in policy_optimizers(model.policy)}
    for name in state_dicts:
        obj = recursive_getattr(model, name)
        if name != "policy" and id(obj) not in trained_by_policy:
            recursive_getattr(new, name).load_state_dict(obj.state_dict())
    if model._custom_logger:
        new.set_logger(model.logger)
    return new


def _load_weights(policy: nn.Module, weights: Mapping[str, Tensor]) -> None:
    """Load the dense policy's state into the sparse one (its masks and topology state
    kept), zero the weights outside the masks and give the targets the online masks."""
    state = policy.state_dict()
    extra = sorted(set(weights) - set(state))
    if extra:
        raise ValueError(f"model: the policy's state has entries the sparse policy lacks "
                         f"{extra} (a pruning re-parametrisation of a layer that is no "
                         "Linear/Conv?)")
    state.update(weights)
    policy.load_state_dict(state)
    with torch.no_grad():
        for topo in policy.topologies.values():
            for layer in topo.layers:
                layer.weight.mul_(layer.mask)
    policy.sync_target_masks()


def _check_built(policy: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """The topologies mask exactly the layers in ``masks``, with those masks."""
    built = {name: mask for topo in policy.topologies.values()
             for name, mask in topo.masks.items()}
    if set(built) != set(masks) or any(
            not torch.equal(built[k].cpu(), masks[k]) for k in masks):
        raise RuntimeError("the sparse policy's topologies were not built with the masks "
                           f"given: masked {sorted(built)}, masks for {sorted(masks)}")
