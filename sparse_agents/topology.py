"""``SparseTopology``: owns the masks of a module (``weight_mask`` buffers), hooks its
optimizer (the pre-hook runs scheduled updates and masks gradients, the post-hook
re-masks), runs updates through the updater registry. See docs/architecture.md."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from sparse_agents.compute import (
    CondensedLinearTraining,
    OptimizerBinding,
    check_elementwise_optimizer,
)
from sparse_agents.compute.auto import AutoKernels
from sparse_agents.compute.kernels import numba_supports
from sparse_agents.compute.optim import release
from sparse_agents.config import (  # noqa: F401 - COMPUTE, GRAD_MASKING, check_compute: re-exported
    COMPUTE,
    GRAD_MASKING,
    MASK_SOURCES,
    SparseConfig,
    check_compute,
    check_mask_source,
)
from sparse_agents.distributions import (
    constant_fan_in_counts,
    kept_counts,
    layer_densities,
)
from sparse_agents.dormant import DORMANT_TAU, DormantTracker
from sparse_agents.forward_order import ForwardOrder
from sparse_agents.optim_state import MASK_PRESERVING, first_moment_rule, reset_state
from sparse_agents.sparse_init import rescale_to_mask_
from sparse_agents.updaters import get_updater, initial_mask

MASKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MASK_BUFFER = "weight_mask"


@dataclass
class MaskedLayer:
    """Book-keeping for one masked weight."""

    name: str  # parameter name, e.g. "net.0.weight"
    module_name: str
    module: nn.Module
    density: float
    budget: int
    gamma_sal: float
    allow_ablation: bool
    ever_active: Tensor
    #: where growth may happen (``None``: anywhere); e.g. the free pool under task masks
    allowed: Tensor | None = None
    #: weights outside the mask that are kept bit-identical (``None``: none), with values
    frozen: Tensor | None = None
    frozen_values: Tensor | None = None
    #: the layer's condensed training runtime while it trains condensed, else ``None``
    condensed: CondensedLinearTraining | None = None

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    def follow_weight(self) -> None:
        """Move the tensors this record holds to the weight's device (and dtype, for
        values) after ``model.to(...)``."""
        w = self.weight
        if self.ever_active.device != w.device:
            self.ever_active = self.ever_active.to(w.device)
        if self.allowed is not None and self.allowed.device != w.device:
            self.allowed = self.allowed.to(w.device)
        if self.frozen is not None and self.frozen.device != w.device:
            self.frozen = self.frozen.to(w.device)
        fv = self.frozen_values
        if fv is not None and (fv.device != w.device or fv.dtype != w.dtype):
            self.frozen_values = fv.to(w.device, w.dtype)

    @property
    def mask(self) -> Tensor:
        return getattr(self.module, MASK_BUFFER)

    @property
    def mask_f(self) -> Tensor:
        """The mask in the weight's dtype (multiplying by it is ~7x faster than by a
        bool mask); rebuilt whenever the mask buffer was modified in place."""
        mask = self.mask
        cached = self.__dict__.get("_mask_f")
        if cached is None or cached[0] is not mask or cached[1] != mask._version:
            cached = (mask, mask._version, mask.to(self.weight.dtype))
            self.__dict__["_mask_f"] = cached
        return cached[2]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module of a ``torch.compile``'d one (names without ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)


def find_maskable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(module_name, module)`` of every Linear/Conv1d/2d/3d with a trainable weight,
    named as in the plain (not ``torch.compile``'d) model."""
    return [
        (name, m) for name, m in unwrap(model).named_modules()
        if isinstance(m, MASKABLE) and isinstance(getattr(m, "weight", None), nn.Parameter)
    ]


def match_layer(pattern: str | int, index: int, name: str) -> bool:
    """The layer-pattern rule: an index, the exact module or parameter name, or a regex
    matching the whole module name."""
    if isinstance(pattern, int):
        return pattern == index
    return pattern in (name, f"{name}.weight") or re.fullmatch(pattern, name) is not None


def select_layers(patterns: Iterable[str | int], names: Sequence[str], what: str) -> set[int]:
    """Indices of ``names`` matched by ``patterns`` (exact names, regexes or indices);
    a pattern that matches nothing is a ``ValueError`` naming ``what``."""
    chosen: set[int] = set()
    for pattern in patterns:
        hits = {i for i, n in enumerate(names) if match_layer(pattern, i, n)}
        if not hits:
            raise ValueError(
                f"{what} pattern {pattern!r} matches no maskable layer; layers are {list(names)}"
            )
        chosen |= hits
    return chosen


def _override_budgets(budgets: list[int], names: Sequence[str], numels: Sequence[int],
                      given: Mapping[str, int] | None) -> list[int]:
    """``budgets`` with the layers named in ``given`` (parameter or module names) replaced."""
    if not given:
        return budgets
    out = list(budgets)
    for key, value in given.items():
        hits = [i for i, n in enumerate(names) if key in (n, f"{n}.weight")]
        if not hits:
            raise ValueError(f"budgets names {key!r}, which is no maskable layer; "
                             f"layers are {list(names)}")
        numel = numels[hits[0]]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
                not 0 <= value <= numel:
            raise ValueError(f"budgets[{key!r}] must be an integer in [0, {numel}] (the "
                             f"layer's weights), got {value!r}")
        out[hits[0]] = int(value)
    return out


def _check_masks(masks: Mapping[str, Tensor] | None, layers: Sequence[MaskedLayer]) -> None:
    """``masks`` must name masked layers by parameter name, with the weight's shape."""
    if not masks:
        return
    by_name = {x.name: x for x in layers}
    for name, mask in masks.items():
        layer = by_name.get(name)
        if layer is None:
            raise ValueError(f"masks names {name!r}, which is not a masked layer; masked "
                             f"layers are {list(by_name)}")
        if tuple(mask.shape) != tuple(layer.weight.shape):
            raise ValueError(f"masks[{name!r}] has shape {tuple(mask.shape)}, expected the "
                             f"weight's shape {tuple(layer.weight.shape)}")


