"""Sparse FLOPs (``sparse_agents.flops``): hand-counted layers, ablated rows, constant
inputs folded as a condensed model folds them, task-mask views, the training formula
of Evci et al., and the SB3 ``sparse/flops_*`` logger keys."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

import sparse_agents as sa
from sparse_agents.condensed import CondensedLinear, condense
from sparse_agents.flops import (
    FlopsReport,
    active_masks,
    flops,
    training_flops,
    training_flops_per_step,
)
from sparse_agents.task_masks import TaskMasks
from sparse_agents.topology import MASK_BUFFER


def masked(module: nn.Module, mask: torch.Tensor) -> nn.Module:
    """``module`` with ``mask`` as its weight mask and zeros outside it."""
    mask = mask.bool()
    module.register_buffer(MASK_BUFFER, mask)
    with torch.no_grad():
        module.weight.mul_(mask)
    return module


def linear_4_3(rows: list[list[int]], bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return masked(nn.Linear(4, 3, bias=bias), torch.tensor(rows))


# ---------------------------------------------------------------------------- counting
def test_masked_linear_counts_active_weights_and_bias_adds():
    layer = linear_4_3([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]])  # 5 active, 3 rows alive
    report = flops(layer, (4,))
    assert isinstance(report, FlopsReport)
    assert report.sparse == 2 * 5 + 3
    assert report.dense == 2 * 12 + 3
    assert report.ratio == pytest.approx(13 / 27)
    (row,) = report.layers
    assert (row.kind, row.calls, row.active, row.alive, row.rows) == ("linear", 1, 5, 3, 3)
    assert report.to_dict()["ratio"] == pytest.approx(13 / 27)
    assert sa.flops(layer, 4).sparse == 13  # the package-level name; an int shape works


def test_ablated_row_does_no_work():
    layer = linear_4_3([[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]])  # row 2: fan-in 0
    assert flops(layer, (4,)).sparse == 2 * 5 + 2
    no_bias = linear_4_3([[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]], bias=False)
    assert flops(no_bias, (4,)).sparse == 2 * 5
    assert flops(no_bias, (4,)).dense == 2 * 12


def test_dense_layers_count_fully():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2, bias=False))
    report = flops(model, (4,))
    assert report.sparse == report.dense == (2 * 12 + 3) + 2 * 6
    assert report.ratio == 1.0


def test_masked_conv_counts_active_weights_per_output_position():
    torch.manual_seed(0)
    mask = torch.zeros(3, 2, 3, 3, dtype=torch.bool)
    mask[0, 0, 1, 1] = mask[0, 1, 0, 0] = mask[0, 1, 2, 2] = True  # filter 0: 3 weights
    mask[1, 0, :2, 0] = mask[1, 1, 0, :2] = True  # filter 1: 4 weights; filter 2 empty
    conv = masked(nn.Conv2d(2, 3, 3, padding=1), mask)
    report = flops(conv, (2, 5, 5))  # 5 x 5 output positions
    assert report.sparse == 25 * (2 * 7 + 2)
    assert report.dense == 25 * (2 * 54 + 3)
    assert report.layers[0].kind == "conv" and report.layers[0].positions == 25
    strided = masked(nn.Conv2d(2, 3, 3, stride=2), mask.clone())
    assert flops(strided, (2, 7, 7)).sparse == 9 * (2 * 7 + 2)  # 3 x 3 output positions
    conv1d = masked(nn.Conv1d(2, 1, 2), torch.tensor([[[1, 0], [0, 1]]]))
    assert flops(conv1d, (2, 6)).sparse == 5 * (2 * 2 + 1)


def test_constant_inputs_from_ablated_neurons_are_folded():
    torch.manual_seed(0)
    first = masked(nn.Linear(4, 3), torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]))
    # row 0 reads hidden 0 and the dead hidden 2; row 1 reads only hidden 2 (a constant)
    second = masked(nn.Linear(3, 2), torch.tensor([[1, 0, 1], [0, 0, 1]]))
    model = nn.Sequential(first, nn.ReLU(), second)
    report = flops(model, (4,))
    assert [x.sparse for x in report.layers] == [2 * 4 + 2, 2 * 1 + 1]
    assert [x.alive for x in report.layers] == [2, 1]
    # without an element-wise path between them (a functional op) nothing is folded
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = first, second

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    assert [x.sparse for x in flops(Functional(), (4,)).layers] == [2 * 4 + 2, 2 * 3 + 2]


def test_count_matches_the_condensed_model():
    """The work a condensed copy does: 2 * stored entries + bias adds of kept rows."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                          nn.Linear(6, 3))
    g = torch.Generator().manual_seed(1)
    masks = [torch.rand(6, 8, generator=g) < 0.5, torch.rand(6, 6, generator=g) < 0.6,
             torch.ones(3, 6, dtype=torch.bool)]
    masks[0][1] = False  # an ablated neuron...
    masks[1][4] = False
    masks[1][2] = False
    masks[1][2, 1] = True  # ...and a neuron whose only input is the ablated one
    for layer, mask in zip(model[::2], masks, strict=True):
        masked(layer, mask)
    fast = condense(model, warn=False)
    condensed = [m for m in fast.modules() if isinstance(m, CondensedLinear)]
    work = sum(2 * int(m.lengths.sum()) + m.rows.numel() for m in condensed)
    assert flops(model, (8,)).sparse == work


