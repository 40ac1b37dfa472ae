"""Backbones for continual learning (continual/backbones.py): shapes, the CIFAR
adaptations, invariant 5 under task masks, and the run_experiment/CLI wiring."""

import pytest
import torch
from invariants import check_topology
from torch import nn

from continual.backbones import BACKBONES, build_backbone, default_backbone, image_shape
from continual.experiment import HEADS, MultiHeadNet, run_experiment
from sparse_agents.task_masks import TaskMasks

CONV = {"cnn": 1.0, "mobilenetv2": 0.25, "slimresnet18": 0.25, "resnet18": 1.0}


@pytest.mark.parametrize("name", ["mlp", "cnn", "mobilenetv2", "slimresnet18"])
@pytest.mark.parametrize("shape", [(64,), (1, 8, 8), (3, 32, 32)])
def test_backbone_maps_small_inputs_to_its_feature_size(name, shape):
    net, features = build_backbone(name, shape, hidden=16, width=0.25)
    assert net.eval()(torch.randn(2, *shape)).shape == (2, features)


def test_resnet18_is_the_cifar_variant_and_works_on_8x8():
    net, features = build_backbone("resnet18", (1, 8, 8))
    body = net
    assert features == 512 and isinstance(body.maxpool, nn.Identity)
    assert body.conv1.kernel_size == (3, 3) and body.conv1.stride == (1, 1)
    assert body.conv1.in_channels == 1 and isinstance(body.fc, nn.Identity)
    assert net.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 512)
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18", (3, 32, 32), width=0.5)


def test_mobilenetv2_first_conv_has_stride_1():
    net, features = build_backbone("mobilenetv2", (3, 32, 32), width=0.25)
    first = net.features[0][0]
    assert first.stride == (1, 1) and first.in_channels == 3 and features == 1280
    assert isinstance(net.classifier, nn.Identity)


def test_defaults_and_errors():
    assert default_backbone((64,)) == "mlp" and default_backbone((3, 32, 32)) == "cnn"
    assert image_shape((64,)) == (1, 8, 8) and image_shape((784,)) == (1, 28, 28)
    with pytest.raises(ValueError, match="square"):
        image_shape((10,))
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_backbone("vgg", (64,))
    with pytest.raises(ValueError, match="backbone must be one of"):
        run_experiment("split-digits", backbone="vgg", updater="dense", task_masks=False)


def _tiny_stream(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, *shape, generator=g), torch.randint(0, 2, (8,), generator=g))
            for _ in range(2)]


@pytest.mark.parametrize("name", [
    "cnn", "mobilenetv2", "slimresnet18",
    pytest.param("resnet18", marks=pytest.mark.slow)])
def test_task_masks_keep_earlier_task_outputs_with_conv_backbones(name):
    """Invariant 5 (docs/architecture.md): in eval mode, task 0's outputs are bit-identical
    after training task 1, BatchNorm statistics included; invariants 1-2 after each step."""
    shape = (1, 8, 8) if name == "resnet18" else (3, 32, 32)
    torch.manual_seed(0)
    body, features = build_backbone(name, shape, hidden=16, width=CONV[name])
    model = MultiHeadNet(body, features, {0: 2, 1: 2})
    tm = TaskMasks(model, 0.8, "srigl", "erk", n_tasks=2, dense_layers=[HEADS], delta_t=1,
                   t_end=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = torch.randn(4, *shape)
    tasks = [_tiny_stream(shape, seed) for seed in (1, 2)]
    outputs = {}
    for label, batches in enumerate(tasks):
        tm.start_task(label, opt)
        model.train()
        for x, y in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[:4], label), y[:4]).backward()
            opt.step()
            check_topology(tm.topology, opt)
        tm.end_task()
        model.eval()
        with torch.no_grad(), tm.use_task(0):
            outputs[label] = model(probe, 0)
    assert torch.equal(outputs[0], outputs[1])


def test_run_experiment_with_a_conv_backbone():
    kw = dict(n_tasks=2, epochs=1, max_train_per_task=16, batch_size=8, engine="torch")
    r = run_experiment("split-digits", updater="rigl", sparsity=0.8, task_masks=True,
                       backbone="mobilenetv2", width=0.25, **kw)
    assert r["backbone"] == "mobilenetv2" and r["width"] == 0.25
    assert r["forgetting"] == 0.0 and r["bwt"] == 0.0
    default = run_experiment("split-digits", updater="dense", task_masks=False, **kw)
    assert default["backbone"] == "mlp"


def test_cli_backbone_choices_come_from_the_registry():
    from continual.cli import build_parser

    action = next(a for a in build_parser()._actions if a.dest == "backbone")
    assert tuple(action.choices) == tuple(BACKBONES)
    args = build_parser().parse_args(["--stream", "split-digits", "--backbone", "resnet18",
                                      "--drop-fraction", "0.5", "--schedule", "constant"])
    assert (args.backbone, args.drop_fraction, args.schedule) == ("resnet18", 0.5, "constant")


@pytest.mark.parametrize("task_masks", [True, False])
def test_drop_fraction_and_schedule_reach_the_topology(monkeypatch, task_masks):
    import continual.experiment as ex

    seen = []

    class Spy(ex.TaskMasks):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append(self.topology)

    class SpyTopology(ex.SparseTopology):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append(self)

    monkeypatch.setattr(ex, "TaskMasks", Spy)
    monkeypatch.setattr(ex, "SparseTopology", SpyTopology)
    r = run_experiment("split-digits", updater="set", sparsity=0.8, task_masks=task_masks,
                       n_tasks=2, epochs=1, max_train_per_task=16, engine="torch",
                       drop_fraction=0.55, schedule="constant")
    assert len(seen) == 1
    assert seen[0].schedule.drop_fraction == 0.55 and seen[0].schedule.kind == "constant"
    assert r["drop_fraction"] == 0.55 and r["schedule"] == "constant"
