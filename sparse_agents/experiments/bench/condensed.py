"""Side-by-side timing of dense, CSR and condensed linear layers (docs/condensed.md).

Behind ``scripts/bench_condensed.py``: per thread count, layer shape and batch size, the
masked dense layer, its ``torch.sparse`` CSR copy, every condensed kernel and the
automatic choice are timed interleaved in one process (:mod:`sparse_agents.timing`).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from sparse_agents.condensed import CondensedLinear, condense
from sparse_agents.condensed import kernels as K
from sparse_agents.timing import sample_interleaved, time_interleaved

SHAPES = {  # name: (in_features, out_features)
    "vit_mlp_3072x768": (3072, 768),
    "sb3_64x64": (64, 64),
    "sb3_256x256": (256, 256),
    "sb3_1024x1024": (1024, 1024),
}

SHORT = {"csr": "condensed-csr", "dense": "dense-shrunk", "gather": "gather", "numba_rows": "rows",
         "numba_rows_serial": "rows-1t", "numba_axpy": "axpy", "numba_axpy_serial": "axpy-1t",
         "triton_ell": "triton", "auto": "auto"}
LEGEND = ("Columns: `csr` torch.sparse CSR of the masked weight; condensed kernels forced: "
          "`dense-shrunk` (F.linear on the kept rows), `condensed-csr` (CSR of the kept "
          "rows), `gather` (eager gather-multiply-sum), "
          "`rows`/`rows-1t` (numba fused per-row gather-dot, parallel/serial), "
          "`axpy`/`axpy-1t` (numba per-row axpy over the batch, parallel/serial), "
          "`triton` (Triton ELL kernel); `auto` the measured automatic choice.")

DESCRIPTION = """\
Side-by-side timing of dense, CSR and condensed linear layers (docs/condensed.md).

For each thread count, layer shape and batch size, one process times (interleaved, the
median over rounds of many calls, after warm-up) the masked dense nn.Linear, the same
weight as a torch.sparse CSR matrix, every condensed kernel (forced) and `auto`, the
condensed layer's measured choice. Ratios are time(dense) / time(method) and
time(csr) / time(method) (> 1: the method is faster). Results go to --out as
results.csv and results.md, and to the terminal; re-running overwrites them."""

EPILOG = """\
examples:
  python scripts/bench_condensed.py --out results/condensed           # full CPU run
  python scripts/bench_condensed.py --quick                           # a fast look
  python scripts/bench_condensed.py --device cuda --out results/gpu   # on a GPU"""


# --------------------------------------------------------------------------- models
def masked_linear(n_in: int, n_out: int, sparsity: float, fan_in: str, seed: int) -> nn.Linear:
    """An ``nn.Linear`` with a ``weight_mask`` buffer, its weight zero outside the mask."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out)
    if fan_in == "constant":
        k = max(1, round((1.0 - sparsity) * n_in))
        idx = torch.rand(n_out, n_in, generator=g).topk(k, dim=1).indices
        mask = torch.zeros(n_out, n_in, dtype=torch.bool).scatter_(1, idx, True)
    else:
        mask = torch.rand(n_out, n_in, generator=g) < (1.0 - sparsity)
    lin.register_buffer("weight_mask", mask)
    with torch.no_grad():
        lin.weight.mul_(mask)
    return lin


def csr_baseline(lin: nn.Linear):
    """The layer as a ``torch.sparse`` CSR matmul (the CSR baseline)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        w = lin.weight.detach().to_sparse_csr()
    return K.make_csr(w, lin.bias.detach())


