"""L2 and EWC consolidation as optimizer hooks (sparse_agents.regularize)."""

import pytest
import torch
from torch import nn

from sparse_agents.regularize import Consolidation


def _model_and_opt(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_no_pull_before_the_first_consolidation():
    model, opt = _model_and_opt()
    reg = Consolidation([opt], "l2", coef=5.0)
    model.weight.grad = torch.zeros_like(model.weight)
    model.bias.grad = torch.zeros_like(model.bias)
    before = model.weight.detach().clone()
    opt.step()
    assert torch.equal(model.weight, before) and reg.penalty() == 0.0


def test_l2_adds_coef_times_the_distance_to_the_anchor_to_the_gradient():
    model, opt = _model_and_opt()
    reg = Consolidation([opt], "l2", coef=2.0)
    reg.consolidate()
    anchor = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # one unit away from the anchor everywhere
    model.weight.grad = torch.zeros_like(model.weight)
    model.bias.grad = torch.zeros_like(model.bias)
    opt.step()  # w -= lr * coef * (w - w*) = 1 - 0.1 * 2 * 1
    assert torch.allclose(model.weight - anchor, torch.full_like(anchor, 0.8))
    assert reg.penalty() == pytest.approx(0.5 * 2.0 * 0.64 * anchor.numel())


def test_ewc_weights_the_pull_by_the_mean_squared_gradient_of_the_task():
    model, opt = _model_and_opt()
    reg = Consolidation([opt], "ewc", coef=1.0)
    grads = [torch.full_like(model.weight, 2.0), torch.full_like(model.weight, 4.0)]
    for g in grads:  # the task's two steps: mean squared gradient (4 + 16) / 2 = 10
        model.weight.grad = g.clone()
        model.bias.grad = torch.zeros_like(model.bias)
        opt.step()
    reg.consolidate()
    assert torch.allclose(reg.fisher[0], torch.full_like(model.weight, 10.0))
    anchor = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(0.01)
    model.weight.grad = torch.zeros_like(model.weight)
    opt.step()  # moves back by lr * F * 0.01 = 0.01: onto the anchor
    assert torch.allclose(model.weight, anchor, atol=1e-6)


def test_bad_options_name_the_parameter():
    _, opt = _model_and_opt()
    with pytest.raises(ValueError, match="regularizer must be one of"):
        Consolidation([opt], "si")
    with pytest.raises(ValueError, match="reg_coef"):
        Consolidation([opt], "l2", coef=-1.0)


@pytest.mark.parametrize(("kind", "wrong"), [("ewc", "l2"), ("l2", "ewc")])
def test_a_consolidation_restored_from_its_state_pulls_as_the_original(kind, wrong):
    model, opt = _model_and_opt()
    reg = Consolidation([opt], kind, coef=3.0)
    model.weight.grad = torch.full_like(model.weight, 2.0)  # Fisher 4, not L2's 1
    model.bias.grad = torch.full_like(model.bias, 2.0)
    opt.step()
    reg.consolidate()
    with torch.no_grad():
        model.weight.add_(0.5)
    other, opt2 = _model_and_opt(seed=1)
    other.load_state_dict(model.state_dict())
    restored = Consolidation([opt2], kind, coef=3.0)
    restored.load_state_dict(reg.state_dict())
    assert restored.penalty() == reg.penalty() > 0
    with pytest.raises(ValueError, match=f"'{kind}' consolidation, this one is '{wrong}'"):
        Consolidation([opt2], wrong).load_state_dict(reg.state_dict())
    wide = torch.optim.SGD(nn.Linear(5, 3).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"state\['anchor'\] does not match"):
        Consolidation([wide], kind).load_state_dict(reg.state_dict())
