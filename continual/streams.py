"""Offline continual-learning streams, as tensors and as Avalanche benchmarks.

Stream names (aliases such as ``mnist-split`` for ``split-mnist`` are accepted):

* ``split-digits``: scikit-learn's digits (bundled with scikit-learn, no download),
  5 tasks x 2 classes, task-incremental: task label ``i``, classes relabelled
  ``0..c-1`` within each task (one head per task).
* ``split-digits-ci``: the same split, class-incremental: task label 0 everywhere,
  the original labels 0-9 (one shared head).
* ``permuted-digits``: ``n_tasks`` (default 5) tasks, each the whole dataset under
  its own seeded pixel permutation; task label ``i``, 10 classes.
* ``rotated-digits``: ``n_tasks`` tasks, task ``i`` rotated by ``i * 180 / n_tasks``
  degrees; task label ``i``, 10 classes.
* ``split-mnist``, ``split-fmnist``, ``split-cifar10`` (5 x 2), ``split-cifar100``
  (10 x 10), their ``-ci`` variants, ``permuted-mnist``/``rotated-mnist`` (and
  ``-fmnist``): from files already on disk (:mod:`continual.datasets`), never
  downloaded.
* ``split-miniimagenet`` (+ ``-ci``): miniImageNet's 100 classes in 10 tasks x 10,
  ``3 x 84 x 84`` images normalised with ImageNet's mean and std, from its pickle
  cache or an image folder on disk (:func:`continual.datasets.load_miniimagenet`).

Digits are split train/test by a seeded permutation (``test_fraction``, default
0.25); file datasets use their official split (miniImageNet: 100 of each class's 600
images held out by a fixed seeded split). Everything is deterministic under
``seed``. :func:`load_stream` needs only torch and numpy; :func:`make_benchmark` (and
the named builders) wraps the tensors into an Avalanche benchmark with task labels and
a classes timeline (task-aware datasets, ``benchmark_from_datasets`` +
``with_task_labels`` + ``with_classes_timeline``), importing Avalanche only then.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from continual.datasets import load_dataset

__all__ = [
    "STREAMS",
    "StreamData",
    "TaskData",
    "canonical_stream",
    "load_digits_tensors",
    "load_stream",
    "make_benchmark",
    "permuted_digits",
    "rotated_digits",
    "split_digits",
    "to_benchmark",
]

KINDS = ("split", "permuted", "rotated")
SOURCES = ("digits", "mnist", "fmnist", "cifar10", "cifar100", "miniimagenet")
DEFAULT_TASKS = {"digits": 5, "mnist": 5, "fmnist": 5, "cifar10": 5, "cifar100": 10,
                 "miniimagenet": 10}
#: sources with permuted/rotated streams (grey images, fed flat)
FLAT_SOURCES = ("digits", "mnist", "fmnist")
#: every stream name :func:`load_stream` accepts (besides aliases)
STREAMS = tuple(
    [f"split-{s}" for s in SOURCES] + [f"split-{s}-ci" for s in SOURCES]
    + [f"{k}-{s}" for k in ("permuted", "rotated") for s in FLAT_SOURCES]
)
CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: per-channel (mean, std) the colour sources are normalised with
NORMALISATION = {**{k: (CIFAR_MEAN[k], CIFAR_STD[k]) for k in CIFAR_MEAN},
                 "miniimagenet": (IMAGENET_MEAN, IMAGENET_STD)}


@dataclass
class TaskData:
    """One task (experience) of a stream, as tensors."""

    task_label: int
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[int]  # original class ids in this task
    n_classes: int  # outputs a head for this task needs


@dataclass
class StreamData:
    """A whole stream: its tasks in order, plus what a model needs to know."""

    name: str
    tasks: list[TaskData]
    task_incremental: bool  # one head per task label, selected by it
    n_classes: int  # outputs of a shared head (class-incremental) or the largest head
    input_shape: tuple[int, ...] = field(default=())

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)


def canonical_stream(name: str) -> tuple[str, str, bool]:
    """``(kind, source, class_incremental)`` of a stream name or alias.

    Accepts ``split-digits``, ``digits-split``, ``mnist-split-ci`` and the like.
    """
    text = str(name).strip().lower().replace("_", "-")
    ci = text.endswith("-ci")
    if ci:
        text = text[:-3]
    parts = text.split("-")
    if len(parts) == 2 and parts[1] in KINDS:
        parts = parts[::-1]
    if len(parts) != 2 or parts[0] not in KINDS or parts[1] not in SOURCES:
        raise ValueError(f"stream must be one of {STREAMS} (or an alias such as "
                         f"'mnist-split'), got {name!r}")
    kind, source = parts
    if kind != "split" and (ci or source not in FLAT_SOURCES):
        raise ValueError(f"stream must be one of {STREAMS}: {kind} streams exist for digits, "
                         f"mnist and fmnist without -ci, got {name!r}")
    return kind, source, ci


# ---------------------------------------------------------------------- raw data
def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """scikit-learn's digits: ``float32 [1797, 64]`` in [0, 1] and ``int64 [1797]``.

    Read from the CSV bundled with scikit-learn (without importing it, which takes a
    second); falls back to ``sklearn.datasets.load_digits``.
    """
    spec = importlib.util.find_spec("sklearn")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.float32)
        x, y = data[:, :-1], data[:, -1].astype(np.int64)
    else:  # pragma: no cover - layout of another scikit-learn version
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def _source(source: str, seed: int, test_fraction: float,
            root: str | Path | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train/test images as float tensors ``[N, C, H, W]`` and labels."""
    if source == "digits":
        x, y = load_digits_tensors()
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        n_test = int(round(len(y) * test_fraction))
        test, train = perm[:n_test], perm[n_test:]
        img = x.reshape(-1, 1, 8, 8)
        return img[train], y[train], img[test], y[test]
    xtr, ytr = load_dataset(source, root, train=True)
    xte, yte = load_dataset(source, root, train=False)
    # in place on the float copies: miniImageNet's training set is 4 GB as float32
    xtr, xte = xtr.float().div_(255.0), xte.float().div_(255.0)
    if source in NORMALISATION:
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALISATION[source])
        for x in (xtr, xte):
            x.sub_(mean).div_(std)
    return xtr, ytr, xte, yte


