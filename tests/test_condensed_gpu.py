"""Condensed layers on CUDA tensors (skipped without a GPU; CI has none)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from sparse_agents.condensed import CondensedLinear, condense
from sparse_agents.condensed import kernels as K

TOL = dict(rtol=1e-5, atol=1e-6)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def masked_mlp(sizes, density=0.1, ablate=3, seed=0, device="cpu") -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        lin = nn.Linear(a, b)
        mask = torch.rand(b, a, generator=g) < density
        mask[torch.randperm(b, generator=g)[:ablate]] = False
        lin.register_buffer("weight_mask", mask)
        with torch.no_grad():
            lin.weight.mul_(mask)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(device)


@pytest.fixture(autouse=True)
def _fast_measurement(monkeypatch):
    monkeypatch.setattr(K, "MEASURE_BUDGET_S", 0.02)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["auto", *K.CUDA_KERNELS])
def test_cuda_kernels_equal_masked_dense(kernel):
    if kernel == "triton_ell" and not K.triton_available():
        pytest.skip("triton not installed")
    model = masked_mlp([300, 200, 10], device="cuda")
    fast = condense(model, kernel=kernel)
    for batch in (1, 256, 257):
        x = torch.randn(batch, 300, device="cuda")
        with torch.no_grad():
            # TF32 off on both sides: fp32 reference
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.gpu
def test_cuda_refresh_and_cpu_copy_of_gpu_model():
    model = masked_mlp([64, 64, 4], density=0.3, device="cuda")
    fast = condense(model)
    cpu_copy = condense(model).to("cpu")  # e.g. train on GPU, roll out on CPU
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(8, 64, device="cuda")).pow(2).mean().backward()
    opt.step()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "weight_mask"):
                m.weight.mul_(m.weight_mask)
    fast.refresh()
    cpu_copy.refresh()
    x = torch.randn(5, 64, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cpu_copy(x.cpu()), model(x).cpu(), rtol=1e-4, atol=1e-5)
    assert all(m.values.is_cuda for m in fast.modules() if isinstance(m, CondensedLinear))


def test_triton_kernel_in_the_cpu_interpreter():
    """Every tile of the Triton ELL kernel computes the right thing (Triton's CPU
    interpreter): masked row and batch edges, the unrolled fan-in tail and padded ELL
    entries."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from torch import nn
        from sparse_agents.condensed import CondensedLinear
        from sparse_agents.condensed import kernels as K
        torch.manual_seed(0)
        lin = nn.Linear(70, 45)
        m = torch.rand(45, 70) < 0.2  # variable fan-in: padded ELL
        m[3] = False
        lin.register_buffer("weight_mask", m)
        lin.weight.data *= m
        c = CondensedLinear.from_linear(lin, kernel="dense")
        vt, it = c._ell_t()
        default = K.make_triton_ell(vt, it, c.bias)
        checked = set()
        for b in (1, 19, 130):
            x = torch.randn(b, 70)
            ref = c._build_kernel("dense")(x)
            torch.testing.assert_close(default(x), ref, rtol=1e-5, atol=1e-6)
            for tile in K._triton_tiles(b):
                fn = K.make_triton_ell(vt, it, c.bias, tile=tile)
                y = fn(x)
                assert y.is_contiguous() and y.shape == ref.shape
                torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
                checked.add(tile)
        assert checked == set(K.TRITON_TILES)
        assert K._triton_tiles(1 << 20)  # a huge batch still gets a tile
        print("ok", checked)
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
