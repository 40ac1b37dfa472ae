"""The cost of :class:`~sparse_agents.SparseTopology`, measured side by side in one process.

Behind ``scripts/bench_topology.py``: the optimizer-step overhead of the topology's hooks,
the wall time of one update per updater, and what the exact zeros masked weights keep in
an optimizer's state cost its step on the CPU (:mod:`sparse_agents.timing`).
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch
from torch import nn

from sparse_agents import SparseTopology
from sparse_agents.experiments.hyperparams import YOUNG_TIAN
from sparse_agents.timing import time_interleaved
from sparse_agents.updaters import REGISTRY, initial_mask

DESCRIPTION = """\
Benchmark the cost of SparseTopology, measured side by side in one process.

1. Optimizer-step overhead of the hooks: opt.step() on an MLP 784-1024-1024-10 at 90%
   sparsity with Adam, with the topology's hooks attached vs the same step on the same
   tensors with the hooks detached (both grad-masking modes), interleaved.
2. Wall time of one update of a 3072x768 layer (90% sparsity) per dynamic updater.
3. The cost of zero optimizer state (invariant 1: masked weights keep exact zeros in it):
   one step of Adam (single-tensor and fused) and RMSprop (centered, as Young & Tian's
   DQN, and plain, as SB3's A2C) on a 128x1024 weight, with a dense gradient vs a 90%
   masked one, interleaved; and Tensor.sqrt of zeros vs positive values.

With --out, writes bench_topology.csv and bench_topology.md there; re-running
overwrites them."""

EPILOG = """\
examples:
  python scripts/bench_topology.py            # full run (~1 min)
  python scripts/bench_topology.py --quick    # fewer repeats"""


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def setup(mode: str):
    """Adam, one training iteration and a topology with grad masking ``mode``."""
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
    with the hooks detached; interleaved so machine drift hits both alike."""
    rows = []
    for mode in ("step", "backward"):
        opt, _, topo = setup(mode)
        times = time_interleaved(
            {"hooked": opt.step, "plain": opt.step}, rounds=5 * repeats, warmup=3,
            before={"hooked": partial(topo.attach, opt), "plain": topo.detach})
        topo.attach(opt)
        h, p = times["hooked"], times["plain"]
        rows.append({"what": f"Adam step, hooks detached (grad_masking={mode})",
                     "ms": p * 1e3, "ratio_to_plain": 1.0})
        rows.append({"what": f"Adam step + hooks (grad_masking={mode})", "ms": h * 1e3,
                     "ratio_to_plain": h / p})
    return rows


def bench_updates(repeats: int) -> list[dict]:
    """One update of a 3072x768 layer at 90% sparsity per dynamic updater, interleaved."""
    shape = (768, 3072)
    budget = round(0.1 * shape[0] * shape[1])
    g = torch.Generator().manual_seed(0)
    fns = {}
    for name, spec in REGISTRY.items():
        if not spec.dynamic:
            continue
        mask = initial_mask(spec, shape, budget, g)
        w = torch.randn(shape) * mask
        grad = torch.randn(shape)
        fns[name] = partial(spec.update, w, mask, grad, int(budget * 0.3), g, budget=budget)
    times = time_interleaved(fns, rounds=repeats, warmup=1)
    return [{"what": f"{name} update 3072x768 @90%", "ms": t * 1e3,
             "ratio_to_plain": float("nan")} for name, t in times.items()]


_MINATAR_DQN = YOUNG_TIAN["dqn", "MinAtar/Breakout-v1"]
#: (name, class, keyword arguments) of the optimizers the sparse agents train with
STEP_OPTIMIZERS = (
    ("Adam", torch.optim.Adam, {"lr": 1e-3}),
    ("Adam fused", torch.optim.Adam, {"lr": 1e-3, "fused": True}),
    ("RMSprop centered", _MINATAR_DQN["optimizer_class"],
     {"lr": _MINATAR_DQN["learning_rate"], **_MINATAR_DQN["optimizer_kwargs"]}),
    ("RMSprop", torch.optim.RMSprop, {"lr": 7e-4, "alpha": 0.99, "eps": 1e-5}),  # SB3's A2C
)


def _optimizer_step(cls: type, kwargs: dict, keep: float):
    """``step`` of ``cls`` on one 128x1024 weight (``MinAtarCNN``'s linear layer) whose
    gradient, and so whose state, is zero outside a random ``keep`` fraction."""
    g = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(128, 1024, generator=g))
    w.grad = torch.randn(w.shape, generator=g) * (torch.rand(w.shape, generator=g) < keep)
    opt = cls([w], **kwargs)
    opt.step()  # creates the state
    return opt.step


def _sqrt_where_nonzero(x: torch.Tensor) -> torch.Tensor:
    """``x.sqrt()`` computed only where ``x`` is nonzero (the same values)."""
    nonzero = x != 0
    return torch.where(nonzero, x, 1.0).sqrt_().mul_(nonzero)


def bench_zero_state(repeats: int) -> list[dict]:
    """Optimizer steps with a dense vs a 90% masked gradient, and ``sqrt`` of zeros."""
    rows = []
    for name, cls, kwargs in STEP_OPTIMIZERS:
        times = time_interleaved({"dense": _optimizer_step(cls, kwargs, 1.0),
                                  "masked": _optimizer_step(cls, kwargs, 0.1)},
                                 rounds=repeats, warmup=1)
        rows.append({"what": f"{name} step 128x1024, dense gradient",
                     "ms": times["dense"] * 1e3, "ratio_to_plain": 1.0})
        rows.append({"what": f"{name} step 128x1024, 90% masked (zero state)",
                     "ms": times["masked"] * 1e3,
                     "ratio_to_plain": times["masked"] / times["dense"]})
    n = 128 * 1024
    positive, zeros = torch.rand(n) + 0.1, torch.zeros(n)
    masked = positive * (torch.rand(n) < 0.1)
    times = time_interleaved({"positive": positive.sqrt, "zeros": zeros.sqrt,
                              "masked": masked.sqrt,
                              "where": partial(_sqrt_where_nonzero, masked)},
                             rounds=repeats, warmup=1)
    for key, what in (("positive", "sqrt of 131072 positive values"),
                      ("zeros", "sqrt of 131072 zeros"),
                      ("masked", "sqrt, 90% zeros"),
                      ("where", "sqrt only where nonzero (where, sqrt, mul), 90% zeros")):
        rows.append({"what": what, "ms": times[key] * 1e3,
                     "ratio_to_plain": times[key] / times["positive"]})
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_topology.py", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None,
                        help="write CSV and markdown here (overwritten)")
    return parser


def report(rows: list[dict], threads: int, out: Path | None) -> None:
    """The table on the terminal, and as CSV and markdown under ``out``."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"SparseTopology overhead ({threads} threads, fp32, CPU)")
    for col in ("what", "ms", "ratio_to_plain"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["what"], f"{r['ms']:.3f}", f"{r['ratio_to_plain']:.3f}")
    Console().print(table)
    if out:
        df = pd.DataFrame(rows)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "bench_topology.csv", index=False)
        (out / "bench_topology.md").write_text(df.to_markdown(index=False, floatfmt=".3f"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 10 if args.quick else 40
    rows = (bench_hooks(repeats) + bench_updates(3 if args.quick else 7)
            + bench_zero_state(repeats // 2))
    report(rows, args.threads, args.out)
    return 0
