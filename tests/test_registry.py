"""The updater registry: one entry per updater, read by every consumer (issue 13)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparse_agents as sa
from sparse_agents.updaters import (
    REGISTRY,
    UpdaterSpec,
    get_updater,
    initial_mask,
    set_update,
    updater_names,
)


def _parsers():
    from continual.cli import build_parser as cl_parser
    from sparse_agents.cli.rl_stream import build_parser as rl_stream_parser
    from sparse_agents.cli.train_agent import build_parser as train_parser
    from sparse_agents.study.cli import build_parser as study_parser

    return {"sparse-train": (train_parser(), "updater"),
            "sparse-rl-stream": (rl_stream_parser(), "updater"),
            "run_stream": (cl_parser(), "updater"),
            "study": (study_parser(), "updaters")}


def _choices(parser, dest: str) -> tuple:
    return tuple(next(a for a in parser._actions if a.dest == dest).choices)


def test_every_cli_offers_exactly_the_registered_updaters():
    for name, (parser, dest) in _parsers().items():
        assert _choices(parser, dest) == updater_names(dense=True), name


def test_unknown_updater_error_names_the_parameter_and_the_choices():
    with pytest.raises(ValueError, match=r"updater must be one of \('static', 'set'.*'bogus'"):
        get_updater("bogus")
    with pytest.raises(ValueError, match=r"updater must be one of \('dense', 'static'"):
        get_updater("bogus", dense=True)
    assert get_updater("dense", dense=True) is None


def test_traits_drive_the_topology():
    assert not REGISTRY["static"].dynamic and REGISTRY["set"].dynamic
    assert REGISTRY["rigl"].needs_grad and not REGISTRY["set"].needs_grad
    assert REGISTRY["srigl"].constant_fan_in and not REGISTRY["rigl"].constant_fan_in


def test_constant_fan_in_initial_mask_has_equal_rows_among_free_entries():
    g = torch.Generator().manual_seed(0)
    free = torch.ones(6, 10, dtype=torch.bool)
    free[:, :3] = False
    m = initial_mask(REGISTRY["srigl"], (6, 10), 24, g, free=free)
    assert m.sum(1).tolist() == [4] * 6 and not bool((m & ~free).any())
    r = initial_mask(REGISTRY["set"], (6, 10), 24, g, free=free)
    assert int(r.sum()) == 24 and not bool((r & ~free).any())


@pytest.fixture
def my_updater(monkeypatch):
    """A new updater registered with one line: SET's rule under another name."""
    calls = []

    def update(weight, mask, grad, n_drop, generator, **opts):
        calls.append(n_drop)
        return set_update(weight, mask, grad, n_drop, generator, **opts)

    monkeypatch.setitem(REGISTRY, "mine", UpdaterSpec("mine", update, summary="test"))
    return calls


def test_a_registered_updater_works_everywhere_without_other_edits(my_updater):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    topo = sa.SparseTopology(model, opt, sparsity=0.5, updater="mine", delta_t=1)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    assert my_updater, "the topology did not call the registered update"
    tm = sa.TaskMasks(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)),
                      sparsity=0.5, updater="mine", n_tasks=2)
    assert tm.topology.spec.name == "mine"
    for name, (parser, dest) in _parsers().items():
        assert "mine" in _choices(parser, dest), name
    from sparse_agents.avalanche import DSTPlugin
    from sparse_agents.sb3 import SparseActorCriticPolicy  # noqa: F401
    from sparse_agents.sb3.mixin import SPARSE_DEFAULTS, check_options

    DSTPlugin(sparsity=0.5, updater="mine")
    check_options(dict(SPARSE_DEFAULTS, updater="mine"))
    assert topo.metrics()["updates"] >= 1
