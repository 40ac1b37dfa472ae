"""What a training step costs under each compute mode, measured side by side in one run.

Behind ``scripts/bench_training.py`` (docs/training.md). Three parts, each written
atomically under ``--out`` and skipped when its CSV is there (``--force`` redoes it):

``peak``
    the machine's dense GEMM GFLOP/s and streaming-read GB/s (cache- and memory-sized).
``layers``
    one full training step (forward, input and weight gradient, fused Adam step) of one
    square linear layer: dense, masked (``SparseTopology(compute="masked")``), condensed
    and SparseProp's ``SparseLinear`` (when ``sparseprop`` is installed), interleaved
    per configuration; the condensed kernels' achieved GFLOP/s and GB/s.
``kernels``
    where a condensed step's time goes (1024x1024, batch 256, 90%): each kernel alone,
    the transposes, the optimizer step, the write-back into the dense weight.
``update``
    the extra cost of a step that runs a RigL update under ``compute="condensed"`` (the
    dense gradient product, the update, the new structure), against a plain step.
``sb3``
    stable-baselines3 agents: SAC HalfCheetah-v5 gradient steps and ``predict`` at
    (256, 256) and (1024, 1024), DQN MinAtar (``MinAtarCNN``) and PPO CartPole ``learn``
    wall time, for the dense policy and the sparse one under each compute mode.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparse_agents import SparseTopology
from sparse_agents.experiments.results import write_atomic
from sparse_agents.timing import sample_interleaved

DESCRIPTION = __doc__.split("\n\n", 1)[1]

EPILOG = """\
examples:
  python scripts/bench_training.py --out results/bench_training          # all parts
  python scripts/bench_training.py --parts layers --sizes 1024 --batches 256 --quick"""

SIZES = (256, 1024, 2048)
BATCHES = (1, 32, 256)
SPARSITIES = (0.8, 0.9, 0.95, 0.99)
PARTS = ("peak", "layers", "kernels", "update", "sb3")
#: bytes one active entry moves per training step in the condensed kernels: the gathered
#: input row (forward and weight gradient) and output-gradient row (input gradient), 4
#: bytes per batch element each, plus value and index reads
KERNEL_BYTES_PER_ENTRY_AND_SAMPLE = 3 * 4


def _sparseprop() -> type | None:
    try:
        from sparseprop.modules import SparseLinear
    except Exception:
        return None
    return SparseLinear


def parse_shape(text: str) -> tuple[int, int]:
    """``"N"`` (square) or ``"OUTxIN"`` -> ``(out_features, in_features)``."""
    parts = str(text).lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2) or min(dims) < 1:
        raise ValueError(f"--sizes takes N or OUTxIN with positive integers, got {text!r}")
    return (dims[0], dims[-1])


def layer_step(method: str, shape: tuple[int, int], batch: int, sparsity: float,
               seed: int = 0) -> Callable:
    """One full training step of an ``out x in`` layer at ``sparsity`` under ``method``."""
    torch.manual_seed(seed)
    n_out, n_in = shape
    layer = nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in, requires_grad=True)
    grad_out = torch.randn(batch, n_out)
    if method == "sparseprop":
        mask = torch.rand(n_out, n_in) >= sparsity
        with torch.no_grad():
            layer.weight.mul_(mask)
        layer = _sparseprop().from_dense(layer)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-4, fused=True)
    if method in ("masked", "condensed"):
        # RigL hooks with no update inside the timing (the update's cost is part "update")
        SparseTopology(layer, opt, sparsity=sparsity, updater="rigl", distribution="uniform",
                       delta_t=10**9, grad_masking="backward", compute=method)

    def step() -> None:
        opt.zero_grad()
        x.grad = None  # the input gradient is computed, as for a hidden layer, not summed
        layer(x).backward(grad_out)
        opt.step()

    return step


def bench_layers(sizes, batches, sparsities, rounds: int, min_sample_s: float) -> list[dict]:
    methods = ["dense", "masked", "condensed"] + (["sparseprop"] if _sparseprop() else [])
    rows = []
    for text in sizes:
        shape = parse_shape(text)
        n = f"{shape[0]}x{shape[1]}"
        for batch in batches:
            for sparsity in sparsities:
                fns = {m: layer_step(m, shape, batch, sparsity) for m in methods}
                times = {m: float(np.median(s)) for m, s in sample_interleaved(
                    fns, rounds=rounds, min_sample_s=min_sample_s, rotate=True).items()}
                nnz = round((1 - sparsity) * shape[0] * shape[1])
                flops = 3 * 2 * nnz * batch  # forward, input and weight gradient
                moved = nnz * batch * KERNEL_BYTES_PER_ENTRY_AND_SAMPLE
                for m in methods:
                    rows.append(dict(
                        size=n, batch=batch, sparsity=sparsity, method=m,
                        ms=1e3 * times[m], speedup_vs_dense=times["dense"] / times[m],
                        speedup_vs_masked=times["masked"] / times[m],
                        gflops_active=flops / times[m] / 1e9,
                        gbytes_per_s=moved / times[m] / 1e9))
                print(f"{n} batch {batch} sparsity {sparsity}: " + ", ".join(
                    f"{m} {1e3 * times[m]:.3f} ms" for m in methods), flush=True)
    return rows


def bench_kernels(n: int, batch: int, sparsity: float, rounds: int) -> list[dict]:
    """Where a condensed step's time goes: each kernel alone and the rest of the step."""
    from sparse_agents.compute import kernels as K

    torch.manual_seed(0)
    layer = nn.Linear(n, n)
    x = torch.randn(batch, n, requires_grad=True)
    g = torch.randn(batch, n)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-4, fused=True)
    topo = SparseTopology(layer, opt, sparsity=sparsity, updater="rigl",
                          distribution="uniform", delta_t=10**9, grad_masking="backward",
                          compute="condensed")
    ct = topo.layers[0].condensed
    s, v, b = ct.structure, ct.values.detach(), layer.bias.detach()
    xt, gt = x.detach().t().contiguous(), g.t().contiguous()

    def full() -> None:
        opt.zero_grad()
        x.grad = None
        layer(x).backward(g)
        opt.step()

    fns = {"full step": full,
           "forward kernel": lambda: K.forward(s, xt, v, b, "numba"),
           "fused backward kernel (both gradients)": lambda: K.backward_both(s, gt, xt, v),
           "weight-gradient kernel alone": lambda: K.backward_weight(s, gt, xt, "numba"),
           "input-gradient kernel alone": lambda: K.backward_input(s, gt, v, "numba"),
           "one activation transpose": lambda: x.detach().t().contiguous(),
           "optimizer step (fused Adam on the values, hooks)": opt.step,
           "values into the dense weight": ct.sync_weight}
    times = {m: float(np.median(t)) for m, t in sample_interleaved(
        fns, rounds=rounds, min_sample_s=0.05).items()}
    flops = 2 * s.nnz * batch
    products = {"fused backward kernel (both gradients)": 2}  # two products in one pass
    return [dict(what=f"{name} ({n}x{n}, batch {batch}, {sparsity})", ms=1e3 * t,
                 gflops=products.get(name, 1) * flops / t / 1e9 if "kernel" in name
                 else float("nan"))
            for name, t in times.items()]


