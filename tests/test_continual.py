"""Avalanche plugins (DSTPlugin, TaskMaskPlugin) on stock strategies, and run_experiment."""

import json
import warnings

import pytest
import torch
from avalanche_helpers import Capture, Net
from invariants import check_topology
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.core import SupervisedPlugin
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import EWC, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

from continual import DSTPlugin, TaskMaskPlugin
from continual.experiment import run_experiment
from continual.streams import make_benchmark, split_digits
from continual.task_masks import FREE, OWNER_BUFFER
from sparse_agents.topology import MASK_BUFFER

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def bench():
    return make_benchmark("split-digits", seed=0, max_train_per_task=80)


def evaluator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])


def strategy(cls, model, opt, plugins, **kw):
    return cls(model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(), train_mb_size=16,
               train_epochs=1, eval_mb_size=64, device="cpu", plugins=plugins,
               evaluator=evaluator(), **kw)


class CheckDST(SupervisedPlugin):
    """After every optimizer step: invariants 1-2 on the topology of ``dst``."""

    def __init__(self, dst: DSTPlugin) -> None:
        super().__init__()
        self.dst = dst
        self.checked = 0

    def after_update(self, strategy, **kwargs):
        topo = self.dst.topology
        assert topo.optimizer is strategy.optimizer
        check_topology(topo, strategy.optimizer)
        self.checked += 1


@pytest.mark.parametrize("updater", ["srigl", "rigl"])
@pytest.mark.parametrize("cls", [Naive, Replay, EWC])
def test_dst_plugin_keeps_invariants_on_stock_strategies(bench, cls, updater):
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    dst = DSTPlugin(sparsity=0.8, updater=updater, delta_t=2, seed=0)
    check = CheckDST(dst)
    kw = {"ewc_lambda": 10.0} if cls is EWC else {"mem_size": 40} if cls is Replay else {}
    strat = strategy(cls, model, opt, [dst, check], **kw)
    with warnings.catch_warnings(record=True):  # Replay's own deprecation notice
        for exp in list(bench.train_stream)[:3]:
            strat.train(exp, eval_streams=[])
    topo = dst.topology
    assert check.checked > 0 and topo.n_updates > 0
    # sparsity is that of the masked layers: the dense heads do not count
    masked = sum(int(x.mask.sum()) for x in topo.layers) / sum(x.mask.numel() for x in topo.layers)
    assert masked == pytest.approx(0.2, abs=0.005) if updater == "rigl" else 0.15 < masked <= 0.2
    # heads: one per task, dense by rule, none masked
    assert sorted(model.classifier.classifiers.keys()) == ["0", "1", "2"]
    assert {x.module_name for x in topo.layers} == {"backbone.0", "backbone.2"}
    for head in model.classifier.classifiers.values():
        assert not hasattr(head.classifier, MASK_BUFFER)


class ReplaceOptimizer(SupervisedPlugin):
    """What PackNetPlugin does: a new optimizer object every experience."""

    def before_training_exp(self, strategy, **kwargs):
        strategy.optimizer = strategy.optimizer.__class__(strategy.model.parameters(),
                                                          **strategy.optimizer.defaults)


