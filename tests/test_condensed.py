"""Condensed layers: ``condense(model)(x)`` equals the masked dense ``model(x)`` (to float
tolerance)."""

from __future__ import annotations

import ast
import copy
import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import sparse_agents.condensed as condensed_pkg
from sparse_agents.condensed import (
    KERNELS,
    CondensedLinear,
    CondenseWarning,
    PaddedCondensedLinear,
    condense,
    index_dtype,
    kernel_choices,
    refresh,
)
from sparse_agents.condensed import kernels as K

ACTS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "gelu": nn.GELU, "identity": nn.Identity,
}
CPU_KERNELS = [k for k in K.CPU_KERNELS if K.NUMBA_AVAILABLE or not k.startswith("numba")]
TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(autouse=True)
def _fast_measurement(monkeypatch):
    """The automatic choice times candidates; keep that short in tests."""
    monkeypatch.setattr(K, "MEASURE_BUDGET_S", 0.01)


# ------------------------------------------------------------------ helpers
def make_mask(n_out: int, n_in: int, density: float, kind: str, ablate: int,
              g: torch.Generator) -> torch.Tensor:
    """Constant fan-in (every alive row has k) or variable fan-in, ``ablate`` empty rows."""
    if kind == "constant":
        k = max(1, round(density * n_in))
        scores = torch.rand(n_out, n_in, generator=g)
        idx = scores.topk(k, dim=1).indices
        mask = torch.zeros(n_out, n_in, dtype=torch.bool).scatter_(1, idx, True)
    else:
        mask = torch.rand(n_out, n_in, generator=g) < density
    if ablate:
        mask[torch.randperm(n_out, generator=g)[:ablate]] = False
    return mask


def mask_linear(lin: nn.Linear, mask: torch.Tensor) -> nn.Linear:
    lin.register_buffer("weight_mask", mask)
    with torch.no_grad():
        lin.weight.mul_(mask)
        if lin.bias is not None:  # nonzero biases so that folding matters
            lin.bias.uniform_(-1.0, 1.0)
    return lin


def masked_mlp(sizes, density=0.3, kind="constant", ablate=0, act="relu", seed=0,
               final_act=False) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        n_abl = min(ablate, b - 1) if i < len(sizes) - 2 else min(ablate, b // 2)
        layers += [mask_linear(nn.Linear(a, b), make_mask(b, a, density, kind, n_abl, g)),
                   ACTS[act]()]
    return nn.Sequential(*(layers if final_act else layers[:-1]))


def assert_same(condensed: nn.Module, model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(condensed(x), model(x), **TOL)


def masked_train_steps(model: nn.Module, steps: int = 3, seed: int = 0) -> None:
    """SGD steps that keep masked-out weights at exactly 0 (masks fixed)."""
    g = torch.Generator().manual_seed(seed)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        x = torch.randn(8, first.in_features, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "weight_mask"):
                    m.weight.mul_(m.weight_mask)


def linears(model: nn.Module) -> list[CondensedLinear]:
    return [m for m in model.modules() if isinstance(m, CondensedLinear)]


# ------------------------------------------------------------------ property tests
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=4),
    density=st.floats(0.05, 1.0),
    kind=st.sampled_from(["constant", "variable"]),
    ablate=st.integers(0, 3),
    act=st.sampled_from(sorted(ACTS)),
    kernel=st.sampled_from(CPU_KERNELS),
    seed=st.integers(0, 2**16),
)
def test_condense_equals_masked_dense(sizes, density, kind, ablate, act, kernel, seed):
    model = masked_mlp(sizes, density, kind, ablate, act, seed)
    fast = condense(model, kernel=kernel)
    for batch in (1, 257):
        x = torch.randn(batch, sizes[0], generator=torch.Generator().manual_seed(seed))
        assert_same(fast, model, x)


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("kind", ["constant", "variable"])
def test_every_activation_with_ablation_auto_kernel(act, kind):
    model = masked_mlp([24, 32, 32, 6], 0.25, kind, ablate=5, act=act, seed=1)
    fast = condense(model)
    hidden = linears(fast)
    assert hidden[0].n_alive <= 32 - 5 and hidden[1].in_features == hidden[0].n_alive
    assert isinstance(hidden[0], PaddedCondensedLinear) == (kind == "variable")
    for batch in (1, 257):
        assert_same(fast, model, torch.randn(batch, 24))


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_each_kernel_on_a_paper_like_layer(kernel):
    model = masked_mlp([300, 80], 0.1, "constant", ablate=4, seed=2)
    fast = condense(model, kernel=kernel)
    for batch in (1, 3, 8, 70, 257):
        assert_same(fast, model, torch.randn(batch, 300))
        assert linears(fast)[0].chosen_kernels[batch.bit_length()] == kernel
        with torch.no_grad():
            assert fast(torch.randn(batch, 300)).is_contiguous()