def masked_mlp(sizes: list[int], sparsity: float, fan_in: str, seed: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [masked_linear(a, b, sparsity, fan_in, seed + i), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class CSRSequential(nn.Module):
    """The MLP with every Linear as a torch.sparse CSR matmul (the CSR baseline)."""

    def __init__(self, model: nn.Sequential) -> None:
        super().__init__()
        self.fns = [csr_baseline(m) if isinstance(m, nn.Linear) else m for m in model]

    def forward(self, x):
        for f in self.fns:
            x = f(x)
        return x


def load_average() -> float:
    """The 1-minute load average (other processes make 2-thread timings noisy)."""
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:  # pragma: no cover - not Linux
        return float("nan")


# --------------------------------------------------------------------------- timing
def _time_all(fns: dict, x: torch.Tensor, rounds: int, sample_s: float) -> dict[str, float]:
    """Check every method against ``dense``, then time them interleaved."""
    ref = fns["dense"](x)
    for name, fn in fns.items():  # every method computes the same thing
        torch.testing.assert_close(fn(x), ref, rtol=1e-4, atol=1e-4, msg=name)
    return time_interleaved({n: partial(f, x) for n, f in fns.items()}, rounds=rounds,
                            min_sample_s=sample_s, warmup=3, device=x.device)


def bench_config(lin, device, batch, rounds, sample_s, kernels, seed):
    """Times of one layer at one batch size, and the automatic choice's kernel."""
    g = torch.Generator().manual_seed(seed + batch)
    x = torch.randn(batch, lin.in_features, generator=g).to(device)
    fns = {"dense": lin, "csr": csr_baseline(lin)}
    nnz = int(lin.weight_mask.sum())
    for name in kernels:
        if name == "gather" and batch * nnz > K.GATHER_LIMIT * 4:
            continue  # materialises batch x nnz products: minutes at large batch
        fns[f"condensed:{name}"] = CondensedLinear.from_linear(lin, kernel=name).to(device)
    auto = CondensedLinear.from_linear(lin, kernel="auto").to(device)
    fns["auto"] = auto
    times = _time_all(fns, x, rounds, sample_s)
    return times, auto.chosen_kernels[K.batch_bucket(batch)]


def bench_mlp(model, device, batch, rounds, sample_s, seed):
    """Times of a whole MLP (dense, CSR, ``condense(model)``) and the chosen kernels."""
    g = torch.Generator().manual_seed(seed + batch)
    x = torch.randn(batch, model[0].in_features, generator=g).to(device)
    fast = condense(model)
    fns = {"dense": model, "csr": CSRSequential(model), "auto": fast}
    times = _time_all(fns, x, rounds, sample_s)
    chosen = "+".join(m.chosen_kernels[K.batch_bucket(batch)].replace("numba_", "")
                      for m in fast.modules() if isinstance(m, CondensedLinear))
    return times, chosen


def _fastest_call(f, *args, n: int = 50) -> float:
    """The fastest of ``n`` single calls, after one warm-up call."""
    return min(sample_interleaved({"f": partial(f, *args)}, rounds=n, calls=1)["f"])


def probe(n_in: int = 3072, n_out: int = 768, sparsity: float = 0.9, seed: int = 0) -> list[str]:
    """What bounds the batch-1 kernel: time one core needs to *gather* nnz random
    floats from x (no multiply), next to a contiguous dot of the same length and the
    dense layer's memory traffic. Returns report lines."""
    import numpy as np
    from numba import njit

    @njit(fastmath={"reassoc", "contract"})
    def gather_sum(x, idx):
        acc = np.float32(0.0)
        for j in range(idx.shape[0]):
            acc += x[idx[j]]
        return acc

    @njit(fastmath={"reassoc", "contract"})
    def dot(a, b):
        acc = np.float32(0.0)
        for j in range(a.shape[0]):
            acc += a[j] * b[j]
        return acc

    rng = np.random.default_rng(seed)
    nnz = round((1 - sparsity) * n_in) * n_out
    x = rng.standard_normal(n_in).astype(np.float32)
    idx = rng.integers(0, n_in, nnz).astype(np.uint16)
    a = rng.standard_normal(nnz).astype(np.float32)
    tg, td = _fastest_call(gather_sum, x, idx), _fastest_call(dot, a, a)
    lin = masked_linear(n_in, n_out, sparsity, "constant", seed)
    with torch.inference_mode():
        tl = _fastest_call(lin, torch.randn(1, n_in))
    cores = os.cpu_count()
    return [
        f"probe ({n_in}->{n_out}, {nnz} nonzeros, batch 1, {torch.get_num_threads()} torch "
        "threads):",
        f"  gather-sum of {nnz} random x[idx] on one core: {tg * 1e6:.1f} us "
        f"({tg / nnz * 1e9:.2f} ns per nonzero)",
        f"  contiguous dot of the same length on one core: {td * 1e6:.1f} us",
        f"  dense nn.Linear: {tl * 1e6:.1f} us "
        f"({lin.weight.numel() * 4 / tl / 1e9:.1f} GB/s of weights)",
        f"  => floor of any gather-based kernel on {cores} cores: "
        f"{tg / cores * 1e6:.1f} us, so at most x{tl / (tg / cores):.2f} vs dense at batch 1",
    ]


# --------------------------------------------------------------------------- parse
@dataclass
class Plan:
    """What a run times, resolved from the command line."""

    device: torch.device
    threads: list[int]
    shapes: list[str]
    batches: list[int]
    kernels: list[str]
    sample_s: float


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_condensed.py", description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", default="1,2", help="CPU thread counts (comma-separated)")
    p.add_argument("--batches", default="1,8,64,256,1024")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"from {list(SHAPES)}")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--fan-in", default="constant", choices=["constant", "variable"],
                   help="constant (SRigL, CondensedLinear) or variable (SET/RigL, padded)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--sample-ms", type=float, default=20.0, help="time per timing sample")
    p.add_argument("--quick", action="store_true", help="3 rounds of 3 ms samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe", action="store_true",
                   help="only measure what bounds the batch-1 kernel (gather throughput)")
    p.add_argument("--mlp", default="64,256,256,8",
                   help="also time a whole masked MLP (tanh) of these widths, dense vs CSR vs "
                        "condense(model), e.g. an SB3 policy network ('' to skip)")
    p.add_argument("--out", default=None,
                   help="directory for results.csv and results.md (overwritten)")
    return p