def bench_update(n: int, batch: int, sparsity: float, rounds: int) -> list[dict]:
    """A condensed step with a RigL update (every call) against one without."""
    rows = []
    torch.manual_seed(0)
    fns = {}
    for name, delta_t in (("plain step", 10**9), ("step with a RigL update", 1)):
        layer = nn.Linear(n, n)
        x = torch.randn(batch, n, requires_grad=True)
        g = torch.randn(batch, n)
        opt = torch.optim.Adam(layer.parameters(), lr=1e-4, fused=True)
        SparseTopology(layer, opt, sparsity=sparsity, updater="rigl", distribution="uniform",
                       delta_t=delta_t, grad_masking="backward", compute="condensed")

        def step(layer=layer, x=x, g=g, opt=opt) -> None:
            opt.zero_grad()
            layer(x).backward(g)
            opt.step()
        fns[name] = step
    times = {m: float(np.median(s)) for m, s in sample_interleaved(
        fns, rounds=rounds, min_sample_s=0.2).items()}
    extra = times["step with a RigL update"] - times["plain step"]
    for name, t in times.items():
        rows.append(dict(what=f"{name}, {n}x{n} batch {batch} at {sparsity}", ms=1e3 * t))
    for delta_t in (100, 1000):
        rows.append(dict(what=f"update cost per step at delta_t={delta_t}",
                         ms=1e3 * extra / delta_t))
    return rows