# ------------------------------------------------------------------ ablation / folding
def test_ablated_neurons_are_folded_and_dropped():
    model = masked_mlp([10, 8, 6, 3], 0.5, "constant", act="tanh", seed=3)
    l0, l1 = model[0], model[2]
    l0.weight_mask[[1, 4]] = False
    l0.weight.data *= l0.weight_mask
    fast = condense(model, kernel="dense")
    c0, c1, c2 = linears(fast)
    assert 1 not in c0.source_rows.tolist() and 4 not in c0.source_rows.tolist()
    assert c0.n_alive <= 6 and c1.in_features == c0.n_alive
    report = fast.condense_report.condensed
    assert report[0].ablated == 2 and report[0].name == "0"
    # the constant tanh(bias) of the ablated neurons moved into layer 1's bias
    beff = l1.bias + l1.weight[:, [1, 4]] @ torch.tanh(l0.bias[[1, 4]])
    torch.testing.assert_close(c1.bias, beff.detach()[c1.source_rows], **TOL)
    assert_same(fast, model, torch.randn(5, 10))


def test_whole_layer_ablated_and_output_rows_constant():
    model = masked_mlp([6, 5, 4], 0.5, "variable", seed=4)
    model[0].weight_mask.zero_()
    model[0].weight.data.zero_()
    fast = condense(model)
    c0, c1 = linears(fast)
    assert c0.n_alive == 0 and c1.n_alive == 0  # everything is a constant
    assert_same(fast, model, torch.randn(3, 6))
    assert_same(fast, model, torch.randn(1, 6))


def test_output_layer_ablated_rows_fill_bias():
    lin = mask_linear(nn.Linear(12, 7), make_mask(7, 12, 0.3, "constant", 3,
                                                  torch.Generator().manual_seed(0)))
    layer = CondensedLinear.from_linear(lin, kernel="numba_rows_serial"
                                        if K.NUMBA_AVAILABLE else "dense")
    assert layer.n_alive == 4 and layer.out_features == 7
    x = torch.randn(9, 12)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), lin(x), **TOL)
        torch.testing.assert_close(layer.to_dense(), lin.weight)
        torch.testing.assert_close(layer.full_bias(), lin.bias)


# ------------------------------------------------------------------ refresh
@pytest.mark.parametrize("kernel", ["auto", "dense", "csr", "gather"]
                         + (["numba_rows", "numba_axpy"] if K.NUMBA_AVAILABLE else []))
def test_refresh_after_training_keeps_indices(kernel):
    model = masked_mlp([16, 24, 24, 4], 0.3, "variable", ablate=3, act="elu", seed=5)
    fast = condense(model, kernel=kernel)
    x = torch.randn(11, 16)
    assert_same(fast, model, x)  # materialises the kernel's layout
    idx = [(c.indices.data_ptr(), c.indices.clone()) for c in linears(fast)]
    masked_train_steps(model)
    with torch.no_grad():
        assert not torch.allclose(fast(x), model(x))  # stale before refresh
    assert fast.refresh() is False  # masks unchanged: no new indices
    for c, (ptr, before) in zip(linears(fast), idx, strict=True):
        assert c.indices.data_ptr() == ptr and torch.equal(c.indices, before)
    assert_same(fast, model, x)
    assert_same(fast, model, x[:1])


