"""``SparseConfig``: one frozen value holding every ``SparseTopology`` option, checked
once; the keyword form and ``from_config`` build the same topology; consumers carry one
config instead of listing the options again."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparse_agents as sa
from sparse_agents.config import SparseConfig
from sparse_agents.updaters import updater_names

ROOT = Path(__file__).resolve().parent.parent


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 4))


def topology_options() -> list[inspect.Parameter]:
    """``SparseTopology``'s parameters after the model and the optimizer."""
    return list(inspect.signature(sa.SparseTopology).parameters.values())[2:]


# ---------------------------------------------------------------------- one schema
def test_every_topology_keyword_is_a_field_with_the_same_default():
    options = topology_options()
    fields = dataclasses.fields(SparseConfig)
    assert [p.name for p in options] == [f.name for f in fields] == list(SparseConfig.FIELDS)
    for param, field in zip(options, fields, strict=True):
        assert param.default == field.default, param.name
    # and the config's defaults are the topology's: a default topology has them
    topo = sa.SparseTopology(mlp(), None)
    assert topo.config == SparseConfig()


def test_exported_from_the_package():
    assert sa.SparseConfig is SparseConfig and "SparseConfig" in sa.__all__


# ---------------------------------------------------------------------- checks
BAD = [
    ("sparsity", 1.0, r"sparsity must be in \[0, 1\), got 1\.0"),
    ("sparsity", "dense", r"sparsity must be a number in \[0, 1\)"),
    ("updater", "magic", "updater must be one of " + str(updater_names()).replace("(", r"\(")
     .replace(")", r"\)")),
    ("distribution", "gauss", r"distribution must be one of \('uniform', 'er', 'erk'\)"),
    ("delta_t", 0, "delta_t must be an integer >= 1, got 0"),
    ("t_end", 0, "t_end must be None or an integer >= 1, got 0"),
    ("drop_fraction", 1.0, r"drop_fraction must be in \(0, 1\), got 1\.0"),
    ("schedule", "linear", r"schedule must be one of \('constant', 'cosine'\)"),
    ("gamma_sal", 1.5, r"gamma_sal must be in \[0, 1\], got 1\.5"),
    ("gamma_sal", {"0": 2.0}, r"gamma_sal\['0'\] must be in \[0, 1\], got 2\.0"),
    ("dense_layers", 1.5, "dense_layers must be a list of layer names"),
    ("seed", 1.5, r"seed must be an integer, got 1\.5"),
    ("seed", True, "seed must be an integer, got True"),
    ("power", 0, "power must be > 0, got 0"),
    ("output_layers", 2.5, "output_layers must be a list of layer names"),
    ("grad_masking", "later", r"grad_masking must be one of \('step', 'backward'\)"),
    ("exclude_layers", {"a": 1}, "exclude_layers must be a list of layer names"),
    ("budgets", [1, 2], "budgets must be a mapping"),
    ("masks", "bogus", r"masks must be a mapping or one of \('existing', 'nonzero'\)"),
    ("masks", 3, "masks must be a mapping or one of"),
    ("sparse_init", "glorot", r"sparse_init must be None or one of \('fan_in', 'fan_avg'\)"),
    ("compute", "fast", r"compute must be one of \('masked', 'condensed', 'auto'\)"),
]


@pytest.mark.parametrize("name, value, match", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_each_option_is_checked_with_its_name(name, value, match):
    with pytest.raises(ValueError, match=match):
        SparseConfig(**{name: value})
    with pytest.raises(ValueError, match=match):  # the keyword form: the same check
        sa.SparseTopology(mlp(), None, **{name: value})
    with pytest.raises(ValueError, match=match):  # and a replaced copy
        SparseConfig().replace(**{name: value})


def test_every_field_has_a_bad_value_case():
    checked = {name for name, _, _ in BAD}
    unchecked = {"renormalise", "ablate_output"}  # flags: any truthy value
    assert checked | unchecked == set(SparseConfig.FIELDS)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0), st.just(math.nan)))
def test_sparsity_outside_the_range_is_refused(value):
    with pytest.raises(ValueError, match="sparsity must be"):
        SparseConfig(sparsity=value)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(math.nan)))
def test_drop_fraction_outside_the_open_interval_is_refused(value):
    with pytest.raises(ValueError, match="drop_fraction must be in"):
        SparseConfig(drop_fraction=value)


