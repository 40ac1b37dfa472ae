"""Avalanche sparsity metrics (``continual.sparsity_metrics``): names and values reach
the loggers, per epoch and per experience, with DSTPlugin, TaskMaskPlugin, and masks
installed without a plugin."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from avalanche_helpers import Net
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.logging import InteractiveLogger, TextLogger
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

import sparse_agents as sa
from continual import (
    DSTPlugin,
    SparsityPluginMetric,
    TaskMaskPlugin,
    flops_metrics,
    sparsity_metrics,
    split_digits,
)
from sparse_agents.topology import MASK_BUFFER

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LAYERS = ("backbone.0", "backbone.2")
QUANTITIES = ("Density", "ITOP", "AliveNeurons", "FLOPs", "Capacity")


@pytest.fixture(scope="module")
def bench():
    return split_digits(seed=0, max_train_per_task=64)


def run(bench, plugins, model, log_path, epochs=2, **metric_kw):
    """Naive on the first two experiences, evaluating the seen ones after each; the
    evaluator's metrics and the text log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = EvaluationPlugin(
            *sparsity_metrics(**metric_kw),
            loggers=[TextLogger(open(log_path, "w")), InteractiveLogger()])  # noqa: SIM115
    strat = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                  criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=epochs,
                  eval_mb_size=64, device="cpu", plugins=plugins, evaluator=evaluator)
    for i, exp in enumerate(list(bench.train_stream)[:2]):
        strat.train(exp, eval_streams=[])
        strat.eval(bench.test_stream[: i + 1])
    evaluator.loggers[0].file.flush()
    values = {name: vals for name, (_, vals) in evaluator.get_all_metrics().items()}
    return strat, values, log_path.read_text()


