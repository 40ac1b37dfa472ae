"""Offline streams, on-disk dataset loaders and the CL metrics."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from continual.datasets import DatasetNotFound, load_cifar10, load_cifar100, load_mnist
from continual.metrics import (
    accuracy_matrix_from_avalanche,
    average_accuracy,
    bwt,
    forgetting,
    summarize,
)
from continual.streams import canonical_stream, load_digits_tensors, load_stream


def test_split_digits_task_and_class_incremental(no_network):
    x, y = load_digits_tensors()
    ti = load_stream("split-digits", seed=0)
    ci = load_stream("split-digits-ci", seed=0)
    assert ti.n_tasks == ci.n_tasks == 5 and ti.task_incremental and not ci.task_incremental
    total = 0
    for i, (a, b) in enumerate(zip(ti.tasks, ci.tasks, strict=True)):
        assert a.task_label == i and b.task_label == 0
        assert a.classes == b.classes == [2 * i, 2 * i + 1]
        assert sorted(a.y_train.unique().tolist()) == [0, 1]  # relabelled per task
        assert sorted(b.y_train.unique().tolist()) == a.classes  # original labels
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train + 2 * i, b.y_train)
        assert a.n_classes == 2 and b.n_classes == 10
        total += len(a.y_train) + len(a.y_test)
    assert total == len(y) == 1797
    assert ti.input_shape == (64,) and float(x.max()) == 1.0


def test_permuted_and_rotated_digits(no_network):
    perm = load_stream("permuted-digits", n_tasks=3, seed=0)
    rot = load_stream("rotated-digits", n_tasks=4, seed=0)
    assert [t.task_label for t in perm.tasks] == [0, 1, 2]
    base = perm.tasks[0]
    for t in perm.tasks[1:]:
        assert torch.equal(t.y_train, base.y_train)
        # the same images under another pixel permutation
        assert torch.equal(t.x_train.sort(1).values, base.x_train.sort(1).values)
        assert not torch.equal(t.x_train, base.x_train)
    unrotated = load_stream("split-digits-ci", n_tasks=1, seed=0).tasks[0]
    assert torch.equal(rot.tasks[0].x_train, unrotated.x_train)
    assert not torch.equal(rot.tasks[1].x_train, rot.tasks[0].x_train)
    assert rot.n_classes == 10 and rot.n_tasks == 4


def test_streams_deterministic_under_seed():
    a, b, c = (load_stream("permuted-digits", n_tasks=2, seed=s) for s in (3, 3, 4))
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        assert torch.equal(ta.x_train, tb.x_train) and torch.equal(ta.y_test, tb.y_test)
    assert not torch.equal(a.tasks[1].x_train, c.tasks[1].x_train)
    s1 = load_stream("split-digits", seed=1, shuffle_classes=True)
    s2 = load_stream("split-digits", seed=1, shuffle_classes=True)
    assert [t.classes for t in s1.tasks] == [t.classes for t in s2.tasks]
    assert sorted(c for t in s1.tasks for c in t.classes) == list(range(10))


def test_stream_names_and_errors():
    assert canonical_stream("mnist-split") == ("split", "mnist", False)
    assert canonical_stream("split_cifar100-ci") == ("split", "cifar100", True)
    for bad in ("split-imagenet", "permuted-cifar10", "rotated-digits-ci", "digits"):
        with pytest.raises(ValueError, match="stream must be one of"):
            canonical_stream(bad)
    with pytest.raises(ValueError, match=r"n_tasks must be in \[1, 10\]"):
        load_stream("split-digits", n_tasks=11)
    with pytest.raises(ValueError, match="n_tasks"):
        load_stream("permuted-digits", n_tasks=0)
    with pytest.raises(ValueError, match="test_fraction"):
        load_stream("split-digits", test_fraction=1.5)
    small = load_stream("permuted-digits", n_tasks=2, max_train_per_task=50)
    assert all(len(t.y_train) == 50 for t in small.tasks)


def test_avalanche_benchmark(no_network):
    from continual.streams import make_benchmark, split_digits

    bm = split_digits(seed=0)
    assert len(bm.train_stream) == 5 and len(bm.test_stream) == 5
    for i, exp in enumerate(bm.train_stream):
        assert exp.task_label == i and exp.task_labels == [i]
        assert set(exp.classes_in_this_experience) == {0, 1}
    x, y, t = bm.train_stream[2].dataset[0]
    assert x.shape == (64,) and int(t) == 2 and int(y) in (0, 1)
    ci = make_benchmark("split-digits-ci", seed=0)
    assert [e.task_label for e in ci.train_stream] == [0] * 5
    assert set(ci.train_stream[1].classes_in_this_experience) == {2, 3}
    assert set(ci.train_stream[1].classes_seen_so_far) == {0, 1, 2, 3}
    assert ci.stream_data.n_classes == 10
    again = split_digits(seed=0)
    assert torch.equal(again.train_stream[3].dataset[5][0], bm.train_stream[3].dataset[5][0])


# ---------------------------------------------------------------------- on-disk datasets
def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(folder, n_train=40, n_test=20, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)


def test_missing_files_error_names_them(tmp_path, no_network):
    with pytest.raises(DatasetNotFound, match="train-images-idx3-ubyte") as err:
        load_mnist(tmp_path)
    assert "MNIST/raw" in str(err.value) and "Nothing is downloaded" in str(err.value)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar100(tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_stream("split-mnist", root=tmp_path)


def test_loaders_read_standard_files(tmp_path, no_network):
    fake_mnist(tmp_path / "MNIST" / "raw", compress=True)
    x, y = load_mnist(tmp_path)
    assert x.shape == (40, 1, 28, 28) and x.dtype == torch.uint8 and y.tolist()[:3] == [0, 1, 2]
    fake_mnist(tmp_path / "flat", compress=False)
    assert load_mnist(tmp_path / "flat", train=False)[0].shape == (20, 1, 28, 28)
    stream = load_stream("mnist-split", root=tmp_path)
    assert stream.n_tasks == 5 and stream.input_shape == (784,)
    assert sum(len(t.y_train) for t in stream.tasks) == 40

    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (c10 / name).write_bytes(pickle.dumps(entry))
    x, y = load_cifar10(tmp_path)
    assert x.shape == (20, 3, 32, 32) and y.tolist()[:4] == [0, 1, 2, 3]
    cifar_stream = load_stream("split-cifar10", n_tasks=2, root=tmp_path)
    assert cifar_stream.input_shape == (3, 32, 32)

    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for name in ("train", "test"):
        entry = {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                 "fine_labels": [5, 6, 7], "coarse_labels": [1, 1, 2]}
        (c100 / name).write_bytes(pickle.dumps(entry))
    assert load_cifar100(tmp_path, label="coarse")[1].tolist() == [1, 1, 2]
    with pytest.raises(ValueError, match="label must be"):
        load_cifar100(tmp_path, label="medium")


def test_corrupt_idx_file_raises(tmp_path):
    folder = tmp_path / "mnist"
    fake_mnist(folder, compress=False)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    with pytest.raises(ValueError, match="header says"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------------- metrics
def test_metrics_by_hand():
    nan = float("nan")
    R = [[0.9, nan, nan],
         [0.8, 0.7, nan],
         [0.6, 0.75, 1.0]]
    assert average_accuracy(R) == pytest.approx((0.6 + 0.75 + 1.0) / 3)
    # forgetting: task 0 best 0.9 -> 0.6; task 1 best 0.7 -> 0.75 (negative)
    assert forgetting(R) == pytest.approx(((0.9 - 0.6) + (0.7 - 0.75)) / 2)
    assert bwt(R) == pytest.approx(((0.6 - 0.9) + (0.75 - 0.7)) / 2)
    assert summarize([[0.5]]) == {"avg_accuracy": 0.5, "forgetting": 0.0, "bwt": 0.0}
    with pytest.raises(ValueError, match="accuracy matrix"):
        average_accuracy([[0.5, 0.2, 0.1], [0.1, 0.2, 0.3], [1, 1, 1], [1, 1, 1]])


def test_accuracy_matrix_from_avalanche_results():
    key = "Top1_Acc_Exp/eval_phase/test_stream/Task{:03d}/Exp{:03d}"
    results = [{key.format(0, 0): 0.9, "Loss": 1.0},
               {key.format(0, 0): 0.8, key.format(1, 1): 0.7,
                key.format(1, 1).replace("test_stream", "train_stream"): 0.1}]
    R = accuracy_matrix_from_avalanche(results, n_tasks=3)
    assert R.shape == (2, 3)
    assert R[0, 0] == 0.9 and np.isnan(R[0, 1]) and R[1, 1] == 0.7 and np.isnan(R[1, 2])
