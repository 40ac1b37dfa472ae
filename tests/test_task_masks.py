"""TaskMasks (framework-free per-task ownership): invariant 5 of docs/architecture.md
and its book-keeping."""

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from invariants import check_topology
from torch import nn

from continual.task_masks import FREE, OWNER_BUFFER, TaskMasks, task_densities
from sparse_agents.task_masks import task_records
from sparse_agents.updaters.base import as_matrix


class ConvNet(nn.Module):
    """Conv2d + BatchNorm (per-task running stats) + Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x)).flatten(1)
        return self.head(torch.relu(self.fc(x)))


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 3))


def make_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ConvNet() if kind == "conv" else mlp(seed)


def data(kind: str, task: int, n: int = 24):
    g = torch.Generator().manual_seed(100 + task)
    x = torch.randn(n, 3, 8, 8, generator=g) if kind == "conv" else torch.randn(n, 10, generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def make_opt(name: str, params):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=0.01)
    return torch.optim.AdamW(params, lr=0.01, weight_decay=0.5)


HEAD = {"mlp": "4", "conv": "head"}


def check_step(tm: TaskMasks, frozen: dict, opt) -> None:
    """Per-step invariants of the training task: its mask within its own and free
    weights, earlier tasks' weights bit-identical, free weights 0, invariants 1-2."""
    room = {}
    for layer in tm.layers:
        owner = getattr(layer.module, OWNER_BUFFER)
        w = layer.weight.detach()
        assert not bool((layer.mask & (owner != FREE)).any()), "mask overlaps another owner"
        if layer.name in frozen:
            keep, values = frozen[layer.name]
            # earlier tasks' weights bit-identical (hidden ones sit at 0 without transfer)
            assert torch.equal(w[keep], values[keep])
        free = (owner == FREE) & ~layer.mask
        assert bool((w[free] == 0).all()), "a free weight is not exactly 0"
        room[layer.name] = as_matrix((owner == FREE) | layer.mask).sum(1)
    check_topology(tm.topology, opt, room=room)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("transfer", [True, False])
@pytest.mark.parametrize("updater", ["srigl", "rigl", "set"])
def test_outputs_of_earlier_tasks_bit_identical(kind, opt_name, transfer, updater):
    model = make_model(kind)
    tm = TaskMasks(model, sparsity=0.7, updater=updater, transfer=transfer, n_tasks=3,
                   seed=1, delta_t=2, dense_layers=[HEAD[kind]])
    opt = make_opt(opt_name, model.parameters())
    probe = {t: data(kind, t)[0] for t in range(3)}
    before: dict[int, torch.Tensor] = {}
    for t in range(3):
        topo = tm.start_task(t, opt)
        frozen = {x.name: (getattr(x.module, OWNER_BUFFER) != FREE, x.weight.detach().clone())
                  for x in tm.layers}
        x, y = data(kind, t)
        model.train()
        for _ in range(6):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            check_step(tm, frozen, opt)
        assert topo.n_updates == 3
        tm.end_task()
        model.eval()
        with torch.no_grad():
            before[t] = model(probe[t])  # right after training: the base view is task t's
            for j in range(t + 1):
                with tm.use_task(j):
                    assert torch.equal(model(probe[j]), before[j]), (t, j)
    # no weight owned twice: counts of owners add up, and each task kept its budget
    for layer in tm.layers:
        owner = getattr(layer.module, OWNER_BUFFER)
        counts = [int((owner == i).sum()) for i in range(3)]
        assert sum(counts) + int((owner == FREE).sum()) == owner.numel()
        if updater != "srigl":
            assert counts == [layer.budget] * 3