def available_kernels(device: torch.device) -> list[str]:
    """The condensed kernels this device and environment can run."""
    return [k for k in (K.CPU_KERNELS if device.type == "cpu" else K.CUDA_KERNELS)
            if not (k.startswith("numba") and not K.NUMBA_AVAILABLE)
            and not (k == "triton_ell" and not K.triton_available())]


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple:
    """Parsed arguments and the resolved :class:`Plan` (``parser.error`` when invalid)."""
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.sample_ms = 3, 3.0
    device = torch.device(args.device)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            parser.error(f"unknown shape {s!r}; choose from {list(SHAPES)}")
    threads = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else \
        [torch.get_num_threads()]
    plan = Plan(device=device, threads=threads, shapes=shapes,
                batches=[int(b) for b in args.batches.split(",")],
                kernels=available_kernels(device), sample_s=args.sample_ms / 1e3)
    return args, plan


# --------------------------------------------------------------------------- run
def _rows(times: dict, chosen: str, common: dict) -> list[dict]:
    """One result row per method of one configuration."""
    td, tc = times["dense"], times["csr"]
    load = load_average()
    return [dict(common, method=method, kernel=chosen if method == "auto" else "",
                 time_us=round(t * 1e6, 3), vs_dense=round(td / t, 3),
                 vs_csr=round(tc / t, 3), load1=load) for method, t in times.items()]


