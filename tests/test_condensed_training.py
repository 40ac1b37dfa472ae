"""Condensed training (``SparseTopology(compute=...)``, DESIGN section 5b): one step under
``"condensed"`` equals one under ``"masked"``, checkpoints cross modes, the optimizer
steps only the active values, and the dense gradient is computed only before updates."""

from __future__ import annotations

import copy
import io
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import sparse_agents as sa
from sparse_agents.compute import VALUES, Structure, condensed_linear
from sparse_agents.compute import kernels as K

OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
}


def mlp(sizes: list[int], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train(compute: str, sizes, sparsity, updater, optimizer, steps=5, batch=16, impl=None,
          clip=None, seed=0):
    """Train a fresh MLP ``steps`` steps (an update every 2) and return what to compare."""
    model = mlp(sizes, seed)
    opt = OPTIMIZERS[optimizer](model.parameters())
    topo = sa.SparseTopology(model, opt, sparsity=sparsity, updater=updater, delta_t=2,
                             drop_fraction=0.3, grad_masking="backward", compute=compute,
                             seed=seed)
    if impl is not None:
        for layer in topo.layers:
            if layer.condensed is not None:
                layer.condensed.impl = impl
    gen = torch.Generator().manual_seed(seed + 1)
    losses, grads = [], []
    for _ in range(steps):
        x = torch.randn(batch, sizes[0], generator=gen)
        target = torch.randn(batch, sizes[-1], generator=gen)
        loss = (model(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            grads.append(float(norm))
        grads.append({x.name: dense_grad(x) for x in topo.layers})
        opt.step()
        losses.append(loss.item())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return losses, grads, state, copy.deepcopy(opt.state_dict()), topo


def dense_grad(layer) -> torch.Tensor:
    """The layer's gradient at the weight's shape (0 outside the mask)."""
    ct = layer.condensed
    if ct is None:
        return layer.weight.grad.clone()
    out = torch.zeros(layer.weight.numel())
    out[ct.structure.flat] = ct.values.grad
    return out.view(layer.weight.shape)


def close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    """``a`` equals ``b`` to ``rtol`` relative to ``b``'s size (a norm-wise relative
    error: single entries near 0 may differ more, as any two float summation orders)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape
    err = float((a - b).norm())
    assert err <= rtol * float(b.norm()) + 1e-12, f"relative error {err / float(b.norm())}"


def assert_same_run(a, b, rtol=1e-5):
    la, ga, sa_, oa, _ = a
    lb, gb, sb, ob, _ = b
    for x, y in zip(la, lb, strict=True):
        assert x == pytest.approx(y, rel=rtol)
    for x, y in zip(ga, gb, strict=True):
        if isinstance(x, float):
            assert x == pytest.approx(y, rel=rtol)
            continue
        for name in x:
            close(x[name], y[name], rtol)
    assert list(sa_) == list(sa_) and set(sa_) == set(sb)
    for key in sa_:
        if sa_[key].dtype == torch.bool:
            assert torch.equal(sa_[key], sb[key]), key
        else:
            close(sa_[key], sb[key], rtol)
    for i, entry in oa["state"].items():
        for key, value in entry.items():
            close(value, ob["state"][i][key], rtol)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(widths=st.lists(st.integers(4, 40), min_size=2, max_size=4),
       sparsity=st.sampled_from([0.5, 0.8, 0.9, 0.95]),
       updater=st.sampled_from(["static", "set", "rigl", "srigl"]),
       optimizer=st.sampled_from(sorted(OPTIMIZERS)),
       impl=st.sampled_from(["numba", "torch"]),
       seed=st.integers(0, 3))
def test_condensed_steps_equal_masked_steps(widths, sparsity, updater, optimizer, impl, seed):
    if impl == "numba" and not K.NUMBA_AVAILABLE:
        impl = "torch"
    masked = train("masked", widths, sparsity, updater, optimizer, seed=seed)
    condensed = train("condensed", widths, sparsity, updater, optimizer, impl=impl, seed=seed)
    assert condensed[4].condensed_layers == [x.name for x in condensed[4].layers]
    assert_same_run(masked, condensed)


def test_srigl_ablation_resizes_the_values_and_the_optimizer_follows():
    """SRigL's neuron ablation changes the active count: the values become a new
    parameter, in the module and the optimizer, and a graph built before stays valid."""
    runs = {c: train(c, [8, 64, 64, 4], 0.95, "srigl", "adam", steps=12)
            for c in ("masked", "condensed")}
    topo = runs["condensed"][4]
    sizes = {x.name: x.condensed.values.numel() for x in topo.layers}
    assert any(size != x.budget for size, x in zip(sizes.values(), topo.layers, strict=True))
    params = {id(p) for g in topo.optimizer.param_groups for p in g["params"]}
    for layer in topo.layers:
        assert id(layer.condensed.values) in params
        assert getattr(layer.module, VALUES) is layer.condensed.values
    assert_same_run(runs["masked"], runs["condensed"])


def test_clipping_sees_the_sparse_gradient():
    masked = train("masked", [16, 48, 48, 4], 0.9, "rigl", "adam", clip=0.5)
    condensed = train("condensed", [16, 48, 48, 4], 0.9, "rigl", "adam", clip=0.5)
    assert_same_run(masked, condensed)


def test_checkpoints_load_across_compute_modes_and_into_a_plain_model():
    losses, _, state, opt_state, topo = train("condensed", [12, 40, 40, 3], 0.9, "srigl", "adam")
    masked_run = train("masked", [12, 40, 40, 3], 0.9, "srigl", "adam")
    # same keys, same shapes as a masked run's checkpoint
    assert set(state) == set(masked_run[2])
    assert all(state[k].shape == masked_run[2][k].shape for k in state)
    for entry in opt_state["state"].values():
        assert entry["exp_avg"].dim() == 2 or entry["exp_avg"].dim() == 1
    buf = io.BytesIO()
    torch.save({"model": state, "opt": opt_state, "topo": topo.state_dict()}, buf)
    x = torch.randn(5, 12)
    expected = topo.model(x)
    for compute in ("masked", "condensed"):
        buf.seek(0)
        ckpt = torch.load(buf, weights_only=False)
        model = mlp([12, 40, 40, 3], seed=7)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        other = sa.SparseTopology(model, opt, sparsity=0.9, updater="srigl", delta_t=2,
                                  compute=compute, seed=7)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        other.load_state_dict(ckpt["topo"])
        torch.testing.assert_close(model(x), expected)
        # the state written back is the state read in
        for i, entry in opt.state_dict()["state"].items():
            for key, value in entry.items():
                torch.testing.assert_close(value, ckpt["opt"]["state"][i][key])
    plain = mlp([12, 40, 40, 3], seed=9)
    plain.load_state_dict({k: v for k, v in state.items() if not k.endswith("weight_mask")})
    torch.testing.assert_close(plain(x), expected)


def test_optimizer_steps_only_the_active_values():
    model = mlp([32, 512, 512, 4])
    opt = torch.optim.Adam(model.parameters())
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="rigl", compute="condensed")
    trained = [p for g in opt.param_groups for p in g["params"]]
    assert sum(p.numel() for p in trained) == sum(
        int(x.mask.sum()) for x in topo.layers) + sum(m.bias.numel() for m in model
                                                      if isinstance(m, nn.Linear))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in trained)
    loss = model(torch.randn(8, 32)).sum()
    loss.backward()
    opt.step()
    for layer in topo.layers:  # invariant 1: the dense weight is 0 outside the mask
        assert not layer.weight[~layer.mask].any()
        assert layer.weight.grad is None


def test_dense_gradient_is_computed_only_before_update_steps(monkeypatch):
    model = mlp([16, 64, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="rigl", delta_t=3,
                             compute="condensed")
    sparse_products = []  # weight gradients computed by the condensed kernels

    def counting(real):
        def fn(*args, **kwargs):
            sparse_products.append(real.__name__)
            return real(*args, **kwargs)
        return fn

    monkeypatch.setattr(K, "backward_weight", counting(K.backward_weight))
    monkeypatch.setattr(K, "backward_both", counting(K.backward_both))
    kept = []
    for _ in range(6):
        opt.zero_grad()
        model(torch.randn(8, 16)).pow(2).sum().backward()
        kept.append(all(x.condensed.dense_grad is not None for x in topo.layers))
        opt.step()
    # steps 3 and 6 are updates: their backward kept the dense gradient, no other did
    assert kept == [False, False, True, False, False, True]
    assert len(sparse_products) == 4 * len(topo.layers)
    assert topo.n_updates == 2


def test_auto_runs_the_kernels_only_where_they_measured_faster():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 256), nn.ReLU(),
                          nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(),
                          nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 4))
    opt = torch.optim.Adam(model.parameters())
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="srigl", compute="auto")
    assert topo.condensed_layers == [x.name for x in topo.layers]  # CPU float32: all
    kernels = {x.module_name: [b for b in (1, 32, 127, 128, 256)
                               if x.condensed.use_kernels(b)] for x in topo.layers}
    density = {x.module_name: x.budget / x.weight.numel() for x in topo.layers}
    assert density["4"] <= 0.2 and density["8"] <= 0.2
    assert kernels["8"] == [1, 32, 127, 128, 256]  # 2^18 weights: every batch
    assert kernels["4"] == [128, 256]  # 2^16 weights: large batches only
    # small layers: the dense product, except at large batches next to kernel layers
    assert kernels["0"] == kernels["2"] == kernels["10"] == [128, 256]
    # a network the kernels never compute stays masked (no per-call overhead)
    small = sa.SparseTopology(mlp([8, 64, 64, 4]), None, sparsity=0.9, compute="auto")
    small.attach(torch.optim.Adam(small.model.parameters()))
    assert small.condensed_layers == []
    masked = sa.SparseTopology(mlp([8, 512, 512, 4]), None, compute="masked")
    masked.attach(torch.optim.Adam(masked.model.parameters()))
    assert masked.condensed_layers == []


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_auto_on_small_layers_is_bit_identical_to_masked(optimizer):
    """Where auto computes the dense product on the weight (here: batch 16, a 256x256
    layer the kernels compute from batch 128), the run is the masked run: the same
    products, and an element-wise optimizer on the active entries only."""
    masked = train("masked", [8, 256, 256, 4], 0.9, "rigl", optimizer, steps=6)
    auto = train("auto", [8, 256, 256, 4], 0.9, "rigl", optimizer, steps=6)
    assert auto[4].condensed_layers == [x.name for x in auto[4].layers]
    assert not any(x.condensed.use_kernels(16) for x in auto[4].layers)
    assert masked[0] == auto[0]
    for key, value in masked[2].items():
        assert torch.equal(value, auto[2][key]), key


def test_condensed_refuses_what_it_cannot_train():
    model = mlp([8, 32, 4])
    with pytest.raises(ValueError, match="compute must be one of"):
        sa.SparseTopology(model, torch.optim.SGD(model.parameters(), lr=0.1), compute="fast")
    model = mlp([8, 32, 4])
    with pytest.raises(ValueError, match="LBFGS is not elementwise"):
        sa.SparseTopology(model, torch.optim.LBFGS(model.parameters()), compute="condensed")
    # auto falls back to masked where condensed is not possible
    model = mlp([8, 512, 512, 4])
    topo = sa.SparseTopology(model, torch.optim.LBFGS(model.parameters()), compute="auto")
    assert topo.condensed_layers == []


def test_detach_restores_masked_linear_layers():
    model = mlp([8, 64, 4])
    opt = torch.optim.Adam(model.parameters())
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="set", compute="condensed")
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    x = torch.randn(3, 8)
    before = model(x)
    topo.detach()
    assert all(condensed_linear(m) is None for m in model)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight",
                                                         "2.bias"]
    assert all(p in opt.state for p in model.parameters())
    torch.testing.assert_close(model(x), before)


def test_a_deep_copy_trains_on_its_own_values():
    model = mlp([8, 64, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sa.SparseTopology(model, opt, sparsity=0.8, updater="set", compute="condensed")
    twin = copy.deepcopy(model)
    x = torch.randn(3, 8)
    torch.testing.assert_close(twin(x), model(x))
    with torch.no_grad():
        getattr(twin[0], VALUES).add_(1.0)
    assert not torch.allclose(twin(x), model(x))
    assert condensed_linear(twin[0]).module is twin[0]


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_condensed_forward_under_no_grad_equals_masked(batch):
    model = mlp([24, 96, 5])
    opt = torch.optim.Adam(model.parameters())
    sa.SparseTopology(model, opt, sparsity=0.9, updater="srigl", compute="condensed")
    x = torch.randn(batch, 24)
    with torch.no_grad():
        y = model(x)
    expected = torch.nn.functional.linear(torch.relu(
        torch.nn.functional.linear(x, model[0].weight, model[0].bias)), model[2].weight,
        model[2].bias)
    torch.testing.assert_close(y, expected)


def test_structure_indexes_every_active_entry_once():
    mask = torch.rand(13, 7) < 0.3
    s = Structure.from_mask(mask)
    assert s.nnz == int(mask.sum())
    rows = torch.repeat_interleave(torch.arange(13), s.rowptr.diff())
    assert torch.equal(rows * 7 + s.col.long(), s.flat)
    cols = torch.repeat_interleave(torch.arange(7), s.colptr.diff())
    assert torch.equal(s.flat[s.perm.long()], s.rowt.long() * 7 + cols)


DEVICE = os.environ.get("SPARSE_AGENTS_TEST_DEVICE", "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(torch.device(DEVICE).type == "cuda" and not torch.cuda.is_available(),
                    reason="needs CUDA (SPARSE_AGENTS_TEST_DEVICE=cpu runs it on the CPU)")
def test_condensed_steps_equal_masked_steps_on_the_test_device():
    runs = {}
    for compute in ("masked", "condensed"):
        model = mlp([32, 256, 256, 8]).to(DEVICE)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="rigl", delta_t=2,
                                 compute=compute, grad_masking="backward")
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            x = torch.randn(64, 32, generator=gen).to(DEVICE)
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        runs[compute] = (loss.item(), {k: v.cpu() for k, v in model.state_dict().items()},
                         topo.condensed_layers)
    assert runs["condensed"][2]
    assert runs["masked"][0] == pytest.approx(runs["condensed"][0], rel=1e-4)
    for key, value in runs["masked"][1].items():
        torch.testing.assert_close(value, runs["condensed"][1][key], rtol=1e-4, atol=1e-5)


def test_small_batch_forward_follows_values_changed_in_place():
    """SB3's polyak_update moves a target network's values in place: a forward under
    no_grad must compute with them, not with the dense weight written before."""
    model = mlp([16, 64, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sa.SparseTopology(model, opt, sparsity=0.9, updater="set", compute="condensed")
    x = torch.randn(1, 16)
    with torch.no_grad():
        before = model(x)
        for m in (model[0], model[2]):
            getattr(m, VALUES).mul_(0.5)
        after = model(x)
        model[0].weight.mul_(0.5)  # what the dense layers would hold
        model[2].weight.mul_(0.5)
        expected = model[2](torch.relu(torch.nn.functional.linear(x, model[0].weight,
                                                                  model[0].bias)))
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected)


def test_bench_training_writes_its_parts_atomically_and_skips_them_when_done(tmp_path):
    from sparse_agents.experiments.bench import training as bench

    args = ["--parts", "layers", "--sizes", "24x16", "--batches", "4", "--sparsities", "0.5",
            "--quick", "--out", str(tmp_path), "--plot", str(tmp_path / "layers.png")]
    assert bench.main(args) == 0
    rows = (tmp_path / "layers.csv").read_text().splitlines()
    methods = {r.split(",")[3] for r in rows[1:]}
    assert {"dense", "masked", "condensed"} <= methods
    assert rows[1].startswith("24x16,4,0.5,")
    assert (tmp_path / "layers.png").exists()
    before = (tmp_path / "layers.csv").stat().st_mtime_ns
    assert bench.main(args) == 0  # done: skipped
    assert (tmp_path / "layers.csv").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="--sizes takes N or OUTxIN"):
        bench.parse_shape("12x")


def test_a_whole_model_pickles_and_trains_condensed_after_loading(tmp_path):
    """``torch.save(model)`` of a model under ``compute="auto"`` (its layers carry the
    rule and the kernels' structure) loads and computes what it did."""
    model = mlp([16, 512, 512, 4])
    opt = torch.optim.Adam(model.parameters())
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="rigl", compute="auto")
    assert topo.condensed_layers
    x = torch.randn(200, 16)
    model(x).sum().backward()
    opt.step()
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    torch.testing.assert_close(loaded(x), model(x))
    assert condensed_linear(loaded[2]).module is loaded[2]


def test_condense_and_flops_read_a_model_that_trains_condensed():
    model = mlp([16, 256, 256, 4])
    opt = torch.optim.Adam(model.parameters())
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="srigl", compute="condensed")
    model(torch.randn(8, 16)).sum().backward()
    opt.step()
    x = torch.randn(5, 16)
    torch.testing.assert_close(sa.condense(model)(x), model(x))
    active = sum(int(x.mask.sum()) for x in topo.layers)
    assert sa.flops(model, (16,)).sparse == pytest.approx(2 * active + 2 * sum(
        m.bias.numel() for m in model if isinstance(m, nn.Linear)), rel=0.05)


@pytest.mark.skipif(not K.NUMBA_AVAILABLE, reason="numba kernels")
def test_kernels_run_on_as_many_threads_as_torch():
    """A sweep's process runs torch on one thread per core; numba's default (every core)
    would oversubscribe the cores."""
    import numba

    s = Structure.from_mask(torch.rand(64, 64) < 0.2)
    xt, v, b = torch.randn(64, 8), torch.randn(s.nnz), torch.zeros(64)
    before = torch.get_num_threads()
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            torch.set_num_threads(n)
            K.forward(s, xt, v, b, "numba")
            assert numba.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