def test_training_view_without_transfer_hides_earlier_tasks():
    model = mlp()
    tm = TaskMasks(model, sparsity=0.6, updater="static", transfer=False, n_tasks=2,
                   dense_layers=["4"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tm.start_task(0, opt)
    tm.end_task()
    tm.start_task(1, opt)
    owned0 = tm.owned(0)
    for layer in tm.layers:
        assert bool((layer.weight[owned0[layer.name]] == 0).all())
        assert torch.equal(tm.forward_masks(1)[layer.name], tm.owned(1)[layer.name])
    tm.end_task()
    # the base view is now task 1's (earlier weights hidden); the saved model is full
    sd = model.state_dict()
    for x in tm.layers:
        assert bool((x.weight[owned0[x.name]] == 0).all())
        assert bool((sd[x.name][owned0[x.name]] != 0).any())
    with tm.use_task(0):
        assert all(bool((x.weight[owned0[x.name]] != 0).any()) for x in tm.layers)


def test_transfer_forward_mask_includes_earlier_tasks():
    model = mlp()
    tm = TaskMasks(model, sparsity=0.7, updater="static", n_tasks=3, dense_layers=["4"])
    opt = torch.optim.Adam(model.parameters())
    for t in (5, 7):
        tm.start_task(t, opt)
        tm.end_task()
    fm, own5, own7 = tm.forward_masks(7), tm.owned(5), tm.owned(7)
    for name in fm:
        assert torch.equal(fm[name], own5[name] | own7[name])
        assert torch.equal(tm.forward_masks(5)[name], own5[name])
    assert tm.task_ids == [5, 7]


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 24), min_size=3, max_size=4),
    n_tasks=st.integers(1, 5),
    spare=st.floats(0.0, 0.5),
    distribution=st.sampled_from(["erk", "er", "uniform"]),
    updater=st.sampled_from(["static", "set", "rigl", "srigl"]),
)
def test_budgets_exact_and_disjoint(sizes, n_tasks, spare, distribution, updater):
    torch.manual_seed(0)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    if min(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)) < n_tasks:
        return
    sparsity = 1 - (1 - spare) / n_tasks
    tm = TaskMasks(model, sparsity=sparsity, updater=updater, distribution=distribution,
                   n_tasks=n_tasks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for t in range(n_tasks):
        tm.start_task(t, opt)
        for layer in tm.layers:
            claimed = int(layer.mask.sum())
            if updater == "srigl":
                assert claimed <= tm.budgets[layer.name]
            else:
                assert claimed == tm.budgets[layer.name]
        tm.end_task()
    for layer in tm.layers:
        owner = getattr(layer.module, OWNER_BUFFER)
        assert tm.budgets[layer.name] * n_tasks <= owner.numel()
        assert int((owner >= 0).sum()) <= tm.budgets[layer.name] * n_tasks
        assert set(owner.unique().tolist()) <= set(range(-1, n_tasks))


def test_task_densities_cap_and_error():
    shapes = [(256, 64), (256, 256), (10, 256)]
    d = task_densities(shapes, 0.8, "erk", n_tasks=5)
    assert all(x <= 0.2 + 1e-12 for x in d)
    assert task_densities(shapes, 0.8, "uniform", n_tasks=5) == pytest.approx([0.2] * 3)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0.9, 1\) for 10 tasks"):
        task_densities(shapes, 0.8, "erk", n_tasks=10)
    with pytest.raises(ValueError, match="n_tasks"):
        task_densities(shapes, 0.8, "erk", n_tasks=0)