def bench_peak(rounds: int) -> list[dict]:
    """What this machine does at best: dense GEMM GFLOP/s (the dense baseline's own
    kernel) and streaming-read GB/s of a cache-sized and a memory-sized array."""
    from numba import njit, prange

    @njit(parallel=True, fastmath=True, cache=False)
    def total(a):  # pragma: no cover - jit
        s = np.float32(0.0)
        for i in prange(a.shape[0]):
            s += a[i]
        return s

    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 256)
    arrays = {"1 MiB": np.ones(1 << 18, np.float32), "256 MiB": np.ones(1 << 26, np.float32)}
    fns = {"GEMM 1024x1024x256": lambda: a @ b}
    fns.update({f"read {k}": (lambda v=v: total(v)) for k, v in arrays.items()})
    times = {n: float(np.median(s)) for n, s in sample_interleaved(
        fns, rounds=rounds, min_sample_s=0.1).items()}
    rows = [dict(what="dense GEMM 1024x1024x256", rate=2 * 1024 * 1024 * 256 /
                 times["GEMM 1024x1024x256"] / 1e9, unit="GFLOP/s")]
    for k, v in arrays.items():
        rows.append(dict(what=f"streaming read, {k}", rate=v.nbytes / times[f"read {k}"] / 1e9,
                         unit="GB/s"))
    return rows


# --------------------------------------------------------------------------- sb3
def _sac(policy: str, width: int, compute: str | None):
    from stable_baselines3 import SAC

    import sparse_agents.sb3  # noqa: F401  (registers the Sparse* aliases)

    kwargs = dict(net_arch=[width, width])
    if compute is not None:
        kwargs.update(compute=compute, log_sparsity=False)
    model = SAC(policy, "HalfCheetah-v5", policy_kwargs=kwargs, batch_size=256,
                learning_starts=1000, buffer_size=5000, seed=0, device="cpu")
    model.learn(1000)  # fills the buffer with random steps; no gradient step yet
    return model


def _dqn_minatar(width_factor: int, sparsity: float, compute: str | None):
    """Young & Tian's DQN with the CNN at ``width_factor`` x 4 channels and 32 units
    (dense when ``compute`` is None; else RigL at ``sparsity``), training every step
    after 500 random ones."""
    from sparse_agents.experiments.rl import make_agent

    width = dict(channels=4 * width_factor, features_dim=32 * width_factor)
    overrides = dict(learning_starts=500, buffer_size=10_000, features_extractor_kwargs=width)
    options = dict(compute=compute, log_sparsity=False, dense_input=False)
    model, _ = make_agent("dqn", "MinAtar/SpaceInvaders-v1",
                          "dense" if compute is None else "rigl", sparsity,
                          overrides=overrides, hyperparams="minatar", timesteps=10**5,
                          sparse_options=None if compute is None else options,
                          sparse_settings="defaults")
    return model