def _rotate(img: Tensor, degrees: float) -> Tensor:
    """Rotate ``[N, C, H, W]`` images about their centre (bilinear, zero padding)."""
    if degrees % 360 == 0:
        return img.clone()
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                         dtype=img.dtype).unsqueeze(0).expand(len(img), 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(img.shape), align_corners=False)
    return torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)


def _flat(img: Tensor, source: str) -> Tensor:
    """Colour images stay ``[N, 3, H, W]``; grey ones are flattened."""
    return img if source not in FLAT_SOURCES else img.reshape(len(img), -1)


def load_stream(
    stream: str,
    n_tasks: int | None = None,
    seed: int = 0,
    *,
    root: str | Path | None = None,
    test_fraction: float = 0.25,
    shuffle_classes: bool = False,
    max_train_per_task: int | None = None,
) -> StreamData:
    """Build stream ``stream`` as tensors (see the module docstring for the names).

    Args:
        stream: stream name or alias.
        n_tasks: number of tasks (default 5; 10 for split-cifar100 and
            split-miniimagenet). Split streams
            need ``1 <= n_tasks <= classes``.
        seed: seeds the train/test split (digits), permutations and class order.
        root: folder of the file datasets (see :mod:`continual.datasets`).
        test_fraction: digits' test share, in (0, 1).
        shuffle_classes: split streams: seeded class order instead of 0, 1, 2, ...
        max_train_per_task: keep at most this many training samples per task
            (seeded choice), for quick runs on the large datasets.
    """
    kind, source, ci = canonical_stream(stream)
    n = DEFAULT_TASKS[source] if n_tasks is None else n_tasks
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n_tasks must be None or an integer >= 1, got {n_tasks!r}")
    n = int(n)
    if max_train_per_task is not None and int(max_train_per_task) < 1:
        raise ValueError(f"max_train_per_task must be None or >= 1, got {max_train_per_task!r}")
    xtr, ytr, xte, yte = _source(source, seed, test_fraction, root)
    g = torch.Generator().manual_seed(seed + 1)
    n_total = int(max(int(ytr.max()), int(yte.max()))) + 1
    tasks: list[TaskData] = []
    name = f"{kind}-{source}" + ("-ci" if ci else "")
    if kind == "split":
        if n > n_total:
            raise ValueError(f"n_tasks must be in [1, {n_total}] for {name}, got {n}")
        order = (torch.randperm(n_total, generator=g) if shuffle_classes
                 else torch.arange(n_total)).tolist()
        for i, group in enumerate(np.array_split(np.array(order), n)):
            classes = [int(c) for c in group]
            remap = torch.full((n_total,), -1, dtype=torch.long)
            remap[classes] = torch.arange(len(classes))
            tr = torch.isin(ytr, torch.tensor(classes))
            te = torch.isin(yte, torch.tensor(classes))
            ytr_t, yte_t = ytr[tr], yte[te]
            if not ci:
                ytr_t, yte_t = remap[ytr_t], remap[yte_t]
            tasks.append(TaskData(0 if ci else i, _flat(xtr[tr], source), ytr_t,
                                  _flat(xte[te], source), yte_t, classes,
                                  n_total if ci else len(classes)))
    else:
        flat_tr, flat_te = _flat(xtr, source), _flat(xte, source)
        for i in range(n):
            if kind == "permuted":
                perm = torch.randperm(flat_tr.shape[1], generator=g)
                x_train, x_test = flat_tr[:, perm], flat_te[:, perm]
            else:
                angle = i * 180.0 / n
                x_train = _flat(_rotate(xtr, angle), source)
                x_test = _flat(_rotate(xte, angle), source)
            tasks.append(TaskData(i, x_train, ytr.clone(), x_test, yte.clone(),
                                  list(range(n_total)), n_total))
    if max_train_per_task is not None:
        for t in tasks:
            if len(t.y_train) > max_train_per_task:
                keep = torch.randperm(len(t.y_train), generator=g)[:int(max_train_per_task)]
                t.x_train, t.y_train = t.x_train[keep], t.y_train[keep]
    return StreamData(name=name, tasks=tasks, task_incremental=not ci,
                      n_classes=max(t.n_classes for t in tasks),
                      input_shape=tuple(tasks[0].x_train.shape[1:]))