def test_capacity_exhaustion_names_free_capacity():
    model = mlp()
    tm = TaskMasks(model, sparsity=0.6, updater="static", distribution="uniform",
                   dense_layers=["4"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for t in range(2):
        tm.start_task(t, opt)
        tm.end_task()
    free = tm.free_capacity()
    with pytest.raises(ValueError, match="free capacity") as err:
        tm.start_task(2, opt)
    msg = str(err.value)
    for name, n in free.items():
        assert f"{name} {n}/" in msg
    assert "sparsity" in msg and "overflow='shrink'" in msg
    assert tm.training_task is None and tm.task_ids == [0, 1]

    model = mlp()
    tm = TaskMasks(model, sparsity=0.6, updater="static", distribution="uniform",
                   dense_layers=["4"], overflow="shrink")
    for t in range(3):
        tm.start_task(t, opt := torch.optim.SGD(model.parameters(), lr=0.1))
        tm.end_task()
    assert all(n == 0 for n in tm.free_capacity().values())
    with pytest.raises(ValueError, match="free capacity"):
        tm.start_task(3, opt)
    # more tasks than fit: "raise" refuses at once, "shrink" lets the last ones shrink
    with pytest.raises(ValueError, match=r"sparsity must be in \[0.6667, 1\)"):
        TaskMasks(mlp(), sparsity=0.6, n_tasks=3, dense_layers=["4"])
    model = mlp()
    tm = TaskMasks(model, sparsity=0.6, updater="static", distribution="uniform", n_tasks=3,
                   overflow="shrink", dense_layers=["4"])
    train_tasks(model, tm, [0, 1, 2], steps=1)
    sizes = [int(m.sum()) for m in tm.owned(2).values()]
    assert sizes == [n - 2 * b for n, b in zip([320, 1024], tm.budgets.values(), strict=True)]


def test_unknown_task_and_misuse_errors():
    model = mlp()
    tm = TaskMasks(model, sparsity=0.8, updater="set", n_tasks=3, dense_layers=["4"])
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(KeyError, match="task id 0 has no mask"):
        tm.set_task(0)
    with pytest.raises(ValueError, match="no task is training"):
        tm.end_task()
    tm.start_task(0, opt)
    with pytest.raises(ValueError, match="still training"):
        tm.start_task(1, opt)
    with tm.use_task(0):  # the training task itself is known
        pass
    tm.end_task()
    with pytest.raises(ValueError, match="trained already"):
        tm.start_task(0, opt)
    for bad in (tm.set_task, tm.owned, tm.forward_masks):
        with pytest.raises(KeyError, match=r"known task ids are \[0\]"):
            bad(3)
    with pytest.raises(KeyError, match="task id 3 has no mask"), tm.use_task(3):
        pass
    with pytest.raises(ValueError, match="task_id must be an int"):
        tm.start_task("a", opt)
    with pytest.raises(ValueError, match="does not train the masked weights"):
        tm.start_task(1, torch.optim.Adam(model[4].parameters()))
    with pytest.raises(ValueError, match="overflow"):
        TaskMasks(mlp(), overflow="share")
    with pytest.raises(ValueError, match="transfer"):
        TaskMasks(mlp(), transfer="yes")


def train_tasks(model, tm, tasks, kind="mlp", steps=4):
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    for t in tasks:
        tm.start_task(t, opt)
        x, y = data(kind, t)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        tm.end_task()


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_save_load_round_trip(kind):
    model = make_model(kind)
    kwargs = dict(sparsity=0.75, updater="rigl", n_tasks=4, delta_t=2, dense_layers=[HEAD[kind]])
    tm = TaskMasks(model, **kwargs)
    train_tasks(model, tm, [3, 1, 2], kind)
    model.eval()
    with torch.no_grad():
        outs = {}
        for t in (3, 1, 2):
            with tm.use_task(t):
                outs[t] = model(data(kind, t)[0])
    tm.set_task(3)  # saving while another task is selected still saves the full model
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    tm.set_task(None)
    full = model.state_dict()
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    for key, value in full.items():
        if not key.endswith("_extra_state"):
            assert torch.equal(saved[key], value), key

    fresh = make_model(kind, seed=5)
    tm2 = TaskMasks(fresh, **kwargs)
    fresh.load_state_dict(saved)
    fresh.eval()
    assert tm2.task_ids == [3, 1, 2]
    for (n, o), (_, o2) in zip(tm.owners.items(), tm2.owners.items(), strict=True):
        assert torch.equal(o, o2), n
    for a, b in zip(tm.layers, tm2.layers, strict=True):
        assert torch.equal(a.mask, b.mask)
    with torch.no_grad():
        for t in (3, 1, 2):
            with tm2.use_task(t):
                assert torch.equal(fresh(data(kind, t)[0]), outs[t])
    # training resumes with a new task on the loaded model, old tasks untouched
    train_tasks(fresh, tm2, [9], kind)
    with torch.no_grad(), tm2.use_task(1):
        assert torch.equal(fresh(data(kind, 1)[0]), outs[1])


def test_a_model_loaded_between_tasks_draws_the_next_mask_the_uninterrupted_one_draws():
    """The topology's generator (which draws each new task's mask) is in the saved
    state: a model built with another seed and loaded between tasks claims the same
    weights for the next task as the model that was never saved."""
    kwargs = dict(sparsity=0.75, updater="rigl", n_tasks=4, delta_t=2, dense_layers=["4"])
    model = mlp()
    tm = TaskMasks(model, **kwargs)
    train_tasks(model, tm, [0])
    fresh = mlp(seed=5)
    tm2 = TaskMasks(fresh, **kwargs, seed=5)
    fresh.load_state_dict(model.state_dict())
    opt, opt2 = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, fresh))
    tm.start_task(1, opt)
    tm2.start_task(1, opt2)
    for a, b in zip(tm.layers, tm2.layers, strict=True):
        assert torch.equal(a.mask, b.mask), a.name