def test_dst_plugin_follows_a_replaced_optimizer(bench):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dst = DSTPlugin(sparsity=0.8, updater="set", delta_t=2)
    check = CheckDST(dst)
    replace = ReplaceOptimizer()
    strat = strategy(Naive, model, opt, [dst, replace, check])
    for exp in list(bench.train_stream)[:2]:
        strat.train(exp, eval_streams=[])
        assert dst.topology.optimizer is strat.optimizer
    assert strat.optimizer is not opt and check.checked > 0
    # Avalanche's own state reset between experiences (optimizer kept, state replaced)
    strat.plugins.remove(replace)
    kept = strat.optimizer
    strat.train(bench.train_stream[2], eval_streams=[], reset_optimizer_state=True)
    assert strat.optimizer is kept and dst.topology.optimizer is kept
    assert len(dst.history) == 3


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_task_mask_plugin_zero_forgetting(bench, opt_name):
    model = Net()
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    tmp = TaskMaskPlugin(sparsity=0.8, updater="srigl", n_tasks=5, delta_t=2, seed=0)
    cap = Capture()
    strat = strategy(Naive, model, opt, [tmp, cap])
    exps = list(bench.train_stream)[:3]
    accs = []
    for i, exp in enumerate(exps):
        strat.train(exp, eval_streams=[])
        res = strat.eval(bench.test_stream[: i + 1])
        accs.append({j: res[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"]
                     for j in range(i + 1)})
    # the same logits, bit for bit, in every later evaluation round
    for j in range(3):
        first = cap.outputs[(j, j)]
        for r in range(j + 1, 3):
            later = cap.outputs[(r, j)]
            assert all(torch.equal(a, b) for a, b in zip(first, later, strict=True))
        assert accs[2][j] == accs[j][j]
    tm = tmp.task_masks
    assert tm.task_ids == [0, 1, 2]
    for layer in tm.layers:
        owner = getattr(layer.module, OWNER_BUFFER)
        assert set(owner.unique().tolist()) <= {FREE, 0, 1, 2}
    for head in model.classifier.classifiers.values():
        assert not hasattr(head.classifier, MASK_BUFFER)  # heads: dense, per-task state
    # a task never trained is an error, not a fallback
    with pytest.raises(KeyError, match="task id 3 has no mask"):
        strat.eval([bench.test_stream[3]])


class CheckEvalRestores(SupervisedPlugin):
    """Periodic evaluation inside training must leave the training state untouched."""

    def __init__(self):
        super().__init__()
        self.saved = None
        self.checked = 0

    def before_eval(self, strategy, **kwargs):
        self.saved = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}

    def after_eval(self, strategy, **kwargs):
        now = dict(strategy.model.named_parameters())  # eval may add heads for new tasks
        assert all(torch.equal(v, now[n]) for n, v in self.saved.items())
        self.checked += 1


def test_task_mask_plugin_with_periodic_eval_of_all_tasks(bench):
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tmp = TaskMaskPlugin(sparsity=0.8, updater="rigl", unseen="next", delta_t=2)
    check = CheckEvalRestores()
    strat = strategy(Naive, model, opt, [tmp, check], eval_every=1)
    test = list(bench.test_stream)[:3]
    final = []
    for exp in list(bench.train_stream)[:3]:
        strat.train(exp, eval_streams=[test])  # evaluates future tasks too
        final.append(strat.eval(test[: exp.current_experience + 1]))
    assert check.checked >= 9 and tmp.task_masks.n_tasks == 5  # inferred from the stream
    key = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000"
    assert final[0][key] == final[1][key] == final[2][key]
    with pytest.raises(ValueError, match="unseen"):
        TaskMaskPlugin(unseen="skip")


def test_task_mask_plugin_refuses_mixed_task_batches(bench):
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    strat = strategy(Replay, model, opt, [TaskMaskPlugin(sparsity=0.8, n_tasks=5)], mem_size=40)
    with warnings.catch_warnings(record=True):
        strat.train(bench.train_stream[0], eval_streams=[])
        with pytest.raises(ValueError, match="one task at a time"):
            strat.train(bench.train_stream[1], eval_streams=[])