def _closure_of(args: tuple, kwargs: dict):
    """The closure of an ``optimizer.step(...)`` call seen by a step hook (``args[0]`` is
    the optimizer itself), or ``None``."""
    return kwargs.get("closure", args[1] if len(args) > 1 else None)


def model_masks(model: nn.Module, source: str) -> dict[str, Tensor]:
    """Parameter name -> bool mask read from ``model``: its ``weight_mask`` buffers
    (``"existing"``; ``torch.nn.utils.prune``'s are made permanent with ``prune.remove``
    and replaced) or its nonzero weights (``"nonzero"``)."""
    check_mask_source(source)
    root = unwrap(model)
    out: dict[str, Tensor] = {}
    for name, module in root.named_modules():
        if not isinstance(module, MASKABLE):
            continue
        key = f"{name}.weight"
        if source == "nonzero":
            if isinstance(getattr(module, "weight", None), nn.Parameter):
                out[key] = module.weight.detach() != 0
            continue
        mask = module._buffers.get(MASK_BUFFER)
        if mask is None:
            continue
        out[key] = _as_bool_mask(mask, key)
        if prune.is_pruned(module) and "weight_orig" in module._parameters:
            prune.remove(module, "weight")
        else:
            delattr(module, MASK_BUFFER)
    if not out:
        raise ValueError(f"masks={source!r}: the model has no maskable layer with "
                         + ("a weight_mask buffer" if source == "existing" else "weights"))
    return out


def _as_bool_mask(mask: Tensor, name: str) -> Tensor:
    if mask.dtype == torch.bool:
        return mask.detach().clone()
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"weight_mask of {name!r} must be a bool or 0/1 mask")
    return mask.detach() != 0


def _sparsity_of(masks: Mapping[str, Tensor], candidates, dense_idx: set[int]) -> float:
    """Global sparsity of the masked layers plus the dense ones."""
    active = total = 0
    for i, (name, module) in enumerate(candidates):
        n = module.weight.numel()
        total += n
        mask = masks.get(f"{name}.weight")
        active += n if i in dense_idx or mask is None else int(mask.sum())
    return 1.0 - active / total