def run_layers(args, plan: Plan, nt: int) -> list[dict]:
    """Every (shape, batch) of single layers at ``nt`` threads."""
    rows = []
    for shape in plan.shapes:
        n_in, n_out = SHAPES[shape]
        lin = masked_linear(n_in, n_out, args.sparsity, args.fan_in, args.seed).to(plan.device)
        for batch in plan.batches:
            with torch.inference_mode():
                times, chosen = bench_config(lin, plan.device, batch, args.rounds,
                                             plan.sample_s, plan.kernels, args.seed)
            rows += _rows(times, chosen, dict(
                device=plan.device.type, threads=nt, shape=shape, in_features=n_in,
                out_features=n_out, sparsity=args.sparsity, fan_in=args.fan_in, batch=batch))
            td, tc = times["dense"], times["csr"]
            print(f"threads={nt} {shape} batch={batch}: dense {td * 1e6:.1f}us, "
                  f"csr x{td / tc:.2f}, auto[{chosen}] x{td / times['auto']:.2f} vs dense, "
                  f"x{tc / times['auto']:.2f} vs csr", flush=True)
    return rows


def run_mlp(args, plan: Plan, nt: int) -> list[dict]:
    """Every batch of the whole masked MLP (``--mlp``) at ``nt`` threads."""
    sizes = [int(w) for w in args.mlp.split(",")]
    model = masked_mlp(sizes, args.sparsity, args.fan_in, args.seed).to(plan.device)
    name = "mlp_" + "-".join(map(str, sizes))
    rows = []
    for batch in plan.batches:
        with torch.inference_mode():
            times, chosen = bench_mlp(model, plan.device, batch, args.rounds, plan.sample_s,
                                      args.seed)
        rows += _rows(times, chosen, dict(
            device=plan.device.type, threads=nt, shape=name, in_features=sizes[0],
            out_features=sizes[-1], sparsity=args.sparsity, fan_in=args.fan_in, batch=batch))
        td, tc = times["dense"], times["csr"]
        print(f"threads={nt} {name} batch={batch}: dense {td * 1e6:.1f}us, csr "
              f"x{td / tc:.2f}, condense(model)[{chosen}] x{td / times['auto']:.2f} "
              f"vs dense, x{tc / times['auto']:.2f} vs csr", flush=True)
    return rows


def run_configs(args, plan: Plan) -> list[dict]:
    """Every configuration, thread count by thread count."""
    rows = []
    for nt in plan.threads:
        torch.set_num_threads(nt)
        K.numba_threads(nt)
        rows += run_layers(args, plan, nt)
        if args.mlp:
            rows += run_mlp(args, plan, nt)
    return rows


