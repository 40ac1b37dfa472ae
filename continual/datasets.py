"""Loaders for MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100 and miniImageNet from files on disk.

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
* miniImageNet (100 classes x 600 images): the pickle cache
  ``mini-imagenet-cache-train.pkl``, ``-val.pkl``, ``-test.pkl``, or an image folder
  ``<wnid>/<image>.jpg|.jpeg|.png`` (optionally under ``train/``, ``val/``,
  ``validation/``, ``test/``), in ``root/miniimagenet`` (any spelling such as
  ``mini-imagenet``, ``mini_imagenet``, ``miniImageNet100``) or ``root``. See
  :func:`load_miniimagenet` for the per-class train/test split.

``root`` defaults to ``$SPARSE_AGENTS_DATA``, else ``./data``. Every loader returns
``(images, labels)``: a ``uint8`` tensor ``[N, C, H, W]`` and an ``int64`` tensor ``[N]``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DATASETS",
    "DatasetNotFound",
    "data_root",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_fashion_mnist",
    "load_miniimagenet",
    "load_mnist",
    "miniimagenet_split",
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


# ---------------------------------------------------------------------- miniImageNet
MINI_PICKLES = ("mini-imagenet-cache-train.pkl", "mini-imagenet-cache-val.pkl",
                "mini-imagenet-cache-test.pkl")
#: split folders of an image-folder layout, merged in this order (CL uses all 100 classes)
MINI_SPLIT_DIRS = ("train", "val", "validation", "test")
MINI_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MINI_SIZE = 84
#: held-out share of every class: 100 of its 600 images
MINI_TEST_FRACTION = 1 / 6


def _mini_dirs(base: Path) -> list[Path]:
    """Folders that may hold miniImageNet: ``base/miniimagenet``, the other spellings of
    that name found in ``base`` (``mini-imagenet``, ``miniImageNet100``, ...), ``base``."""
    dirs = [base / "miniimagenet"]
    if base.is_dir():
        for child in sorted(base.iterdir()):
            key = child.name.lower().replace("-", "").replace("_", "")
            if key in ("miniimagenet", "miniimagenet100") and child.is_dir() \
                    and child not in dirs:
                dirs.append(child)
    return dirs + [base]


def _image_classes(folder: Path) -> dict[str, list[Path]]:
    """``{class folder name: sorted image files}`` of ``folder``'s class folders, or of
    its split folders (``train/``, ``val/``, ``validation/``, ``test/``) merged, or of
    Ravi & Larochelle's ``images/`` + ``train.csv``/``val.csv``/``test.csv``."""
    csvs = [folder / f"{s}.csv" for s in ("train", "val", "test")]
    if (folder / "images").is_dir() and all(c.is_file() for c in csvs):
        return _csv_classes(folder / "images", csvs)
    splits = [folder / s for s in MINI_SPLIT_DIRS if (folder / s).is_dir()]
    classes: dict[str, list[Path]] = {}
    for top in splits or [folder]:
        for sub in sorted(p for p in top.iterdir() if p.is_dir()):
            files = sorted(p for p in sub.iterdir()
                           if p.suffix.lower() in MINI_IMAGE_SUFFIXES
                           and not p.name.startswith(".") and p.is_file())
            if files:
                classes.setdefault(sub.name, []).extend(files)
    return classes


def _csv_classes(images: Path, csvs: list[Path]) -> dict[str, list[Path]]:
    """Classes of the ``filename,label`` CSV files (header line first) over ``images/``."""
    classes: dict[str, list[Path]] = {}
    for csv in csvs:
        for line in csv.read_text().splitlines()[1:]:
            if line.strip():
                name, label = (t.strip() for t in line.split(",", 1))
                classes.setdefault(label, []).append(images / name)
    missing = [p for files in classes.values() for p in files if not p.is_file()]
    if missing:
        raise DatasetNotFound(f"miniImageNet: {len(missing)} images listed in "
                              f"{', '.join(c.name for c in csvs)} are not in {images} "
                              f"(first: {missing[0].name})")
    return classes


