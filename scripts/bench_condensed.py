"""Side-by-side timing of dense, CSR and condensed linear layers (DESIGN section 5).

For each thread count, layer shape and batch size, one process times (interleaved, the
median over rounds of many calls, after warm-up):

* ``dense``: the masked dense ``nn.Linear`` (what a sparse model runs without help);
* ``csr``: the same weight as a ``torch.sparse`` CSR matrix (``addmm``);
* every condensed kernel, forced (``kernel=<name>``);
* ``auto``: the condensed layer's automatic, measured choice.

Ratios are ``time(dense) / time(method)`` and ``time(csr) / time(method)`` (> 1: the
method is faster). Results go to ``--out`` as CSV and markdown, and to the terminal.

    python scripts/bench_condensed.py --out results/condensed           # full CPU run
    python scripts/bench_condensed.py --quick                           # a fast look
    python scripts/bench_condensed.py --device cuda --out results/gpu   # on a GPU
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from sparse_agents.condensed import CondensedLinear
from sparse_agents.condensed import kernels as K

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


def masked_linear(n_in: int, n_out: int, sparsity: float, fan_in: str, seed: int) -> nn.Linear:
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        w = lin.weight.detach().to_sparse_csr()
    return K.make_csr(w, lin.bias.detach())


def load_average() -> float:
    """The 1-minute load average (other processes make 2-thread timings noisy)."""
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:  # pragma: no cover - not Linux
        return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict, x: torch.Tensor, rounds: int, sample_s: float) -> dict:
    """Median seconds per call of every function, timed round-robin."""
    device = x.device
    reps = {}
    for name, fn in fns.items():
        for _ in range(3):
            fn(x)
        sync(device)
        t0 = time.perf_counter()
        fn(x)
        sync(device)
        one = max(time.perf_counter() - t0, 1e-7)
        reps[name] = max(1, min(20000, int(sample_s / one)))
    samples: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn(x)
            sync(device)
            samples[name].append((time.perf_counter() - t0) / reps[name])
    return {n: statistics.median(s) for n, s in samples.items()}


def bench_config(lin, device, batch, rounds, sample_s, kernels, seed):
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
    ref = lin(x)
    for name, fn in fns.items():  # every method computes the same thing
        torch.testing.assert_close(fn(x), ref, rtol=1e-4, atol=1e-4, msg=name)
    times = time_interleaved(fns, x, rounds, sample_s)
    return times, auto.chosen_kernels[K.batch_bucket(batch)]


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


def bench_mlp(model, device, batch, rounds, sample_s, seed):
    from sparse_agents.condensed import condense

    g = torch.Generator().manual_seed(seed + batch)
    x = torch.randn(batch, model[0].in_features, generator=g).to(device)
    fast = condense(model)
    fns = {"dense": model, "csr": CSRSequential(model), "auto": fast}
    ref = model(x)
    for name, fn in fns.items():
        torch.testing.assert_close(fn(x), ref, rtol=1e-4, atol=1e-4, msg=name)
    times = time_interleaved(fns, x, rounds, sample_s)
    chosen = "+".join(m.chosen_kernels[K.batch_bucket(batch)].replace("numba_", "")
                      for m in fast.modules() if isinstance(m, CondensedLinear))
    return times, chosen


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

    def best(f, *args, n=50):
        f(*args)
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            f(*args)
            ts.append(time.perf_counter() - t0)
        return min(ts)

    rng = np.random.default_rng(seed)
    k = round((1 - sparsity) * n_in)
    nnz = k * n_out
    x = rng.standard_normal(n_in).astype(np.float32)
    idx = rng.integers(0, n_in, nnz).astype(np.uint16)
    a = rng.standard_normal(nnz).astype(np.float32)
    tg, td = best(gather_sum, x, idx), best(dot, a, a)
    lin = masked_linear(n_in, n_out, sparsity, "constant", seed)
    xt = torch.randn(1, n_in)
    with torch.inference_mode():
        tl = best(lin, xt)
    nt = torch.get_num_threads()
    return [
        f"probe ({n_in}->{n_out}, {nnz} nonzeros, batch 1, {nt} torch threads):",
        f"  gather-sum of {nnz} random x[idx] on one core: {tg * 1e6:.1f} us "
        f"({tg / nnz * 1e9:.2f} ns per nonzero)",
        f"  contiguous dot of the same length on one core: {td * 1e6:.1f} us",
        f"  dense nn.Linear: {tl * 1e6:.1f} us "
        f"({lin.weight.numel() * 4 / tl / 1e9:.1f} GB/s of weights)",
        f"  => floor of any gather-based kernel on {os.cpu_count()} cores: "
        f"{tg / os.cpu_count() * 1e6:.1f} us, so at most x{tl / (tg / os.cpu_count()):.2f} "
        "vs dense at batch 1",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    p.add_argument("--out", default=None, help="directory for results.csv and results.md")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.sample_ms = 3, 3.0
    if args.probe:
        if not K.NUMBA_AVAILABLE:
            p.error("--probe needs numba")
        torch.set_num_threads(int(args.threads.split(",")[-1]))
        print("\n".join(probe(sparsity=args.sparsity, seed=args.seed)))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            p.error(f"unknown shape {s!r}; choose from {list(SHAPES)}")
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else \
        [torch.get_num_threads()]
    kernels = [k for k in (K.CPU_KERNELS if device.type == "cpu" else K.CUDA_KERNELS)
               if not (k.startswith("numba") and not K.NUMBA_AVAILABLE)
               and not (k == "triton_ell" and not K.triton_available())]

    try:
        from rich.console import Console
        from rich.table import Table
        console = Console(width=240)
    except ImportError:  # pragma: no cover
        console = None

    rows = []
    for nt in threads:
        torch.set_num_threads(nt)
        K.numba_threads(nt)
        for shape in shapes:
            n_in, n_out = SHAPES[shape]
            lin = masked_linear(n_in, n_out, args.sparsity, args.fan_in, args.seed).to(device)
            for batch in batches:
                with torch.inference_mode():
                    times, chosen = bench_config(lin, device, batch, args.rounds,
                                                 args.sample_ms / 1e3, kernels, args.seed)
                td, tc = times["dense"], times["csr"]
                load = load_average()
                for method, t in times.items():
                    rows.append(dict(
                        device=device.type, threads=nt, shape=shape, in_features=n_in,
                        out_features=n_out, sparsity=args.sparsity, fan_in=args.fan_in,
                        batch=batch, method=method, kernel=chosen if method == "auto" else "",
                        time_us=round(t * 1e6, 3), vs_dense=round(td / t, 3),
                        vs_csr=round(tc / t, 3), load1=load))
                msg = (f"threads={nt} {shape} batch={batch}: dense {td * 1e6:.1f}us, "
                       f"csr x{td / tc:.2f}, auto[{chosen}] x{td / times['auto']:.2f} vs dense, "
                       f"x{tc / times['auto']:.2f} vs csr")
                print(msg, flush=True)

        if args.mlp:
            sizes = [int(w) for w in args.mlp.split(",")]
            model = masked_mlp(sizes, args.sparsity, args.fan_in, args.seed).to(device)
            name = "mlp_" + "-".join(map(str, sizes))
            for batch in batches:
                with torch.inference_mode():
                    times, chosen = bench_mlp(model, device, batch, args.rounds,
                                              args.sample_ms / 1e3, args.seed)
                td, tc = times["dense"], times["csr"]
                load = load_average()
                for method, t in times.items():
                    rows.append(dict(
                        device=device.type, threads=nt, shape=name, in_features=sizes[0],
                        out_features=sizes[-1], sparsity=args.sparsity, fan_in=args.fan_in,
                        batch=batch, method=method, kernel=chosen if method == "auto" else "",
                        time_us=round(t * 1e6, 3), vs_dense=round(td / t, 3),
                        vs_csr=round(tc / t, 3), load1=load))
                print(f"threads={nt} {name} batch={batch}: dense {td * 1e6:.1f}us, csr "
                      f"x{td / tc:.2f}, condense(model)[{chosen}] x{td / times['auto']:.2f} "
                      f"vs dense, x{tc / times['auto']:.2f} vs csr", flush=True)

    methods = ["csr"] + [f"condensed:{k}" for k in kernels] + ["auto"]
    header = ["threads", "shape", "batch", "dense us"] + [SHORT.get(m.split(":")[-1], m)
                                                      if m != "csr" else "csr" for m in methods] + [
        "auto kernel", "auto vs csr"]
    table_rows = []
    for key in dict.fromkeys((r["threads"], r["shape"], r["batch"]) for r in rows):
        sel = {r["method"]: r for r in rows if (r["threads"], r["shape"], r["batch"]) == key}
        cells = [str(key[0]), key[1], str(key[2]), f"{sel['dense']['time_us']:.1f}"]
        cells += [f"{sel[m]['vs_dense']:.2f}" if m in sel else "-" for m in methods]
        cells += [sel["auto"]["kernel"], f"{sel['auto']['vs_csr']:.2f}"]
        table_rows.append(cells)
    verdicts = targets(rows, device.type)
    if console is not None:
        table = Table(title=f"time(dense) / time(method) on {device.type}, sparsity "
                            f"{args.sparsity}, {args.fan_in} fan-in (> 1: faster than dense)")
        for h in header:
            table.add_column(h, justify="right")
        for cells in table_rows:
            table.add_row(*cells)
        console.print(table)
    for line in verdicts:
        print(line)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        env = (f"torch {torch.__version__}, numba "
               f"{K.numba.__version__ if K.NUMBA_AVAILABLE else 'absent'}, python "
               f"{platform.python_version()}, {platform.machine()}, "
               f"{os.cpu_count()} CPUs" + (f", {torch.cuda.get_device_name()}"
                                           if device.type == "cuda" else ""))
        loads = [r["load1"] for r in rows]
        md = [f"command: `python scripts/bench_condensed.py {' '.join(sys.argv[1:])}`", "",
              f"environment: {env}; 1-minute load average during the run "
              f"{min(loads):.2f}-{max(loads):.2f}", "",
              "ratios: time(dense) / time(method); > 1 is faster than the masked dense "
              "`nn.Linear`. " + LEGEND, "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(c) + " |" for c in table_rows]
        md += ["", "targets:", ""] + [f"- {v}" for v in verdicts]
        tuned = K.triton_configs()
        if tuned:
            md += ["", "Triton ELL tiles chosen by tuning (rows n, fan-in k, batch bucket b = "
                   "batches in [2^(b-1), 2^b): tile, microseconds per call while tuning):",
                   ""]
            md += [f"- n={key[1]}, k={key[2]}, b={key[3]}: {c['tile']}, "
                   f"{c['seconds'] * 1e6:.1f} us" for key, c in tuned.items()]
        (out / "results.md").write_text("\n".join(md) + "\n")
        print(f"wrote {out / 'results.csv'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