def test_refresh_after_mask_change_rebuilds():
    model = masked_mlp([16, 24, 4], 0.3, "constant", seed=6)
    fast = condense(model)
    g = torch.Generator().manual_seed(7)
    new = make_mask(24, 16, 0.4, "variable", 2, g)  # now variable fan-in, other ablations
    model[0].weight_mask.copy_(new)
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(24, 16) * new)
    assert refresh(fast) is True
    assert isinstance(linears(fast)[0], PaddedCondensedLinear)
    for batch in (1, 257):
        assert_same(fast, model, torch.randn(batch, 16))
    # replacing the mask tensor (not in place) is detected as well
    model[0].weight_mask = make_mask(24, 16, 0.2, "constant", 0, g)
    model[0].weight.data *= model[0].weight_mask
    assert fast.refresh() is True
    assert type(linears(fast)[0]) is CondensedLinear
    assert_same(fast, model, torch.randn(5, 16))



def test_layer_builds_and_restructures_through_its_own_methods():
    values, indices = torch.randn(3, 2), torch.tensor([[0, 1], [1, 2], [2, 0]])
    layer = CondensedLinear.for_structure(values, indices, in_features=4)
    assert type(layer) is CondensedLinear
    padded = CondensedLinear.for_structure(values, indices, in_features=4,
                                           lengths=torch.tensor([2, 1, 2]))
    assert type(padded) is PaddedCondensedLinear
    # in place: the same module object switches layout, on the layer's dtype
    layer.double()
    layer.restructure(values, indices, None, torch.tensor([0, 2, 4]), in_features=4,
                      out_features=5, lengths=torch.tensor([1, 2, 2]), fill=None,
                      source_rows=torch.tensor([0, 2, 4]))
    assert type(layer) is PaddedCondensedLinear and layer.values.dtype == torch.float64
    assert layer.out_features == 5 and layer.source_rows.tolist() == [0, 2, 4]
    x = torch.randn(2, 4, dtype=torch.float64)
    dense = layer.to_dense()
    torch.testing.assert_close(layer(x), x @ dense.t())
    layer.set_values(2 * layer.values, layer.bias + 1)
    torch.testing.assert_close(layer(x), 2 * x @ dense.t() + layer.full_bias())
    assert layer.chain is None

def test_layer_refresh_and_copies():
    model = masked_mlp([8, 12, 3], 0.5, "variable", ablate=2, seed=8)
    fast = condense(model)
    twin = copy.deepcopy(fast)
    masked_train_steps(model, seed=1)
    assert linears(fast)[1].refresh() is False  # a layer refreshes its whole chain
    twin.refresh()
    x = torch.randn(4, 8)
    assert_same(fast, model, x)
    assert_same(twin, model, x)
    buf = io.BytesIO()
    torch.save(fast, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert_same(loaded, model, x)
    with pytest.raises(RuntimeError, match="no longer exists"):
        loaded.refresh()
    pickle.loads(pickle.dumps(linears(fast)[0]))


# ------------------------------------------------------------------ what is not condensed
def test_conv_layer_is_kept_and_reported():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    cmask = torch.rand(conv.weight.shape, generator=g) < 0.5
    conv.register_buffer("weight_mask", cmask)
    conv.weight.data *= cmask
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(),
                          mask_linear(nn.Linear(4 * 6 * 6, 10), make_mask(10, 144, 0.1,
                                                                          "constant", 2, g)),
                          nn.ReLU(), mask_linear(nn.Linear(10, 3), make_mask(3, 10, 0.5,
                                                                             "variable", 0, g)))
    with pytest.warns(CondenseWarning, match=r"0 \(Conv2d\)"):
        fast = condense(model)
    assert isinstance(fast[0], nn.Conv2d) and torch.equal(fast[0].weight_mask, cmask)
    assert fast.condense_report.kept[0][:2] == ("0", "Conv2d")
    assert [r.name for r in fast.condense_report.condensed] == ["3", "5"]
    assert "kept dense-masked" in str(fast.condense_report)
    x = torch.randn(2, 3, 8, 8)
    assert_same(fast, model, x)
    masked_train_steps_conv = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    masked_train_steps_conv.step()
    with torch.no_grad():
        for m in (model[0], model[3], model[5]):
            m.weight.mul_(m.weight_mask)
    fast.refresh()  # the kept conv is refreshed too
    assert_same(fast, model, x)


