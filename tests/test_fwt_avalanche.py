"""Forward transfer on the Avalanche engine of ``continual.experiment.run_experiment``:
after training task ``j - 1`` the engine evaluates task ``j`` as the model stands (with
the head training task ``j`` then starts from; with task masks, the view an unseen task
gets) on a copy, and the untrained model's accuracy per task is the baseline."""

import math

import numpy as np
import pytest
import torch
from avalanche.core import SupervisedPlugin

from continual import experiment
from continual.experiment import random_init_accuracies, run_experiment

TINY = dict(epochs=1, seed=1, n_tasks=3, max_train_per_task=40, engine="avalanche")
TASK_MASKS = dict(updater="rigl", sparsity=0.8, task_masks=True, **TINY)


def _head(model, label: int) -> tuple[torch.Tensor, torch.Tensor]:
    linear = model.classifier.classifiers[str(int(label))].classifier
    return linear.weight.detach().clone(), linear.bias.detach().clone()


def test_fwt_is_mean_over_later_tasks_of_next_task_accuracy_minus_baseline():
    r = run_experiment("split-digits", **TASK_MASKS)
    nxt, base = r["next_task_accuracies"], r["fwt_baseline"]
    assert nxt[0] is None and all(isinstance(v, float) for v in nxt[1:])
    assert len(base) == 3 and all(0.0 <= v <= 1.0 for v in base)
    assert r["accuracy_matrix"][0][1] is None  # the matrix keeps None above the diagonal
    assert r["fwt"] == pytest.approx(((nxt[1] - base[1]) + (nxt[2] - base[2])) / 2)


def test_look_ahead_leaves_the_accuracy_matrix_bit_identical(monkeypatch):
    with_look_ahead = run_experiment("split-digits", **TASK_MASKS)
    monkeypatch.setattr(experiment, "_look_ahead", lambda *args: (0.5, 0.5))
    without = run_experiment("split-digits", **TASK_MASKS)
    assert without["fwt"] == 0.0  # the look-ahead was off
    assert with_look_ahead["accuracy_matrix"] == without["accuracy_matrix"]
    assert with_look_ahead["masks"] == without["masks"]
    for key in ("avalanche_stream_accuracy", "avalanche_stream_forgetting"):
        assert with_look_ahead[key] == without[key]


@pytest.mark.parametrize("strategy, args", [
    ("ewc", dict(updater="dense", task_masks=False)),
    ("replay", dict(updater="set", task_masks=False)),
    ("packnet", dict(sparsity=0.7, epochs=2)),
])
def test_fwt_is_a_finite_float_for_ewc_replay_and_packnet(strategy, args):
    r = run_experiment("split-digits", strategy=strategy, **{**TINY, **args})
    assert isinstance(r["fwt"], float) and math.isfinite(r["fwt"])
    assert r["next_task_accuracies"][0] is None
    assert all(0.0 <= v <= 1.0 for v in r["next_task_accuracies"][1:])


def test_look_ahead_and_baseline_use_the_head_training_then_starts_from(monkeypatch):
    evaluated: dict[int, list] = {}
    started: dict[int, tuple] = {}
    adapted_accuracy = experiment._adapted_accuracy

    def spy(model, exps, task):
        acc = adapted_accuracy(model, exps, task)
        evaluated.setdefault(task.task_label, []).append(_head(model, task.task_label))
        return acc

    class Start(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            label = int(strategy.experience.task_labels[0])
            started[label] = _head(strategy.model, label)

    build = experiment._avalanche_strategy
    monkeypatch.setattr(experiment, "_adapted_accuracy", spy)
    monkeypatch.setattr(experiment, "_avalanche_strategy",
                        lambda name, model, opt, plugins, *a: build(name, model, opt,
                                                                    [*plugins, Start()], *a))
    run_experiment("split-digits", updater="dense", task_masks=False, **TINY)
    assert sorted(started) == [0, 1, 2] and sorted(evaluated) == [0, 1, 2]
    for label, heads in evaluated.items():
        assert len(heads) == (1 if label == 0 else 2)  # baseline (and look-ahead)
        for weight, bias in heads:
            assert torch.equal(weight, started[label][0])
            assert torch.equal(bias, started[label][1])


def test_baseline_is_the_untrained_model_the_engine_trains():
    """Single head: the model ``random_init_accuracies`` builds; multi-head: the same
    backbone and first head, later heads drawn when their tasks come."""
    ci = run_experiment("split-digits-ci", updater="dense", task_masks=False, **TINY)
    assert ci["fwt_baseline"] == random_init_accuracies(
        experiment.load_stream("split-digits-ci", 3, 1, max_train_per_task=40),
        None, 256, 1.0, 1)
    ti = run_experiment("split-digits", updater="dense", task_masks=False, **TINY)
    reference = random_init_accuracies(
        experiment.load_stream("split-digits", 3, 1, max_train_per_task=40), None, 256, 1.0, 1)
    assert ti["fwt_baseline"][0] == reference[0]
    assert np.isfinite(ti["fwt_baseline"]).all()


def test_task_mask_look_ahead_sees_the_view_of_an_unseen_task():
    """Without transfer an unseen task's view has no masked weight: the MLP's output
    is its biases', one class for every input, so the accuracy is that class's share."""
    r = run_experiment("split-digits", **{**TASK_MASKS, "transfer": False})
    data = experiment.load_stream("split-digits", 3, 1, max_train_per_task=40)
    for j in (1, 2):
        y = data.tasks[j].y_test
        shares = [int((y == c).sum()) / len(y) for c in range(data.tasks[j].n_classes)]
        assert r["next_task_accuracies"][j] in [*shares, 0.0]  # 0: the head's extra unit