def miniimagenet_split(n_images: int, wnid: str, seed: int = 0,
                       test_fraction: float = MINI_TEST_FRACTION
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` positions (sorted) among the ``n_images`` images of class ``wnid``.

    A permutation seeded by ``(seed, crc32(wnid))`` puts ``round(n_images *
    test_fraction)`` images (100 of 600) in the test set, the rest in the training set:
    the same for every call, independent of the other classes present.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"split_seed must be an integer >= 0, got {seed!r}")
    n_test = int(round(n_images * test_fraction))
    if n_test < 1 or n_test >= n_images:
        raise ValueError(f"miniImageNet class {wnid!r} has {n_images} images: too few for "
                         f"a train/test split with test_fraction={test_fraction:g}")
    rng = np.random.default_rng([int(seed), zlib.crc32(wnid.encode())])
    perm = rng.permutation(n_images)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _to_size(img: Image.Image, size: int) -> Image.Image:
    """RGB, ``size`` x ``size`` (Lanczos) unless it is that size already."""
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return img


def _read_image(path: Path, size: int) -> np.ndarray:
    """One image file as ``uint8 [size, size, 3]``."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(_to_size(img, size), dtype=np.uint8)


def _resize_array(images: np.ndarray, size: int) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 resized to ``size`` x ``size`` as the folder images are."""
    if images.shape[1:3] == (size, size):
        return images
    from PIL import Image

    return np.stack([np.asarray(_to_size(Image.fromarray(a), size), dtype=np.uint8)
                     for a in images]) if len(images) else \
        np.zeros((0, size, size, 3), np.uint8)


def _mini_pickles(paths: list[Path]) -> tuple[dict[str, list[tuple[int, np.ndarray]]],
                                             list[np.ndarray]]:
    """Per class, ``(file number, indices)`` pairs into the files' ``image_data``."""
    arrays: list[np.ndarray] = []
    classes: dict[str, list[tuple[int, np.ndarray]]] = {}
    for k, path in enumerate(paths):
        entry = _unpickle(path)
        if not isinstance(entry, dict) or "image_data" not in entry \
                or "class_dict" not in entry:
            raise ValueError(f"{path}: expected a dict with 'image_data' and 'class_dict'")
        images = np.asarray(entry["image_data"], dtype=np.uint8)
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"{path}: image_data has shape {images.shape}, expected "
                             f"(N, H, W, 3)")
        arrays.append(images)
        for wnid, idx in entry["class_dict"].items():
            idx = np.asarray(idx, dtype=np.int64).reshape(-1)
            if len(idx) and (idx.min() < 0 or idx.max() >= len(images)):
                raise ValueError(f"{path}: class_dict[{wnid!r}] indexes past image_data "
                                 f"({len(images)} images)")
            classes.setdefault(str(wnid), []).append((k, idx))
    return classes, arrays


def load_miniimagenet(root: str | Path | None = None, train: bool = True, *,
                      split_seed: int = 0,
                      test_fraction: float = MINI_TEST_FRACTION) -> tuple[Tensor, Tensor]:
    """miniImageNet, all 100 classes, split per class: ``uint8 [N, 3, 84, 84]``, ``int64 [N]``.

    Reads, from the first folder of ``root/miniimagenet`` (or another spelling of it,
    e.g. ``mini-imagenet``, ``miniImageNet100``) and ``root`` that holds one of them:

    * the pickle cache ``mini-imagenet-cache-{train,val,test}.pkl`` (each a dict with
      ``image_data`` ``[N, 84, 84, 3]`` uint8 and ``class_dict`` ``{wnid: indices}``),
      all three merged (64 + 16 + 20 classes); preferred when both formats are there;
    * an image folder ``<wnid>/<image>.jpg|.jpeg|.png``, or the split folders
      ``train/``, ``val/``, ``validation/``, ``test/`` holding such class folders, all
      merged (or Ravi & Larochelle's ``images/`` with ``train.csv``, ``val.csv``,
      ``test.csv`` listing ``filename,label``). Images are converted to RGB and
      resized to 84 x 84 (Lanczos, aspect not kept, as the pickle cache was made) when
      they have another size.

    The few-shot splits (train/val/test by class) are not a CL split: continual learning
    uses every class and holds out images of each class, as the code of Yildirim et al.
    (CL-with-DST, ``utils.iMiniImageNet``: 100 of each class's 600 images moved to a
    validation folder, seeded shuffle) and the pickle-based CL loaders (all three files
    merged, 1/6 of each class held out) do. Here :func:`miniimagenet_split` holds out
    ``round(n * test_fraction)`` images of each class (100 of 600) by a permutation
    seeded by ``(split_seed, wnid)``, so the split is fixed and the ``train=True`` and
    ``train=False`` calls are disjoint. Images of a class are in file order: pickle
    files train, val, test and ``class_dict`` order; split folders in the order above,
    then file names sorted. Labels: sorted wnids -> ``0..C-1``. Rows are grouped by
    class. Only the images of the requested part are decoded.
    """
    base = data_root(root)
    dirs = _mini_dirs(base)
    for d in dirs:
        present = [(d / n).is_file() for n in MINI_PICKLES]
        if any(present) and not all(present):
            missing = [n for n, ok in zip(MINI_PICKLES, present, strict=True) if not ok]
            raise DatasetNotFound(f"miniImageNet pickle cache in {d} is incomplete: "
                                  f"{', '.join(missing)} missing (the three files are "
                                  f"merged: continual learning uses all 100 classes)")
        if all(present):
            per_class, arrays = _mini_pickles([d / n for n in MINI_PICKLES])
            sizes = {w: sum(len(i) for _, i in pairs) for w, pairs in per_class.items()}
            parts = _mini_parts(sizes, train, split_seed, test_fraction)
            return _mini_stack([_pickle_images(per_class[w], arrays, pos)
                                for w, pos in parts], parts)
        files = _image_classes(d) if d.is_dir() else {}
        if files:
            parts = _mini_parts({w: len(f) for w, f in files.items()}, train, split_seed,
                                test_fraction)
            return _mini_stack([np.stack([_read_image(files[w][p], MINI_SIZE) for p in pos])
                                for w, pos in parts], parts)
    raise _missing("miniImageNet",
                   [*MINI_PICKLES, "or class folders <wnid>/<image>.jpg|.jpeg|.png "
                    "(optionally under train/ val/ test/)"], dirs)


def _mini_parts(sizes: dict[str, int], train: bool, seed: int,
                test_fraction: float) -> list[tuple[str, np.ndarray]]:
    """``(wnid, positions)`` of the requested part of every class, wnids sorted."""
    parts = []
    for wnid in sorted(sizes):
        tr, te = miniimagenet_split(sizes[wnid], wnid, seed, test_fraction)
        parts.append((wnid, tr if train else te))
    return parts


def _mini_stack(images: list[np.ndarray],
                parts: list[tuple[str, np.ndarray]]) -> tuple[Tensor, Tensor]:
    """``[N, H, W, 3]`` arrays per class -> ``uint8 [N, 3, H, W]``, labels by class rank."""
    x = np.concatenate(images)
    y = np.concatenate([np.full(len(pos), label, dtype=np.int64)
                        for label, (_, pos) in enumerate(parts)])
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)


def _pickle_images(pairs: list[tuple[int, np.ndarray]], arrays: list[np.ndarray],
                   positions: np.ndarray) -> np.ndarray:
    """The images at ``positions`` of one class of the pickle cache, ``[n, 84, 84, 3]``."""
    files = np.concatenate([np.full(len(i), k) for k, i in pairs])
    index = np.concatenate([i for _, i in pairs])
    out = np.stack([arrays[files[p]][index[p]] for p in positions])
    return _resize_array(out, MINI_SIZE)


DATASETS = {
    "mnist": load_mnist,
    "fmnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "miniimagenet": load_miniimagenet,
}


def load_dataset(name: str, root: str | Path | None = None,
                 train: bool = True) -> tuple[Tensor, Tensor]:
    """Load dataset ``name`` (one of :data:`DATASETS`) from ``root``."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {name!r}")
    return DATASETS[name](root, train=train)
