"""miniImageNet from files on disk (pickle cache, image folders) and the split-miniimagenet
stream, on tiny datasets written in the real formats."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from continual.cli import build_parser
from continual.datasets import (
    DATASETS,
    MINI_PICKLES,
    DatasetNotFound,
    load_dataset,
    load_miniimagenet,
    miniimagenet_split,
)
from continual.experiment import run_experiment
from continual.streams import STREAMS, canonical_stream, load_stream

N_CLASSES, PER_CLASS = 10, 12  # 12 images per class: 10 train, 2 test
# creation order differs from the sorted order, which gives the labels
WNIDS = [f"n0{n:07d}" for n in (9, 3, 7, 1, 8, 2, 6, 0, 5, 4)]
IMAGENET_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def make_pixels(per_class: int = PER_CLASS, seed: int = 0) -> dict[str, np.ndarray]:
    """``{wnid: uint8 [per_class, 84, 84, 3]}`` in creation order; pixel (0, 0) holds
    (rank of the wnid in sorted order, image number) so every image can be traced."""
    rng = np.random.default_rng(seed)
    ranks = {w: r for r, w in enumerate(sorted(WNIDS))}
    out = {}
    for w in WNIDS:
        arr = rng.integers(0, 256, (per_class, 84, 84, 3), dtype=np.uint8)
        arr[:, 0, 0, 0] = ranks[w]
        arr[:, 0, 0, 1] = np.arange(per_class)
        out[w] = arr
    return out


def write_pickles(folder, pixels: dict[str, np.ndarray]) -> None:
    """The three ``mini-imagenet-cache-*.pkl`` files (6 / 2 / 2 classes), each image
    array shuffled so that ``class_dict`` indices are not contiguous."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    groups = [WNIDS[:6], WNIDS[6:8], WNIDS[8:]]
    for name, wnids in zip(MINI_PICKLES, groups, strict=True):
        images = np.concatenate([pixels[w] for w in wnids])
        perm = rng.permutation(len(images))  # row r of `images` goes to position where[r]
        where = np.empty_like(perm)
        where[perm] = np.arange(len(perm))
        n = len(pixels[wnids[0]])
        class_dict = {w: where[k * n:(k + 1) * n].tolist() for k, w in enumerate(wnids)}
        entry = {"image_data": images[perm], "class_dict": class_dict}
        (folder / name).write_bytes(pickle.dumps(entry))


def write_folder(folder, pixels: dict[str, np.ndarray], splits: bool = False) -> None:
    """``<wnid>/<wnid>_<j>.png`` (lossless), or spread over ``train/ val/ test/``."""
    for k, (w, arr) in enumerate(pixels.items()):
        top = folder / ("train" if k < 6 else "val" if k < 8 else "test") if splits else folder
        (top / w).mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(arr):
            Image.fromarray(img).save(top / w / f"{w}_{j:04d}.png")


def trace(x: torch.Tensor) -> list[tuple[int, int]]:
    """(class rank, image number) of each image, read from its marker pixel."""
    return list(zip(x[:, 0, 0, 0].tolist(), x[:, 1, 0, 0].tolist(), strict=True))


# ---------------------------------------------------------------------- loader
def test_pickle_cache_and_image_folder_give_the_same_tensors(tmp_path, no_network):
    pixels = make_pixels()
    write_pickles(tmp_path / "pkl" / "miniimagenet", pixels)
    write_folder(tmp_path / "img" / "miniimagenet", pixels)
    for train in (True, False):
        xp, yp = load_miniimagenet(tmp_path / "pkl", train=train)
        xf, yf = load_miniimagenet(tmp_path / "img", train=train)
        assert torch.equal(xp, xf) and torch.equal(yp, yf)
    assert len(load_miniimagenet(tmp_path / "pkl")[1]) == N_CLASSES * 10


