"""Benchmark the cost of SparseTopology, measured side by side in one process.

1. Optimizer-step overhead of the hooks: ``opt.step()`` on an MLP 784-1024-1024-10 at
   90% sparsity with Adam, with the topology's hooks attached vs the same step on the
   same tensors with the hooks detached (both grad-masking modes).
2. Wall time of one SET / RigL / SRigL update of a 3072x768 layer (90% sparsity).

    python scripts/bench_topology.py            # full run (~1 min)
    python scripts/bench_topology.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from sparse_agents import SparseTopology
from sparse_agents.updaters import UPDATERS
from sparse_agents.updaters.base import topk
from sparse_agents.updaters.srigl import constant_fan_in_mask


def timeit(fn, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def setup(mode: str):
    """Model, Adam and a topology with grad masking ``mode``."""
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # delta_t beyond the run: this measures the hooks, not the updates.
    topo = SparseTopology(model, opt, sparsity=0.9, updater="rigl", delta_t=10**9,
                          grad_masking=mode)
    x = torch.randn(64, 784)
    y = torch.randint(0, 10, (64,))

    def iteration():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    iteration()  # creates Adam state (and, with a topology, masked gradients)
    return opt, iteration, topo


def bench_hooks(repeats: int) -> list[dict]:
    """Step with the hooks vs the very same step (same tensors, same sparse gradients)
    with the hooks detached; interleaved rounds so machine drift hits both alike."""
    rows = []
    for mode in ("step", "backward"):
        opt, iteration, topo = setup(mode)
        hooked, plain = [], []
        for _ in range(5):
            hooked.append(timeit(opt.step, repeats))
            topo.detach()
            plain.append(timeit(opt.step, repeats))
            topo.attach(opt)
        h, p = statistics.median(hooked), statistics.median(plain)
        rows.append({"what": f"Adam step, hooks detached (grad_masking={mode})",
                     "ms": p * 1e3, "ratio_to_plain": 1.0})
        rows.append({"what": f"Adam step + hooks (grad_masking={mode})", "ms": h * 1e3,
                     "ratio_to_plain": h / p})
    return rows


def bench_updates(repeats: int) -> list[dict]:
    rows = []
    shape = (768, 3072)
    budget = round(0.1 * shape[0] * shape[1])
    g = torch.Generator().manual_seed(0)
    for name in ("set", "rigl", "srigl"):
        if name == "srigl":
            mask = constant_fan_in_mask(shape, budget, g)
        else:
            mask = topk(torch.zeros(shape), budget, g)
        w = torch.randn(shape) * mask
        grad = torch.randn(shape)
        n_drop = int(budget * 0.3)
        fn = UPDATERS[name]
        t = timeit(partial(fn, w, mask, grad, n_drop, g, budget=budget), repeats, 1)
        rows.append({"what": f"{name} update 3072x768 @90%", "ms": t * 1e3,
                     "ratio_to_plain": float("nan")})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None, help="write CSV and markdown here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 10 if args.quick else 40
    rows = bench_hooks(repeats) + bench_updates(3 if args.quick else 7)
    df = pd.DataFrame(rows)
    table = Table(title=f"SparseTopology overhead ({args.threads} threads, fp32, CPU)")
    for col in ("what", "ms", "ratio_to_plain"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["what"], f"{r['ms']:.3f}", f"{r['ratio_to_plain']:.3f}")
    Console().print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "bench_topology.csv", index=False)
        (args.out / "bench_topology.md").write_text(df.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
