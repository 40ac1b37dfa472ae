"""SparseTopology where training loops differ from the plain one: closure steps, tied
weights, heads declared before the body, skipped (AMP) steps, step-size optimizers,
models moved or compiled after the topology was built (invariants 7 and 8)."""

from __future__ import annotations

import pytest
import torch
from helpers import mlp
from invariants import check_topology
from torch import nn

import sparse_agents as sa
from sparse_agents.optim_state import weight_shaped_state


def data(seed: int, n: int = 16, d: int = 8, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def loss_of(model, seed: int) -> torch.Tensor:
    x, y = data(seed, d=model[0].in_features)
    return nn.functional.cross_entropy(model(x), y)


def closure_for(model, opt, step: int):
    """The closure of one ``opt.step(closure)``: zero_grad, loss of batch ``step``, backward."""
    def closure():
        opt.zero_grad()
        loss = loss_of(model, step)
        loss.backward()
        return loss

    return closure


class Spy:
    """Wraps a topology's update function and records the gradients it was given."""

    def __init__(self, topo: sa.SparseTopology) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []
        self.current: dict[str, torch.Tensor] = {}
        real = topo.spec.update

        def update(weight, mask, grad, n_drop, generator, **opts):
            self.current[id(weight)] = None if grad is None else grad.clone()
            return real(weight, mask, grad, n_drop, generator, **opts)

        topo.spec = type(topo.spec)(**{**topo.spec.__dict__, "update": update})


# ------------------------------------------------------------------ closure steps
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_closure_steps_keep_masked_weights_and_state_zero(opt_name):
    model = mlp(0, sizes=(8, 32, 4))
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-2))
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=3)
    for step in range(12):
        opt.step(closure_for(model, opt, step))
        check_topology(topo, opt)
    assert topo.n_updates == 4


def test_lbfgs_closure_called_many_times_keeps_invariants():
    model = mlp(0, sizes=(8, 16, 4))
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=5)
    topo = sa.SparseTopology(model, opt, sparsity=0.7, updater="set", delta_t=2)
    for step in range(4):
        opt.step(closure_for(model, opt, step))
        check_topology(topo, opt)
    assert topo.n_updates == 2