def test_shapes_dtypes_and_labels_by_sorted_wnid(tmp_path, no_network):
    write_pickles(tmp_path / "miniimagenet", make_pixels())
    x, y = load_miniimagenet(tmp_path)
    assert x.shape == (N_CLASSES * 10, 3, 84, 84) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and sorted(set(y.tolist())) == list(range(N_CLASSES))
    # the label of every image is the rank of its wnid in sorted order
    assert [rank for rank, _ in trace(x)] == y.tolist()
    # the pixels are those written, channel-first
    pixels = make_pixels()
    first = sorted(WNIDS)[0]
    j = trace(x)[0][1]
    assert torch.equal(x[0], torch.from_numpy(pixels[first][j]).permute(2, 0, 1))
    assert DATASETS["miniimagenet"] is load_miniimagenet
    assert torch.equal(load_dataset("miniimagenet", tmp_path, train=False)[0],
                       load_miniimagenet(tmp_path, train=False)[0])


def test_per_class_split_is_disjoint_complete_deterministic_and_seeded(tmp_path):
    write_pickles(tmp_path / "miniimagenet", make_pixels())
    train, test = (set(trace(load_miniimagenet(tmp_path, train=t)[0])) for t in (True, False))
    assert not train & test
    assert train | test == {(c, j) for c in range(N_CLASSES) for j in range(PER_CLASS)}
    for c in range(N_CLASSES):  # 1/6 of every class held out
        assert sum(1 for rank, _ in test if rank == c) == 2
    again = load_miniimagenet(tmp_path, train=False)[0]
    assert set(trace(again)) == test
    other = set(trace(load_miniimagenet(tmp_path, train=False, split_seed=1)[0]))
    assert other != test and len(other) == len(test)
    # full size: 500 / 100 of 600, the same for every call, disjoint and complete
    tr, te = miniimagenet_split(600, "n01532829")
    assert len(tr) == 500 and len(te) == 100
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(600))
    tr2, te2 = miniimagenet_split(600, "n01532829")
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert not np.array_equal(te, miniimagenet_split(600, "n01558993")[1])
    with pytest.raises(ValueError, match="too few"):
        miniimagenet_split(1, "n01532829")