class CountIterations(SupervisedPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.iterations = 0

    def before_training_iteration(self, strategy, **kwargs):
        self.iterations += 1


def test_task_mask_plugin_refuses_class_incremental_stream_at_first_experience():
    bm = split_digits(n_tasks=2, seed=0, task_incremental=False, max_train_per_task=40)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tmp, count = TaskMaskPlugin(sparsity=0.8), CountIterations()
    strat = strategy(Naive, model, torch.optim.Adam(model.parameters()), [tmp, count])
    with pytest.raises(ValueError, match=r"class-incremental streams need task labels for "
                       r"per-task masks.*use DSTPlugin, or a task-incremental stream"):
        strat.train(bm.train_stream[0], eval_streams=[])
    # refused before any training: no set-up, no iteration, the model untouched
    assert tmp.task_masks is None and count.iterations == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not hasattr(model[0], MASK_BUFFER)


def test_task_mask_plugin_needs_one_task_label():
    """An experience carrying two task labels is refused, naming that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
        from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
        from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    bm = split_digits(n_tasks=2, seed=0, max_train_per_task=40)
    both = bm.train_stream[0].dataset.concat(bm.train_stream[1].dataset)
    mixed = with_classes_timeline(with_task_labels(benchmark_from_datasets(train=[both])))
    assert mixed.train_stream[0].task_labels == [0, 1]
    model = Net()
    tmp, count = TaskMaskPlugin(sparsity=0.8, n_tasks=2), CountIterations()
    strat = strategy(Naive, model, torch.optim.Adam(model.parameters()), [tmp, count])
    with pytest.raises(ValueError, match=r"one task label per experience, got \[0, 1\]"):
        strat.train(mixed.train_stream[0], eval_streams=[])
    assert tmp.task_masks is None and count.iterations == 0


def test_task_mask_plugin_refuses_a_task_label_trained_already():
    bm = split_digits(n_tasks=2, seed=0, max_train_per_task=40)
    model = Net()
    strat = strategy(Naive, model, torch.optim.Adam(model.parameters()),
                     [TaskMaskPlugin(sparsity=0.8, n_tasks=2)])
    strat.train(bm.train_stream[0], eval_streams=[])
    with pytest.raises(ValueError, match="task label 0 was trained already"):
        strat.train(bm.train_stream[0], eval_streams=[])


def test_plugins_validate_arguments():
    with pytest.raises(ValueError, match="updater must be one of"):
        TaskMaskPlugin(updater="magic")
    with pytest.raises(ValueError, match="sparsity"):
        DSTPlugin(sparsity=1.0)


# ---------------------------------------------------------------------- run_experiment
def test_run_experiment_task_masks_torch_engine(tmp_path):
    kw = dict(epochs=2, seed=0, max_train_per_task=150, lr=3e-3)
    r = run_experiment("split-digits", updater="srigl", sparsity=0.8, task_masks=True,
                       out=tmp_path, **kw)
    assert r["forgetting"] == 0.0 and r["bwt"] == 0.0 and r["engine"] == "torch"
    assert r["avg_accuracy"] > 0.8
    R = r["accuracy_matrix"]
    assert len(R) == 5 and R[0][1] is None and all(R[4][j] == R[j][j] for j in range(5))
    assert r["masks"]["used"] <= 1.0 and all(isinstance(v, float) for v in r["masks"].values())
    again = run_experiment("split-digits", updater="srigl", sparsity=0.8, **kw)
    assert again["accuracy_matrix"] == R  # deterministic under a seed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["avg_accuracy"] == r["avg_accuracy"]
    assert (tmp_path / "accuracy_matrix.csv").read_text().startswith("after_task,task_0")
    assert (tmp_path / "heatmap.png").stat().st_size > 1000


def test_run_experiment_baselines():
    kw = dict(epochs=2, seed=1, max_train_per_task=60)
    dense = run_experiment("split-digits", updater="dense", task_masks=False, **kw)
    assert dense["masks"] == {} and 0.5 < dense["avg_accuracy"] <= 1.0
    dst = run_experiment("permuted-digits", updater="set", task_masks=False, n_tasks=2, **kw)
    assert dst["masks"]["density"] < 0.2 and dst["n_tasks"] == 2
    av = run_experiment("split-digits", updater="rigl", task_masks=True, engine="avalanche",
                        n_tasks=3, **kw)
    assert av["forgetting"] == 0.0 and av["engine"] == "avalanche"
    assert av["avalanche_stream_forgetting"] == 0.0
    packnet = run_experiment("split-digits", strategy="packnet", sparsity=0.8, n_tasks=3, **kw)
    assert packnet["updater"] == "packnet" and packnet["forgetting"] == pytest.approx(0.0)
    ewc = run_experiment("split-digits", strategy="ewc", updater="dense", task_masks=False,
                         n_tasks=2, **kw)
    assert 0.0 <= ewc["avg_accuracy"] <= 1.0 and len(ewc["accuracy_matrix"]) == 2


def test_run_experiment_errors():
    with pytest.raises(ValueError, match="class-incremental"):
        run_experiment("split-digits-ci", updater="srigl", task_masks=True)
    with pytest.raises(ValueError, match="updater='dense' has no masks"):
        run_experiment("split-digits", updater="dense", task_masks=True)
    with pytest.raises(ValueError, match="strategy must be one of"):
        run_experiment("split-digits", strategy="gem")
    with pytest.raises(ValueError, match="replay"):
        run_experiment("split-digits", strategy="replay", task_masks=True)
    with pytest.raises(ValueError, match="unknown keyword"):
        run_experiment("split-digits", learning_rate=0.1)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0.9, 1\)"):
        run_experiment("permuted-digits", sparsity=0.8, n_tasks=10)


def test_cli_writes_outputs(tmp_path, capsys):
    from continual.cli import main

    out = tmp_path / "run"
    code = main(["--stream", "split-digits-ci", "--updater", "set", "--no-task-masks",
                 "--engine", "torch", "--epochs", "1", "--max-train-per-task", "50",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"avg_accuracy", "forgetting", "bwt", "accuracy_matrix", "masks"}
    assert "avg_accuracy" in capsys.readouterr().out


def test_dst_plugin_continues_a_torch_pruned_model_at_its_sparsity():
    from torch.nn.utils import prune

    model = Net()
    layers = [(model.backbone[0], "weight"), (model.backbone[2], "weight")]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.8)
    pruned = {n: m.weight_mask.bool().clone() for n, m in (("backbone.0", model.backbone[0]),
                                                           ("backbone.2", model.backbone[2]))}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    dst = DSTPlugin(updater="rigl", masks="existing", delta_t=2)
    strat = Naive(model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(),
                  train_mb_size=16, train_epochs=1, plugins=[dst], evaluator=None)
    bm = split_digits(seed=0, max_train_per_task=64)
    strat.train(bm.train_stream[0])
    topo = dst.topology
    assert topo.n_updates > 0
    for layer in topo.layers:
        assert int(layer.mask.sum()) == int(pruned[layer.module_name].sum())
    check_topology(topo, opt)
    assert topo.metrics()["density"] == pytest.approx(0.2, abs=1e-3)


@pytest.mark.parametrize("replace", [False, True])
def test_dst_plugin_trains_condensed(bench, replace):
    """compute="condensed" through DSTPlugin: the optimizer Avalanche resets (or a new
    one built from model.parameters()) steps the condensed values; invariants hold."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dst = DSTPlugin(sparsity=0.8, updater="rigl", delta_t=2, compute="condensed")
    check = CheckDST(dst)
    plugins = [dst, ReplaceOptimizer(), check] if replace else [dst, check]
    strat = strategy(Naive, model, opt, plugins)
    for exp in list(bench.train_stream)[:2]:
        strat.train(exp, eval_streams=[], reset_optimizer_state=True)
    topo = dst.topology
    assert topo.condensed_layers == ["backbone.0.weight", "backbone.2.weight"]
    assert check.checked > 0 and topo.n_updates > 0
    trained = {id(p) for g in strat.optimizer.param_groups for p in g["params"]}
    assert all(id(x.condensed.values) in trained and id(x.weight) not in trained
               for x in topo.layers)


def test_task_masks_refuse_condensed_compute():
    from sparse_agents import TaskMasks

    with pytest.raises(ValueError, match="compute='condensed' is not supported with per-task"):
        TaskMasks(Net(), sparsity=0.5, compute="condensed")
    masks = TaskMasks(Net(), sparsity=0.5, compute="auto")
    assert masks.topology.compute == "masked"