def test_checkpoint_from_plain_model_is_refused():
    model = mlp()
    sd = model.state_dict()
    tm_model = mlp()
    TaskMasks(tm_model, n_tasks=2, dense_layers=["4"])
    with pytest.raises((ValueError, RuntimeError)):
        tm_model.load_state_dict(sd)


def test_deterministic_under_seed():
    def run(seed):
        model = mlp(0)
        tm = TaskMasks(model, sparsity=0.7, updater="srigl", n_tasks=3, seed=seed, delta_t=2,
                       dense_layers=["4"])
        train_tasks(model, tm, [0, 1])
        return tm.owners, {k: v.clone() for k, v in model.state_dict().items()
                           if not k.endswith("_extra_state")}

    o1, s1 = run(0)
    o2, s2 = run(0)
    o3, _ = run(1)
    assert all(torch.equal(o1[k], o2[k]) for k in o1)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(o1[k], o3[k]) for k in o1)


def test_metrics_and_per_task_state_of_dense_layers():
    model = mlp()
    tm = TaskMasks(model, sparsity=0.75, updater="set", n_tasks=4, dense_layers=["4"])
    train_tasks(model, tm, [0, 1])
    m = tm.metrics()
    assert m["n_tasks"] == 2.0
    assert m["used"] + m["free"] == pytest.approx(1.0)
    assert m["task_density/0"] == pytest.approx(m["task_density/1"])
    head0 = None
    with tm.use_task(0):
        head0 = model[4].weight.detach().clone()
    live = model[4].weight.detach().clone()
    assert not torch.equal(head0, live)  # the dense head is per-task state
    with tm.use_task(0):
        assert torch.equal(model[4].weight, head0)
    assert torch.equal(model[4].weight, live)


def test_unseen_task_view_is_the_next_tasks_start():
    for transfer in (True, False):
        model = mlp()
        tm = TaskMasks(model, sparsity=0.7, updater="set", transfer=transfer, n_tasks=3,
                       dense_layers=["4"])
        train_tasks(model, tm, [0, 1])
        with pytest.raises(KeyError):
            tm.set_task(7)
        before = {k: v.clone() for k, v in model.state_dict().items() if "_extra" not in k}
        with tm.use_task(7, allow_unseen=True):
            assert tm.active_task == 7
            for x in tm.layers:
                owned = getattr(x.module, OWNER_BUFFER) != FREE
                if transfer:
                    assert torch.equal(x.weight[owned], before[x.name][owned])
                else:
                    assert bool((x.weight == 0).all())
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before if "_extra" not in k)
        assert tm.active_task is None