def test_dense_model_is_left_alone_and_standalone_linear():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.warns(CondenseWarning, match="no masked layer"):
        fast = condense(model)
    assert not linears(fast) and isinstance(fast[0], nn.Linear)
    assert_same(fast, model, torch.randn(3, 4))

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 6)
            self.out = mask_linear(nn.Linear(6, 3), make_mask(
                3, 6, 0.5, "variable", 1, torch.Generator().manual_seed(1)))

        def forward(self, x):
            return self.out(torch.tanh(self.body(x)))

    head = Head()
    fast = condense(head)
    assert isinstance(fast.out, CondensedLinear) and isinstance(fast.body, nn.Linear)
    assert_same(fast, head, torch.randn(7, 6))
    single = condense(head.out)
    assert isinstance(single, CondensedLinear)
    assert_same(single, head.out, torch.randn(2, 6))


# ------------------------------------------------------------------ layout details
def test_index_dtype_int16_below_32768_else_int32():
    assert index_dtype(32767) == torch.int16 and index_dtype(32768) == torch.int32
    small = CondensedLinear(torch.randn(2, 3), torch.tensor([[0, 5, 9], [1, 2, 3]]),
                            in_features=10)
    assert small.indices.dtype == torch.int16
    g = torch.Generator().manual_seed(0)
    lin = mask_linear(nn.Linear(40000, 2), make_mask(2, 40000, 0.001, "constant", 0, g))
    layer = CondensedLinear.from_linear(lin, kernel="dense")
    assert layer.indices.dtype == torch.int32 and layer.fan_in == 40
    x = torch.randn(3, 40000)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), lin(x), **TOL)
    if K.NUMBA_AVAILABLE:
        layer.kernel = "numba_rows_serial"
        with torch.no_grad():
            torch.testing.assert_close(layer(x), lin(x), **TOL)


def test_bad_input_raises_value_error():
    lin = nn.Linear(5, 4)
    with pytest.raises(ValueError, match="mask"):
        CondensedLinear.from_linear(lin, torch.ones(5, 4, dtype=torch.bool))
    lin.register_buffer("weight_mask", torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="weight_mask"):
        condense(nn.Sequential(lin))
    lin.weight_mask = torch.full((4, 5), 0.5)  # neither bool nor 0/1
    with pytest.raises(ValueError, match="bool"):
        condense(nn.Sequential(lin))
    with pytest.raises(ValueError, match="indices"):
        CondensedLinear(torch.randn(2, 3), torch.zeros(2, 2, dtype=torch.long), in_features=4)
    with pytest.raises(ValueError, match="in_features"):
        CondensedLinear(torch.randn(2, 3), torch.full((2, 3), 4), in_features=4)
    with pytest.raises(ValueError, match="PaddedCondensedLinear"):
        CondensedLinear(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long), in_features=4,
                        lengths=torch.tensor([3, 1]))
    with pytest.raises(ValueError, match="kernel"):
        condense(nn.Sequential(nn.Linear(2, 2)), kernel="fastest")
    with pytest.raises(ValueError, match="model"):
        condense("not a model")
    layer = CondensedLinear(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long),
                            in_features=4)
    with pytest.raises(ValueError, match="expected input"):
        layer(torch.randn(3, 5))
    with pytest.raises(RuntimeError, match="no source"):
        layer.refresh()


