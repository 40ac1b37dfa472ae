"""Every stock Avalanche strategy with the plugins, tried as a new user would: the
offline digits streams, 3 experiences, 1 epoch, small memories, a small MLP.

``DSTPlugin(sparsity=0.9)`` runs on all of them (class-incremental stream); the
invariants of ``check_topology`` hold after every optimizer step and at the end.
``TaskMaskPlugin`` runs on the strategies that train one task at a time
(task-incremental stream): invariants after every step, zero forgetting; most others it
refuses with a ``ValueError`` naming the reason (the rest are skipped, with it).
``docs/continual.md`` ("Stock Avalanche strategies") tabulates this file's outcome:
``pytest -v -rs tests/test_avalanche_strategies.py`` (~13 s of tests on 2 cores, so no
test is marked slow).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from invariants import check_topology
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import avalanche.training as stock
    from avalanche.core import SupervisedPlugin
    from avalanche.models import MultiHeadClassifier, MultiTaskModule
    from avalanche.training.plugins import EvaluationPlugin

from continual import DSTPlugin, TaskMaskPlugin
from continual.streams import split_digits
from sparse_agents.task_masks import FREE, OWNER_BUFFER
from sparse_agents.topology import MASK_BUFFER
from sparse_agents.updaters.base import as_matrix

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

N_EXPERIENCES = 3
MB = 8
#: strategy name in ``avalanche.training`` -> its own arguments (tiny settings). Class
#: buffers hold ``mem_size / classes seen`` samples per class; ER_AML loops forever
#: (Avalanche 0.6) when one is smaller than the mini-batch, hence its larger memory.
STRATEGIES: dict[str, dict] = {
    "Naive": {},
    "Replay": {"mem_size": 40},
    "EWC": {"ewc_lambda": 1.0},
    "SynapticIntelligence": {"si_lambda": 1.0},
    "MAS": {"lambda_reg": 1.0},
    "LwF": {"alpha": 1.0, "temperature": 2.0},
    "AGEM": {"patterns_per_exp": 16, "sample_size": 16},
    "DER": {"mem_size": 40, "batch_size_mem": MB},
    "ER_ACE": {"mem_size": 40, "batch_size_mem": MB},
    "ER_AML": {"mem_size": 80, "batch_size_mem": MB},
    "MIR": {"mem_size": 40, "subsample": 16, "batch_size_mem": MB},
    "GSS_greedy": {"mem_size": 40, "mem_strength": 2, "input_size": [64]},
    "GDumb": {"mem_size": 40},
    "Cumulative": {},
    "FromScratchTraining": {},
}
#: strategies that train one task at a time: TaskMaskPlugin applies
TASK_MASK_RUNS = ("Naive", "EWC", "SynapticIntelligence", "MAS", "LwF", "FromScratchTraining")
#: strategies TaskMaskPlugin refuses at the second experience, and the error's words
TASK_MASK_REFUSED: dict[str, str] = {
    "Replay": "one task at a time",  # replay mixed into the mini-batch
    "GSS_greedy": "one task at a time",
    "Cumulative": "one task at a time",  # trains on every task's data
    "DER": "one task at a time",  # replay appended to the mini-batch before forward
    "ER_ACE": "one task at a time",  # a separate replay batch (strategy.mb_buffer_tid)
    "ER_AML": "one task at a time",
    "GDumb": "replaced its model",  # a re-initialised model every experience
}
#: Avalanche's DER and GSS_greedy call ``model(x)`` without task labels, so they cannot
#: run a multi-head model: with TaskMaskPlugin they get the single-head MLP
SINGLE_HEAD = {"DER", "GSS_greedy"}
#: not tested with TaskMaskPlugin: they replay earlier tasks outside the mini-batch,
#: where the plugin cannot see it (no error), and to no avail
TASK_MASK_SKIPPED: dict[str, str] = {
    "AGEM": "replay-style: its memory gradient passes through the training task's "
            "sub-network, and earlier tasks are frozen anyway",
    "MIR": "replay-style: replays inside its own before_backward, through the training "
           "task's sub-network; earlier tasks are frozen anyway",
}


class MLP(nn.Module):
    """64-32-32-10, one shared head (class-incremental)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MultiHeadMLP(MultiTaskModule):
    """64-32-32 backbone, one dense 2-class head per task (task-incremental)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.classifier = MultiHeadClassifier(32, 2, masking=False)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.classifier(self.features(x), task_label)


@pytest.fixture(scope="module")
def ci_stream():
    return split_digits(seed=0, task_incremental=False, max_train_per_task=64)


@pytest.fixture(scope="module")
def ti_stream():
    return split_digits(seed=0, max_train_per_task=64)


def room(tm) -> dict:
    """Per masked layer, the entries each row could grow into (own or free weights):
    under per-task masks a SRigL row ends below ``k`` where that runs out."""
    return {x.name: as_matrix((getattr(x.module, OWNER_BUFFER) == FREE) | x.mask).sum(1)
            for x in tm.layers}


class CheckAfterStep(SupervisedPlugin):
    """``check_topology`` after every optimizer step, on the plugin's current topology."""

    def __init__(self, plugin) -> None:
        super().__init__()
        self.plugin = plugin
        self.checked = 0

    def after_update(self, strategy, **kwargs) -> None:
        topo = self.plugin.topology
        assert topo.optimizer is strategy.optimizer
        tm = getattr(self.plugin, "task_masks", None)
        check_topology(topo, strategy.optimizer, room=None if tm is None else room(tm))
        self.checked += 1