def test_checkpoint_mid_task_resumes():
    model = mlp()
    kwargs = dict(sparsity=0.7, updater="rigl", n_tasks=3, delta_t=2, dense_layers=["4"])
    tm = TaskMasks(model, **kwargs)
    train_tasks(model, tm, [0])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    tm.start_task(1, opt)
    x, y = data("mlp", 1)
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        live = model(x)
    sd = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in model.state_dict().items()}

    fresh = mlp(3)
    tm2 = TaskMasks(fresh, **kwargs)
    fresh.load_state_dict(sd)
    assert tm2.pending_task == 1 and tm2.training_task is None and tm2.task_ids == [0]
    with pytest.raises(ValueError, match="resume_task"):
        tm2.start_task(2, torch.optim.Adam(fresh.parameters()))
    opt2 = torch.optim.Adam(fresh.parameters(), lr=0.01)
    tm2.resume_task(opt2)
    assert tm2.training_task == 1 and tm2.pending_task is None
    with torch.no_grad():
        assert torch.equal(fresh(x), live)
    tm2.end_task()
    assert tm2.task_ids == [0, 1]
    with pytest.raises(ValueError, match="no task to resume"):
        tm2.resume_task(opt2)


def test_a_load_drops_the_training_task_at_once_and_reads_change_nothing():
    model = mlp()
    tm = TaskMasks(model, sparsity=0.7, updater="set", n_tasks=3, dense_layers=["4"])
    train_tasks(model, tm, [0])
    topo = tm.start_task(1, torch.optim.Adam(model.parameters(), lr=0.01))
    sd = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in model.state_dict().items()}
    assert topo.optimizer is not None
    for _ in range(2):  # property reads leave the hooks alone
        assert (tm.task_ids, tm.training_task, tm.pending_task) == ([0, 1], 1, None)
        assert tm.active_task is None and set(tm.owners) == set(tm.budgets)
    assert topo.optimizer is not None
    model.load_state_dict(sd)  # the load itself drops the task in progress
    assert topo.optimizer is None
    assert (tm.task_ids, tm.training_task, tm.pending_task) == ([0], None, 1)


def test_task_records_read_the_model_alone():
    model = mlp()
    assert task_records(model) == []
    tm = TaskMasks(model, sparsity=0.7, updater="set", transfer=False, n_tasks=3,
                   dense_layers=["4"])
    train_tasks(model, tm, [5, 7])
    (record,) = task_records(model)
    assert record.task_ids == (5, 7) and record.in_progress is None
    tm.set_task(5)
    (record,) = task_records(model)
    assert set(record.visible) == {x.name for x in tm.layers}
    for x in tm.layers:
        assert torch.equal(record.visible[x.name], tm.owned(5)[x.name])
        record.visible[x.name].fill_(True)  # a copy
    assert not any(bool(v.all()) for v in task_records(model)[0].visible.values())


def test_packnet_task_trains_the_free_capacity_then_keeps_its_largest_weights():
    """claim="free": the task's mask is every free weight; prune_task keeps the budget's
    largest magnitudes (released weights zeroed, returned to the free pool), and the next
    task claims from what is free after that; earlier tasks stay bit-identical."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tm = TaskMasks(model, sparsity=0.75, updater="static", distribution="uniform")
    x = torch.randn(32, 6)
    tm.start_task(0, opt, claim="free")
    assert all(bool(layer.mask.all()) for layer in tm.layers)  # dense in the free pool
    for _ in range(5):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    before = {layer.name: layer.weight.detach().clone() for layer in tm.layers}
    kept = tm.prune_task()
    for layer in tm.layers:
        k = kept[layer.name]
        assert k == tm.budgets[layer.name] == int(layer.mask.sum())
        w = before[layer.name].abs().flatten()
        assert w[layer.mask.flatten()].min() >= w[~layer.mask.flatten()].max()
        assert bool((layer.weight[~layer.mask] == 0).all())
    tm.end_task()
    out0 = model(x).detach().clone()
    tm.start_task(1, opt, claim="free")
    for layer in tm.layers:  # task 1 gets exactly what task 0 released
        assert int(layer.mask.sum()) == layer.weight.numel() - tm.budgets[layer.name]
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    tm.prune_task()
    tm.end_task()
    with tm.use_task(0):
        assert torch.equal(model(x), out0)
    with pytest.raises(ValueError, match="claim must be one of"):
        tm.start_task(2, opt, claim="all")
    with pytest.raises(ValueError, match="no task is training"):
        tm.prune_task()