@settings(max_examples=40, deadline=None)
@given(st.floats(allow_nan=True).filter(lambda v: not 0 <= v <= 1))
def test_gamma_sal_outside_the_unit_interval_is_refused(value):
    with pytest.raises(ValueError, match="gamma_sal"):
        SparseConfig(gamma_sal=value)
    with pytest.raises(ValueError, match=r"gamma_sal\['x'\]"):
        SparseConfig(gamma_sal={"x": value})


@settings(max_examples=40, deadline=None)
@given(st.integers(max_value=0))
def test_delta_t_below_one_is_refused(value):
    with pytest.raises(ValueError, match="delta_t must be an integer >= 1"):
        SparseConfig(delta_t=value)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=8).filter(lambda s: s not in ("uniform", "er", "erk")))
def test_unknown_distribution_is_refused(value):
    with pytest.raises(ValueError, match="distribution must be one of"):
        SparseConfig(distribution=value)


@settings(max_examples=40, deadline=None)
@given(st.floats(max_value=0.0))
def test_power_not_positive_is_refused(value):
    with pytest.raises(ValueError, match="power must be > 0"):
        SparseConfig(power=value)


# ---------------------------------------------------------------------- the value
def test_frozen_normalised_and_hashable():
    cfg = SparseConfig(sparsity=1 / 2, dense_layers=["0", 2], exclude_layers="4",
                       output_layers=[r".*4"], seed=3)
    assert cfg.dense_layers == ("0", 2) and cfg.exclude_layers == ("4",)
    assert cfg.output_layers == (r".*4",) and isinstance(cfg.sparsity, float)
    assert hash(cfg) == hash(SparseConfig(sparsity=0.5, dense_layers=("0", 2),
                                          exclude_layers=("4",), output_layers=(r".*4",),
                                          seed=3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sparsity = 0.8  # type: ignore[misc]
    assert cfg.replace(sparsity=0.8).sparsity == 0.8 and cfg.sparsity == 0.5


def test_to_dict_and_from_dict_round_trip():
    cfg = SparseConfig(updater="rigl", delta_t=7, gamma_sal={"0": 0.1}, compute="masked")
    assert SparseConfig.from_dict(cfg.to_dict()) == cfg
    assert list(cfg.to_dict()) == list(SparseConfig.FIELDS)
    assert SparseConfig.from_dict({"delta_t": 7}) == SparseConfig(delta_t=7)


def test_from_dict_rejects_unknown_keys_naming_the_options():
    with pytest.raises(ValueError, match=r"unknown topology options \['delta'\].*'delta_t'"):
        SparseConfig.from_dict({"delta": 5, "sparsity": 0.5})
    with pytest.raises(ValueError, match=r"^TaskMasks got unknown"):
        SparseConfig.from_dict({"optimizer": None}, "TaskMasks")


def test_resolve_takes_a_config_or_the_keywords_not_both():
    cfg = SparseConfig(sparsity=0.5)
    assert SparseConfig.resolve(cfg, "X", sparsity=0.9, dense_layers=[]) is cfg  # defaults
    assert SparseConfig.resolve(None, "X", sparsity=0.5) == cfg
    with pytest.raises(ValueError, match=r"X got config= and the topology options \['delta_t'"):
        SparseConfig.resolve(cfg, "X", delta_t=5, sparsity=0.9)
    with pytest.raises(ValueError, match="config must be a SparseConfig"):
        SparseConfig.resolve({"sparsity": 0.5}, "X")


# ---------------------------------------------------------------------- from_config
def test_from_config_builds_the_keyword_forms_topology():
    options = dict(sparsity=0.8, updater="rigl", distribution="uniform", delta_t=2,
                   drop_fraction=0.5, seed=5, dense_layers=[0], gamma_sal={"2": 0.2})
    model_a, model_b = mlp(1), mlp(1)
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1)
    by_keywords = sa.SparseTopology(model_a, opt_a, **options)
    by_config = sa.SparseTopology.from_config(model_b, opt_b, SparseConfig(**options))
    assert by_keywords.config == by_config.config == SparseConfig(**options)
    x, y = torch.randn(16, 12), torch.randint(0, 4, (16,))
    for model, opt in ((model_a, opt_a), (model_b, opt_b)):
        for _ in range(5):  # two updates
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert by_config.n_updates == by_keywords.n_updates == 2
    for name, mask in by_keywords.masks.items():
        assert torch.equal(mask, by_config.masks[name]), name
    with pytest.raises(ValueError, match="config must be a SparseConfig"):
        sa.SparseTopology.from_config(mlp(), None, options)  # type: ignore[arg-type]


def test_task_masks_take_one_config():
    cfg = SparseConfig(sparsity=0.75, updater="set", delta_t=3, seed=2)
    a = sa.TaskMasks(mlp(), n_tasks=4, config=cfg)
    b = sa.TaskMasks(mlp(), 0.75, "set", seed=2, n_tasks=4, delta_t=3)
    assert a.config == b.config == cfg
    assert a.budgets == b.budgets and a.topology.schedule == b.topology.schedule
    assert a.topology.config.compute == "masked"  # the layers train masked
    with pytest.raises(ValueError, match=r"got config= and the topology options \['delta_t'\]"):
        sa.TaskMasks(mlp(), config=cfg, delta_t=4)
    with pytest.raises(ValueError, match="budgets and masks itself"):
        sa.TaskMasks(mlp(), config=cfg.replace(budgets={"0.weight": 3}))


def test_avalanche_plugins_take_one_config():
    from sparse_agents.avalanche.plugins import DSTPlugin, TaskMaskPlugin

    cfg = SparseConfig(sparsity=0.8, updater="rigl", delta_t=2)
    assert DSTPlugin(config=cfg).config is cfg
    assert DSTPlugin(0.8, "rigl", delta_t=2).config == cfg
    assert TaskMaskPlugin(0.8, "rigl", delta_t=2).config == cfg
    with pytest.raises(ValueError, match=r"DSTPlugin got config= and .*\['updater'\]"):
        DSTPlugin(updater="set", config=cfg)
    with pytest.raises(ValueError, match="drop_fraction must be in"):
        TaskMaskPlugin(drop_fraction=2.0)  # checked when the plugin is built


def test_study_job_carries_one_config_and_keeps_its_id():
    from sparse_agents.study.job import Job

    job = Job("digits", "uniform", 0.8, "set", 1, {"epochs": 2, "drop_fraction": 0.4})
    cfg = job.sparse_config(delta_t=10)
    assert cfg == SparseConfig(sparsity=0.8, updater="set", distribution="uniform", seed=1,
                               delta_t=10, drop_fraction=0.4)
    assert Job("digits", "none", 0.0, "dense", 1).sparse_config() is None
    # the id is a hash of the job's fields, as before the config existed (a resumed study
    # finds its finished runs): this one was computed by the code before it
    assert Job("cl:split-digits", "erk", 0.5, "srigl", 0, {
        "epochs": 20, "sparsity_scope": "network", "task_masks": True}).job_id == \
        "cl-split-digits__erk__srigl__s0.5__seed0__76e04659"


# ---------------------------------------------------------------------- no second list
#: option names that are string literals outside config.py, topology.py and the SB3
#: adapter (whose options are a superset, wired to the config separately), with why
ALLOWED = {
    ("continual/experiment.py", "delta_t"): "the runner's own default: a task's steps / 8",
    ("continual/experiment.py", "t_end"): "the runner's own default: 0.75 of a task's steps",
    ("sparse_agents/task_masks.py", "dense_layers"): "the name in select_layers' error",
    ("sparse_agents/experiments/rl_run.py", "delta_t"): "an SB3 sparse option (with "
                                                       "t_end_fraction) sparse-train takes "
                                                       "as a flag (FLAG_OPTIONS)",
    ("sparse_agents/experiments/rl_run.py", "drop_fraction"): "an SB3 sparse option",
    ("sparse_agents/experiments/rl_stream.py", "dense_layers"): "an SB3 policy keyword",
}
#: the names that mean nothing else in this code base (``sparsity``, ``seed``, ``masks``,
#: ``compute``... are also ordinary words and record keys)
DISTINCT = ("delta_t", "t_end", "drop_fraction", "gamma_sal", "dense_layers", "renormalise",
            "output_layers", "ablate_output", "grad_masking", "exclude_layers", "sparse_init")


def test_no_module_lists_the_options_by_hand():
    assert set(DISTINCT) <= set(SparseConfig.FIELDS)
    found = set()
    for top in ("sparse_agents", "continual", "envs"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ("sparse_agents/config.py", "sparse_agents/topology.py") or \
                    rel.startswith("sparse_agents/sb3/"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in DISTINCT:
                    found.add((rel, node.value))
    assert found - set(ALLOWED) == set(), "list them through SparseConfig.FIELDS / pick"
    assert set(ALLOWED) - found == set(), "stale allowances: drop them from ALLOWED"