def test_leading_dims_dtype_and_autograd():
    model = masked_mlp([10, 12, 4], 0.4, "variable", ablate=2, seed=9)
    fast = condense(model)
    x = torch.randn(2, 3, 10)
    assert_same(fast, model, x)
    assert_same(fast, model, torch.randn(10))
    xg = torch.randn(4, 10, requires_grad=True)
    fast(xg).sum().backward()
    ref = xg.detach().clone().requires_grad_(True)
    model(ref).sum().backward()
    torch.testing.assert_close(xg.grad, ref.grad, **TOL)
    fast64 = copy.deepcopy(fast).double()
    with torch.no_grad():
        torch.testing.assert_close(fast64(x.double()), model.double()(x.double()),
                                   rtol=1e-10, atol=1e-12)


def test_automatic_choice_is_cached_and_never_worse_than_dense():
    K.clear_kernel_cache()
    model = masked_mlp([256, 64], 0.1, "constant", seed=10)
    fast = condense(model)
    for batch in (1, 64):
        assert_same(fast, model, torch.randn(batch, 256))
    choices = kernel_choices()
    assert len(choices) == 2
    for info in choices.values():
        times = info["times"]
        assert "dense" in times
        if info["kernel"] != "dense":  # won twice, by the margin, against dense
            assert times[info["kernel"]] <= K.DENSE_MARGIN * times["dense"]
            assert times[f"{info['kernel']} (confirm)"] <= K.DENSE_MARGIN * times[
                "dense (confirm)"]
    # a second layer of the same shape reuses the measurement
    other = masked_mlp([256, 64], 0.1, "constant", seed=11)
    assert_same(condense(other), other, torch.randn(1, 256))
    assert len(kernel_choices()) == 2
    # dense stays unless another kernel is clearly faster
    assert K.pick({"dense": 1.0, "csr": 0.93}) == "dense"
    assert K.pick({"dense": 1.0, "csr": 0.5, "gather": 0.7}) == "csr"


def test_without_numba_torch_kernels_remain(monkeypatch):
    monkeypatch.setattr(K, "NUMBA_AVAILABLE", False)
    K.clear_kernel_cache()
    model = masked_mlp([20, 30, 5], 0.3, "variable", ablate=2, seed=12)
    fast = condense(model)
    assert_same(fast, model, torch.randn(3, 20))
    assert all(not n.startswith("numba") for c in linears(fast)
               for n in c.chosen_kernels.values())
    K.clear_kernel_cache()


def test_kernel_names_are_listed():
    assert set(K.CPU_KERNELS) | set(K.CUDA_KERNELS) == set(KERNELS)
    assert np.all([isinstance(k, str) for k in KERNELS])


# ------------------------------------------------------------------ SB3 and SparseTopology
def _mask_all_linears(module: nn.Module, density: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if type(m) is nn.Linear:
            kind = "constant" if m.out_features > 8 else "variable"
            mask_linear(m, make_mask(m.out_features, m.in_features, density, kind,
                                     2 if m.out_features > 8 else 0, g))


def test_sb3_actor_critic_and_dqn_policies():
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.dqn.policies import DQNPolicy

    obs = gym.spaces.Box(-1.0, 1.0, (6,), dtype=np.float32)
    for action_space in (gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,))):
        policy = ActorCriticPolicy(obs, action_space, lambda _: 1e-3, net_arch=[32, 32])
        _mask_all_linears(policy, 0.25, seed=0)
        fast = condense(policy)
        assert isinstance(fast, ActorCriticPolicy) and fast.optimizer is None
        assert isinstance(fast.mlp_extractor.policy_net[0], CondensedLinear)
        assert isinstance(fast.action_net, CondensedLinear)
        x = torch.rand(5, 6) * 2 - 1
        with torch.no_grad():
            ref = policy.evaluate_actions(x, policy._predict(x, deterministic=True))
            out = fast.evaluate_actions(x, fast._predict(x, deterministic=True))
        for a, b in zip(out, ref, strict=True):
            torch.testing.assert_close(a, b, **TOL)
        act_ref, _ = policy.predict(x[0].numpy(), deterministic=True)
        act, _ = fast.predict(x[0].numpy(), deterministic=True)
        np.testing.assert_allclose(act, act_ref, rtol=1e-5, atol=1e-6)
    dqn = DQNPolicy(obs, gym.spaces.Discrete(4), lambda _: 1e-3, net_arch=[32, 32])
    _mask_all_linears(dqn, 0.25, seed=1)
    fast = condense(dqn)
    assert all(isinstance(m, CondensedLinear) for m in fast.q_net.q_net if
               not isinstance(m, nn.ReLU))
    x = torch.rand(9, 6)
    with torch.no_grad():
        torch.testing.assert_close(fast.q_net(x), dqn.q_net(x), **TOL)
        torch.testing.assert_close(fast.q_net_target(x), dqn.q_net_target(x), **TOL)