def _masked_weights(model) -> int:
    return sum(m.weight.numel() for name, m in model.policy.named_modules()
               if isinstance(m, nn.Linear | nn.Conv2d) and "target" not in name)


def _ppo(compute: str | None):
    from sparse_agents.experiments.rl import make_agent

    options = dict(compute=compute, log_sparsity=False)
    model, _ = make_agent("ppo", "CartPole-v1", "dense" if compute is None else "srigl",
                          0.9, sparse_options=None if compute is None else options,
                          sparse_settings="defaults")
    return model


def bench_sb3(rounds: int, quick: bool) -> list[dict]:
    rows: list[dict] = []
    variants = {"dense": ("MlpPolicy", None), "masked": ("SparseMlpPolicy", "masked"),
                "condensed": ("SparseMlpPolicy", "condensed"),
                "auto": ("SparseMlpPolicy", "auto")}
    for width in (256, 1024):
        models = {name: _sac(p, width, c) for name, (p, c) in variants.items()}
        steps = 2 if width == 1024 else 8
        grad = sample_interleaved(
            {n: (lambda m=m, k=steps: m.train(gradient_steps=k, batch_size=256))
             for n, m in models.items()}, rounds=rounds, rotate=True)
        obs = models["dense"].env.reset()
        pred = sample_interleaved({n: (lambda m=m, o=obs: m.predict(o, deterministic=True))
                                   for n, m in models.items()}, rounds=rounds, calls=50,
                                  rotate=True)
        for name in models:
            g = float(np.median(grad[name])) / steps
            p = float(np.median(pred[name]))
            rows.append(dict(task=f"SAC HalfCheetah-v5 ({width}, {width})", method=name,
                             what="gradient step", ms=1e3 * g,
                             ratio_to_dense=g / (float(np.median(grad["dense"])) / steps)))
            rows.append(dict(task=f"SAC HalfCheetah-v5 ({width}, {width})", method=name,
                             what="predict (1 obs)", ms=1e3 * p,
                             ratio_to_dense=p / float(np.median(pred["dense"]))))
        print(rows[-8:], flush=True)
    # DQN MinAtar: the 4x CNN at the 1x dense CNN's weight count, and the 4x dense CNN
    dense1 = _dqn_minatar(1, 0.0, None)
    dense4 = _dqn_minatar(4, 0.0, None)
    sparsity = round(1 - _masked_weights(dense1) / _masked_weights(dense4), 6)
    models = {"dense 1x": dense1, "dense 4x": dense4,
              "RigL 4x masked": _dqn_minatar(4, sparsity, "masked"),
              "RigL 4x condensed": _dqn_minatar(4, sparsity, "condensed"),
              "RigL 4x auto": _dqn_minatar(4, sparsity, "auto")}
    n_steps = 500 if quick else 2000
    for m in models.values():
        m.learn(600)  # past learning_starts: every further step trains
    wall = sample_interleaved({n: (lambda m=m: m.learn(n_steps, reset_num_timesteps=False))
                               for n, m in models.items()}, rounds=rounds, warmup=0,
                              rotate=True)
    base = float(np.median(wall["dense 1x"]))
    for name in models:
        t = float(np.median(wall[name]))
        rows.append(dict(task=f"DQN MinAtar SpaceInvaders (4x at {1 - sparsity:.3f} "
                              "density vs 1x dense)",
                         method=name, what=f"learn {n_steps} steps (1 gradient step each)",
                         ms=1e3 * t, ratio_to_dense=t / base))
    print(rows[-5:], flush=True)
    models = {"dense": _ppo(None), "masked": _ppo("masked"), "condensed": _ppo("condensed"),
              "auto": _ppo("auto")}
    n_steps = 4096
    wall = sample_interleaved({n: (lambda m=m: m.learn(n_steps, reset_num_timesteps=False))
                               for n, m in models.items()}, rounds=rounds, rotate=True)
    base = float(np.median(wall["dense"]))
    for name in models:
        t = float(np.median(wall[name]))
        rows.append(dict(task="PPO CartPole-v1 (zoo, 64x64)", method=name,
                         what=f"learn {n_steps} steps", ms=1e3 * t, ratio_to_dense=t / base))
    print(rows[-4:], flush=True)
    return rows


