"""The dormant-neuron fraction (Sokar et al. 2023's ReDo score) that ``topo.metrics()``
and SB3's ``sparse/`` logger report."""

import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn

import sparse_agents as sa
from sparse_agents.dormant import DORMANT_TAU, dormant_fraction, neuron_scores


def _net_and_topology(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    return model, opt, sa.SparseTopology(model, opt, sparsity=0.5, updater="static")


def _train_steps(model, opt, n: int = 10) -> None:
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(n):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()


def test_neuron_scores_are_activity_over_the_layers_mean_activity():
    scores = neuron_scores(torch.tensor([0.0, 1.0, 2.0, 5.0]))
    assert torch.allclose(scores, torch.tensor([0.0, 0.5, 1.0, 2.5]))
    assert dormant_fraction(torch.tensor([0.0, 1.0, 2.0, 5.0])) == 0.25
    assert dormant_fraction(torch.zeros(4)) == 1.0  # a silent layer is all dormant
    with pytest.raises(ValueError, match="tau"):
        dormant_fraction(torch.ones(3), tau=-0.1)


def test_metrics_report_the_dormant_fraction_of_the_hidden_neurons_only():
    model, opt, topo = _net_and_topology()
    assert math.isnan(topo.metrics()["dormant_fraction"])  # no training forward yet
    with torch.no_grad():  # forwards without gradients (rollouts) are not recorded
        model(torch.randn(8, 6))
    assert math.isnan(topo.metrics()["dormant_fraction"])
    _train_steps(model, opt)
    m = topo.metrics()
    assert "dormant/0" not in m  # the first layer reads observations, not neurons
    assert {"dormant/2", "dormant/4"} <= set(m)
    assert 0.0 <= m["dormant_fraction"] < 0.5


def test_a_layer_whose_units_never_fire_is_reported_dormant():
    model, opt, topo = _net_and_topology()
    with torch.no_grad():
        model[2].bias.fill_(-1e3)  # ReLU after layer 2 outputs 0 for every input
    _train_steps(model, opt, n=11)  # re-recorded every 10 steps
    m = topo.dormant()
    assert m["dormant/4"] == 1.0
    assert m["dormant/2"] < 1.0
    assert m["dormant_fraction"] == pytest.approx((1.0 * 32 + m["dormant/2"] * 32) / 64)
    assert topo.dormant(tau=0.0)["dormant/4"] == 1.0


def test_a_copy_of_the_model_does_not_write_into_the_original_topologys_record():
    model, opt, topo = _net_and_topology()
    _train_steps(model, opt, n=10)
    before = topo.dormant()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin[2].bias.fill_(-1e3)
    twin(torch.randn(64, 6)).sum().backward()
    assert topo.dormant() == before
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the hooks pickle with the model


def test_sb3_policies_log_the_dormant_fraction_and_skip_the_sac_critics_input_layer():
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import DQN, SAC

    import sparse_agents.sb3  # noqa: F401  (registers SparseMlpPolicy)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dqn = DQN("SparseMlpPolicy", "CartPole-v1", learning_starts=64, train_freq=4,
                  policy_kwargs=dict(sparsity=0.8, net_arch=[32, 32]), seed=0)
        dqn.learn(300)
        sac = SAC("SparseMlpPolicy", "Pendulum-v1", learning_starts=64,
                  policy_kwargs=dict(sparsity=0.8, net_arch=[32, 32]), seed=0)
        sac.learn(120)
    metrics = dqn.policy.sparse_metrics()
    assert 0.0 <= metrics["dormant_fraction"] <= 1.0
    sac_metrics = sac.policy.sparse_metrics()
    assert 0.0 <= sac_metrics["critic/dormant_fraction"] <= 1.0
    # the critic's first layer reads (observation, action): not neurons, even though the
    # actor's loss feeds it the actor's actions, which carry a grad_fn
    assert not any(k.startswith("dormant/qf0.0") for k in sac_metrics)
    assert "dormant/qf0.2" in sac_metrics
    assert DORMANT_TAU == 0.025


def test_a_tracker_restored_from_its_state_records_as_the_original():
    from sparse_agents.dormant import DormantTracker

    def tracked(model):
        return DormantTracker([(n, m) for n, m in model.named_children()
                               if isinstance(m, nn.Linear)], every=3)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    tracker = tracked(model)
    opt.register_step_post_hook(lambda *_: tracker.tick())
    _train_steps(model, opt, n=4)  # 4 ticks: due again after 2 more
    twin = copy.deepcopy(model)
    restored = tracked(twin)
    restored.load_state_dict(tracker.state_dict())
    assert restored.metrics() == tracker.metrics()
    opt2 = torch.optim.SGD(twin.parameters(), lr=1e-3)
    opt2.register_step_post_hook(lambda *_: restored.tick())
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(2)) * 5
    for net, o in ((model, opt), (twin, opt2)):
        for _ in range(4):  # recorded again at the forward after tick 6, in both
            o.zero_grad()
            net(x).pow(2).sum().backward()
            o.step()
    ours, theirs = restored.state_dict(), tracker.state_dict()
    assert ours["means"].keys() == theirs["means"].keys()
    for name, means in theirs["means"].items():
        assert torch.allclose(ours["means"][name], means), name
    assert restored.metrics() == tracker.metrics()
    with pytest.raises(ValueError, match="does not track"):
        DormantTracker([("0", model[0])]).load_state_dict(tracker.state_dict())
