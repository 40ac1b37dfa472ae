"""Every bad input the library refuses, with the exact error it gets.

Each :class:`Case` triggers one refusal with small CPU objects (a tiny MLP, SB3 policies
built from gymnasium spaces, no environment or training). ``tests/test_reliability.py``
checks that every case raises exactly its exception type with a matching message, and
that ``docs/reliability.md`` is what :func:`render_markdown` writes now.

Regenerate the page with ``python tests/reliability_cases.py``.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

import envs
from continual.experiment import run_experiment
from sparse_agents.avalanche.plugins import DSTPlugin, TaskMaskPlugin
from sparse_agents.condensed import condense, condense_linear
from sparse_agents.distributions import layer_densities
from sparse_agents.experiments.rl import make_agent, train_and_evaluate
from sparse_agents.experiments.rl_stream import train_stream
from sparse_agents.sb3 import SparseActorCriticPolicy, SparseDQNPolicy
from sparse_agents.sb3.task_policy import TaskMaskActorCriticPolicy
from sparse_agents.schedules import UpdateSchedule
from sparse_agents.study.grid import expand_grid, load_grid_file
from sparse_agents.study.job import Job
from sparse_agents.study.runner import run_study
from sparse_agents.study.workloads import run_cl
from sparse_agents.task_masks import TaskMasks
from sparse_agents.topology import SparseTopology
from sparse_agents.updaters import REGISTRY, get_updater, updater_names

__all__ = ["CASES", "DOC", "FAULTS", "Case", "Fault", "Result", "main", "render_markdown",
           "run_case", "run_cases"]

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DOC = ROOT / "docs" / "reliability.md"


@dataclass(frozen=True)
class Case:
    """One bad input: ``trigger()`` must raise exactly ``exc`` with a message that
    ``re.search(match, str(err))`` finds."""

    id: str
    problem: str  # what is wrong, in words (markdown; the call in backticks)
    trigger: Callable[[], object]
    exc: type[BaseException]
    match: str


@dataclass(frozen=True)
class Result:
    """What a case actually raised (``exc_name`` is ``None`` when it raised nothing)."""

    case: Case
    exc_name: str | None
    message: str
    seconds: float
    error: BaseException | None = None


def has(*parts: str) -> str:
    """A regex matching a message that contains every regex in ``parts``, in any order
    (the stable parts of a message: the parameter's name and its allowed range)."""
    return "(?s)^" + "".join(f"(?=.*{p})" for p in parts)


# ---------------------------------------------------------------------- small objects
def mlp() -> nn.Sequential:
    """12-48-48-4 ReLU MLP; its maskable layers are called '0', '2' and '4'."""
    return nn.Sequential(nn.Linear(12, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                         nn.Linear(48, 4))


def topo(**kwargs) -> SparseTopology:
    return SparseTopology(mlp(), None, **kwargs)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1)


OBS = gym.spaces.Box(-1.0, 1.0, (4,))
ACT = gym.spaces.Discrete(2)


def policy(cls: type = SparseActorCriticPolicy, **kwargs) -> nn.Module:
    """A small SB3 policy built from spaces (no environment)."""
    kwargs.setdefault("net_arch", [16, 16])
    return cls(OBS, ACT, lambda _: 1e-3, **kwargs)


def linear_with_mask(mask: torch.Tensor) -> nn.Sequential:
    layer = nn.Linear(4, 3)
    layer.register_buffer("weight_mask", mask)
    return nn.Sequential(layer, nn.ReLU())


def update(name: str, *, mask_shape=(4, 4), grad_shape=(4, 4), n_drop: int = 1,
           grad: bool = True, **options) -> torch.Tensor:
    """Call updater ``name`` on a 4x4 weight with one bad input."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 4, generator=g)
    mask = torch.ones(mask_shape, dtype=torch.bool)
    gradient = torch.randn(grad_shape, generator=g) if grad else None
    return REGISTRY[name].update(weight, mask, gradient, n_drop, g, **options)


# ---------------------------------------------------------------------- triggers
def topology_loads_misshaped_mask() -> None:
    t = topo(sparsity=0.5)
    state = t.state_dict()
    state["masks"]["2.weight"] = torch.ones(3, 3, dtype=torch.bool)
    t.load_state_dict(state)


def topology_loads_foreign_state() -> None:
    topo().load_state_dict({"step": 3})


def checkpoint_without_masks() -> None:
    model = mlp()
    SparseTopology(model, None, sparsity=0.5)
    model.load_state_dict(mlp().state_dict())


def checkpoint_misshaped_mask() -> None:
    model = mlp()
    SparseTopology(model, None, sparsity=0.5)
    state = model.state_dict()
    state["0.weight_mask"] = torch.ones(2, 2, dtype=torch.bool)
    model.load_state_dict(state)


def topology_twice() -> None:
    model = mlp()
    SparseTopology(model, None)
    SparseTopology(model, None)


def topology_assign_budget() -> None:
    topo().assign("0.weight", torch.ones(48, 12, dtype=torch.bool), budget=1000)


def topology_freeze_overlap() -> None:
    t = topo()
    t.freeze("0.weight", t.masks["0.weight"].clone())


def condensed_lbfgs() -> None:
    model = mlp()
    SparseTopology(model, torch.optim.LBFGS(model.parameters()), compute="condensed")


def condensed_tied() -> None:
    model = mlp()
    model.append(nn.Linear(48, 4))
    model[-1].weight = model[4].weight  # one Parameter, two modules
    SparseTopology(model, sgd(model), compute="condensed")


def freeze_condensed() -> None:
    model = mlp()
    t = SparseTopology(model, sgd(model), compute="condensed")
    t.freeze("0.weight", ~t.masks["0.weight"])


def task_masks(model: nn.Module | None = None, **kwargs) -> TaskMasks:
    kwargs.setdefault("dense_layers", ["4"])
    return TaskMasks(mlp() if model is None else model, **kwargs)


def task_masks_unseen_task() -> None:
    model = mlp()
    tm = task_masks(model, sparsity=0.8)
    tm.start_task(0, sgd(model))
    tm.end_task()
    tm.set_task(3)


def task_masks_exhausted() -> None:
    model = mlp()
    tm = task_masks(model, sparsity=0.5, updater="static", distribution="uniform")
    opt = sgd(model)
    for task in range(3):
        tm.start_task(task, opt)
        tm.end_task()


def task_masks_retrain_id() -> None:
    model = mlp()
    tm = task_masks(model)
    opt = sgd(model)
    tm.start_task(0, opt)
    tm.end_task()
    tm.start_task(0, opt)


def task_masks_bad_task_id() -> None:
    model = mlp()
    task_masks(model).start_task("a", sgd(model))


def task_masks_optimizer_misses_weights() -> None:
    model = mlp()
    task_masks(model).start_task(0, sgd(model[4]))


def task_masks_checkpoint_from_plain_model() -> None:
    model = mlp()
    task_masks(model)
    model.load_state_dict(mlp().state_dict())


def task_masks_checkpoint_other_transfer() -> None:
    saved = mlp()
    task_masks(saved, transfer=True)
    model = mlp()
    task_masks(model, transfer=False)
    model.load_state_dict(saved.state_dict())


def sb3_dense_checkpoint() -> None:
    dense = ActorCriticPolicy(OBS, ACT, lambda _: 1e-3, net_arch=[16, 16])
    policy(sparsity=0.5).load_state_dict(dense.state_dict())


def task_policy_unseen_task() -> None:
    policy(TaskMaskActorCriticPolicy, sparsity=0.5).set_task(3)


def grid_file_json() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "grid.json"
        path.write_text("{}")
        load_grid_file(path)


#: an output folder no case may create (the runner's checks come first)
NO_STUDY = Path(tempfile.gettempdir()) / "reliability-no-such-study"


def plugin_eval_before_training() -> None:
    TaskMaskPlugin().before_eval_exp(None)


# ---------------------------------------------------------------------- the cases
V = ValueError
K = KeyError
UPDATERS = re.escape(repr(updater_names()))  # the registry's names, whatever they are
SPARSITY_RANGE = r"sparsity must be in \[0, 1\)"

CASES: list[Case] = [
    # --- SparseTopology: parameters out of range
    Case("topology/sparsity-above-1", "sparsity above the range: "
         "`SparseTopology(mlp, sparsity=1.5)`", lambda: topo(sparsity=1.5), V,
         SPARSITY_RANGE + r", got 1\.5"),
    Case("topology/sparsity-nan", "sparsity NaN: `sparsity=float('nan')`",
         lambda: topo(sparsity=math.nan), V, SPARSITY_RANGE + ", got nan"),
    Case("topology/sparsity-not-a-number", "sparsity a string: `sparsity='dense'`",
         lambda: topo(sparsity="dense"), V, r"sparsity must be a number in \[0, 1\)"),
    Case("topology/delta-t-zero", "no steps between updates: `delta_t=0`",
         lambda: topo(delta_t=0), V, "delta_t must be an integer >= 1, got 0"),
    Case("topology/delta-t-fraction", "fractional step count: `delta_t=2.5`",
         lambda: topo(delta_t=2.5), V, r"delta_t must be an integer >= 1, got 2\.5"),
    Case("topology/t-end-zero", "updates end before step 1: `t_end=0`",
         lambda: topo(t_end=0), V, "t_end must be None or an integer >= 1, got 0"),
    Case("topology/t-end-negative", "`set_t_end(-1)` on a built topology",
         lambda: topo().set_t_end(-1), V, "t_end must be None or an integer >= 1, got -1"),
    Case("topology/drop-fraction-1", "drop every active weight: `drop_fraction=1.0`",
         lambda: topo(drop_fraction=1.0), V, r"drop_fraction must be in \(0, 1\), got 1\.0"),
    Case("topology/compute-unknown", "`SparseTopology(mlp, compute='fast')`",
         lambda: topo(compute="fast"), V,
         has("compute must be one of", "masked", "condensed", "auto")),
    Case("topology/compute-condensed-lbfgs", "`compute='condensed'` with an optimizer that is "
         "not element-wise (`torch.optim.LBFGS`)", condensed_lbfgs, V,
         has("compute='condensed'", "LBFGS is not elementwise", "compute='masked'")),
    Case("topology/compute-condensed-tied", "`compute='condensed'` on a weight tied to "
         "another module", condensed_tied, V, has("tied", "compute='masked'")),
    Case("topology/freeze-condensed", "`freeze()` on a layer that trains condensed",
         freeze_condensed, V, has("trains condensed", "compute='masked'")),
    Case("topology/drop-fraction-0", "drop nothing: `drop_fraction=0.0`",
         lambda: topo(drop_fraction=0.0), V, r"drop_fraction must be in \(0, 1\), got 0\.0"),
    Case("topology/gamma-sal-above-1", "SRigL ablation threshold above 1: `gamma_sal=1.5`",
         lambda: topo(gamma_sal=1.5), V, r"gamma_sal must be in \[0, 1\], got 1\.5"),
    Case("topology/gamma-sal-map-value", "per-layer threshold out of range: "
         "`gamma_sal={'0': 2.0}`", lambda: topo(gamma_sal={"0": 2.0}), V,
         r"gamma_sal\['0'\] must be in \[0, 1\], got 2\.0"),
    Case("topology/power-zero", "ERK exponent not positive: `power=0`",
         lambda: topo(power=0), V, "power must be > 0, got 0"),
    Case("topology/budget-negative", "negative per-layer budget: "
         "`budgets={'0.weight': -1}`", lambda: topo(budgets={"0.weight": -1}), V,
         r"budgets\['0\.weight'\] must be an integer in \[0, \d+\].*got -1"),
    Case("topology/budget-over-layer", "a per-layer budget above the layer's weight count: "
         "`budgets={'0.weight': 10**6}`", lambda: topo(budgets={"0.weight": 10**6}), V,
         r"budgets\['0\.weight'\] must be an integer in \[0, \d+\].*got 1000000"),
    Case("topology/dense-over-budget", "dense layers alone exceed the global budget: "
         "`sparsity=0.95, dense_layers=['2']`",
         lambda: topo(sparsity=0.95, dense_layers=["2"]), V,
         has("dense layers hold 2304 weights", "budget", r"sparsity=0\.95")),
    Case("topology/assign-budget", "`assign(name, mask, budget=1000)` above the layer's "
         "576 weights", topology_assign_budget, V,
         has(r"budget for '0\.weight'", r"\[0, 576\]", "got 1000")),
    # --- SparseTopology: unknown names
    Case("topology/updater-unknown", "unknown updater: `updater='magic'`",
         lambda: topo(updater="magic"), V, "updater must be one of " + UPDATERS),
    Case("topology/distribution-unknown", "unknown distribution: `distribution='gauss'`",
         lambda: topo(distribution="gauss"), V,
         r"distribution must be one of \('uniform', 'er', 'erk'\)"),
    Case("topology/schedule-unknown", "unknown drop schedule: `schedule='linear'`",
         lambda: topo(schedule="linear"), V,
         r"schedule must be one of \('constant', 'cosine'\)"),
    Case("topology/grad-masking-unknown", "unknown gradient masking: "
         "`grad_masking='later'`", lambda: topo(grad_masking="later"), V,
         r"grad_masking must be one of \('step', 'backward'\)"),
    Case("topology/sparse-init-unknown", "unknown sparse initialisation: "
         "`sparse_init='glorot'`", lambda: topo(sparse_init="glorot"), V,
         r"sparse_init must be None or one of \('fan_in', 'fan_avg'\), got 'glorot'"),
    Case("topology/dense-layers-name", "dense layer pattern matching no layer: "
         "`dense_layers=['nope']`", lambda: topo(dense_layers=["nope"]), V,
         has("dense_layers pattern 'nope' matches no", r"\['0', '2', '4'\]")),
    Case("topology/dense-layers-index", "dense layer index out of range: "
         "`dense_layers=[7]`", lambda: topo(dense_layers=[7]), V,
         has("dense_layers pattern 7 matches no", r"\['0', '2', '4'\]")),
    Case("topology/dense-layers-all", "every layer dense: `dense_layers=[0, 1, 2]`",
         lambda: topo(dense_layers=[0, 1, 2]), V,
         "dense_layers covers every maskable layer"),
    Case("topology/output-layers-name", "output layer pattern matching no layer: "
         "`output_layers=['head']`", lambda: topo(output_layers=["head"]), V,
         has("output_layers pattern 'head' matches no", r"\['0', '2', '4'\]")),
    Case("topology/exclude-layers-name", "excluded layer pattern matching no layer: "
         "`exclude_layers=['nope']`", lambda: topo(exclude_layers=["nope"]), V,
         has("exclude_layers pattern 'nope' matches no", r"\['0', '2', '4'\]")),
    Case("topology/exclude-layers-all", "every layer excluded: `exclude_layers=['.*']`",
         lambda: topo(exclude_layers=[".*"]), V, "no maskable layer"),
    Case("topology/gamma-sal-pattern", "per-layer threshold for no layer: "
         "`gamma_sal={'nope': 0.1}`", lambda: topo(gamma_sal={"nope": 0.1}), V,
         has("gamma_sal pattern 'nope' matches no", r"\['0', '2', '4'\]")),
    Case("topology/budgets-name", "budget for no layer: `budgets={'nope': 3}`",
         lambda: topo(budgets={"nope": 3}), V, has("budgets names 'nope'", r"\['0', '2', '4'\]")),
    Case("topology/layer-unknown", "`topology.layer('nope')`",
         lambda: topo().layer("nope"), K, has("no masked layer 'nope'", r"0\.weight")),
    # --- SparseTopology: shapes, masks, state
    Case("topology/masks-shape", "initial mask of the wrong shape: "
         "`masks={'0.weight': ones(2, 2)}`",
         lambda: topo(masks={"0.weight": torch.ones(2, 2, dtype=torch.bool)}), V,
         has(r"masks\['0\.weight'\]", r"\(2, 2\)", r"\(48, 12\)")),
    Case("topology/two-topologies", "a second `SparseTopology` on the same layers",
         topology_twice, V, has("already has a 'weight_mask'", "one SparseTopology")),
    Case("topology/update-without-grad", "`update()` of a gradient updater before any "
         "`backward()`", lambda: topo(updater="rigl").update(), V,
         has("updater 'rigl'", r"backward\(\)")),
    Case("topology/load-misshaped-mask", "`topology.load_state_dict` with a (3, 3) mask for "
         "the (48, 48) layer '2.weight'", topology_loads_misshaped_mask, V,
         has(r"'2\.weight'", r"\(3, 3\)", r"\(48, 48\)")),
    Case("topology/load-foreign-state", "`topology.load_state_dict({'step': 3})`: no masks",
         topology_loads_foreign_state, V, has("no 'masks'", "SparseTopology state")),
    Case("topology/checkpoint-without-masks", "dense checkpoint loaded into a sparse model: "
         "`model.load_state_dict(dense.state_dict())`", checkpoint_without_masks, V,
         has(r"no mask '0\.weight_mask'", "sparse model")),
    Case("topology/checkpoint-misshaped-mask", "checkpoint whose `0.weight_mask` is (2, 2) "
         "for a (48, 12) weight", checkpoint_misshaped_mask, V,
         has(r"'0\.weight_mask'", r"\(2, 2\)", r"\(48, 12\)")),
    Case("topology/freeze-overlap", "`freeze(name, frozen)` with frozen entries inside the "
         "trainable mask", topology_freeze_overlap, V,
         has(r"frozen entries of '0\.weight'", "overlap")),
    # --- distributions and schedules
    Case("distributions/method-unknown", "`layer_densities(shapes, 0.5, 'gauss')`",
         lambda: layer_densities([(4, 4)], 0.5, "gauss"), V,
         r"method must be one of \('uniform', 'er', 'erk'\)"),
    Case("distributions/dense-index", "`layer_densities([(4, 4)], 0.5, dense=[3])`: "
         "index past the last layer", lambda: layer_densities([(4, 4)], 0.5, dense=[3]), V,
         has(r"dense holds layer indices in \[0, 1\)", r"\[3\]")),
    Case("distributions/shape-1d", "`layer_densities([(4,)], 0.5)`: a bias-like shape",
         lambda: layer_densities([(4,)], 0.5), V, has("shapes must be", ">= 2", r"\(4,\)")),
    Case("schedules/kind-unknown", "`UpdateSchedule(kind='linear')`",
         lambda: UpdateSchedule(kind="linear"), V,
         r"schedule must be one of \('constant', 'cosine'\)"),
    # --- updaters
    Case("updaters/unknown-name", "`get_updater('magic')`", lambda: get_updater("magic"), V,
         "updater must be one of " + UPDATERS),
    Case("updaters/mask-shape", "rigl update with a (3, 4) mask for a (4, 4) weight",
         lambda: update("rigl", mask_shape=(3, 4)), V,
         has("mask must be a bool tensor", r"\(4, 4\)", r"\(3, 4\)")),
    Case("updaters/grad-shape", "set update with a (3, 4) gradient for a (4, 4) weight",
         lambda: update("set", grad_shape=(3, 4)), V,
         has("grad must have the weight's shape", r"\(4, 4\)", r"\(3, 4\)")),
    Case("updaters/grad-missing", "rigl update without a gradient (`grad=None`)",
         lambda: update("rigl", grad=False), V, "grad is required"),
    Case("updaters/n-drop-range", "srigl update dropping 99 of 16 active weights",
         lambda: update("srigl", n_drop=99, budget=16), V,
         has(r"n_drop must be in \[0, 16\]", "got 99")),
    Case("updaters/srigl-budget", "srigl update with `budget=99` for 16 weights",
         lambda: update("srigl", budget=99), V, has(r"budget must be in \[1, 16\]", "99")),
    Case("updaters/srigl-gamma", "srigl update with `gamma_sal=5.0`",
         lambda: update("srigl", budget=16, gamma_sal=5.0), V,
         r"gamma_sal must be in \[0, 1\], got 5\.0"),
    Case("updaters/allowed-shape", "set update with a (3, 3) growth region for a (4, 4) "
         "weight", lambda: update("set", allowed=torch.ones(3, 3, dtype=torch.bool)), V,
         has("allowed must be a bool tensor", r"\(4, 4\)", r"\(3, 3\)")),
    # --- TaskMasks
    Case("task_masks/unseen-task", "`set_task(3)` after training only task 0",
         task_masks_unseen_task, K, has("task id 3 has no mask", r"known task ids are \[0\]")),
    Case("task_masks/capacity-exhausted", "a third task at per-task sparsity 0.5 "
         "(two tasks fill every layer)", task_masks_exhausted, V,
         has("task 2", r"0\.weight 0/576", "free capacity", "overflow='shrink'")),
    Case("task_masks/n-tasks-do-not-fit", "`TaskMasks(model, sparsity=0.5, n_tasks=3)`: "
         "3 x 50% > 100%", lambda: task_masks(sparsity=0.5, n_tasks=3), V,
         has(r"sparsity must be in \[0\.6667, 1\) for 3 tasks")),
    Case("task_masks/n-tasks-zero", "`n_tasks=0`", lambda: task_masks(n_tasks=0), V,
         "n_tasks must be None or an integer >= 1, got 0"),
    Case("task_masks/overflow-unknown", "`overflow='share'`",
         lambda: task_masks(overflow="share"), V,
         r"overflow must be one of \('raise', 'shrink'\), got 'share'"),
    Case("task_masks/transfer-not-bool", "`transfer='yes'`",
         lambda: task_masks(transfer="yes"), V, "transfer must be True or False, got 'yes'"),
    Case("task_masks/compute-condensed", "`TaskMasks(model, compute='condensed')`",
         lambda: task_masks(compute="condensed"), V,
         has("compute='condensed' is not supported with per-task masks", "'auto'")),
    Case("task_masks/sparsity", "`TaskMasks(model, sparsity=1.0)`",
         lambda: task_masks(sparsity=1.0), V, SPARSITY_RANGE + r", got 1\.0"),
    Case("task_masks/dense-layers-all", "`dense_layers=['.*']`: nothing left to mask",
         lambda: task_masks(dense_layers=[".*"]), V, "dense_layers covers every maskable"),
    Case("task_masks/task-id-type", "`start_task('a', opt)`", task_masks_bad_task_id, V,
         "task_id must be an int, got 'a'"),
    Case("task_masks/task-id-reused", "`start_task(0, opt)` after task 0 finished",
         task_masks_retrain_id, V, has("task_id 0 was trained already", "new id")),
    Case("task_masks/end-without-start", "`end_task()` with no task training",
         lambda: task_masks().end_task(), V, has("no task is training", "start_task")),
    Case("task_masks/resume-nothing", "`resume_task(opt)` without a checkpoint mid-task",
         lambda: task_masks().resume_task(sgd(mlp())), V, "no task to resume"),
    Case("task_masks/optimizer-misses-weights", "`start_task(0, opt)` with an optimizer of "
         "the head only", task_masks_optimizer_misses_weights, V,
         has("optimizer does not train the masked weights", r"0\.weight")),
    Case("task_masks/checkpoint-plain-model", "checkpoint of a plain model loaded into a "
         "TaskMasks model", task_masks_checkpoint_from_plain_model, V,
         has(r"no mask '0\.weight_mask'", "sparse model")),
    Case("task_masks/checkpoint-transfer", "checkpoint saved with `transfer=True` loaded "
         "with `transfer=False`", task_masks_checkpoint_other_transfer, V,
         has("transfer=True", "transfer=False")),
    # --- SB3 policies (policy_kwargs)
    Case("sb3/sparsity", "`policy_kwargs=dict(sparsity=1.5)`",
         lambda: policy(sparsity=1.5), V, SPARSITY_RANGE + r", got 1\.5"),
    Case("sb3/compute", "`policy_kwargs=dict(compute='sparse')`",
         lambda: policy(compute="sparse"), V, has("compute must be one of", "condensed")),
    Case("sb3/sparsity-dqn", "`SparseDQNPolicy` with `sparsity=-0.1`",
         lambda: policy(SparseDQNPolicy, sparsity=-0.1), V, SPARSITY_RANGE + r", got -0\.1"),
    Case("sb3/updater-unknown", "`policy_kwargs=dict(updater='magic')`",
         lambda: policy(updater="magic"), V, has("updater must be one of " + UPDATERS)),
    Case("sb3/updater-dense", "`updater='dense'` on a sparse policy",
         lambda: policy(updater="dense"), V,
         has("updater must be one of " + UPDATERS, "plain SB3 policy")),
    Case("sb3/distribution-unknown", "`policy_kwargs=dict(distribution='gauss')`",
         lambda: policy(distribution="gauss"), V, r"distribution must be one of \("),
    Case("sb3/delta-t", "`policy_kwargs=dict(delta_t=0)`", lambda: policy(delta_t=0), V,
         "delta_t must be an integer >= 1"),
    Case("sb3/t-end-fraction", "`policy_kwargs=dict(t_end_fraction=0)`",
         lambda: policy(t_end_fraction=0), V, r"t_end_fraction must be a number in \(0, 1\]"),
    Case("sb3/seed", "`policy_kwargs=dict(seed=1.5)`", lambda: policy(seed=1.5), V,
         r"seed must be an integer, got 1\.5"),
    Case("sb3/sparse-init", "`policy_kwargs=dict(sparse_init='he')`",
         lambda: policy(sparse_init="he"), V,
         r"sparse_init must be None or one of \('fan_in', 'fan_avg'\), got 'he'"),
    Case("sb3/condensed-rollout", "`condensed_rollout='yes'`",
         lambda: policy(condensed_rollout="yes"), V, "condensed_rollout must be True or False"),
    Case("sb3/topology-kwargs-clash", "`topology_kwargs=dict(sparsity=0.5)` repeats a "
         "policy option", lambda: policy(topology_kwargs={"sparsity": 0.5}), V,
         has(r"topology_kwargs must not repeat \['sparsity'\]", "policy_kwargs")),
    Case("sb3/topology-kwargs-grad-masking", "`topology_kwargs=dict(grad_masking='step')`",
         lambda: policy(topology_kwargs={"grad_masking": "step"}), V,
         has(r"topology_kwargs must not repeat \['grad_masking'\]", "'backward'")),
    Case("sb3/topology-kwargs-type", "`topology_kwargs=[1]`",
         lambda: policy(topology_kwargs=[1]), V, "topology_kwargs must be a dict or None"),
    Case("sb3/dense-layers-type", "`dense_layers=3.5`", lambda: policy(dense_layers=3.5), V,
         "dense_layers must be a list of layer names"),
    Case("sb3/dense-layers-pattern", "`dense_layers=['nope']` (matches no policy layer)",
         lambda: policy(dense_layers=["nope"]), V,
         has("dense_layers pattern 'nope' matches no", "action_net")),
    Case("sb3/output-layers-pattern", "`output_layers=['nope']`",
         lambda: policy(output_layers=["nope"]), V,
         has("output_layers pattern 'nope' matches no", "action_net")),
    Case("sb3/dense-checkpoint", "dense `ActorCriticPolicy` state dict loaded into the "
         "sparse policy", sb3_dense_checkpoint, V,
         has(r"no mask 'mlp_extractor\.policy_net\.2\.weight_mask'", "sparse model")),
    Case("sb3/task-policy-n-tasks", "`TaskMaskActorCriticPolicy` with `sparsity=0.5, "
         "n_tasks=5`", lambda: policy(TaskMaskActorCriticPolicy, sparsity=0.5, n_tasks=5), V,
         has(r"sparsity must be in \[0\.8, 1\) for 5 tasks")),
    Case("sb3/task-policy-per-task-heads", "`per_task_heads='yes'`",
         lambda: policy(TaskMaskActorCriticPolicy, per_task_heads="yes"), V,
         "per_task_heads must be True or False"),
    Case("sb3/task-policy-condensed", "`condensed_rollout=True` with per-task masks",
         lambda: policy(TaskMaskActorCriticPolicy, condensed_rollout=True), V,
         "condensed_rollout must be False with per-task masks"),
    Case("sb3/task-policy-unseen-task", "`policy.set_task(3)` before any task",
         task_policy_unseen_task, K, "task id 3 has no mask"),
    # --- Avalanche plugins
    Case("avalanche/dst-sparsity", "`DSTPlugin(sparsity=1.0)`",
         lambda: DSTPlugin(sparsity=1.0), V, SPARSITY_RANGE + r", got 1\.0"),
    Case("avalanche/dst-updater", "`DSTPlugin(updater='magic')`",
         lambda: DSTPlugin(updater="magic"), V, "updater must be one of " + UPDATERS),
    Case("avalanche/task-mask-unseen", "`TaskMaskPlugin(unseen='skip')`",
         lambda: TaskMaskPlugin(unseen="skip"), V, "unseen must be 'raise' or 'next'"),
    Case("avalanche/task-mask-eval-first", "TaskMaskPlugin evaluating before any task "
         "was trained", plugin_eval_before_training, K,
         has("no task is trained yet", "unseen='next'")),
    # --- continual: run_experiment
    Case("continual/class-incremental-task-masks", "`run_experiment('split-digits-ci', "
         "task_masks=True)`: no task labels at test time",
         lambda: run_experiment("split-digits-ci", task_masks=True), V,
         has("task_masks=True needs task labels", "class-incremental")),
    Case("continual/stream-unknown", "`run_experiment('split-nope')`",
         lambda: run_experiment("split-nope"), V, has("stream must be one of", "split-nope")),
    Case("continual/n-tasks", "`run_experiment('split-digits', n_tasks=11)`: 10 classes",
         lambda: run_experiment("split-digits", n_tasks=11), V,
         has(r"n_tasks must be in \[1, 10\]", "got 11")),
    Case("continual/strategy-unknown", "`strategy='gem'`",
         lambda: run_experiment("split-digits", strategy="gem"), V,
         r"strategy must be one of \('naive', 'ewc', 'replay', 'packnet'\)"),
    Case("continual/epochs", "`epochs=0`", lambda: run_experiment("split-digits", epochs=0),
         V, "epochs must be an integer >= 1, got 0"),
    Case("continual/packnet-epochs", "`strategy='packnet', epochs=1`",
         lambda: run_experiment("split-digits", strategy="packnet", epochs=1), V,
         "epochs must be >= 2 for packnet"),
    Case("continual/replay-task-masks", "`strategy='replay'` with task masks",
         lambda: run_experiment("split-digits", strategy="replay"), V,
         has("task_masks=True", "strategy='replay'")),
    Case("continual/dense-task-masks", "`updater='dense', task_masks=True`",
         lambda: run_experiment("split-digits", updater="dense", task_masks=True), V,
         has("updater='dense' has no masks", "task_masks=False")),
    Case("continual/engine-unknown", "`engine='jax'`",
         lambda: run_experiment("split-digits", engine="jax"), V,
         r"engine must be one of \('auto', 'torch', 'avalanche'\)"),
    Case("continual/optimizer-unknown", "`optimizer='lion'`",
         lambda: run_experiment("split-digits", optimizer="lion"), V,
         r"optimizer must be one of \('adam', 'adamw', 'sgd'\)"),
    Case("continual/batch-size", "`batch_size=0`",
         lambda: run_experiment("split-digits", batch_size=0), V,
         "batch_size and hidden must be >= 1"),
    Case("continual/keyword-unknown", "`run_experiment('split-digits', bogus=1)`",
         lambda: run_experiment("split-digits", bogus=1), V,
         r"unknown keyword arguments \['bogus'\]"),
    Case("continual/drop-fraction", "`drop_fraction=2.0` passed through to the topology",
         lambda: run_experiment("split-digits", drop_fraction=2.0), V,
         r"drop_fraction must be in \(0, 1\), got 2\.0"),
    # --- RL experiments: make_agent, train_and_evaluate, train_stream
    Case("rl/make-agent-algo", "`make_agent('ppg', 'CartPole-v1')`",
         lambda: make_agent("ppg", "CartPole-v1"), V,
         r"algo must be one of \('ppo', 'a2c', 'dqn', 'sac', 'td3'\)"),
    Case("rl/hyperparams-source", "`make_agent('dqn', 'CartPole-v1', hyperparams='sb3')`",
         lambda: make_agent("dqn", "CartPole-v1", hyperparams="sb3"), V,
         r"hyperparams must be one of \('zoo', 'graesser', 'minatar'\), got 'sb3'"),
    Case("rl/exploration-steps-budget", "`make_agent('dqn', 'MinAtar/Breakout-v1', "
         "hyperparams='minatar')` without `timesteps`: the table anneals epsilon over a "
         "number of steps", lambda: make_agent("dqn", "MinAtar/Breakout-v1",
                                               hyperparams="minatar"), V,
         has("exploration_steps=105000 needs the run's budget", "timesteps=N")),
    Case("rl/atari-algo", "`make_agent('sac', 'ALE/Pong-v5')`: SB3 has no SAC for discrete "
         "actions; Atari runs use the CnnPolicy of PPO, A2C or DQN",
         lambda: make_agent("sac", "ALE/Pong-v5"), V,
         r"algo on Atari must be one of \('ppo', 'a2c', 'dqn'\), got 'sac'"),
    Case("rl/hyperparams-task", "`make_agent('sac', 'Pendulum-v1', hyperparams='graesser')`: "
         "the paper did not run it", lambda: make_agent("sac", "Pendulum-v1",
                                                        hyperparams="graesser"), V,
         has("hyperparams='graesser' has no entry for sac on Pendulum-v1", "dqn:CartPole-v1")),
    Case("rl/make-agent-updater", "`make_agent('ppo', 'CartPole-v1', updater='magic')`",
         lambda: make_agent("ppo", "CartPole-v1", updater="magic"), V,
         r"updater must be one of \('dense', 'static'"),
    Case("rl/make-agent-dense-sparse-options", "`updater='dense'` with a sparse option in "
         "`overrides`", lambda: make_agent("ppo", "CartPole-v1", updater="dense",
                                           overrides={"delta_t": 10}), V,
         has(r"sparse options \['delta_t'\]", "dense")),
    Case("rl/train-and-evaluate-timesteps", "`train_and_evaluate(timesteps=0)`",
         lambda: train_and_evaluate(timesteps=0), V, "timesteps must be >= 1, got 0"),
    Case("rl/train-and-evaluate-n-evals", "`train_and_evaluate(n_evals=0)`",
         lambda: train_and_evaluate(n_evals=0), V, "n_evals must be >= 1"),
    Case("rl_stream/stream-unknown", "`train_stream('nope')`", lambda: train_stream("nope"),
         V, has("stream must be one of", "cartpole-physics", "'nope'")),
    Case("rl_stream/algo", "`train_stream('cartpole-physics', algo='td3')`",
         lambda: train_stream("cartpole-physics", algo="td3"), V,
         r"algo must be one of \('ppo', 'a2c', 'dqn', 'sac'\), got 'td3'"),
    Case("rl_stream/algo-action-space", "`train_stream('cartpole-physics', algo='sac')`",
         lambda: train_stream("cartpole-physics", algo="sac"), V,
         has("algo='sac' needs a Box action space", "cartpole-physics", "Discrete")),
    Case("rl_stream/algo-action-space-dqn", "`train_stream('pendulum-physics', algo='dqn')`",
         lambda: train_stream("pendulum-physics", algo="dqn"), V,
         has("algo='dqn' needs a Discrete action space", "pendulum-physics", "Box")),
    Case("rl_stream/dense-task-masks", "`updater='dense', task_masks=True`",
         lambda: train_stream("cartpole-physics", updater="dense", task_masks=True), V,
         has("task_masks=True needs a sparse updater", "updater='dense'")),
    Case("rl_stream/sparsity-string", "`sparsity='0.9'` (a string)",
         lambda: train_stream("cartpole-physics", sparsity="0.9"), V,
         r"sparsity must be a number in \[0, 1\)"),
    Case("rl_stream/steps-per-task", "`steps_per_task=0`",
         lambda: train_stream("cartpole-physics", steps_per_task=0), V,
         "steps_per_task must be an integer >= 1, got 0"),
    Case("rl_stream/n-tasks", "`n_tasks=99` for a 4-task stream",
         lambda: train_stream("cartpole-physics", n_tasks=99), V,
         has(r"n_tasks must be an integer in \[1, 4\]", "got 99")),
    Case("rl_stream/eval-episodes", "`eval_episodes=0`",
         lambda: train_stream("cartpole-physics", eval_episodes=0), V,
         "eval_episodes must be an integer >= 1, got 0"),
    Case("rl_stream/distribution", "`distribution='gauss'`",
         lambda: train_stream("cartpole-physics", distribution="gauss"), V,
         r"distribution must be one of \("),
    # --- study grid and runner
    Case("study/grid-sparsity", "`expand_grid(dict(sparsities=[1.0]))`",
         lambda: expand_grid({"sparsities": [1.0]}), V, SPARSITY_RANGE + r", got 1\.0"),
    Case("study/grid-distribution", "`distributions=['gauss']`",
         lambda: expand_grid({"distributions": ["gauss"]}), V,
         r"distribution must be one of \('uniform', 'er', 'erk'\), got 'gauss'"),
    Case("study/grid-updater", "`updaters=['magic']`",
         lambda: expand_grid({"updaters": ["magic"]}), V,
         r"updater must be one of \('dense', 'static'"),
    Case("study/grid-workload", "`workloads=['nope']`",
         lambda: expand_grid({"workloads": ["nope"]}), V,
         has("workload must be one of", "'cl:<stream>", "got 'nope'")),
    Case("study/workload-task-count", "`workloads=['cl:permuted-digits:1']`",
         lambda: expand_grid({"workloads": ["cl:permuted-digits:1"]}), V,
         "task count after the stream must be an integer >= 2, got '1'"),
    Case("study/grid-seeds", "`seeds=0` (a count of zero)",
         lambda: expand_grid({"seeds": 0}), V, "seeds must be >= 1"),
    Case("study/grid-file-missing", "`load_grid_file('no/such/grid.yaml')`",
         lambda: load_grid_file("no/such/grid.yaml"), V, "grid file .*grid.yaml does not exist"),
    Case("study/grid-file-suffix", "`load_grid_file('grid.json')` (an existing JSON file)",
         grid_file_json, V,
         r"grid file must be \.yaml, \.yml or \.toml, got '\.json'"),
    Case("study/backend", "`run_study(jobs, out, backend='dask')`",
         lambda: run_study([], NO_STUDY, backend="dask"), V,
         r"backend must be one of \('process', 'ray'\), got 'dask'"),
    Case("study/workers", "`run_study(jobs, out, workers=-1)`",
         lambda: run_study([], NO_STUDY, workers=-1), V,
         "workers must be >= 1, got -1"),
    Case("study/sparsity-scope", "a `cl:` job with setting `sparsity_scope='bogus'`",
         lambda: run_cl(Job("cl:split-digits", "erk", 0.9, "srigl", 0,
                            {"sparsity_scope": "bogus"})), V,
         r"sparsity_scope must be one of \('task', 'network'\), got 'bogus'"),
    # --- condensed inference
    Case("condensed/mask-value", "a `weight_mask` holding 0.5",
         lambda: condense(linear_with_mask(torch.full((3, 4), 0.5))), V,
         has("weight_mask", "0/1", r"0\.5")),
    Case("condensed/mask-shape", "a (2, 2) `weight_mask` on a (3, 4) weight",
         lambda: condense(linear_with_mask(torch.ones(2, 2))), V,
         has("weight_mask", r"\(3, 4\)", r"\(2, 2\)")),
    Case("condensed/kernel-unknown", "`condense(model, kernel='magic')`",
         lambda: condense(mlp(), kernel="magic"), V,
         has("kernel must be 'auto' or one of", "got 'magic'")),
    Case("condensed/model-type", "`condense('model')`", lambda: condense("model"), V,
         "model must be an nn.Module, got str"),
    Case("condensed/linear-mask-shape", "`condense_linear(linear, mask)` with a (2, 2) mask",
         lambda: condense_linear(nn.Linear(4, 3), torch.ones(2, 2, dtype=torch.bool)), V,
         has("mask", r"\(3, 4\)", r"\(2, 2\)")),
    Case("condensed/linear-type", "`condense_linear(nn.Conv1d(1, 1, 1))`",
         lambda: condense_linear(nn.Conv1d(1, 1, 1)), V, "must be an nn.Linear, got Conv1d"),
    # --- task streams (envs)
    Case("envs/stream-unknown", "`envs.get_stream('nope')`", lambda: envs.get_stream("nope"),
         V, has("stream must be one of", "'nope'")),
    Case("envs/task-id", "`make_task_env('cartpole-physics', 99)`: 4 tasks",
         lambda: envs.make_task_env("cartpole-physics", 99), K,
         has(r"task_id must be an integer in \[0, 3\]", "got 99")),
    Case("envs/physics-override", "`make_task_env('cartpole-physics', 0, gravity=-1.0)`",
         lambda: envs.make_task_env("cartpole-physics", 0, gravity=-1.0), V,
         has("gravity must be a finite number > 0", r"-1\.0")),
]


# ---------------------------------------------------------------------- fault cases
@dataclass(frozen=True)
class Fault:
    """A fault the suite injects; ``tests`` are names (regexes) of the test functions."""

    fault: str
    check: str
    tests: tuple[str, ...]
    helpers: tuple[str, ...] = ()


FAULTS: list[Fault] = [
    Fault("study killed mid-run (SIGKILL)", "the re-run skips finished jobs and its summary "
          "equals an uninterrupted study's", ("test_sigkill_then_rerun_matches_uninterrupted",)),
    Fault("study job raises", "the job is recorded as failed with its traceback; the other "
          "jobs finish", ("test_failing_job_is_recorded_and_others_finish",)),
    Fault("topology checkpoint restored in a fresh process", "resumed training matches "
          "uninterrupted training bit for bit (weights, masks, step, updates)",
          ("test_checkpoint_round_trip_in_fresh_process",), ("tests/topology_resume_child.py",)),
    Fault("SB3 agent saved and loaded in a fresh process", "masks, steps, updates, t_end, "
          "state and actions are identical; training continues",
          ("test_save_load_round_trip_in_fresh_process",), ("tests/sb3_roundtrip_child.py",)),
    Fault("TaskMasks checkpoint saved mid-task", "a fresh model loading it refuses "
          "`start_task` until `resume_task`, which continues the task with identical outputs",
          ("test_checkpoint_mid_task_resumes",)),
    Fault("agents saved before the package move", "the stored zips load and predict "
          "identically", ("test_sparse_ppo_saved_before_the_move_loads_and_predicts_identically",
                          "test_task_mask_ppo_saved_before_the_move_loads_and_predicts_"
                          "identically")),
    Fault("corrupt dataset file", "a truncated IDX file raises `ValueError` naming the "
          "header/size mismatch", ("test_corrupt_idx_file_raises",)),
    Fault("skipped AMP/GradScaler optimizer steps", "dense gradients kept for growth in a "
          "skipped step do not reach the next update",
          (r"test_skipped_step_discards_kept_dense_gradients|test_skipped_step\w*",)),
]

#: files whose test names the fault section may cite (not this module's own test file)
OWN = ("test_reliability.py",)


def find_tests(pattern: str) -> list[str]:
    """``tests/<file>::<name>`` of every test function whose name fully matches
    ``pattern`` (the first alternative that matches wins), in file order."""
    found: list[str] = []
    for alternative in pattern.split("|"):
        regex = re.compile(rf"^def ({alternative})\(", re.MULTILINE)
        for path in sorted(TESTS.glob("test_*.py")):
            if path.name in OWN:
                continue
            for name in regex.findall(path.read_text()):
                found.append(f"tests/{path.name}::{name}")
        if found:
            return list(dict.fromkeys(found))
    return []


# ---------------------------------------------------------------------- running
def run_case(case: Case) -> Result:
    """Run ``case.trigger`` (global RNG state restored afterwards) and record what it
    raised."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            case.trigger()
        except Exception as err:  # noqa: BLE001 - recorded: that is the point
            return Result(case, type(err).__name__, str(err), time.perf_counter() - start,
                          err)
    return Result(case, None, "", time.perf_counter() - start)


def run_cases(cases: Sequence[Case] = CASES) -> list[Result]:
    return [run_case(c) for c in cases]


# ---------------------------------------------------------------------- markdown
def code(text: str) -> str:
    """``text`` as an inline code span safe inside a markdown table cell."""
    text = " ".join(text.split())  # one line
    text = text.replace("|", r"\|")
    longest = max((len(m) for m in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """Markdown text safe inside a table cell."""
    return " ".join(text.split()).replace("|", r"\|")


def render_markdown(results: Sequence[Result]) -> str:
    """The page ``docs/reliability.md``: intro, the table of refusals, fault cases."""
    types = sorted({r.exc_name for r in results if r.exc_name})
    lines = [
        "# Reliability: the bad inputs the library refuses",
        "",
        "<!-- generated by `python tests/reliability_cases.py`: do not edit by hand -->",
        "",
        "Generated by `python tests/reliability_cases.py` from the cases in "
        "`tests/reliability_cases.py`; `tests/test_reliability.py` checks that each case "
        "raises exactly the exception shown with a message naming the parameter (and its "
        "allowed range or choices), and that this page is what the cases produce now.",
        "",
        f"{len(results)} cases; exceptions: {', '.join(types)}. Each runs on small CPU "
        "objects (a 12-48-48-4 MLP, SB3 policies built from gymnasium spaces), before any "
        "data is trained on. `str(err)` of a `KeyError` is quoted by Python.",
        "",
        "| Case | Bad input | Exception | Exact message |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        exc = r.exc_name or "**none: accepted**"
        msg = code(r.message) if r.exc_name else ""
        lines.append(f"| `{r.case.id}` | {cell(r.case.problem)} | {exc} | {msg} |")
    lines += [
        "",
        "## Fault cases tested",
        "",
        "Failures the suite injects (found by name in `tests/`):",
        "",
        "| Fault | What the test checks | Test |",
        "| --- | --- | --- |",
    ]
    for f in FAULTS:
        names = [t for p in f.tests for t in find_tests(p)]
        where = "<br>".join(f"`{n}`" for n in names) if names else \
            "pending: " + ", ".join(f"`{p.split('|')[0]}`" for p in f.tests)
        if names and f.helpers:
            where += " (child: " + ", ".join(f"`{h}`" for h in f.helpers) + ")"
        lines.append(f"| {cell(f.fault)} | {cell(f.check)} | {where} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    results = run_cases()
    DOC.write_text(render_markdown(results))
    bad = [r for r in results if r.exc_name != r.case.exc.__name__
           or not re.search(r.case.match, r.message)]
    slow = [r for r in results if r.seconds > 1.0]
    print(f"wrote {DOC.relative_to(ROOT)}: {len(results)} cases, {len(bad)} not as expected, "
          f"{len(slow)} slower than 1 s")
    for r in bad:
        print(f"  MISMATCH {r.case.id}: {r.exc_name}: {r.message}")
    for r in slow:
        print(f"  SLOW {r.case.id}: {r.seconds:.2f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