# --------------------------------------------------------------------------- report
def summary_table(rows: list[dict], kernels: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: per (threads, shape, batch), every method's ratio to dense."""
    methods = ["csr"] + [f"condensed:{k}" for k in kernels] + ["auto"]
    header = ["threads", "shape", "batch", "dense us"] + [
        SHORT.get(m.split(":")[-1], m) if m != "csr" else "csr" for m in methods] + [
        "auto kernel", "auto vs csr"]
    table_rows = []
    for key in dict.fromkeys((r["threads"], r["shape"], r["batch"]) for r in rows):
        sel = {r["method"]: r for r in rows if (r["threads"], r["shape"], r["batch"]) == key}
        cells = [str(key[0]), key[1], str(key[2]), f"{sel['dense']['time_us']:.1f}"]
        cells += [f"{sel[m]['vs_dense']:.2f}" if m in sel else "-" for m in methods]
        cells += [sel["auto"]["kernel"], f"{sel['auto']['vs_csr']:.2f}"]
        table_rows.append(cells)
    return header, table_rows


def targets(rows: list[dict], device: str) -> list[str]:
    """The issue's targets, checked on these rows."""
    out = []

    def pick(**kw):
        return [r for r in rows if all(r[k] == v for k, v in kw.items())]

    if device == "cpu":
        for r in pick(shape="vit_mlp_3072x768", batch=1, method="auto"):
            ok = r["vs_dense"] >= 5 and r["vs_csr"] >= 3
            out.append(f"{'MET' if ok else 'NOT MET'}: CPU batch 1, 3072->768, threads "
                       f"{r['threads']}: auto x{r['vs_dense']:.2f} vs dense (target 5), "
                       f"x{r['vs_csr']:.2f} vs CSR (target 3)")
        autos = pick(method="auto")
        if autos:
            worst = min(autos, key=lambda r: r["vs_dense"])
            ok = worst["vs_dense"] >= 0.95
            out.append(f"{'MET' if ok else 'NOT MET'}: CPU every batch, auto >= 0.95x dense: "
                       f"worst x{worst['vs_dense']:.2f} ({worst['shape']}, batch "
                       f"{worst['batch']}, threads {worst['threads']})")
    else:
        for r in pick(shape="vit_mlp_3072x768", batch=256, method="auto"):
            ok = r["vs_dense"] >= 1.7 and r["vs_csr"] >= 10
            out.append(f"{'MET' if ok else 'NOT MET'}: GPU batch 256, 3072->768: auto "
                       f"x{r['vs_dense']:.2f} vs dense (target 1.7), x{r['vs_csr']:.2f} vs "
                       f"CSR (target 10)")
    return out


def print_table(header: list[str], table_rows: list[list[str]], args, device: str) -> None:
    """The summary table on the terminal (needs ``rich``; skipped without it)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        return
    table = Table(title=f"time(dense) / time(method) on {device}, sparsity "
                        f"{args.sparsity}, {args.fan_in} fan-in (> 1: faster than dense)")
    for h in header:
        table.add_column(h, justify="right")
    for cells in table_rows:
        table.add_row(*cells)
    Console(width=240).print(table)


def environment(device: str) -> str:
    """Versions and hardware, one line."""
    return (f"torch {torch.__version__}, numba "
            f"{K.numba.__version__ if K.NUMBA_AVAILABLE else 'absent'}, python "
            f"{platform.python_version()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs" + (f", {torch.cuda.get_device_name()}"
                                        if device == "cuda" else ""))


def markdown(rows: list[dict], header: list[str], table_rows: list[list[str]],
             verdicts: list[str], device: str, argv: list[str]) -> str:
    """results.md: the command, environment, table, targets and tuned Triton tiles."""
    loads = [r["load1"] for r in rows]
    md = [f"command: `python scripts/bench_condensed.py {' '.join(argv)}`", "",
          f"environment: {environment(device)}; 1-minute load average during the run "
          f"{min(loads):.2f}-{max(loads):.2f}", "",
          "ratios: time(dense) / time(method); > 1 is faster than the masked dense "
          "`nn.Linear`. " + LEGEND, "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c) + " |" for c in table_rows]
    md += ["", "targets:", ""] + [f"- {v}" for v in verdicts]
    tuned = K.triton_configs()
    if tuned:
        md += ["", "Triton ELL tiles chosen by tuning (rows n, fan-in k, batch bucket b = "
               "batches in [2^(b-1), 2^b): tile, microseconds per call while tuning):", ""]
        md += [f"- n={key[1]}, k={key[2]}, b={key[3]}: {c['tile']}, "
               f"{c['seconds'] * 1e6:.1f} us" for key, c in tuned.items()]
    return "\n".join(md) + "\n"


def write_results(out: Path, rows: list[dict], md: str) -> None:
    """results.csv (one row per configuration and method) and results.md under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "results.md").write_text(md)
    print(f"wrote {out / 'results.csv'} and {out / 'results.md'}")


def run_probe(parser: argparse.ArgumentParser, args) -> int:
    if not K.NUMBA_AVAILABLE:
        parser.error("--probe needs numba")
    torch.set_num_threads(int(args.threads.split(",")[-1]))
    print("\n".join(probe(sparsity=args.sparsity, seed=args.seed)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, plan = parse(parser, argv)
    if args.probe:
        return run_probe(parser, args)
    if plan.device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    rows = run_configs(args, plan)
    header, table_rows = summary_table(rows, plan.kernels)
    verdicts = targets(rows, plan.device.type)
    print_table(header, table_rows, args, plan.device.type)
    for line in verdicts:
        print(line)
    if args.out:
        argv = sys.argv[1:] if argv is None else argv
        md = markdown(rows, header, table_rows, verdicts, plan.device.type, argv)
        write_results(Path(args.out), rows, md)
    return 0
