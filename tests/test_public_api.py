"""The public API contract (sparse_agents, sparse_agents.sb3, continual), called exactly
as documented."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparse_agents as sa


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 4))


def test_layer_densities_signature():
    shapes = [(64, 16), (64, 64), (4, 64)]
    dens = sa.layer_densities(shapes, 0.9, method="erk", dense=(), power=1.0)
    assert isinstance(dens, list) and len(dens) == 3 and all(isinstance(d, float) for d in dens)
    kept = sum(d * a * b for d, (a, b) in zip(dens, shapes, strict=True))
    assert abs(kept - 0.1 * sum(a * b for a, b in shapes)) <= len(shapes)
    assert sa.layer_densities(shapes, 0.9, method="uniform", dense=(0,))[0] == 1.0
    with pytest.raises(ValueError, match="sparsity"):
        sa.layer_densities(shapes, 1.0)


def test_sparse_topology_contract_and_condense():
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="srigl", distribution="erk",
                             delta_t=3, t_end=None, drop_fraction=0.3, schedule="cosine",
                             gamma_sal=0.3, dense_layers=(), seed=0)
    assert set(topo.masks) == {"0.weight", "2.weight", "4.weight"}
    assert all(m.dtype == torch.bool for m in topo.masks.values())
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    for _ in range(7):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert topo.step == 7
    assert topo.metrics()["updates"] == 2  # steps 3 and 6: hooks attached by the constructor
    nn.functional.cross_entropy(model(x), y).backward()
    topo.update()
    metrics = topo.metrics()
    assert {"density", "itop", "updates"} <= set(metrics) and metrics["density"] <= 0.1 + 1e-6
    state = topo.state_dict()
    other = sa.SparseTopology(_mlp(), None, sparsity=0.9, updater="srigl", seed=0)
    other.load_state_dict(state)
    assert other.step == topo.step
    fast = sa.condense(model)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-6)
    for bad, match in [(dict(sparsity=1.0), "sparsity"), (dict(updater="x"), "updater"),
                       (dict(distribution="x"), "distribution"), (dict(delta_t=0), "delta_t")]:
        with pytest.raises(ValueError, match=match):
            sa.SparseTopology(_mlp(), None, **bad)


def test_sb3_policy_contract():
    from stable_baselines3 import PPO

    from sparse_agents.sb3 import SparseActorCriticPolicy, SparseDQNPolicy  # noqa: F401

    model = PPO(SparseActorCriticPolicy, "CartPole-v1", n_steps=64, batch_size=64, n_epochs=1,
                policy_kwargs=dict(sparsity=0.9, updater="srigl"), seed=0)
    model.learn(64)
    assert model.policy.topology.metrics()["density"] < 0.2


def test_continual_plugins_contract():
    """Both plugins, as 6b writes them, run through a tiny Avalanche strategy on two
    experiences of the offline digits stream."""
    import warnings

    from avalanche.core import SupervisedPlugin
    from avalanche.models import MultiHeadClassifier, MultiTaskModule
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    from continual import DSTPlugin, TaskMaskPlugin, split_digits
    from sparse_agents.task_masks import OWNER_BUFFER

    class Net(MultiTaskModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.backbone = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64),
                                          nn.ReLU())
            self.classifier = MultiHeadClassifier(64, 2, masking=False)

        def forward_single_task(self, x, task_label):
            return self.classifier(self.backbone(x), task_label)

    class Logits(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.out: list[torch.Tensor] = []

        def after_eval_forward(self, strategy, **kwargs):
            self.out.append(strategy.mb_output.detach().clone())

    bm = split_digits(seed=0, max_train_per_task=160)

    def run(plugin, model: nn.Module) -> tuple[Naive, list[list[torch.Tensor]]]:
        logits = Logits()
        strat = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                      criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=1,
                      eval_mb_size=64, plugins=[plugin, logits],
                      evaluator=EvaluationPlugin(loggers=[]))
        task0 = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for exp in list(bm.train_stream)[:2]:
                strat.train(exp, eval_streams=[])
                logits.out = []
                strat.eval([bm.test_stream[0]])
                task0.append(logits.out)
        return strat, task0

    dst = DSTPlugin(sparsity=0.9, updater="srigl", distribution="erk", delta_t=10)
    assert dst.topology is None
    model = Net()
    run(dst, model)
    topo = dst.topology
    assert topo.model is model and topo.n_updates > 0 and len(dst.history) == 2
    assert {x.module_name for x in topo.layers} == {"backbone.0", "backbone.2"}  # heads dense
    # the requested density over the masked layers (ERK spreads it; SRigL's constant
    # fan-in rounds budgets to whole rows)
    kept = sum(int(x.mask.sum()) for x in topo.layers)
    assert kept / sum(x.mask.numel() for x in topo.layers) == pytest.approx(0.1, abs=0.01)
    assert all(bool((x.weight.detach()[~x.mask] == 0).all()) for x in topo.layers)

    masks = TaskMaskPlugin(sparsity=0.9, updater="srigl", distribution="erk", transfer=True,
                           delta_t=10)
    _, task0 = run(masks, Net())
    tm = masks.task_masks
    assert tm.task_ids == [0, 1] and tm.n_tasks == 5  # n_tasks: the stream's length
    owners = [getattr(x.module, OWNER_BUFFER) for x in tm.layers]
    total = sum(o.numel() for o in owners)
    for task in (0, 1):  # each task owns its share (density 1 - sparsity), disjointly
        assert all(int((o == task).sum()) > 0 for o in owners)
        share = sum(int((o == task).sum()) for o in owners) / total
        assert share == pytest.approx(0.1, abs=0.01)
    # outputs of task 0 unchanged after task 1, bit for bit
    assert len(task0[0]) == len(task0[1]) > 0
    assert all(torch.equal(a, b) for a, b in zip(task0[0], task0[1], strict=True))
    with pytest.raises(ValueError, match="sparsity"):
        TaskMaskPlugin(sparsity=1.5)