def test_calls_are_summed_and_state_is_left_alone():
    torch.manual_seed(0)
    shared = linear_4_3([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]])
    norm = nn.BatchNorm1d(4)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.fc, self.drop = norm, shared, nn.Dropout(0.5)

        def forward(self, x):
            return self.fc(self.drop(self.fc(self.norm(x))[:, :1].repeat(1, 4)))

    model = Twice().train()
    rng = torch.get_rng_state()
    stats = norm.running_mean.clone()
    report = flops(model, (4,))
    assert report.sparse == 2 * 13 and report.layers[0].calls == 2
    assert model.training and model.drop.training  # training flags restored
    assert torch.equal(torch.get_rng_state(), rng)  # zeros in, no random draw
    assert torch.equal(norm.running_mean, stats)  # ran in eval mode
    assert not any(p.grad is not None for p in model.parameters())
    custom = flops(model, inputs=torch.zeros(3, 4))  # a given input: the whole call
    assert custom.sparse == 3 * report.sparse
    with pytest.raises(ValueError, match="input_shape"):
        flops(model)


def test_task_mask_views_count_the_weights_each_view_computes_with():
    torch.manual_seed(0)
    for transfer in (True, False):
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
        tm = TaskMasks(model, sparsity=0.7, updater="set", distribution="uniform",
                       transfer=transfer, n_tasks=3,
                       dense_layers=["2"], delta_t=1000)
        assert not hasattr(model[2], MASK_BUFFER)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for task in (0, 1):
            tm.start_task(task, opt)
            tm.end_task()
        owner = tm.owners["0.weight"]
        for task, visible in ((0, owner == 0), (1, (owner >= 0) if transfer else owner == 1)):
            with tm.use_task(task):
                assert torch.equal(active_masks(model)["0"], visible)
                alive = int(visible.any(1).sum())
                head = 2 * 4 * alive + 4  # dense head; its inputs from dead rows folded
                assert flops(model, (6,)).sparse == 2 * int(visible.sum()) + alive + head