# ---------------------------------------------------------------------- Avalanche
def _import_avalanche():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*QP solver.*")
        warnings.filterwarnings("ignore", module="qpsolvers.*")
        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
        from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
        from avalanche.benchmarks.scenarios.task_aware import with_task_labels
        from avalanche.benchmarks.utils.classification_dataset import (
            TaskAwareSupervisedClassificationDataset,
        )
        from avalanche.benchmarks.utils.data_attribute import DataAttribute, TaskLabels
    return (benchmark_from_datasets, with_classes_timeline, with_task_labels,
            TaskAwareSupervisedClassificationDataset, DataAttribute, TaskLabels)


def to_benchmark(data: StreamData):
    """Wrap a :class:`StreamData` into an Avalanche ``CLScenario`` with ``train_stream``
    and ``test_stream``; experiences carry ``task_label`` and the classes timeline.
    Samples are ``(x, y, task_label)``.

    Datasets are task-aware, as those of Avalanche's own benchmarks (``nc_benchmark``
    and the classic benchmarks): ``exp.dataset.targets_task_labels`` and
    ``exp.dataset.task_set`` exist, which ``LwF`` and task-grouped replay buffers use."""
    from torch.utils.data import TensorDataset

    (benchmark_from_datasets, with_classes_timeline, with_task_labels,
     TaskAwareDataset, DataAttribute, TaskLabels) = _import_avalanche()

    def dataset(x: Tensor, y: Tensor, task: int):
        return TaskAwareDataset(
            [TensorDataset(x, y)],
            data_attributes=[DataAttribute(y.tolist(), "targets"),
                             TaskLabels([int(task)] * len(y))])

    train = [dataset(t.x_train, t.y_train, t.task_label) for t in data.tasks]
    test = [dataset(t.x_test, t.y_test, t.task_label) for t in data.tasks]
    bm = with_classes_timeline(with_task_labels(benchmark_from_datasets(train=train, test=test)))
    bm.stream_data = data  # the tensors and metadata (heads, input shape) behind it
    return bm


def make_benchmark(stream: str, n_tasks: int | None = None, seed: int = 0, **kwargs):
    """Avalanche benchmark of stream ``stream`` (keyword arguments: :func:`load_stream`).

    The returned scenario also has ``stream_data``, the :class:`StreamData` behind it.
    """
    return to_benchmark(load_stream(stream, n_tasks, seed, **kwargs))


def split_digits(n_tasks: int = 5, seed: int = 0, task_incremental: bool = True, **kwargs):
    """Split digits (5 x 2 classes by default) as an Avalanche benchmark."""
    name = "split-digits" if task_incremental else "split-digits-ci"
    return make_benchmark(name, n_tasks, seed, **kwargs)


def permuted_digits(n_tasks: int = 5, seed: int = 0, **kwargs):
    """Permuted digits (``n_tasks`` pixel permutations) as an Avalanche benchmark."""
    return make_benchmark("permuted-digits", n_tasks, seed, **kwargs)


def rotated_digits(n_tasks: int = 5, seed: int = 0, **kwargs):
    """Rotated digits (``n_tasks`` angles in [0, 180)) as an Avalanche benchmark."""
    return make_benchmark("rotated-digits", n_tasks, seed, **kwargs)