class SparseTopology:
    """Dynamic sparse training for the Linear/Conv layers of ``model``.

    Every argument after ``optimizer`` is a field of :class:`~sparse_agents.SparseConfig`,
    which checks them; :meth:`from_config` builds a topology from one config, and
    ``config`` holds the one a topology was built with.

    Args:
        model: the module to sparsify. With an optimizer, only layers whose weight
            the optimizer trains are masked.
        optimizer: the optimizer to hook (``None``: call :meth:`attach` later).
        sparsity: global sparsity in [0, 1).
        updater: ``"static"``, ``"set"``, ``"rigl"`` or ``"srigl"``.
        distribution: ``"uniform"``, ``"er"`` or ``"erk"``.
        delta_t: optimizer steps between topology updates (>= 1).
        t_end: last step (exclusive) at which updates run; ``None``: never stop.
        drop_fraction: fraction of active weights replaced per update, in (0, 1).
        schedule: ``"cosine"`` or ``"constant"`` decay of the drop fraction.
        gamma_sal: SRigL ablation threshold in [0, 1]; a float, or a mapping from
            layer name/regex to value (layers not matched get 0.3).
        dense_layers: layer names, regexes or indices kept dense (no mask).
        seed: seed of the topology's own random generator.
        power: ERK exponent.
        renormalise: with ``uniform``, raise the other layers so the global count
            still hits the target despite ``dense_layers``.
        output_layers: names/regexes of output layers that SRigL never ablates
            (default: the last masked layer).
        ablate_output: allow ablation in the output layers too.
        grad_masking: ``"step"`` masks ``.grad`` in the optimizer's pre-hook (so
            ``.grad`` is dense until then); ``"backward"`` masks in backward hooks,
            so gradient clipping sees the sparse gradient, and keeps the dense
            gradient aside only before update steps.
        exclude_layers: layer names, regexes or indices left alone entirely: not
            masked and not counted in the global budget (e.g. task heads that a
            continual-learning model adds and replaces). ``dense_layers``, in
            contrast, are counted as dense in the global sparsity.
        budgets: parameter name -> weight budget, overriding the allocation of
            ``sparsity`` and ``distribution`` for those layers (e.g. a task's share
            under per-task masks).
        masks: parameter name -> initial bool mask, instead of a random one (e.g. all
            False for a topology whose masks another owner assigns later); or
            ``"existing"``: the masks the model already has (``weight_mask`` buffers,
            bool or 0/1, e.g. from ``torch.nn.utils.prune``, whose re-parametrisation
            is made permanent), or ``"nonzero"``: the weights' nonzero pattern. Weights
            outside the masks are zeroed; without ``budgets`` the masks set each layer's
            budget (and ``sparsity``), and layers without a mask stay dense.
        sparse_init: ``None`` keeps the layers' own initial values inside the random
            initial masks; ``"fan_in"`` or ``"fan_avg"`` rescales them to the fans each
            unit really has (:mod:`sparse_agents.sparse_init`; Graesser et al.'s RL
            runs: ``"fan_avg"``). Masks given by ``masks`` are never rescaled.
        compute: ``"masked"`` computes every layer densely under its mask;
            ``"condensed"`` trains every masked ``nn.Linear`` on its active weights only
            (forward, both gradients and the optimizer step; :mod:`sparse_agents.compute`;
            convolutions stay masked); ``"auto"`` (CPU float32 linear layers; masked
            elsewhere) steps only the active weights and computes each training batch on
            the condensed kernels where :mod:`sparse_agents.compute.auto` says they measured faster,
            else with the dense product on the weight. Condensed layers mask gradients
            in backward whatever ``grad_masking`` says (clipping sees the sparse
            gradient); see docs/training.md.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        sparsity: float = 0.9,
        updater: str = "srigl",
        distribution: str = "erk",
        delta_t: int = 100,
        t_end: int | None = None,
        drop_fraction: float = 0.3,
        schedule: str = "cosine",
        gamma_sal: float | Mapping[str, float] = 0.3,
        dense_layers: Iterable[str | int] = (),
        seed: int = 0,
        *,
        power: float = 1.0,
        renormalise: bool = False,
        output_layers: Iterable[str | int] | None = None,
        ablate_output: bool = False,
        grad_masking: str = "step",
        exclude_layers: Iterable[str | int] = (),
        budgets: Mapping[str, int] | None = None,
        masks: Mapping[str, Tensor] | str | None = None,
        sparse_init: str | None = None,
        compute: str = "auto",
    ) -> None:
        self._setup(model, optimizer, SparseConfig(
            sparsity=sparsity, updater=updater, distribution=distribution, delta_t=delta_t,
            t_end=t_end, drop_fraction=drop_fraction, schedule=schedule, gamma_sal=gamma_sal,
            dense_layers=dense_layers, seed=seed, power=power, renormalise=renormalise,
            output_layers=output_layers, ablate_output=ablate_output,
            grad_masking=grad_masking, exclude_layers=exclude_layers, budgets=budgets,
            masks=masks, sparse_init=sparse_init, compute=compute))

    @classmethod
    def from_config(cls, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    config: SparseConfig) -> SparseTopology:
        """The topology of ``model`` with the options of ``config`` (the keyword form's
        equal: ``cls(model, optimizer, **config.to_dict())``)."""
        if not isinstance(config, SparseConfig):
            raise ValueError(f"config must be a SparseConfig, got {type(config).__name__}")
        return cls(model, optimizer, **config.to_dict())

    def _setup(self, model: nn.Module, optimizer: torch.optim.Optimizer | None,
               config: SparseConfig) -> None:
        """Everything that needs the model (the options were checked by ``config``)."""
        #: the options this topology was built with
        self.config = config
        self.compute = config.compute
        self._binding: OptimizerBinding | None = None
        self.sparse_init = config.sparse_init
        self.sparsity = config.sparsity
        self.spec = get_updater(config.updater)
        self.schedule = config.update_schedule()
        self.updater = config.updater
        self.distribution = config.distribution
        self.grad_masking = config.grad_masking
        self.seed = config.seed
        self.model = model
        self.generator = torch.Generator().manual_seed(self.seed)
        self.step = 0
        self.n_updates = 0
        self._keep_dense_grads = False
        self._dense_grads: dict[str, Tensor] = {}
        #: first moment of each layer's dense gradient (updaters with ``needs_momentum``)
        self._moments: dict[str, Tensor] = {}
        #: (id, version) of each layer's .grad after the backward that kept a dense gradient
        self._grad_seen: dict[str, tuple[int, int]] = {}
        self._handles: list = []
        self._grad_handles: list = []
        #: the tensor hooks keeping dense gradients, present only for backwards that need them
        self._dense_handles: list = []
        self.optimizer: torch.optim.Optimizer | None = None
        # the output layer SRigL protects is the last maskable layer in forward order,
        # seen at the first update (registration order can differ)
        self._forward_order: ForwardOrder | None = None
        output_layers, ablate_output = config.output_layers, config.ablate_output
        if output_layers is None and not ablate_output and self.spec.ablates:
            self._forward_order = ForwardOrder([m for _, m in find_maskable(model)])

        masks, budgets = config.masks, config.budgets
        from_model = isinstance(masks, str)
        if from_model:  # start from the masks the model already has
            masks = model_masks(model, masks)
        candidates = self._candidates(model, optimizer, config.exclude_layers)
        names = [n for n, _ in candidates]
        dense_idx = select_layers(config.dense_layers, names, "dense_layers")
        if masks is not None and budgets is None:  # the masks set the budgets
            budgets = {k: int(v.sum()) for k, v in masks.items()}
            dense_idx |= {i for i, n in enumerate(names) if f"{n}.weight" not in masks}
            self.sparsity = _sparsity_of(masks, candidates, dense_idx)
        if len(dense_idx) == len(names):
            raise ValueError("dense_layers covers every maskable layer: nothing left to sparsify"
                             if masks is None else "masks: no maskable layer has a mask")
        self.dense_names = [f"{names[i]}.weight" for i in sorted(dense_idx)]
        self._dense_numel = sum(candidates[i][1].weight.numel() for i in dense_idx)
        plan = self._allocate(candidates, dense_idx, config.power, config.renormalise, budgets)
        out_idx = (set() if output_layers is None
                   else select_layers(output_layers, names, "output_layers"))
        gammas = self._gammas(config.gamma_sal, names)
        self.layers: list[MaskedLayer] = [
            MaskedLayer(name=f"{name}.weight", module_name=name, module=module,
                        density=plan[i][0], budget=plan[i][1], gamma_sal=gammas[i],
                        allow_ablation=ablate_output or i not in out_idx,
                        ever_active=torch.zeros(module.weight.shape, dtype=torch.bool,
                                                device=module.weight.device))
            for i, (name, module) in enumerate(candidates) if i not in dense_idx]
        #: the inputs of the masked layers, for the dormant-neuron fraction of metrics()
        self._dormant = DormantTracker([(x.module_name, x.module) for x in self.layers])
        empty = [x.name for x in self.layers if x.budget == 0]
        if empty and self.spec.constant_fan_in:
            raise ValueError(f"budget of {empty} is 0: updater {self.updater!r} needs at least "
                             "one weight per masked layer; keep those layers dense "
                             "(dense_layers) or give them weights")
        if masks is not None and from_model:
            masks = {x.name: masks[x.name] for x in self.layers}
        _check_masks(masks, self.layers)
        for layer in self.layers:
            self._install_mask(layer, None if masks is None else masks.get(layer.name))
        if optimizer is not None:
            self.attach(optimizer)

    def _allocate(self, candidates: list[tuple[str, nn.Module]], dense_idx: set[int],
                  power: float, renormalise: bool, budgets: Mapping[str, int] | None
                  ) -> dict[int, tuple[float, int]]:
        """Layer index -> (density, budget): ``distribution`` at ``sparsity``, whole rows
        for a constant fan-in updater, then the ``budgets`` given."""
        shapes = [tuple(m.weight.shape) for _, m in candidates]
        numels = [m.weight.numel() for _, m in candidates]
        modules = [n for n, _ in candidates]
        if budgets and all(n in budgets or f"{n}.weight" in budgets
                           for i, n in enumerate(modules) if i not in dense_idx):
            # every sparse layer's budget is given: no allocation to make (or refuse)
            final = _override_budgets([0] * len(modules), modules, numels, budgets)
            return {i: (final[i] / numels[i], final[i]) for i in range(len(modules))}
        densities = layer_densities(shapes, self.sparsity, self.distribution, dense=dense_idx,
                                    power=power, renormalise=renormalise)
        counted = kept_counts(shapes, densities)
        allocated = counted
        if self.spec.constant_fan_in:  # whole rows, so no budget is lost to k's rounding
            allocated = constant_fan_in_counts(shapes, counted, fixed=dense_idx)
        final = _override_budgets(allocated, modules, numels, budgets)
        return {i: (densities[i] if final[i] == counted[i] else final[i] / numels[i], final[i])
                for i in range(len(candidates))}

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _candidates(model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    exclude_layers: Iterable[str | int]) -> list[tuple[str, nn.Module]]:
        """Maskable layers the optimizer trains, less ``exclude_layers``; of modules
        sharing one weight (tied weights) the first, whose mask then covers all."""
        candidates, seen = [], set()
        for name, module in find_maskable(model):
            if id(module.weight) not in seen:
                seen.add(id(module.weight))
                candidates.append((name, module))
        if optimizer is not None:
            trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
            candidates = [(n, m) for n, m in candidates if id(m.weight) in trained]
        excluded = select_layers(exclude_layers, [n for n, _ in candidates], "exclude_layers")
        candidates = [c for i, c in enumerate(candidates) if i not in excluded]
        if not candidates:
            raise ValueError(
                "model has no maskable layer (nn.Linear or nn.Conv1d/2d/3d whose weight "
                "the optimizer trains)"
            )
        return candidates

    def _install_mask(self, layer: MaskedLayer, given: Tensor | None) -> None:
        """Register the layer's mask buffer (``given`` or a random initial mask), zero
        the weights outside it and, for a random mask, apply ``sparse_init`` inside."""
        module = layer.module
        if hasattr(module, MASK_BUFFER):
            raise ValueError(f"layer {layer.module_name!r} already has a {MASK_BUFFER!r}: "
                             "one SparseTopology per layer")
        weight = layer.weight
        if given is None:
            mask = initial_mask(self.spec, weight.shape, layer.budget, self.generator,
                                device=weight.device)
        else:
            mask = given.detach().to(device=weight.device, dtype=torch.bool).clone()
        module.register_buffer(MASK_BUFFER, mask)
        module.register_load_state_dict_pre_hook(_require_mask)
        layer.ever_active |= mask
        if given is None and self.sparse_init is not None:
            rescale_to_mask_(weight, mask, self.sparse_init)
        else:
            with torch.no_grad():
                weight.mul_(mask)

    @staticmethod
    def _gammas(gamma_sal: float | Mapping[str, float], names: Sequence[str]) -> list[float]:
        """Each layer's ``gamma_sal`` (values checked by the config)."""
        if isinstance(gamma_sal, Mapping):
            out = [0.3] * len(names)
            for pattern, value in gamma_sal.items():
                for i in select_layers([pattern], names, "gamma_sal"):
                    out[i] = value
            return out
        return [gamma_sal] * len(names)

    @torch.no_grad()
    def assign(self, name: str, mask: Tensor, budget: int | None = None) -> None:
        """Make ``mask`` the trainable mask of layer ``name`` (and ``budget`` its budget):
        its ITOP record restarts from it; weights are left as they are."""
        layer = self.layer(name)
        if mask.shape != layer.weight.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask for {layer.name!r} must be a bool tensor of shape "
                             f"{tuple(layer.weight.shape)}, got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        if budget is not None:
            if not 0 <= int(budget) <= layer.weight.numel():
                raise ValueError(f"budget for {layer.name!r} must be in "
                                 f"[0, {layer.weight.numel()}], got {budget}")
            layer.budget = int(budget)
        old = layer.mask.clone()
        if layer.condensed is not None:
            layer.condensed.sync_weight()
        layer.mask.copy_(mask)
        layer.ever_active.copy_(mask)
        if layer.condensed is not None:
            layer.condensed.restructure(mask, old & mask, self.optimizer)

    def set_t_end(self, t_end: int | None) -> None:
        """Stop scheduled updates at step ``t_end`` (``None``: never)."""
        self.schedule = dataclasses.replace(self.schedule, t_end=t_end)
        self._sync_dense_hooks()

    @property
    def keep_dense_grads(self) -> bool:
        """Keep every backward's dense gradient (not only before scheduled updates)."""
        return self._keep_dense_grads

    @keep_dense_grads.setter
    def keep_dense_grads(self, value: bool) -> None:
        self._keep_dense_grads = bool(value)
        self._sync_dense_hooks()

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook ``optimizer`` (detaching from any earlier one)."""
        if self.spec.needs_momentum:
            for layer in self.layers:
                first_moment_rule(optimizer, layer.weight)  # ValueError if it has none
            self.keep_dense_grads = True  # the moment needs every step's dense gradient
        self.detach(optimizer)
        self.optimizer = optimizer
        self._install_condensed(optimizer)
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]
        if self.grad_masking == "backward":
            self._grad_handles = [
                layer.weight.register_post_accumulate_grad_hook(self._mask_accumulated(layer))
                for layer in self.layers if layer.condensed is None]
        self._sync_dense_hooks()
        self._remask_state()

    def detach(self, next_optimizer: torch.optim.Optimizer | None = None) -> None:
        """Remove every hook; masks stay on the model, and condensed layers become
        masked ``nn.Linear`` layers again (the optimizer steps their ``weight``; so does
        ``next_optimizer`` where it was built on their condensed values)."""
        for handle in self._handles + self._grad_handles + self._dense_handles:
            handle.remove()
        self._handles, self._grad_handles, self._dense_handles = [], [], []
        self._uninstall_condensed(next_optimizer)
        self.optimizer = None

    # ------------------------------------------------------------------ compute
    def _condensable(self, layer: MaskedLayer, optimizer: torch.optim.Optimizer,
                     tied: set[int]) -> str | None:
        """Why ``layer`` cannot train condensed under ``optimizer`` (``None``: it can);
        ``tied``: ids of the weights more than one module uses."""
        module = layer.module
        if type(module) is not nn.Linear:
            return f"{type(module).__name__} layers train masked"
        if layer.frozen is not None:
            return "it has frozen entries (per-task masks)"
        if id(layer.weight) in tied:
            return "its weight is tied to another module"
        if not check_elementwise_optimizer(optimizer):
            return (f"optimizer {type(optimizer).__name__} is not elementwise (condensed "
                    "training steps SGD, Adam, AdamW, RMSprop, Adagrad, Adamax, NAdam, "
                    "RAdam, Rprop, ASGD, Adadelta)")
        return None

    def _kernel_rule(self, layer: MaskedLayer):
        """``None`` (the kernels compute every batch) for ``"condensed"``; for ``"auto"``
        the batches :class:`~sparse_agents.compute.auto.AutoKernels` gives the kernels."""
        if self.compute == "condensed":
            return None
        return AutoKernels(layer.weight.numel(), layer.budget,
                           tuple((x.weight.numel(), x.budget) for x in self.layers
                                 if x is not layer))

    def _install_condensed(self, optimizer: torch.optim.Optimizer) -> None:
        if self.compute == "masked":
            return
        uses = Counter(id(m.weight) for _, m in find_maskable(self.model))
        tied = {w for w, n in uses.items() if n > 1}
        chosen = []
        for layer in self.layers:
            why = self._condensable(layer, optimizer, tied)
            if why is not None:
                if self.compute == "condensed" and type(layer.module) is nn.Linear:
                    raise ValueError(f"compute='condensed' cannot train {layer.name!r}: "
                                     f"{why}; use compute='masked' or 'auto'")
                continue
            rule = self._kernel_rule(layer)
            # auto: only layers the kernels compute at some batch size
            if rule is None or (numba_supports(layer.weight) and rule(1 << 30)):
                chosen.append((layer, rule))
        if not chosen:
            return
        self._binding = OptimizerBinding(optimizer)
        for layer, rule in chosen:
            weight = layer.weight
            ct = CondensedLinearTraining(layer.module, layer.mask, mask_name=MASK_BUFFER,
                                         kernels_for=rule)
            ct.on_load = self._on_module_load
            ct.install()
            self._binding.bind(ct, weight)
            layer.condensed = ct

    def _uninstall_condensed(self, other: torch.optim.Optimizer | None = None) -> None:
        binding = self._binding
        for layer in self.layers:
            ct = layer.condensed
            if ct is None:
                continue
            ct.uninstall()
            if binding is not None:
                binding.unbind(ct, layer.weight)
            if other is not None and other is not self.optimizer:
                release(other, ct, layer.weight)
            layer.condensed = None
        if binding is not None:
            binding.close()
        self._binding = None

    @property
    def condensed_layers(self) -> list[str]:
        """Parameter names of the layers that train condensed now."""
        return [x.name for x in self.layers if x.condensed is not None]

    def _on_module_load(self, ct: CondensedLinearTraining) -> None:
        """After ``load_state_dict`` wrote a condensed module: its structure follows the
        loaded mask, the optimizer's state with it."""
        ct.follow_mask(self.optimizer)

    # ------------------------------------------------------------------ properties
    @property
    def masks(self) -> dict[str, Tensor]:
        """Parameter name -> boolean mask (the registered buffer itself)."""
        return {layer.name: layer.mask for layer in self.layers}

    @torch.no_grad()
    def freeze(self, name: str, frozen: Tensor | None, allowed: Tensor | None = None) -> None:
        """Keep the current values of ``frozen`` entries of layer ``name`` bit-identical.

        Frozen entries must lie outside the layer's mask: they get no gradient, no
        optimizer state and are restored after every step (so weight decay cannot move
        them). ``allowed`` restricts where updates may grow (default: outside
        ``frozen``). ``frozen=None`` unfreezes.
        """
        layer = self.layer(name)
        if frozen is not None and layer.condensed is not None:
            raise ValueError(f"layer {layer.name!r} trains condensed: frozen entries need "
                             "compute='masked'")
        if frozen is None:
            layer.frozen = layer.frozen_values = None
            layer.allowed = allowed
            return
        if frozen.shape != layer.weight.shape or frozen.dtype != torch.bool:
            raise ValueError(f"frozen must be a bool tensor of shape {tuple(layer.weight.shape)}")
        if bool((frozen & layer.mask).any()):
            raise ValueError(f"frozen entries of {layer.name!r} overlap its trainable mask")
        layer.frozen = frozen.clone()
        layer.frozen_values = layer.weight.detach() * frozen
        layer.allowed = ~frozen if allowed is None else allowed.clone()

    def restart(self, reset_updates: bool = True) -> None:
        """Restart the schedule from step 0 (e.g. at a new task or experience): the
        next update happens ``delta_t`` steps from now, the drop fraction starts again.
        ``reset_updates`` also zeroes the update count reported by :meth:`metrics`."""
        self.step = 0
        if reset_updates:
            self.n_updates = 0
        self._dense_grads.clear()
        self._moments.clear()
        self._grad_seen.clear()
        self._sync_dense_hooks()

    def layer(self, name: str) -> MaskedLayer:
        """The masked layer called ``name`` (parameter or module name)."""
        for layer in self.layers:
            if name in (layer.name, layer.module_name):
                return layer
        raise KeyError(f"no masked layer {name!r}; masked layers: {[x.name for x in self.layers]}")

    # ------------------------------------------------------------------ hooks
    def _wants_dense_grads(self) -> bool:
        """Whether the next backward must keep dense gradients: every step for
        momentum updaters, else only before a scheduled update that grows by gradient."""
        return self._keep_dense_grads or (self.spec.needs_grad
                                          and self.schedule.is_update_step(self.step + 1))

    def _sync_dense_hooks(self) -> None:
        """Have the dense-gradient tensor hooks registered exactly when the next backward
        needs them: the other backwards pay one Python call per layer, not two."""
        wants = self._wants_dense_grads()
        for layer in self.layers:
            if layer.condensed is not None:
                layer.condensed.want_dense_grad = wants
        want = (self.grad_masking == "backward" and self.optimizer is not None and wants)
        if want and not self._dense_handles:
            self._dense_handles = [layer.weight.register_hook(self._keep_dense(layer))
                                   for layer in self.layers if layer.condensed is None]
        elif not want and self._dense_handles:
            for handle in self._dense_handles:
                handle.remove()
            self._dense_handles = []

    def _keep_dense(self, layer: MaskedLayer):
        def hook(grad: Tensor) -> None:
            prev = self._dense_grads.get(layer.name) if self._accumulating(layer) else None
            # a copy: autograd may make ``grad`` the .grad that is masked in place next
            self._dense_grads[layer.name] = grad.detach().clone() if prev is None else prev + grad

        return hook

    def _accumulating(self, layer: MaskedLayer) -> bool:
        """Whether this backward adds to the dense gradient kept from the last one: only
        if ``.grad`` is still what that backward left. ``.grad`` is None after
        ``zero_grad()``, or was zeroed in place (``set_to_none=False``): then an earlier
        loss's gradient (SAC's actor loss reaching the critic) or one whose step was
        skipped (GradScaler on inf/NaN) must not leak into this one."""
        grad = layer.weight.grad
        return grad is not None and self._grad_seen.get(layer.name) == (id(grad), grad._version)

    def _mask_accumulated(self, layer: MaskedLayer):
        def hook(param: Tensor) -> None:
            grad = param.grad
            grad.mul_(layer.mask_f)  # in place: no new tensor per layer per backward
            if layer.name in self._dense_grads:
                self._grad_seen[layer.name] = (id(grad), grad._version)

        return hook

    def _pre_step(self, optimizer, args, kwargs):
        self.follow_model()
        closure = _closure_of(args, kwargs)
        if closure is not None:
            # opt.step(closure): the gradients exist only once the optimizer has called
            # the closure, so the update and the masking run inside it
            wrapped = self._wrap_closure(closure)
            if "closure" in kwargs:
                return args, {**kwargs, "closure": wrapped}
            return (args[0], wrapped, *args[2:]), kwargs
        self._before_step()
        return None

    def _before_step(self) -> None:
        """The scheduled update (on the dense gradient), then gradient masking."""
        if self.spec.needs_momentum:
            self._accumulate_moments()
        upcoming = self.step + 1
        if self.spec.dynamic and self.schedule.is_update_step(upcoming):
            self._run_update(upcoming, scheduled=True)
        if self.grad_masking == "step":
            self._mask_grads()

    def _wrap_closure(self, closure):
        """A closure that recomputes the loss and gradients, then (first call only) runs
        the scheduled update, and masks the gradients every call."""
        calls = 0

        def wrapped():
            nonlocal calls
            with torch.enable_grad():
                loss = closure()
            if calls == 0:
                self._before_step()
            else:
                self._mask_grads()
            calls += 1
            return loss

        return wrapped

    @torch.no_grad()
    def _accumulate_moments(self) -> None:
        """The first moment of each layer's dense gradient, with the optimizer's own
        coefficient (the optimizer's state is 0 at inactive entries, invariant 1)."""
        for layer in self.layers:
            grad = self.dense_grad(layer)
            if grad is None:
                continue
            decay, scale = first_moment_rule(self.optimizer, layer.weight)
            moment = self._moments.get(layer.name)
            self._moments[layer.name] = (scale * grad if moment is None
                                         else moment.mul_(decay).add_(grad, alpha=scale))

    def _mask_grads(self) -> None:
        with_grad = [x for x in self.layers if x.condensed is None and x.weight.grad is not None]
        if with_grad:
            torch._foreach_mul_([x.weight.grad for x in with_grad],
                                [x.mask_f for x in with_grad])

    def _post_step(self, optimizer, args, kwargs) -> None:
        self.step += 1
        self._dormant.tick()
        # SGD/Adam/AdamW/RMSprop fed masked gradients leave zero weights and zero
        # state at zero (their updates are products with the masked gradient and
        # state), so they need no re-masking; others, and layers with frozen entries
        # (weight decay moves those), are re-masked after every step.
        preserving = isinstance(optimizer, MASK_PRESERVING)
        layers = [x for x in self.layers if x.condensed is None
                  and (not preserving or x.frozen is not None)]
        if layers:
            self._remask(layers)
        for layer in self.layers:
            if layer.condensed is not None:  # the dense weight follows the values
                layer.condensed.sync_weight()
                layer.condensed.dense_grad = None
        self._dense_grads.clear()
        self._grad_seen.clear()
        self._sync_dense_hooks()

    def remask(self) -> None:
        """Apply the masks again after the weights were written in place (e.g. reset to
        their initial values): weights and optimizer state outside the masks as after a
        step (invariant 1), frozen entries back to their frozen values."""
        self.follow_model()
        self._remask(self.layers)

    @torch.no_grad()
    def _remask(self, layers: Sequence[MaskedLayer]) -> None:
        """Zero weights and optimizer state outside the mask; restore frozen entries."""
        for layer in layers:
            layer.weight.mul_(layer.mask_f)
            if layer.frozen_values is not None:
                layer.weight.add_(layer.frozen_values)
        self._remask_state(layers)

    def _remask_state(self, layers: Sequence[MaskedLayer] | None = None) -> None:
        """Reset the optimizer state of inactive entries (moments to 0, step sizes to
        their initial value; see :mod:`sparse_agents.optim_state`). A condensed layer's
        weight is not in the optimizer (its values are, all active): nothing to reset."""
        for layer in self.layers if layers is None else layers:
            reset_state(self.optimizer, layer.weight, layer.mask)

    # ------------------------------------------------------------------ updates
    def dense_grad(self, layer: MaskedLayer) -> Tensor | None:
        """The dense gradient of ``layer`` for an update: kept aside, else ``.grad``
        (``None`` when the layer had no backward since its gradient was cleared)."""
        if layer.condensed is not None:
            return layer.condensed.dense_grad
        if layer.weight.grad is None:
            return None
        kept = self._dense_grads.get(layer.name)
        return kept if kept is not None else layer.weight.grad

    def follow_model(self) -> None:
        """Move the tensors the topology holds to its weights' devices and dtypes (done
        before every step and update; after ``model.to()`` nothing else is needed)."""
        for layer in self.layers:
            layer.follow_weight()
            moment = self._moments.get(layer.name)
            if moment is not None and moment.device != layer.weight.device:
                self._moments[layer.name] = moment.to(layer.weight.device)

    def _resolve_output_layer(self) -> None:
        """Protect the last maskable layer in forward order (if it is masked)."""
        order = self._forward_order
        if order is None:
            return
        last = order.last()
        if last is None:
            raise ValueError(
                "SparseTopology cannot tell the output layer before any forward pass: run "
                "the model forward before the first update, or pass output_layers=[...] "
                "(or ablate_output=True)")
        for layer in self.layers:  # by weight: a tied weight is the output wherever used
            layer.allow_ablation = layer.weight is not last.weight
        order.remove()
        self._forward_order = None

    def update(self) -> dict[str, int]:
        """Run one topology update now, on the gradients in ``.grad`` (or the dense
        gradients kept aside by ``grad_masking="backward"``). Returns, per layer, the
        number of weights that changed."""
        return self._run_update(max(self.step, 1), scheduled=False)

    @torch.no_grad()
    def _run_update(self, step: int, scheduled: bool) -> dict[str, int]:
        self.follow_model()
        self._resolve_output_layer()
        fn = self.spec.update
        needs_grad = self.spec.needs_grad
        grads = {layer.name: self._moments.get(layer.name) if self.spec.needs_momentum
                 else self.dense_grad(layer) for layer in self.layers}
        if needs_grad and not scheduled and all(g is None for g in grads.values()):
            hint = ("; layers training condensed keep the dense gradient only before "
                    "scheduled updates: set keep_dense_grads = True before that backward"
                    if self.condensed_layers else "")
            raise ValueError(
                f"updater {self.updater!r} grows by gradient: call backward() before "
                f"update(){hint}")
        fraction = self.schedule.fraction(step)
        changed: dict[str, int] = {}
        for layer in self.layers:
            grad = grads[layer.name]
            if needs_grad and grad is None:
                continue  # layer unused by this loss: nothing to score growth on
            old = layer.mask.clone()
            n_drop = int(int(old.sum()) * fraction)
            new = fn(layer.weight, old, grad, n_drop, self.generator, budget=layer.budget,
                     gamma_sal=layer.gamma_sal, allow_ablation=layer.allow_ablation,
                     allowed=layer.allowed, ever_active=layer.ever_active)
            self._apply(layer, old, new)
            changed[layer.name] = int((old & ~new).sum())
        self.n_updates += 1
        return changed

    def _apply(self, layer: MaskedLayer, old: Tensor, new: Tensor) -> None:
        """Install ``new``; dropped and grown weights and their optimizer state become 0."""
        if layer.condensed is not None:
            layer.condensed.sync_weight()
        layer.mask.copy_(new)
        keep = old & new  # entries whose value and state survive the update
        layer.weight.mul_(keep)
        if layer.condensed is not None:  # values, gradient and state follow the structure
            layer.condensed.restructure(new, keep, self.optimizer)
        else:
            if layer.frozen_values is not None:
                layer.weight.add_(layer.frozen_values)
            if layer.weight.grad is not None and self.grad_masking == "backward":
                layer.weight.grad.mul_(new)
            reset_state(self.optimizer, layer.weight, keep)
        layer.ever_active |= new

    # ------------------------------------------------------------------ metrics
    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        """Global and per-layer density, alive neurons, fan-in, ITOP rate, counts, and the
        dormant-neuron fraction (:meth:`dormant`)."""
        out: dict[str, float] = {}
        active = self._dense_numel
        total = self._dense_numel
        ever = 0
        masked_total = 0
        for layer in self.layers:
            m = layer.mask.reshape(layer.mask.shape[0], -1)
            fan_in = m.sum(dim=1)
            alive = fan_in > 0
            n = int(m.sum())
            active += n
            total += m.numel()
            masked_total += m.numel()
            ever += int(layer.ever_active.sum())
            key = layer.module_name
            out[f"density/{key}"] = n / m.numel()
            out[f"alive/{key}"] = int(alive.sum())
            out[f"alive_frac/{key}"] = float(alive.float().mean())
            live = fan_in[alive].float()
            out[f"fan_in_mean/{key}"] = float(live.mean()) if live.numel() else 0.0
            out[f"fan_in_min/{key}"] = int(live.min()) if live.numel() else 0
            out[f"fan_in_max/{key}"] = int(live.max()) if live.numel() else 0
        out["density"] = active / total
        out["itop"] = ever / masked_total
        out["updates"] = self.n_updates
        out["step"] = self.step
        out.update(self.dormant())
        return out

    def dormant(self, tau: float = DORMANT_TAU) -> dict[str, float]:
        """ReDo's dormant-neuron fraction (Sokar et al. 2023) of the hidden neurons the
        masked layers read, from a training batch at most 10 optimizer steps old:
        ``dormant_fraction`` and ``dormant/<layer>`` (neurons with score <= ``tau``;
        ``nan`` before a forward with gradients; :mod:`sparse_agents.dormant`)."""
        return self._dormant.metrics(tau)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Step, update count, RNG state, masks, ITOP record and configuration."""
        return {
            "step": self.step,
            "n_updates": self.n_updates,
            "generator": self.generator.get_state(),
            "masks": {x.name: x.mask.detach().cpu().clone() for x in self.layers},
            "ever_active": {x.name: x.ever_active.cpu().clone() for x in self.layers},
            "budgets": {x.name: x.budget for x in self.layers},
            "moments": {k: v.detach().cpu().clone() for k, v in self._moments.items()},
            "config": {
                "sparsity": self.sparsity, "updater": self.updater,
                "distribution": self.distribution, "delta_t": self.schedule.delta_t,
                "t_end": self.schedule.t_end, "drop_fraction": self.schedule.drop_fraction,
                "schedule": self.schedule.kind, "seed": self.seed, "compute": self.compute,
            },
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping) -> None:
        """Restore masks, step, RNG and ITOP record; masks must match every layer."""
        masks = state.get("masks")
        if not isinstance(masks, Mapping):
            raise ValueError("state has no 'masks': it is not a SparseTopology state_dict")
        for layer in self.layers:
            if layer.name not in masks:
                raise ValueError(f"state has no mask for layer {layer.name!r}")
            mask = masks[layer.name]
            if tuple(mask.shape) != tuple(layer.weight.shape):
                raise ValueError(
                    f"mask for {layer.name!r} has shape {tuple(mask.shape)}, "
                    f"expected {tuple(layer.weight.shape)}"
                )
        for layer in self.layers:
            old = layer.mask.clone()
            layer.mask.copy_(masks[layer.name].to(torch.bool))
            if layer.condensed is not None:
                layer.condensed.sync_weight()
                layer.weight.mul_(layer.mask)
                layer.condensed.restructure(layer.mask, old & layer.mask, self.optimizer)
            ever = state.get("ever_active", {}).get(layer.name)
            layer.ever_active.copy_(ever if ever is not None else layer.mask)
            layer.budget = int(state.get("budgets", {}).get(layer.name, layer.budget))
        self._moments = {k: v.to(self.layer(k).weight.device).clone()
                         for k, v in state.get("moments", {}).items()}
        self.step = int(state["step"])
        self.n_updates = int(state.get("n_updates", 0))
        self.generator.set_state(state["generator"])
        self._remask(self.layers)
        self._sync_dense_hooks()

    def __repr__(self) -> str:
        return (
            f"SparseTopology(updater={self.updater!r}, distribution={self.distribution!r}, "
            f"sparsity={self.sparsity}, layers={len(self.layers)}, "
            f"condensed={len(self.condensed_layers)}, step={self.step})"
        )


def _require_mask(module, state_dict, prefix, local_metadata, strict, missing_keys,
                  unexpected_keys, error_msgs) -> None:
    """Refuse a checkpoint without (or with a mis-shaped) mask for a masked layer."""
    key = prefix + MASK_BUFFER
    if key not in state_dict and prefix + "weight" in state_dict:
        # torch passes strict=True to every module whatever the caller asked, so a
        # weight without its mask is always refused: a sparse model loads sparse
        # checkpoints (a checkpoint without the layer at all is torch's missing key)
        raise ValueError(
            f"checkpoint has no mask {key!r}: it was not saved from a sparse model "
            "with the same masked layers"
        )
    weight = getattr(module, "weight", None)
    if key in state_dict and weight is not None and \
            tuple(state_dict[key].shape) != tuple(weight.shape):
        raise ValueError(
            f"mask {key!r} has shape {tuple(state_dict[key].shape)}, "
            f"expected the weight's shape {tuple(weight.shape)}"
        )


def masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Module name -> module, for every module carrying a ``weight_mask`` buffer."""
    return {n: m for n, m in model.named_modules() if isinstance(
        getattr(m, MASK_BUFFER, None), Tensor)}


def global_density(model: nn.Module) -> float:
    """Active fraction over every masked weight of ``model`` (from its masks)."""
    layers = masked_layers(model).values()
    total = sum(m.weight.numel() for m in layers)
    if not total:
        return math.nan
    return sum(int(getattr(m, MASK_BUFFER).sum()) for m in layers) / total