# --------------------------------------------------------------------------- output
def _write_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False)
    write_atomic(path, buf.getvalue())


def plot_layers(csv: Path, out: Path) -> None:
    """Speed-up over dense of masked, condensed and SparseProp per size and batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv)
    sizes = sorted(df["size"].unique(), key=lambda s: [int(d) for d in str(s).split("x")])
    batches = sorted(df["batch"].unique())
    fig, axes = plt.subplots(len(batches), len(sizes), figsize=(3.2 * len(sizes),
                             2.6 * len(batches)), sharey=True, squeeze=False)
    for i, batch in enumerate(batches):
        for j, n in enumerate(sizes):
            ax = axes[i][j]
            sub = df[(df["size"] == n) & (df["batch"] == batch)]
            for method, marker in (("masked", "s"), ("condensed", "o"), ("sparseprop", "^")):
                s = sub[sub["method"] == method].sort_values("sparsity")
                if len(s):
                    ax.plot(s["sparsity"], s["speedup_vs_dense"], marker=marker, label=method)
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_yscale("log")
            ax.set_title(f"{n}, batch {batch}", fontsize=9)
            if i == len(batches) - 1:
                ax.set_xlabel("sparsity")
            if j == 0:
                ax.set_ylabel("speed-up over dense")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Full training step of one linear layer (fused Adam), 2 threads, fp32",
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict], floatfmt: str = ".3f") -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=floatfmt) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_training.py", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--sizes", nargs="+", default=[str(n) for n in SIZES],
                        help="layer shapes: N (square) or OUTxIN")
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter samples")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/bench_training"))
    parser.add_argument("--plot", default="docs/training/layers.png",
                        help="the layers part's figure ('' draws none)")
    parser.add_argument("--force", action="store_true", help="redo parts already written")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for text in args.sizes:
            parse_shape(text)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    for name, values, low in (("--batches", args.batches, 1), ("--threads", [args.threads], 1)):
        if min(values) < low:
            raise SystemExit(f"{name} must be >= {low}, got {values}")
    if not all(0 <= s < 1 for s in args.sparsities):
        raise SystemExit(f"--sparsities must be in [0, 1), got {args.sparsities}")
    torch.set_num_threads(args.threads)
    from sparse_agents.condensed.kernels import numba_threads

    numba_threads(args.threads)
    rounds = 3 if args.quick else 7
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d")
    for part in args.parts:
        csv = args.out / f"{part}.csv"
        if csv.exists() and not args.force:
            print(f"{csv} exists: skipped (--force redoes it)")
            continue
        t0 = time.perf_counter()
        if part == "layers":
            if _sparseprop() is None:
                print("sparseprop is not installed: its rows are left out (install: pip "
                      "install pybind11 && pip install --no-build-isolation sparseprop)")
            rows = bench_layers(args.sizes, args.batches, args.sparsities, rounds,
                                0.02 if args.quick else 0.05)
        elif part == "peak":
            rows = bench_peak(rounds)
        elif part == "kernels":
            rows = bench_kernels(1024, 256, 0.9, rounds)
        elif part == "update":
            rows = bench_update(1024, 256, 0.9, rounds)
        else:
            rows = bench_sb3(min(rounds, 5), args.quick)
        _write_csv(rows, csv)
        write_atomic(args.out / f"{part}.md",
                     f"<!-- {started}, {args.threads} threads, {time.perf_counter() - t0:.0f}"
                     f" s -->\n" + markdown(rows))
        print(markdown(rows))
        if part == "layers" and args.plot:
            plot_layers(csv, Path(args.plot))
    return 0
