"""SparseTopology: invariants 1-3 and 6 (docs/architecture.md), errors, metrics."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import batch, cnn, make_opt, mlp, train_step
from hypothesis import given, settings
from hypothesis import strategies as st
from invariants import check_topology
from torch import nn

import sparse_agents as sa
from sparse_agents.updaters import REGISTRY

UPDATERS = list(REGISTRY)  # every registered updater


def check_invariants(topo: sa.SparseTopology, opt: torch.optim.Optimizer) -> None:
    check_topology(topo, opt)


@pytest.mark.parametrize("updater", UPDATERS)
@pytest.mark.parametrize("model_fn", [mlp, cnn], ids=["linear", "conv"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("grad_masking", ["step", "backward"])
def test_invariants_during_training(updater, model_fn, opt_name, grad_masking):
    model = model_fn()
    opt = make_opt(opt_name, model)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater=updater, delta_t=3,
                             drop_fraction=0.5, grad_masking=grad_masking)
    before = {k: v.clone() for k, v in topo.masks.items()}
    check_invariants(topo, opt)
    for step in range(13):
        train_step(model, opt, step)
        check_invariants(topo, opt)
    assert topo.step == 13
    assert topo.n_updates == (0 if updater == "static" else 4)
    changed = any(not torch.equal(before[k], v) for k, v in topo.masks.items())
    assert changed == (updater != "static")


@pytest.mark.parametrize("updater", ["set", "rigl", "srigl"])
def test_update_zeroes_dropped_and_grown_weights_and_adam_state(updater):
    model = mlp()
    opt = make_opt("adam", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater=updater, delta_t=10**6)
    for step in range(5):
        train_step(model, opt, step)
    old = {k: v.clone() for k, v in topo.masks.items()}
    x, y = batch(model, 99)
    nn.functional.cross_entropy(model(x), y).backward()
    topo.update()
    for layer in topo.layers:
        new = layer.mask
        grown = new & ~old[layer.name]
        dropped = old[layer.name] & ~new
        assert grown.any() and dropped.any()
        w = layer.weight
        assert torch.all(w[grown] == 0) and torch.all(w[dropped] == 0)
        state = opt.state[w]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.all(state[key][grown] == 0), key
            assert torch.all(state[key][dropped] == 0), key
    check_invariants(topo, opt)


def test_adamw_weight_decay_keeps_inactive_zero():
    model = mlp()
    opt = make_opt("adamw", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="rigl", delta_t=2)
    for step in range(7):
        train_step(model, opt, step)
        check_invariants(topo, opt)


@pytest.mark.parametrize("updater", UPDATERS)
def test_determinism_under_seed(updater):
    def run():
        model = mlp(seed=3)
        opt = make_opt("adam", model)
        topo = sa.SparseTopology(model, opt, sparsity=0.85, updater=updater, delta_t=2, seed=5)
        for step in range(9):
            train_step(model, opt, step)
        return topo.masks, model.state_dict()

    (m1, s1), (m2, s2) = run(), run()
    for k in m1:
        assert torch.equal(m1[k], m2[k])
    for k in s1:
        assert torch.equal(s1[k], s2[k])


def test_different_seeds_give_different_masks():
    m1 = sa.SparseTopology(mlp(), None, sparsity=0.8, updater="set", seed=0).masks
    m2 = sa.SparseTopology(mlp(), None, sparsity=0.8, updater="set", seed=1).masks
    assert any(not torch.equal(m1[k], m2[k]) for k in m1)


def test_rigl_growth_uses_dense_gradient_with_backward_masking():
    model = mlp()
    opt = make_opt("sgd", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="rigl", delta_t=1,
                             drop_fraction=0.3, grad_masking="backward")
    x, y = batch(model, 0)
    # Reference dense gradient, computed on a copy with the same (masked) weights.
    ref = mlp()
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if "mask" not in k},
                        strict=False)
    nn.functional.cross_entropy(ref(x), y).backward()
    dense = {n: p.grad for n, p in ref.named_parameters()}
    old = {k: v.clone() for k, v in topo.masks.items()}
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    # Gradients seen by clipping are already sparse.
    for layer in topo.layers:
        assert torch.all(layer.weight.grad[~layer.mask] == 0)
    opt.step()  # step 1 is an update step (delta_t=1)
    for layer in topo.layers:
        grown = layer.mask & ~old[layer.name]
        not_grown = ~layer.mask & ~old[layer.name]
        g = dense[layer.name].abs()
        assert grown.any()
        assert g[grown].min() >= g[not_grown].max()


def test_output_layer_protected_from_the_first_update_and_gamma_per_layer():
    model = mlp(sizes=(12, 64, 64, 4))
    opt = make_opt("sgd", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.95, updater="srigl", delta_t=1,
                             gamma_sal={"0": 0.9})
    train_step(model, opt, 0)  # the first update finds the output layer by forward order
    assert [x.allow_ablation for x in topo.layers] == [True, True, False]
    assert [x.gamma_sal for x in topo.layers] == [0.9, 0.3, 0.3]


def test_dense_layers_by_name_and_regex():
    model = cnn()
    topo = sa.SparseTopology(model, make_opt("sgd", model), sparsity=0.8, dense_layers=["0"])
    assert "0.weight" not in topo.masks and "0.weight" in topo.dense_names
    assert not hasattr(model[0], "weight_mask")
    topo2 = sa.SparseTopology(cnn(), None, sparsity=0.3, dense_layers=[r"[0-2]"])
    assert list(topo2.masks) == ["5.weight"]


def test_only_layers_the_optimizer_trains_are_masked():
    model = mlp()
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1)
    topo = sa.SparseTopology(model, opt, sparsity=0.5)
    assert list(topo.masks) == ["2.weight"]


def test_metrics():
    model = mlp()
    opt = make_opt("adam", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="srigl", delta_t=2)
    for step in range(6):
        train_step(model, opt, step)
    m = topo.metrics()
    for key in ("density", "itop", "updates", "step", "density/0", "alive/0",
                "alive_frac/0", "fan_in_mean/0", "fan_in_min/0", "fan_in_max/4"):
        assert key in m
    total = sum(x.weight.numel() for x in topo.layers)
    assert m["density"] == pytest.approx(sum(int(x.mask.sum()) for x in topo.layers) / total)
    assert m["itop"] >= m["density"] - 1e-9
    assert m["updates"] == 3 and m["step"] == 6  # updates before steps 2, 4 and 6



def test_remask_after_weights_written_in_place():
    model = mlp()
    opt = make_opt("adam", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, delta_t=10**6)
    train_step(model, opt, 0)
    with torch.no_grad():  # e.g. FromScratchTraining resetting the weights
        for layer in topo.layers:
            layer.weight.fill_(1.0)
            opt.state[layer.weight]["exp_avg"].fill_(1.0)
    topo.remask()
    for layer in topo.layers:
        assert torch.equal(layer.weight != 0, layer.mask)
        assert bool((opt.state[layer.weight]["exp_avg"][~layer.mask] == 0).all())
    check_invariants(topo, opt)

def test_masks_are_buffers_in_state_dict():
    model = mlp()
    sa.SparseTopology(model, None, sparsity=0.8)
    keys = model.state_dict().keys()
    assert {"0.weight_mask", "2.weight_mask", "4.weight_mask"} <= set(keys)


def test_freeze_keeps_entries_bit_identical_under_weight_decay():
    model = mlp()
    opt = make_opt("adamw", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=2)
    layer = topo.layers[0]
    # Freeze a block outside the mask with nonzero values.
    frozen = ~layer.mask
    frozen[:, 6:] = False
    with torch.no_grad():
        layer.weight[frozen] = 0.5
    topo.freeze(layer.name, frozen)
    for step in range(7):
        train_step(model, opt, step)
        assert torch.all(layer.weight[frozen] == 0.5)
        assert not (layer.mask & frozen).any()


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity=1.0), r"sparsity must be in \[0, 1\)"),
        (dict(sparsity=-0.1), r"sparsity must be in \[0, 1\)"),
        (dict(updater="magic"), "updater must be one of"),
        (dict(distribution="magic"), "distribution must be one of"),
        (dict(schedule="linearish"), "schedule must be one of"),
        (dict(delta_t=0), "delta_t must be an integer >= 1"),
        (dict(drop_fraction=0.0), r"drop_fraction must be in \(0, 1\)"),
        (dict(drop_fraction=1.0), r"drop_fraction must be in \(0, 1\)"),
        (dict(gamma_sal=1.5), r"gamma_sal must be in \[0, 1\]"),
        (dict(dense_layers=["nope"]), "dense_layers pattern 'nope' matches no"),
        (dict(grad_masking="later"), "grad_masking must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sa.SparseTopology(mlp(), None, **kwargs)


def test_no_maskable_layer():
    with pytest.raises(ValueError, match="no maskable layer"):
        sa.SparseTopology(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)), None)


def test_update_without_gradients():
    topo = sa.SparseTopology(mlp(), None, updater="rigl")
    with pytest.raises(ValueError, match="backward"):
        topo.update()


def test_load_state_dict_rejects_missing_or_misshaped_masks():
    topo = sa.SparseTopology(mlp(), None, sparsity=0.8)
    sd = topo.state_dict()
    bad = dict(sd, masks={k: v for k, v in sd["masks"].items() if k != "2.weight"})
    with pytest.raises(ValueError, match="no mask for layer '2.weight'"):
        topo.load_state_dict(bad)
    wrong = dict(sd, masks=dict(sd["masks"], **{"2.weight": torch.ones(3, 3, dtype=torch.bool)}))
    with pytest.raises(ValueError, match="shape"):
        topo.load_state_dict(wrong)
    with pytest.raises(ValueError, match="masks"):
        topo.load_state_dict({"step": 3})


def test_model_checkpoint_without_masks_is_refused():
    dense = mlp()
    model = mlp()
    sa.SparseTopology(model, None, sparsity=0.8)
    with pytest.raises(ValueError, match="no mask"):
        model.load_state_dict(dense.state_dict())
    sd = model.state_dict()
    sd["0.weight_mask"] = torch.ones(2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape"):
        model.load_state_dict(sd)


# ----------------------------------------------------------------- invariant 6
CHILD = Path(__file__).with_name("topology_resume_child.py")


@pytest.mark.parametrize("updater", ["rigl", "srigl"])
def test_checkpoint_round_trip_in_fresh_process(tmp_path, updater):
    full = tmp_path / "full.pt"
    half = tmp_path / "half.pt"
    resumed = tmp_path / "resumed.pt"
    run = [sys.executable, str(CHILD), updater]
    subprocess.run(run + ["train", "0", "20", str(full)], check=True)
    subprocess.run(run + ["train", "0", "11", str(half)], check=True)
    subprocess.run(run + ["resume", str(half), "20", str(resumed)], check=True)
    a, b = torch.load(full), torch.load(resumed)
    assert a["topo"]["step"] == b["topo"]["step"] == 20
    assert a["topo"]["n_updates"] == b["topo"]["n_updates"] > 0
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["topo"]["masks"].items():
        assert torch.equal(v, b["topo"]["masks"][k]), k


# ----------------------------------------------------------------- property-based
@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=3, max_size=5),
    sparsity=st.floats(0.0, 0.98),
    updater=st.sampled_from(UPDATERS),
    distribution=st.sampled_from(["uniform", "er", "erk"]),
    seed=st.integers(0, 1000),
    opt_name=st.sampled_from(["sgd", "adam", "adamw"]),
)
def test_property_invariants_over_shapes(sizes, sparsity, updater, distribution, seed, opt_name):
    sizes[-1] = max(sizes[-1], 2)  # at least two classes
    model = mlp(seed=seed, sizes=tuple(sizes))
    opt = make_opt(opt_name, model)
    topo = sa.SparseTopology(model, opt, sparsity=sparsity, updater=updater,
                             distribution=distribution, delta_t=2, seed=seed)
    check_invariants(topo, opt)
    for step in range(6):
        train_step(model, opt, step)
        check_invariants(topo, opt)


def test_restart_runs_the_schedule_again():
    model = mlp()
    opt = make_opt("adam", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="set", delta_t=2, t_end=4,
                             seed=0)
    for i in range(6):
        train_step(model, opt, i)
    assert topo.step == 6 and topo.n_updates == 1  # step 2 only (t_end=4)
    topo.restart(reset_updates=False)
    assert topo.step == 0 and topo.n_updates == 1
    for i in range(3):
        train_step(model, opt, i)
    assert topo.n_updates == 2  # step 2 of the restarted schedule
    topo.restart()
    assert topo.step == 0 and topo.n_updates == 0


def test_exclude_layers_are_neither_masked_nor_counted():
    model = mlp()
    topo = sa.SparseTopology(model, None, sparsity=0.8, updater="set", distribution="erk",
                             exclude_layers=[r"4"], seed=0)
    assert not hasattr(model[4], "weight_mask") and "4.weight" not in topo.masks
    shapes = [tuple(model[i].weight.shape) for i in (0, 2)]
    want = sa.layer_densities(shapes, 0.8, method="erk")  # as if layer 4 did not exist
    assert [x.density for x in topo.layers] == pytest.approx(want)
    kept = sum(int(m.sum()) for m in topo.masks.values())
    assert abs(kept - 0.2 * sum(a * b for a, b in shapes)) <= 2
    with pytest.raises(ValueError, match="exclude_layers"):
        sa.SparseTopology(mlp(), None, exclude_layers=["nope"])