def test_closure_step_update_scores_the_fresh_dense_gradient():
    model = mlp(0, sizes=(8, 32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=2)
    spy = Spy(topo)
    for step in range(2):
        if step == 1:  # the dense gradient of this step's loss, from a copy
            import copy

            twin = copy.deepcopy(model)
            loss_of(twin, step).backward()
            want = {id(m.weight): t.weight.grad.clone() for m, t in zip(model, twin, strict=True)
                    if isinstance(m, nn.Linear)}

        opt.step(closure_for(model, opt, step))
    assert spy.current, "no update ran"
    for key, grad in spy.current.items():
        torch.testing.assert_close(grad, want[key])
        assert bool((grad != 0).sum() > 0)


# ------------------------------------------------------------------ dense gradients
def test_step_mode_update_scores_the_dense_gradient_not_the_masked_one():
    model = mlp(0, sizes=(8, 32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=1)
    spy = Spy(topo)
    opt.zero_grad()
    loss_of(model, 0).backward()
    dense = {id(x.weight): x.weight.grad.clone() for x in topo.layers}
    opt.step()
    for layer in topo.layers:
        grad = spy.current[id(layer.weight)]
        assert torch.equal(grad, dense[id(layer.weight)])
        inactive = ~layer.mask
        assert bool((grad[inactive] != 0).any()), "growth saw a masked gradient"


def test_sgd_momentum_of_dropped_and_grown_weights_is_reset():
    model = mlp(0, sizes=(8, 32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=3,
                             drop_fraction=0.5, schedule="constant")
    before = {}
    for step in range(3):
        if step == 2:
            before = {x.name: x.mask.clone() for x in topo.layers}
        opt.zero_grad()
        loss_of(model, step).backward()
        opt.step()
    for layer in topo.layers:
        grown = layer.mask & ~before[layer.name]
        assert bool(grown.any())
        buf = opt.state[layer.weight]["momentum_buffer"]
        # after the update step the grown weights' momentum is one step of gradient only
        grad = layer.weight.grad
        torch.testing.assert_close(buf[grown], grad[grown])


# ------------------------------------------------------------------ tied weights
class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(16, 16)
        self.dec = nn.Linear(16, 16)
        self.dec.weight = self.enc.weight  # one Parameter, two modules

    def forward(self, x):
        return self.dec(torch.relu(self.enc(x)))


@pytest.mark.parametrize("updater", ["set", "rigl", "srigl"])
def test_tied_weights_get_one_mask(updater):
    model = Tied()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    topo = sa.SparseTopology(model, opt, sparsity=0.5, updater=updater, delta_t=1)
    assert [x.name for x in topo.layers] == ["enc.weight"]
    for step in range(3):
        opt.zero_grad()
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(step))
        ((model(x) - x) ** 2).mean().backward()
        opt.step()
    check_topology(topo, opt)
    if updater == "srigl":  # the tied weight is the output (dec runs last): never ablated
        assert not topo.layers[0].allow_ablation
    nonzero = int((model.enc.weight != 0).sum())
    assert nonzero <= topo.layers[0].budget <= 128
    assert topo.metrics()["density"] == pytest.approx(int(topo.layers[0].mask.sum()) / 256)


# ------------------------------------------------------------------ output layer
class HeadFirst(nn.Module):
    """A head declared before its body, as RL and CL code often does."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(32, 8)
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())

    def forward(self, x):
        return self.head(self.body(x))


def train_srigl(model, steps: int = 3, **kw) -> sa.SparseTopology:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="srigl", delta_t=1,
                             gamma_sal=1.0, **kw)
    for step in range(steps):
        opt.zero_grad()
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(step))
        model(x).pow(2).mean().backward()
        opt.step()
    return topo


def test_default_protects_the_last_layer_in_forward_order_not_registration_order():
    model = HeadFirst()
    topo = train_srigl(model)
    head = topo.layer("head")
    assert not head.allow_ablation
    assert int((head.mask.sum(1) > 0).sum()) == 8, "the head lost rows"
    assert topo.layer("body.0").allow_ablation  # the first registered layer is no output
    check_topology(topo)


def test_dense_head_protects_no_masked_layer():
    topo = train_srigl(HeadFirst(), dense_layers=["head"])
    assert all(x.allow_ablation for x in topo.layers)


def test_update_before_any_forward_asks_for_output_layers():
    model = HeadFirst()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="srigl")
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="output_layers"):
        topo.update()



def test_every_scheduled_update_grows_by_the_dense_gradient_of_its_own_step():
    """Backward masking keeps dense gradients only before update steps (delta_t=3):
    each update still sees that step's whole dense gradient, not a masked or older one."""
    import copy

    model = mlp(0, sizes=(8, 32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=3,
                             grad_masking="backward")
    spy = Spy(topo)
    for step in range(1, 10):
        twin = copy.deepcopy(model)
        loss_of(twin, step).backward()
        opt.zero_grad()
        loss_of(model, step).backward()
        for layer in (m for m in model if isinstance(m, nn.Linear)):
            assert torch.all(layer.weight.grad[~layer.weight_mask] == 0)  # clipping sees it
        spy.current.clear()
        opt.step()
        linears = [(m, t) for m, t in zip(model, twin, strict=True) if isinstance(m, nn.Linear)]
        if step % 3:
            assert not spy.current
            continue
        for layer, t in linears:
            torch.testing.assert_close(spy.current[id(layer.weight)], t.weight.grad)


def test_backwards_between_updates_run_one_hook_per_masked_layer():
    """The dense-gradient tensor hooks exist only for the backward before an update."""
    model = mlp(0, sizes=(8, 32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=3,
                             grad_masking="backward")

    def hooks() -> list[tuple[int, int]]:
        return [(len(x.weight._backward_hooks or {}), len(x.weight._post_accumulate_grad_hooks
                                                          or {})) for x in topo.layers]

    seen = []
    for step in range(1, 7):
        seen.append(hooks())
        opt.zero_grad()
        loss_of(model, step).backward()
        opt.step()
    one, two = [(0, 1)] * 2, [(1, 1)] * 2
    assert seen == [one, one, two, one, one, two]
    topo.keep_dense_grads = True
    assert hooks() == two
    topo.detach()
    assert hooks() == [(0, 0)] * 2


# ------------------------------------------------------------------ skipped steps
@pytest.mark.parametrize("set_to_none", [True, False])
def test_skipped_step_discards_kept_dense_gradients(set_to_none):
    """GradScaler skips optimizer.step() on inf/NaN: the dense gradients kept for growth
    in that iteration must not reach the next update."""
    model = mlp(0, sizes=(8, 32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=1,
                             grad_masking="backward")
    spy = Spy(topo)
    opt.zero_grad()
    (loss_of(model, 0) * float("inf")).backward()  # overflow: the step is skipped
    opt.zero_grad(set_to_none=set_to_none)
    import copy

    twin = copy.deepcopy(model)
    loss_of(twin, 1).backward()
    loss_of(model, 1).backward()
    opt.step()
    for layer, t in zip((m for m in model if isinstance(m, nn.Linear)),
                        (m for m in twin if isinstance(m, nn.Linear)), strict=True):
        grad = spy.current[id(layer.weight)]
        assert bool(torch.isfinite(grad).all())
        torch.testing.assert_close(grad, t.weight.grad)


def test_gradient_accumulation_over_two_backwards_is_kept_whole():
    model = mlp(0, sizes=(8, 32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="rigl", delta_t=1,
                             grad_masking="backward")
    spy = Spy(topo)
    import copy

    twin = copy.deepcopy(model)
    (loss_of(twin, 0) + loss_of(twin, 1)).backward()
    opt.zero_grad()
    loss_of(model, 0).backward()
    loss_of(model, 1).backward()
    opt.step()
    for layer, t in zip((m for m in model if isinstance(m, nn.Linear)),
                        (m for m in twin if isinstance(m, nn.Linear)), strict=True):
        torch.testing.assert_close(spy.current[id(layer.weight)], t.weight.grad)


# ------------------------------------------------------------------ step-size state
def test_rprop_grown_weights_start_at_the_initial_step_size():
    model = mlp(0, sizes=(8, 32, 4))
    lr = 0.01
    opt = torch.optim.Rprop(model.parameters(), lr=lr)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="set", delta_t=5,
                             drop_fraction=0.5, schedule="constant")
    masks = {}
    for step in range(5):
        if step == 4:
            masks = {x.name: x.mask.clone() for x in topo.layers}
        opt.zero_grad()
        loss_of(model, step).backward()
        opt.step()
    check_topology(topo, opt)
    for layer in topo.layers:
        grown = layer.mask & ~masks[layer.name]
        size = weight_shaped_state(opt, layer.weight)["step_size"]
        # grown at this step's pre-hook: reset to lr, then one Rprop step scales it
        etaminus, etaplus = opt.param_groups[0]["etas"]
        assert bool(grown.any())
        assert bool(((size[grown] == lr) | (size[grown] == lr * etaplus)
                     | (size[grown] == lr * etaminus)).all())
        assert float(size[grown].median()) >= lr * etaminus


# ------------------------------------------------------------------ devices
def held_tensors(topo: sa.SparseTopology) -> list[torch.Tensor]:
    out = []
    for layer in topo.layers:
        out += [layer.mask, layer.ever_active]
        out += [t for t in (layer.allowed, layer.frozen, layer.frozen_values) if t is not None]
    return out


def test_topology_state_follows_the_model_to_another_device_and_dtype():
    model = mlp(0, sizes=(8, 32, 4))
    topo = sa.SparseTopology(model, None, sparsity=0.8, updater="rigl")
    layer = topo.layers[0]
    frozen = ~layer.mask
    frozen[:, 1:] = False
    frozen &= ~layer.mask
    topo.freeze(layer.name, frozen)
    model.to(torch.float64)
    topo.follow_model()
    assert layer.frozen_values.dtype == torch.float64
    model.to("meta")
    topo.follow_model()
    assert {t.device.type for t in held_tensors(topo)} == {"meta"}


def test_task_masks_state_follows_the_model():
    model = mlp(0, sizes=(8, 32, 4))
    tm = sa.TaskMasks(model, sparsity=0.8, updater="srigl", n_tasks=2)
    model.to(torch.float64)
    tm.follow_model()
    assert {t.dtype for t in tm.initial_weights().values()} == {torch.float64}
    model.to("meta")
    tm.follow_model()
    assert {t.device.type for t in held_tensors(tm.topology)} == {"meta"}
    assert {t.device.type for t in tm.initial_weights().values()} == {"meta"}


def test_training_after_a_move_keeps_invariants():
    model = mlp(0, sizes=(8, 32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="srigl", delta_t=2)
    model.to(torch.float64)
    for step in range(4):
        opt.zero_grad()
        x, y = data(step)
        nn.functional.cross_entropy(model(x.double()), y).backward()
        opt.step()
    check_topology(topo, opt)
    assert topo.n_updates == 2


# ------------------------------------------------------------------ torch.compile
def test_compiled_model_topology_and_checkpoints_load_into_the_plain_model():
    plain = mlp(0, sizes=(8, 32, 4))
    compiled = torch.compile(mlp(0, sizes=(8, 32, 4)))
    a = sa.SparseTopology(plain, None, sparsity=0.8, updater="set", seed=1)
    b = sa.SparseTopology(compiled, None, sparsity=0.8, updater="set", seed=1)
    assert [x.name for x in a.layers] == [x.name for x in b.layers] == ["0.weight", "2.weight"]
    a.load_state_dict(b.state_dict())
    b.load_state_dict(a.state_dict())
    for x, y in zip(a.layers, b.layers, strict=True):
        assert torch.equal(x.mask, y.mask)
    plain.load_state_dict(compiled._orig_mod.state_dict())


# ------------------------------------------------------------------ from a pruned model
def test_rigl_continues_a_model_pruned_with_torch_prune_at_its_sparsity():
    from torch.nn.utils import prune

    model = mlp(0, sizes=(8, 32, 32, 4))
    linears = [(m, "weight") for m in model if isinstance(m, nn.Linear)]
    prune.global_unstructured(linears, pruning_method=prune.L1Unstructured, amount=0.8)
    pruned = {f"{i}.weight": m.weight_mask.bool().clone() for i, m in enumerate(model)
              if isinstance(m, nn.Linear)}
    values = {k: model.get_submodule(k[:-7]).weight.detach().clone() for k in pruned}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # weight_orig is the parameter
    topo = sa.SparseTopology(model, opt, updater="rigl", delta_t=2, masks="existing")
    assert topo.sparsity == pytest.approx(0.8, abs=1e-3)
    for layer in topo.layers:
        assert torch.equal(layer.mask, pruned[layer.name])
        assert layer.budget == int(pruned[layer.name].sum())
        assert torch.equal(layer.weight.detach(), values[layer.name])  # weights kept
        assert isinstance(layer.weight, nn.Parameter)
        assert any(p is layer.weight for p in opt.param_groups[0]["params"])
    for step in range(6):
        opt.zero_grad()
        loss_of(model, step).backward()
        opt.step()
    check_topology(topo, opt)
    assert topo.n_updates == 3
    assert topo.metrics()["density"] == pytest.approx(0.2, abs=1e-3)
    changed = sum(int((x.mask != pruned[x.name]).sum()) for x in topo.layers)
    assert changed > 0  # RigL moved the topology


def test_masks_from_the_nonzero_pattern_and_refused_values():
    model = mlp(0, sizes=(8, 32, 4))
    with torch.no_grad():
        model[0].weight[:, :4] = 0
    topo = sa.SparseTopology(model, None, updater="set", masks="nonzero")
    assert int(topo.layer("0").mask.sum()) == 32 * 4 and topo.layer("2").budget == 128
    with pytest.raises(ValueError, match="masks must be a mapping or one of"):
        sa.SparseTopology(mlp(0), None, masks="bogus")
    with pytest.raises(ValueError, match="weight_mask buffer"):
        sa.SparseTopology(mlp(0), None, masks="existing")


def test_srigl_refuses_a_layer_left_without_weights():
    model = mlp(0, sizes=(8, 32, 4))
    masks = {"0.weight": torch.ones(32, 8, dtype=torch.bool),
             "2.weight": torch.zeros(4, 32, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"budget of \['2.weight'\] is 0"):
        sa.SparseTopology(model, None, updater="srigl", masks=masks)
    topo = sa.SparseTopology(mlp(0, sizes=(8, 32, 4)), None, updater="rigl", masks=masks)
    assert topo.layer("2").budget == 0


# ------------------------------------------------------------------ momentum growth
def test_momentum_grows_where_the_dense_first_moment_is_largest():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    topo = sa.SparseTopology(model, opt, sparsity=0.5, updater="momentum", delta_t=3,
                             drop_fraction=0.5, schedule="constant")
    layer = topo.layers[0]
    moment = torch.zeros_like(layer.weight)
    for step in range(3):
        x, y = data(step, d=6)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        moment = 0.9 * moment + layer.weight.grad  # the dense gradient, before masking
        if step == 2:
            old, w = layer.mask.clone(), layer.weight.detach().clone()
        opt.step()
    n_drop = int(int(old.sum()) * 0.5)
    cut = w.abs()[old].sort().values[n_drop]
    kept = old & (w.abs() >= cut)
    free_scores = moment.abs().masked_fill(kept, -1.0)
    want = kept.clone()
    want.view(-1)[free_scores.view(-1).topk(n_drop).indices] = True
    assert torch.equal(layer.mask, want)
    assert not torch.equal(layer.mask, old)
    check_topology(topo, opt)


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1),  # momentum 0: no first moment
    lambda p: torch.optim.Rprop(p),
    lambda p: torch.optim.Adagrad(p),
], ids=["sgd-no-momentum", "rprop", "adagrad"])
def test_momentum_growth_refuses_an_optimizer_without_a_first_moment(make):
    model = mlp(0, sizes=(8, 16, 4))
    with pytest.raises(ValueError, match="keeps no first moment"):
        sa.SparseTopology(model, make(model.parameters()), updater="momentum")


@pytest.mark.parametrize("grad_masking", ["step", "backward"])
def test_momentum_state_round_trips_and_follows_both_masking_modes(grad_masking):
    def run(steps, topo_state=None, model_state=None, opt_state=None):
        model = mlp(0, sizes=(8, 32, 4))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        topo = sa.SparseTopology(model, opt, sparsity=0.8, updater="momentum", delta_t=2,
                                 grad_masking=grad_masking)
        if topo_state is not None:
            model.load_state_dict(model_state)
            opt.load_state_dict(opt_state)
            topo.load_state_dict(topo_state)
        start = topo.step
        for step in range(start, start + steps):
            opt.zero_grad()
            loss_of(model, step).backward()
            opt.step()
        return model, opt, topo

    model, opt, topo = run(6)
    assert set(topo.state_dict()["moments"]) == {x.name for x in topo.layers}
    check_topology(topo, opt)
    half = run(3)
    resumed = run(3, half[2].state_dict(), half[0].state_dict(), half[1].state_dict())[2]
    for a, b in zip(topo.layers, resumed.layers, strict=True):
        assert torch.equal(a.mask, b.mask)