def test_packnet_style_wrapper_counts_visible_weights():
    class Wrapper(nn.Module):
        """As Avalanche's PackNet layers: the forward selects the task's visible weights
        (zeroing the old mask in place and assigning a new one) and calls F.linear."""

        def __init__(self, inner: nn.Linear, task_index: torch.Tensor) -> None:
            super().__init__()
            self.wrappee = inner
            self.task = 0
            self.register_buffer("task_index", task_index)
            self.register_buffer("visible_mask", torch.ones_like(task_index, dtype=torch.bool))

        def forward(self, x):
            self.visible_mask.zero_()
            self.visible_mask = self.task_index <= self.task
            return nn.functional.linear(x, self.wrappee.weight * self.visible_mask,
                                        self.wrappee.bias)

    wrapped = Wrapper(nn.Linear(4, 3), torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]))
    assert flops(wrapped, (4,)).sparse == 2 * 4 + 2
    wrapped.task = 1
    assert flops(wrapped, (4,)).sparse == 2 * 12 + 3
    assert list(active_masks(wrapped)) == [""]


# ---------------------------------------------------------------------------- training
def test_training_flops_follow_evci_et_al():
    layer = linear_4_3([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]])
    fs, fd = 13, 27
    for updater in ("rigl", "srigl"):  # dense gradient at every update step
        for dt in (1, 10, 100):
            expected = (3 * fs * dt + 2 * fs + fd) / (dt + 1)
            assert training_flops_per_step(layer, (4,), updater, dt) == pytest.approx(expected)
    for updater in ("static", "set", "unfired"):
        assert training_flops_per_step(layer, (4,), updater, 10) == 3 * fs
    assert training_flops_per_step(layer, (4,), "dense", 10) == 3 * fd
    assert flops(layer, (4,)).training_per_step("rigl", 4) == training_flops(fs, fd, "rigl", 4)
    assert training_flops(fs, fd, "rigl", 10**9) == pytest.approx(3 * fs)
    with pytest.raises(ValueError, match="updater"):
        training_flops_per_step(layer, (4,), "nope", 10)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="delta_t"):
            training_flops(fs, fd, "rigl", bad)


def test_topology_masks_are_counted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    topo = sa.SparseTopology(model, None, sparsity=0.9, updater="srigl", distribution="uniform")
    report = flops(model, (16,))
    active = sum(int(x.mask.sum()) for x in topo.layers)
    assert report.sparse <= 2 * active + 32 + 4
    assert report.dense == 2 * (16 * 32 + 32 * 4) + 36
    assert 0.05 < report.ratio < 0.2


# ---------------------------------------------------------------------------- SB3
def test_sb3_logger_records_forward_flops(tmp_path):
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.policies import ActorCriticPolicy

    from sparse_agents.sb3 import SparseActorCriticPolicy

    model = PPO(SparseActorCriticPolicy, "CartPole-v1", n_steps=64, batch_size=32,
                n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(net_arch=[32, 32], sparsity=0.9, delta_t=2))
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(128)
    with open(tmp_path / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"sparse/flops_forward", "sparse/flops_dense_forward"} <= set(rows[0])
    # CartPole: 4 inputs; pi and vf nets 4-32-32, action_net 32->2, value_net 32->1
    dense = 2 * (2 * (4 * 32 + 32 * 32) + 2 * 32) + (2 * 32 * 2 + 2) + (2 * 32 + 1)
    assert {float(r["sparse/flops_dense_forward"]) for r in rows} == {dense}
    sparse = [float(r["sparse/flops_forward"]) for r in rows]
    assert sparse and all(0 < v < 0.3 * dense for v in sparse)
    policy = model.policy
    expected = flops(policy, inputs=torch.zeros(1, 4),
                     forward=lambda p, x: ActorCriticPolicy.forward(p, x, deterministic=True))
    assert policy.sparse_metrics()["flops_forward"] == expected.sparse > 0

    class Condensed:  # a condensed rollout copy would hide the hooked layers
        def forward(self, *args, **kwargs):
            raise AssertionError("the FLOPs forward must bypass the condensed copy")

    policy._fast = lambda: Condensed()
    policy._sparse._metrics_key = None  # recompute
    assert policy.sparse_metrics()["flops_forward"] == expected.sparse