def test_split_folders_are_merged_into_one_100_class_set(tmp_path):
    pixels = make_pixels()
    write_folder(tmp_path / "flat" / "miniimagenet", pixels)
    write_folder(tmp_path / "splits" / "mini-imagenet", pixels, splits=True)
    # the paper code's layout: train/<wnid> (500) + validation/<wnid> (100) per class
    paper = tmp_path / "paper" / "miniImageNet100"
    for w, arr in pixels.items():
        for j, img in enumerate(arr):
            part = "validation" if j >= 10 else "train"
            (paper / part / w).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(paper / part / w / f"{w}_{j:04d}.png")
    for train in (True, False):
        ref = load_miniimagenet(tmp_path / "flat", train=train)
        for other in ("splits", "paper"):
            got = load_miniimagenet(tmp_path / other, train=train)
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_ravi_csv_layout_and_root_pointing_at_the_folder(tmp_path):
    pixels = make_pixels()
    write_folder(tmp_path / "flat", pixels)
    csv_root = tmp_path / "csv"
    (csv_root / "images").mkdir(parents=True)
    lines = {"train": [], "val": [], "test": []}
    for k, (w, arr) in enumerate(pixels.items()):
        part = "train" if k < 6 else "val" if k < 8 else "test"
        for j, img in enumerate(arr):
            name = f"{w}{j:08d}.png"
            Image.fromarray(img).save(csv_root / "images" / name)
            lines[part].append(f"{name},{w}")
    for part, rows in lines.items():
        (csv_root / f"{part}.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    ref = load_miniimagenet(tmp_path / "flat", train=False)
    got = load_miniimagenet(csv_root, train=False)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_images_of_another_size_or_mode_become_rgb_84x84(tmp_path):
    folder = tmp_path / "miniimagenet"
    rng = np.random.default_rng(2)
    for w in WNIDS[:2]:
        (folder / w).mkdir(parents=True)
        for j in range(6):
            img = rng.integers(0, 256, (120, 90), dtype=np.uint8)
            Image.fromarray(img).save(folder / w / f"{j}.JPEG", quality=95)
    x, y = load_miniimagenet(tmp_path)
    assert x.shape == (10, 3, 84, 84) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey -> RGB
    # the pickle cache's images at another size are resized the same way
    cache = tmp_path / "pkl"
    cache.mkdir()
    for name, wnid in zip(MINI_PICKLES, WNIDS, strict=False):
        entry = {"image_data": rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
                 "class_dict": {wnid: list(range(6))}}
        (cache / name).write_bytes(pickle.dumps(entry))
    assert load_miniimagenet(cache)[0].shape == (15, 3, 84, 84)


def test_missing_files_error_names_root_and_the_paths_searched(tmp_path, no_network):
    with pytest.raises(DatasetNotFound) as err:
        load_miniimagenet(tmp_path)
    text = str(err.value)
    assert "mini-imagenet-cache-train.pkl" in text and "<wnid>/<image>.jpg" in text
    assert str(tmp_path / "miniimagenet") in text and "root=" in text
    assert "Nothing is downloaded" in text
    with pytest.raises(FileNotFoundError, match="mini-imagenet-cache"):
        load_stream("split-miniimagenet", root=tmp_path / "nowhere")
    # a cache with a file missing is not read as a 64-class dataset
    write_pickles(tmp_path / "miniimagenet", make_pixels(per_class=6))
    (tmp_path / "miniimagenet" / MINI_PICKLES[1]).unlink()
    with pytest.raises(DatasetNotFound, match="mini-imagenet-cache-val.pkl missing"):
        load_miniimagenet(tmp_path)


# ---------------------------------------------------------------------- stream
def test_split_miniimagenet_stream_is_task_incremental_and_imagenet_normalised(tmp_path):
    write_pickles(tmp_path / "miniimagenet", make_pixels())
    assert "split-miniimagenet" in STREAMS and "split-miniimagenet-ci" in STREAMS
    assert canonical_stream("miniimagenet-split") == ("split", "miniimagenet", False)
    with pytest.raises(ValueError, match="permuted streams exist"):
        canonical_stream("permuted-miniimagenet")
    assert "split-miniimagenet" in build_parser().format_help()

    stream = load_stream("split-miniimagenet", root=tmp_path)
    assert stream.n_tasks == 10 and stream.input_shape == (3, 84, 84)  # default 10 tasks
    stream = load_stream("split-miniimagenet", n_tasks=2, root=tmp_path)
    assert stream.task_incremental and stream.n_classes == 5
    xtr, ytr = load_miniimagenet(tmp_path)
    xte, yte = load_miniimagenet(tmp_path, train=False)
    for i, task in enumerate(stream.tasks):
        assert task.task_label == i and task.classes == list(range(5 * i, 5 * i + 5))
        keep = torch.isin(ytr, torch.tensor(task.classes))
        expected = (xtr[keep].float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        assert torch.allclose(task.x_train, expected, atol=1e-6)
        assert torch.equal(task.y_train, ytr[keep] - 5 * i)  # relabelled 0..4
        assert torch.equal(task.y_test, yte[torch.isin(yte, torch.tensor(task.classes))] - 5 * i)
    ci = load_stream("split-miniimagenet-ci", n_tasks=2, root=tmp_path)
    assert ci.n_classes == N_CLASSES and ci.tasks[1].y_train.min() == 5


def test_run_experiment_on_split_miniimagenet_returns_an_accuracy_matrix(tmp_path):
    write_pickles(tmp_path / "miniimagenet", make_pixels())
    r = run_experiment("split-miniimagenet", updater="srigl", sparsity=0.8, epochs=1,
                       n_tasks=2, data_root=tmp_path, backbone="cnn", max_train_per_task=20,
                       hidden=32, engine="torch")
    R = r["accuracy_matrix"]
    assert len(R) == 2 and R[0][1] is None
    assert all(0.0 <= R[i][j] <= 1.0 for i in range(2) for j in range(i + 1))
    assert r["backbone"] == "cnn" and 0.0 <= r["avg_accuracy"] <= 1.0
