"""Continual-learning metrics (continual/metrics.py) on a hand-computed matrix, and FWT
from run_experiment."""

import numpy as np
import pytest

from continual.experiment import run_experiment
from continual.metrics import average_accuracy, bwt, forgetting, fwt, summarize

# R[i, j]: accuracy on task j after training tasks 0..i (the upper triangle is what the
# model scores on a task before training it)
R = np.array([[0.90, 0.30, 0.20],
              [0.70, 0.80, 0.40],
              [0.60, 0.85, 0.85]])  # task 1 improves after task 2
BASELINE = [0.10, 0.25, 0.30]


def test_metrics_by_hand():
    # FWT: ((0.30 - 0.25) + (0.40 - 0.30)) / 2
    assert fwt(R, BASELINE) == pytest.approx(0.075)
    # BWT: ((0.60 - 0.90) + (0.85 - 0.80)) / 2
    assert bwt(R) == pytest.approx(-0.125)
    # forgetting (best before the last task): ((max(0.90, 0.70) - 0.60) + (0.80 - 0.85)) / 2
    assert forgetting(R) == pytest.approx(0.125)
    assert average_accuracy(R) == pytest.approx((0.60 + 0.85 + 0.85) / 3)
    out = summarize(R, BASELINE)
    assert out["fwt"] == pytest.approx(0.075) and out["bwt"] == pytest.approx(-0.125)
    assert "fwt" not in summarize(R)


def test_fwt_edge_cases():
    assert fwt([[0.7]], [0.5]) == 0.0
    lower = np.where(np.tril(np.ones((3, 3))) > 0, R, np.nan)
    with pytest.raises(ValueError, match=r"R\[j-1, j\]"):
        fwt(lower, BASELINE)
    with pytest.raises(ValueError, match="baseline"):
        fwt(R, BASELINE[:2])


def test_run_experiment_reports_fwt():
    r = run_experiment("split-digits", updater="srigl", sparsity=0.8, task_masks=True,
                       n_tasks=3, epochs=1, max_train_per_task=40, engine="torch")
    nxt, base = r["next_task_accuracies"], r["fwt_baseline"]
    assert nxt[0] is None and len(base) == 3 and r["accuracy_matrix"][0][1] is None
    assert r["fwt"] == pytest.approx(np.mean([nxt[1] - base[1], nxt[2] - base[2]]))
    again = run_experiment("split-digits", updater="dense", task_masks=False, n_tasks=3,
                           epochs=1, max_train_per_task=40, engine="torch")
    assert again["fwt_baseline"] == base  # the same untrained model under the seed


@pytest.mark.parametrize("n_tasks", [5, 10, 20])
def test_split_cifar100_gives_5_10_20_task_splits(monkeypatch, n_tasks):
    """Split CIFAR-100 (stand-in images: the real files are not on disk here) into 5, 10
    or 20 tasks of 20, 10 or 5 classes, and run a conv backbone on it."""
    import torch

    import continual.streams as streams

    def fake(source, seed, test_fraction, root):
        y = torch.arange(200) % 100
        return torch.randn(200, 3, 32, 32), y, torch.randn(200, 3, 32, 32), y.clone()

    monkeypatch.setattr(streams, "_source", fake)
    data = streams.load_stream("split-cifar100", n_tasks)
    assert [t.n_classes for t in data.tasks] == [100 // n_tasks] * n_tasks
    assert data.input_shape == (3, 32, 32)
    if n_tasks == 20:
        r = run_experiment("split-cifar100", updater="rigl", sparsity=0.95, n_tasks=20,
                           epochs=1, backbone="slimresnet18", width=0.2, batch_size=16,
                           engine="torch")
        assert r["n_tasks"] == 20 and r["forgetting"] == 0.0
