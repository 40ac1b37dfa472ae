"""Child process for the checkpoint round-trip test: train, save, or resume and train."""

import sys

import torch
from helpers import make_opt, mlp, train_step

import sparse_agents as sa


def build(updater):
    model = mlp(seed=1)
    opt = make_opt("adam", model)
    topo = sa.SparseTopology(model, opt, sparsity=0.85, updater=updater, delta_t=3,
                             t_end=18, seed=2)
    return model, opt, topo


def main() -> None:
    updater, mode = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    model, opt, topo = build(updater)
    if mode == "train":
        start, stop, out = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    else:
        ckpt = torch.load(sys.argv[3])
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        topo.load_state_dict(ckpt["topo"])
        start, stop, out = topo.step, int(sys.argv[4]), sys.argv[5]
    for step in range(start, stop):
        train_step(model, opt, step)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "topo": topo.state_dict()}, out)


if __name__ == "__main__":
    main()