def parse_log(text: str) -> dict[str, float]:
    """The last value of every ``\\tname = value`` line of a TextLogger file."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^\t(\S+) = (\S+)$", text, re.M)}


def names(quantity: str, suffix: str = "") -> list[str]:
    """Epoch names of both training experiences and Exp names of every evaluation."""
    out = [f"{quantity}_Epoch/train_phase/train_stream/Task{t:03d}{suffix}" for t in (0, 1)]
    out += [f"{quantity}_Exp/eval_phase/test_stream/Task{t:03d}/Exp{t:03d}{suffix}"
            for t in (0, 1)]
    return out


def test_dst_plugin_metrics_reach_the_loggers(bench, tmp_path, capsys):
    model = Net()
    dst = DSTPlugin(sparsity=0.8, updater="srigl", delta_t=2, seed=0)
    strat, values, text = run(bench, [dst], model, tmp_path / "log.txt")
    logged = parse_log(text)
    expected = (names("Density") + names("ITOP") + names("FLOPs") + names("FLOPs", "/dense")
                + names("FLOPs", "/ratio")
                + [n for layer in LAYERS for n in names("AliveNeurons", f"/{layer}")])
    assert set(expected) <= set(values) and set(expected) <= set(logged)
    assert not any(n.startswith("Capacity") for n in values)  # no task masks
    assert "Density_Exp/eval_phase/test_stream/Task001/Exp001" in capsys.readouterr().out
    # two epochs per experience: one value per epoch
    assert len(values["Density_Epoch/train_phase/train_stream/Task000"]) == 2
    topo = dst.topology
    density = sum(int(x.mask.sum()) for x in topo.layers) / sum(x.mask.numel()
                                                                for x in topo.layers)
    final = "eval_phase/test_stream/Task001/Exp001"
    assert values[f"Density_Exp/{final}"][-1] == pytest.approx(density)
    assert abs(density - 0.2) < 0.02  # the requested 1 - sparsity, up to rounding
    assert logged[f"Density_Exp/{final}"] == pytest.approx(density, abs=1e-4)
    metrics = topo.metrics()
    assert values[f"ITOP_Exp/{final}"][-1] == pytest.approx(metrics["itop"])
    assert density < values[f"ITOP_Exp/{final}"][-1] <= 1
    for layer in LAYERS:
        assert values[f"AliveNeurons_Exp/{final}/{layer}"][-1] == metrics[f"alive/{layer}"]
    report = sa.flops(model, (64,), forward=lambda m, x: m(x, 1))
    assert values[f"FLOPs_Exp/{final}"][-1] == report.sparse
    assert values[f"FLOPs_Exp/{final}/dense"][-1] == report.dense == (
        2 * 64 * 32 + 32 + 2 * 32 * 32 + 32 + 2 * 32 * 2 + 2)
    assert values[f"FLOPs_Exp/{final}/ratio"][-1] == pytest.approx(report.ratio)
    assert report.ratio < 0.3


def test_task_mask_plugin_capacity_sums_to_one(bench, tmp_path):
    model = Net()
    tmp = TaskMaskPlugin(sparsity=0.8, updater="srigl", n_tasks=5, delta_t=2, seed=0)
    _, values, text = run(bench, [tmp], model, tmp_path / "log.txt", epochs=1, alive=False)
    logged = parse_log(text)
    assert not any(n.startswith("AliveNeurons") for n in values)  # alive=False
    epoch = "Capacity_Epoch/train_phase/train_stream"
    exp = "Capacity_Exp/eval_phase/test_stream"
    # last values: after training task 0 (its epoch), after training task 1 (the rest)
    checks = {f"{epoch}/Task000": ["task0"], f"{epoch}/Task001": ["task0", "task1"],
              f"{exp}/Task000/Exp000": ["task0", "task1"],
              f"{exp}/Task001/Exp001": ["task0", "task1"]}
    budget = 0.2  # each task claims 1 - sparsity of the masked weights (up to rounding)
    for base, tasks in checks.items():
        parts = {k: values[f"{base}/{k}"][-1] for k in [*tasks, "free"]}
        assert sum(parts.values()) == pytest.approx(1.0)
        assert all(abs(parts[t] - budget) < 0.02 for t in tasks), parts
        assert logged[f"{base}/free"] == pytest.approx(parts["free"], abs=1e-4)
    # with transfer, task 1 computes with both tasks' weights, task 0 with its own
    owned = values[f"{exp}/Task001/Exp001/task0"][-1]
    density = "Density_Exp/eval_phase/test_stream"
    assert values[f"{exp}/Task000/Exp000/task0"] == [pytest.approx(owned)] * 2
    assert len(values[f"{exp}/Task000/Exp000/free"]) == 2  # evaluated after both tasks
    assert values[f"{exp}/Task000/Exp000/free"][0] == pytest.approx(1 - owned)
    assert values[f"{density}/Task000/Exp000"][-1] == pytest.approx(owned)
    assert values[f"{density}/Task001/Exp001"][-1] == pytest.approx(
        owned + values[f"{exp}/Task001/Exp001/task1"][-1])
    flops = "FLOPs_Exp/eval_phase/test_stream"
    assert values[f"{flops}/Task000/Exp000"][-1] < values[f"{flops}/Task001/Exp001"][-1]
    assert set(names("ITOP")) <= set(values)  # found through plugin.task_masks.topology


def test_masks_without_a_plugin_and_helper_options(bench, tmp_path):
    model = Net()
    sa.SparseTopology(model.backbone, None, sparsity=0.5, updater="static",
                      distribution="uniform")
    assert all(hasattr(model.backbone[i], MASK_BUFFER) for i in (0, 2))
    _, values, _ = run(bench, [], model, tmp_path / "log.txt", epochs=1, experience=False,
                       input_shape=(64,))
    assert values["Density_Epoch/train_phase/train_stream/Task001"][-1] == pytest.approx(0.5)
    assert not any(n.startswith(("ITOP", "Capacity")) or "_Exp/" in n for n in values)
    assert any(n.startswith("FLOPs_Epoch") for n in values)

    assert len(sparsity_metrics()) == 10
    assert [str(m) for m in sparsity_metrics(itop=False, alive=False, capacity=False,
                                             epoch=False)] == ["Density_Exp", "FLOPs_Exp"]
    assert [str(m) for m in flops_metrics()] == ["FLOPs_Epoch", "FLOPs_Exp"]
    assert isinstance(flops_metrics()[0], SparsityPluginMetric)
    with pytest.raises(ValueError, match="quantity"):
        SparsityPluginMetric("speed")
    with pytest.raises(ValueError, match="emit_at"):
        SparsityPluginMetric("density", emit_at="iteration")


def test_flops_of_avalanche_packnet_count_each_tasks_visible_weights(bench, tmp_path):
    from avalanche.models.packnet import PackNetModel, PackNetPlugin

    torch.manual_seed(0)
    model = PackNetModel(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    plugin = PackNetPlugin(post_prune_epochs=1, prune_proportion=0.5)
    _, values, _ = run(bench, [plugin], model, tmp_path / "log.txt", epochs=2,
                       density=False, itop=False, alive=False, capacity=False, epoch=False)
    assert set(values) == set(names("FLOPs")[2:] + names("FLOPs", "/dense")[2:]
                              + names("FLOPs", "/ratio")[2:])
    base = "FLOPs_Exp/eval_phase/test_stream"
    dense = 2 * 64 * 32 + 32 + 2 * 32 * 10 + 10
    assert values[f"{base}/Task000/Exp000/dense"][-1] == dense
    first, second = values[f"{base}/Task000/Exp000"][-1], values[f"{base}/Task001/Exp001"][-1]
    # task 0 keeps half of the weights, task 1 half of the rest on top of them
    assert 0.4 * dense < first < 0.6 * dense < second < 0.85 * dense