def test_with_sparse_topology_training():
    try:
        from sparse_agents.topology import SparseTopology
    except ImportError:  # pragma: no cover - the core is built in parallel
        pytest.skip("sparse_agents.topology.SparseTopology not available")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                          nn.Linear(48, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    topo = SparseTopology(model, opt, sparsity=0.8, updater="srigl", distribution="erk",
                          delta_t=3, seed=0)
    fast = condense(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 12, generator=g)
    assert_same(fast, model, x)
    for _ in range(7):  # two topology updates happen
        loss = nn.functional.cross_entropy(model(torch.randn(16, 12, generator=g)),
                                           torch.randint(0, 4, (16,), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert topo.step == 7
    fast.refresh()
    for batch in (1, 257):
        assert_same(fast, model, torch.randn(batch, 12, generator=g))


def test_inference_mode_then_training_mode_and_refresh():
    model = masked_mlp([20, 16, 3], 0.3, "variable", ablate=2, seed=13)
    fast = condense(model, kernel="csr")
    x = torch.randn(6, 20)
    with torch.inference_mode():  # layouts materialised in inference mode
        torch.testing.assert_close(fast(x), model(x), **TOL)
        fast[0].kernel = "dense"
        fast(x)
    masked_train_steps(model, seed=2)
    with torch.inference_mode():
        fast.refresh()  # updates those layouts in place
    assert_same(fast, model, x)
    xg = x.clone().requires_grad_(True)
    fast(xg).sum().backward()  # the dense-shrunk path outside inference mode
    assert xg.grad is not None
    empty = fast(torch.randn(0, 20))
    assert empty.shape == (0, 3)


def test_sb3_policy_with_sparse_topology_refresh():
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("stable_baselines3")
    try:
        from sparse_agents.topology import SparseTopology
    except ImportError:  # pragma: no cover - the core is built in parallel
        pytest.skip("sparse_agents.topology.SparseTopology not available")
    from stable_baselines3.common.policies import ActorCriticPolicy

    obs = gym.spaces.Box(-1.0, 1.0, (8,), dtype=np.float32)
    policy = ActorCriticPolicy(obs, gym.spaces.Discrete(4), lambda _: 3e-3, net_arch=[64, 64])
    SparseTopology(policy, policy.optimizer, sparsity=0.9, updater="srigl",
                   distribution="erk", delta_t=2, seed=0)
    fast = condense(policy)
    assert fast.optimizer is None  # the hooked optimizer (and the topology) stay behind
    x = torch.rand(16, 8) * 2 - 1
    for _ in range(5):  # two topology updates
        loss = -policy.get_distribution(x).log_prob(torch.zeros(16, dtype=torch.long)).mean()
        policy.optimizer.zero_grad()
        loss.backward()
        policy.optimizer.step()
    assert fast.refresh() is True
    with torch.no_grad():
        torch.testing.assert_close(fast.get_distribution(x).distribution.logits,
                                   policy.get_distribution(x).distribution.logits, **TOL)
        torch.testing.assert_close(fast.predict_values(x), policy.predict_values(x), **TOL)


def test_refresh_after_new_ablation_shrinks_the_chain():
    """A refresh after a topology update that ablates neurons (SRigL) shrinks the
    condensed bias; the copy must not paste the source's full-width bias into it."""
    model = masked_mlp([16, 24, 8], 0.9, "constant", seed=8)
    fast = condense(model)
    assert linears(fast)[0].n_alive == 24  # full width: its bias matches the source's
    with torch.no_grad():
        model[0].weight_mask[:3] = False
        model[0].weight.mul_(model[0].weight_mask)
    assert fast.refresh() is True
    assert linears(fast)[0].n_alive == 21
    masked_train_steps(model, steps=2, seed=9)  # values change, the topology does not
    assert fast.refresh() is False
    for batch in (1, 257):
        assert_same(fast, model, torch.randn(batch, 16))


def test_condense_policy_holding_an_autograd_graph():
    """SB3 keeps the last action distribution (tensors with a grad_fn) on the policy."""
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.policies import ActorCriticPolicy

    obs = gym.spaces.Box(-1.0, 1.0, (8,), dtype=np.float32)
    policy = ActorCriticPolicy(obs, gym.spaces.Box(-1.0, 1.0, (2,)), lambda _: 3e-3,
                               net_arch=[32, 32])
    for m in policy.mlp_extractor.modules():
        if isinstance(m, nn.Linear):
            mask_linear(m, make_mask(m.out_features, m.in_features, 0.3, "constant", 0,
                                     torch.Generator().manual_seed(0)))
    x = torch.rand(4, 8)
    policy.evaluate_actions(x, torch.zeros(4, 2))  # leaves graph tensors in action_dist
    fast = condense(policy)
    with torch.no_grad():
        torch.testing.assert_close(fast.predict_values(x), policy.predict_values(x), **TOL)


# ------------------------------------------------------------------ masks from torch's pruning
def plain_mlp(sizes, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_torch_prune_l1_unstructured():
    """``torch.nn.utils.prune``: a float 0/1 ``weight_mask``, ``weight_orig``, and a
    ``weight`` recomputed by a forward pre-hook (a pruned bias too)."""
    model = plain_mlp([12, 32, 32, 4], seed=14)
    for i in (0, 2, 4):
        prune.l1_unstructured(model[i], "weight", amount=0.7)
    prune.l1_unstructured(model[2], "bias", amount=0.5)
    assert model[0].weight_mask.dtype == torch.float32
    fast = condense(model)
    assert [r.name for r in fast.condense_report.condensed] == ["0", "2", "4"]
    assert all(c.nnz < c.in_features * c.n_alive for c in linears(fast))
    for batch in (1, 257):
        assert_same(fast, model, torch.randn(batch, 12))
    single = condense(model[0])  # one pruned Linear, and from_linear
    assert isinstance(single, CondensedLinear)
    assert_same(single, model[0], torch.randn(3, 12))
    assert_same(CondensedLinear.from_linear(model[4]), model[4], torch.randn(3, 32))


def test_torch_prune_global_unstructured_then_train_and_refresh():
    """After an optimizer step the pruned modules' ``weight`` (and ``bias``) are stale
    until the next forward: refresh must read ``weight_orig`` (and ``bias_orig``)."""
    model = plain_mlp([16, 48, 48, 6], seed=15)
    params = [(model[i], "weight") for i in (0, 2, 4)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.8)
    prune.l1_unstructured(model[4], "bias", amount=0.5)
    fast = condense(model)
    x = torch.randn(9, 16)
    assert_same(fast, model, x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss = model(torch.randn(8, 16, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()  # no forward afterwards: model[i].weight is stale
    assert fast.refresh() is False  # masks unchanged
    assert_same(fast, model, x)
    prune.l1_unstructured(model[2], "weight", amount=0.5)  # prune further: new mask
    assert fast.refresh() is True
    for batch in (1, 257):
        assert_same(fast, model, torch.randn(batch, 16))


def test_mask_values_other_than_0_and_1_raise():
    model = plain_mlp([6, 8, 3], seed=16)
    prune.random_unstructured(model[0], "weight", amount=0.5)
    with torch.no_grad():
        model[0].weight_mask[0, 0] = 0.5
    with pytest.raises(ValueError, match=r"layer '0'.*weight_mask.*0\.5"):
        condense(model)


def test_torch_ao_pruning_parametrized_masks():
    """``torch.ao.pruning`` puts a float mask in a parametrization of ``weight``."""
    from torch.ao.pruning import WeightNormSparsifier

    model = plain_mlp([16, 32, 32, 4], seed=17)
    sparsifier = WeightNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4),
                                      zeros_per_block=4)
    sparsifier.prepare(model, [{"tensor_fqn": f"{i}.weight"} for i in (0, 2, 4)])
    sparsifier.step()
    fast = condense(model)
    assert [r.name for r in fast.condense_report.condensed] == ["0", "2", "4"]
    assert all(c.nnz < c.in_features * c.n_alive for c in linears(fast))
    for batch in (1, 257):
        assert_same(fast, model, torch.randn(batch, 16))
    with torch.no_grad():
        model[0].parametrizations.weight.original.mul_(torch.rand(32, 16))
    sparsifier.sparsity_level = 0.75
    for group in sparsifier.groups:
        group["sparsity_level"] = 0.75
    sparsifier.step()  # new masks, in place
    assert fast.refresh() is True
    assert_same(fast, model, torch.randn(5, 16))


# ------------------------------------------------------------------ nothing to condense
def test_no_masked_layer_warns_and_reports():
    model = plain_mlp([4, 6, 2], seed=18)
    with pytest.warns(CondenseWarning, match="no masked layer.*weight_mask.*prun"):
        fast = condense(model)
    assert not fast.condense_report.condensed and fast.condense_report.notes
    assert "no masked layer" in str(fast.condense_report)
    assert_same(fast, model, torch.randn(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = condense(model, warn=False)
    assert quiet.condense_report.notes
    masked = masked_mlp([4, 6, 2], seed=18)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CondenseWarning)
        assert not condense(masked).condense_report.notes


# ------------------------------------------------------------------ module structure
def _package_imports(node: ast.AST, modules: set[str]) -> set[str]:
    """The modules of ``sparse_agents.condensed`` that an import statement names."""
    prefix = "sparse_agents.condensed"
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = f"{prefix}.{node.module}" if node.level and node.module else (
            prefix if node.level else node.module or "")
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    else:
        return set()
    return {n.split(".")[2] for n in names
            if n.startswith(prefix + ".") and n.split(".")[2] in modules}


def test_condensed_modules_import_each_other_at_top_level_without_cycles():
    """No module of the package imports another one inside a function (a lazy import
    hiding a cycle), and the imports between them form no cycle."""
    pkg = Path(condensed_pkg.__file__).parent
    modules = {p.stem for p in pkg.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for mod in modules:
        tree = ast.parse((pkg / f"{mod}.py").read_text())
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    lazy = _package_imports(node, modules)
                    assert not lazy, f"{mod}.py:{node.lineno} imports {lazy} inside a function"
        graph[mod] = set().union(*(_package_imports(n, modules) for n in ast.walk(tree)))
    done: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, f"import cycle: {' -> '.join((*path, mod))}"
        if mod not in done:
            for dep in graph[mod]:
                visit(dep, (*path, mod))
            done.add(mod)

    for mod in sorted(graph):
        visit(mod, ())
    assert graph["layers"] >= {"kernels", "chain"} and "layers" in graph["convert"]


@pytest.mark.skipif(not K.NUMBA_AVAILABLE or (os.cpu_count() or 1) < 2,
                    reason="needs numba and two cores (numba's pool then wants both)")
def test_starting_numba_threads_keeps_torch_thread_count():
    """numba's OpenMP pool, started on first use, shares torch's libgomp; a process
    on one torch thread stays on one (a fresh process: each pool starts once)."""
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(1)\n"
            "torch.get_num_threads()\n"  # torch has set up its threads (a run has)
            "from sparse_agents.condensed import kernels as K\n"
            "K.numba_threads(2)\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert out.stdout.split()[-1] == "1"
