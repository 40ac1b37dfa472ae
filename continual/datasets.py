"""Loaders for MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from files already on disk.

Nothing downloads. Each loader looks for the standard distribution files under
``root`` (``root`` itself, and the sub-folders torchvision uses) and raises
:class:`DatasetNotFound` (a ``FileNotFoundError``) naming the expected files and the
folders searched when they are absent.

Expected files:

* MNIST: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), in
  ``root``, ``root/MNIST/raw`` or ``root/mnist``.
* Fashion-MNIST: the same four names, in ``root``, ``root/FashionMNIST/raw`` or
  ``root/fashion-mnist``.
* CIFAR-10: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (python pickles) in
  ``root/cifar-10-batches-py`` or ``root``.
* CIFAR-100: ``train`` and ``test`` (python pickles) in ``root/cifar-100-python`` or
  ``root``.

``root`` defaults to ``$SPARSE_AGENTS_DATA``, else ``./data``. Every loader returns
``(images, labels)``: a ``uint8`` tensor ``[N, C, H, W]`` and an ``int64`` tensor ``[N]``.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "DatasetNotFound",
    "data_root",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
]

ENV_VAR = "SPARSE_AGENTS_DATA"
IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFound(FileNotFoundError):
    """The dataset's files are not under the given root (nothing is downloaded)."""


def data_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$SPARSE_AGENTS_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get(ENV_VAR, "data")).expanduser()


def _missing(name: str, files: list[str], dirs: list[Path]) -> DatasetNotFound:
    return DatasetNotFound(
        f"{name} files not found: expected {', '.join(files)} in one of "
        f"{', '.join(str(d) for d in dirs)}. Nothing is downloaded: copy the files there, "
        f"or pass root= (--data-root) / set ${ENV_VAR} to the folder holding them"
    )


def _find(root: Path, subdirs: tuple[str, ...], names: tuple[str, ...],
          gz: bool) -> tuple[list[Path] | None, list[Path]]:
    """First folder holding every name (or ``name.gz`` when ``gz``)."""
    dirs = [root / s if s else root for s in subdirs]
    for d in dirs:
        found = []
        for n in names:
            options = [d / n, d / f"{n}.gz"] if gz else [d / n]
            hit = next((p for p in options if p.is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found, dirs
    return None, dirs


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 0
    if len(data) - offset != count:
        raise ValueError(f"{path}: header says {dims} ({count} bytes), file holds "
                         f"{len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _load_idx(name: str, root: str | Path | None, train: bool,
              subdirs: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    base = data_root(root)
    names = IDX_FILES[bool(train)]
    found, dirs = _find(base, subdirs, names, gz=True)
    if found is None:
        raise _missing(name, [f"{n}[.gz]" for n in names], dirs)
    images, labels = (_read_idx(p) for p in found)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{name}: images {images.shape} and labels {labels.shape} disagree")
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_mnist(root: str | Path | None = None, train: bool = True) -> tuple[Tensor, Tensor]:
    """MNIST from its IDX files: ``uint8 [N, 1, 28, 28]``, ``int64 [N]``."""
    return _load_idx("MNIST", root, train, ("", "MNIST/raw", "mnist", "MNIST"))


def load_fashion_mnist(root: str | Path | None = None,
                       train: bool = True) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST from its IDX files: ``uint8 [N, 1, 28, 28]``, ``int64 [N]``."""
    return _load_idx("Fashion-MNIST", root, train,
                     ("", "FashionMNIST/raw", "fashion-mnist", "FashionMNIST"))


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar(entries: list[dict], label_key: str, name: str) -> tuple[Tensor, Tensor]:
    data = np.concatenate([np.asarray(e["data"], dtype=np.uint8) for e in entries])
    labels = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{name}: unexpected array shapes {data.shape}, {labels.shape}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(labels)


def load_cifar10(root: str | Path | None = None, train: bool = True) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from the python pickles: ``uint8 [N, 3, 32, 32]``, ``int64 [N]``."""
    base = data_root(root)
    names = tuple(f"data_batch_{i}" for i in range(1, 6)) if train else ("test_batch",)
    found, dirs = _find(base, ("cifar-10-batches-py", ""), names, gz=False)
    if found is None:
        raise _missing("CIFAR-10", list(names), dirs)
    return _cifar([_unpickle(p) for p in found], "labels", "CIFAR-10")


def load_cifar100(root: str | Path | None = None, train: bool = True,
                  label: str = "fine") -> tuple[Tensor, Tensor]:
    """CIFAR-100 from the python pickles; ``label`` is ``"fine"`` (100 classes) or
    ``"coarse"`` (20 superclasses)."""
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    base = data_root(root)
    names = ("train",) if train else ("test",)
    found, dirs = _find(base, ("cifar-100-python", ""), names, gz=False)
    if found is None:
        raise _missing("CIFAR-100", list(names), dirs)
    return _cifar([_unpickle(p) for p in found], f"{label}_labels", "CIFAR-100")


DATASETS = {
    "mnist": load_mnist,
    "fmnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}


def load_dataset(name: str, root: str | Path | None = None,
                 train: bool = True) -> tuple[Tensor, Tensor]:
    """Load dataset ``name`` (one of :data:`DATASETS`) from ``root``."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {name!r}")
    return DATASETS[name](root, train=train)