def make_strategy(name: str, model: nn.Module, plugins: list):
    kwargs = dict(STRATEGIES[name])
    if name == "ER_AML":
        kwargs["feature_extractor"] = model.features
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(stock, name)(
            model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(), train_mb_size=MB,
            train_epochs=1, eval_mb_size=64, device="cpu", plugins=plugins,
            evaluator=EvaluationPlugin(loggers=[]), **kwargs)


def test_matrix_covers_the_stock_strategies():
    assert all(hasattr(stock, name) for name in STRATEGIES)
    groups = [set(TASK_MASK_RUNS), set(TASK_MASK_REFUSED), set(TASK_MASK_SKIPPED)]
    assert set().union(*groups) == set(STRATEGIES) and sum(map(len, groups)) == len(STRATEGIES)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_dst_plugin_on_stock_strategy(ci_stream, name):
    model = MLP()
    dst = DSTPlugin(sparsity=0.9, delta_t=2)
    check = CheckAfterStep(dst)
    strat = make_strategy(name, model, [dst, check])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in list(ci_stream.train_stream)[:N_EXPERIENCES]:
            strat.train(exp, eval_streams=[])
    topo = dst.topology
    assert check.checked > 0 and len(dst.history) == N_EXPERIENCES
    assert topo.model is strat.model  # GDumb: set up again on the new model
    check_topology(topo, strat.optimizer)
    masked = sum(int(x.mask.sum()) for x in topo.layers) / sum(x.mask.numel() for x in topo.layers)
    assert masked == pytest.approx(0.1, abs=0.01)  # SRigL: budgets in whole rows
    assert all(hasattr(m, MASK_BUFFER) for m in (strat.model.features[0],
                                                 strat.model.features[2],
                                                 strat.model.classifier))


def _task0_logits(strat, plugin: TaskMaskPlugin, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), plugin.task_masks.use_task(0):
        strat.model.eval()
        return strat.model(x, torch.zeros(len(x), dtype=torch.long))


@pytest.mark.parametrize("name", TASK_MASK_RUNS)
def test_task_mask_plugin_on_stock_strategy(ti_stream, name):
    model = MultiHeadMLP()
    tmp = TaskMaskPlugin(sparsity=0.9, delta_t=2, seed=0)
    check = CheckAfterStep(tmp)
    strat = make_strategy(name, model, [tmp, check])
    x0 = ti_stream.stream_data.tasks[0].x_test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, exp in enumerate(list(ti_stream.train_stream)[:N_EXPERIENCES]):
            strat.train(exp, eval_streams=[])
            if i == 0:
                first = _task0_logits(strat, tmp, x0)
    tm = tmp.task_masks
    assert tm.task_ids == [0, 1, 2] and check.checked > 0
    for layer in tm.layers:  # each task owns its share; weights no task owns are 0
        owner = getattr(layer.module, OWNER_BUFFER)
        counts = [int((owner == i).sum()) for i in range(3)]
        assert all(0 < c <= layer.budget for c in counts)
        assert bool((layer.weight.detach()[owner == FREE] == 0).all())
    assert torch.equal(_task0_logits(strat, tmp, x0), first)  # zero forgetting, bit for bit


@pytest.mark.parametrize("name", list(TASK_MASK_REFUSED))
def test_task_mask_plugin_refused(ti_stream, name):
    """Replay-style strategies mix earlier tasks into the mini-batches (or, GDumb,
    re-initialise the model): per-task masks refuse them at the second experience."""
    model = MLP() if name in SINGLE_HEAD else MultiHeadMLP()
    strat = make_strategy(name, model, [TaskMaskPlugin(sparsity=0.9, delta_t=2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strat.train(ti_stream.train_stream[0], eval_streams=[])
        with pytest.raises(ValueError, match=TASK_MASK_REFUSED[name]):
            strat.train(ti_stream.train_stream[1], eval_streams=[])


@pytest.mark.parametrize("name", [pytest.param(n, id=f"{n}-skipped") for n in TASK_MASK_SKIPPED])
def test_task_mask_plugin_not_applicable(name):
    pytest.skip(f"TaskMaskPlugin x {name}: {TASK_MASK_SKIPPED[name]}")
