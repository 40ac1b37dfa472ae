"""continue_sparse: a dense SB3 agent, pruned, goes on training sparse (issue 16, item 5)."""

import numpy as np
import pytest
import torch
from invariants import check_topology
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from torch import nn
from torch.nn.utils import prune

from sparse_agents.sb3 import SparseActorCriticPolicy, SparseDQNPolicy, SparseSACPolicy
from sparse_agents.sb3.pruned import continue_sparse


def ppo(steps: int = 256, seed: int = 0) -> PPO:
    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=seed), n_steps=64,
                batch_size=32, n_epochs=2, seed=seed, device="cpu",
                policy_kwargs=dict(net_arch=[16, 16]))
    return model.learn(steps) if steps else model


def dqn(seed: int = 0) -> DQN:
    return DQN("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=seed),
               learning_starts=50, buffer_size=1000, batch_size=32, tau=0.5,
               target_update_interval=1, seed=seed, device="cpu",
               policy_kwargs=dict(net_arch=[16, 16])).learn(128)


def sac(seed: int = 0) -> SAC:
    return SAC("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1, seed=seed),
               learning_starts=50, buffer_size=1000, batch_size=32, tau=0.1, seed=seed,
               device="cpu", policy_kwargs=dict(net_arch=[16, 16])).learn(100)


def linears(module: nn.Module, prefix: str = "") -> dict[str, nn.Linear]:
    """Parameter name of the weight -> Linear, for the Linears under ``module``."""
    return {f"{prefix}{n}.weight": m for n, m in module.named_modules()
            if isinstance(m, nn.Linear)}


def zero_by_hand(layers: dict[str, nn.Linear], keep: float, seed: int) -> dict[str, torch.Tensor]:
    """Zero a random ``1 - keep`` of each weight; the masks left (nonzero weights)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for name, m in layers.items():
            m.weight.mul_(torch.rand(m.weight.shape, generator=gen) < keep)
            out[name] = m.weight != 0
    return out


def sparse_masks(policy) -> dict[str, torch.Tensor]:
    return {n: m.clone() for t in policy.topologies.values() for n, m in t.masks.items()}


def counts(masks) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


def check_targets_follow(policy) -> int:
    """Target layers carry the online masks and zeros outside them; how many pairs."""
    pairs = [p for ps in policy._sparse.targets.values() for p in ps]
    for online, target in pairs:
        assert torch.equal(online.weight_mask, target.weight_mask)
        assert torch.all(target.weight[~target.weight_mask] == 0)
    return len(pairs)


def observations(space, n: int = 64, seed: int = 0) -> np.ndarray:
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


# ---------------------------------------------------------------------------- PPO
def test_ppo_pruned_with_torch_prune_continues_with_rigl(tmp_path):
    model = ppo()
    pol = model.policy
    layers = linears(pol.mlp_extractor, "mlp_extractor.") | {
        "action_net.weight": pol.action_net, "value_net.weight": pol.value_net}
    prune.global_unstructured([(m, "weight") for m in layers.values()],
                              pruning_method=prune.L1Unstructured, amount=0.8)
    prune_masks = {n: m.weight_mask.bool().clone() for n, m in layers.items()}
    pruned = {n: m.weight.detach().clone() for n, m in layers.items()}  # orig * mask
    obs = observations(model.observation_space)
    dense_actions, _ = model.predict(obs, deterministic=True)

    sparse = continue_sparse(model, updater="rigl", delta_t=4)

    assert type(sparse) is PPO and type(sparse.policy) is SparseActorCriticPolicy
    assert sparse.get_env() is model.get_env()
    for attr in ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "seed",
                 "learning_rate", "ent_coef", "max_grad_norm"):
        assert getattr(sparse, attr) == getattr(model, attr), attr
    assert sparse.clip_range(0.5) == model.clip_range(0.5)
    assert sparse.num_timesteps == 0 and model.num_timesteps == 256
    assert all(prune.is_pruned(m) for m in layers.values())  # the dense model is untouched
    topo = sparse.policy.topology
    assert topo.updater == "rigl" and topo.schedule.delta_t == 4
    masks = sparse_masks(sparse.policy)
    assert masks.keys() == prune_masks.keys()
    for name, mask in masks.items():
        assert torch.equal(mask, prune_masks[name]), name
        assert torch.equal(sparse.policy.get_parameter(name).detach(), pruned[name]), name
    for name, p in pol.named_parameters():  # biases and the rest: the dense values
        if not name.endswith("weight_orig"):
            assert torch.equal(sparse.policy.get_parameter(name), p), name
    total = sum(m.numel() for m in masks.values())
    assert abs(sum(counts(masks).values()) - 0.2 * total) <= 1
    assert sparse.policy.sparse_metrics()["density"] == pytest.approx(0.2, abs=1 / total)
    sparse_actions, _ = sparse.predict(obs, deterministic=True)
    np.testing.assert_array_equal(sparse_actions, dense_actions)

    # a pruned layer kept dense keeps its pruned weights (weight_orig * weight_mask)
    kept = continue_sparse(model, dense_layers=["action_net"], updater="rigl")
    assert "action_net.weight" in kept.policy.topology.dense_names
    assert torch.equal(kept.policy.action_net.weight.detach(), pruned["action_net.weight"])

    before = counts(masks)
    sparse.learn(256)
    after = sparse_masks(sparse.policy)
    assert counts(after) == before  # RigL keeps every layer's count
    assert topo.n_updates > 0
    assert any(not torch.equal(after[n], masks[n]) for n in masks)
    check_topology(topo)

    sparse.save(tmp_path / "sparse")  # the masks travel in policy_kwargs and the state
    loaded = PPO.load(tmp_path / "sparse", device="cpu")
    for name, mask in sparse_masks(loaded.policy).items():
        assert torch.equal(mask, after[name])


def test_dict_masks_leave_unmasked_layers_dense_and_zero_outside():
    model = ppo(steps=0)
    pol = model.policy
    gen = torch.Generator().manual_seed(1)
    given = {n: torch.rand(m.weight.shape, generator=gen) < 0.3
             for n, m in linears(pol.mlp_extractor, "mlp_extractor.").items()}
    dense_before = {n: p.detach().clone() for n, p in pol.named_parameters()}

    sparse = continue_sparse(model, {n: m.float() for n, m in given.items()}, updater="set")

    topo = sparse.policy.topology
    assert sparse_masks(sparse.policy).keys() == given.keys()
    assert sorted(topo.dense_names) == ["action_net.weight", "value_net.weight"]
    for name, p in sparse.policy.named_parameters():
        expected = dense_before[name] * given[name] if name in given else dense_before[name]
        assert torch.equal(p.detach(), expected), name
    active = sum(int(m.sum()) for m in given.values()) + sum(
        pol.get_parameter(n).numel() for n in topo.dense_names)
    total = sum(m.numel() for m in given.values()) + sum(
        pol.get_parameter(n).numel() for n in topo.dense_names)
    assert sparse.policy._sparse_options["sparsity"] == pytest.approx(1 - active / total)
    assert topo.sparsity == pytest.approx(1 - active / total)


def test_existing_weight_mask_buffers_and_counters_kept_on_request():
    model = ppo(steps=128)
    pol = model.policy
    gen = torch.Generator().manual_seed(2)
    given = {}
    for name, m in linears(pol, "").items():  # plain 0/1 float buffers, weights untouched
        given[name] = torch.rand(m.weight.shape, generator=gen) < 0.5
        m.register_buffer("weight_mask", given[name].float())
    weights = {n: m.weight.detach().clone() for n, m in linears(pol, "").items()}

    sparse = continue_sparse(model, reset_num_timesteps=False, updater="rigl")

    assert sparse.num_timesteps == model.num_timesteps == 128
    assert sparse._episode_num == model._episode_num
    for name, mask in sparse_masks(sparse.policy).items():
        assert torch.equal(mask, given[name])
        assert torch.equal(sparse.policy.get_parameter(name).detach(), weights[name] * mask)
    assert all(hasattr(m, "weight_mask") for m in linears(pol, "").values())


# ---------------------------------------------------------------------------- DQN, SAC
def test_dqn_nonzero_masks_target_network_follows():
    model = dqn()
    pol = model.policy
    given = zero_by_hand(linears(pol.q_net, "q_net."), keep=0.3, seed=3)
    target_before = {n: p.detach().clone() for n, p in pol.q_net_target.named_parameters()}
    obs = observations(model.observation_space)
    dense_actions, _ = model.predict(obs, deterministic=True)

    sparse = continue_sparse(model, "nonzero", updater="rigl", delta_t=4)

    assert type(sparse) is DQN and type(sparse.policy) is SparseDQNPolicy
    assert sparse.q_net is sparse.policy.q_net  # SB3's aliases point at the new policy
    for attr in ("learning_starts", "batch_size", "tau", "target_update_interval",
                 "exploration_final_eps", "buffer_size", "gamma"):
        assert getattr(sparse, attr) == getattr(model, attr), attr
    masks = sparse_masks(sparse.policy)
    assert masks.keys() == given.keys()
    for name, mask in masks.items():
        assert torch.equal(mask, given[name])
        assert torch.equal(sparse.policy.get_parameter(name), pol.get_parameter(name))
    # the target keeps its own (dense) values, multiplied by the online masks
    assert check_targets_follow(sparse.policy) == len(given)
    for name, p in sparse.policy.q_net_target.named_parameters():
        mask = masks.get(f"q_net.{name}")
        expected = target_before[name] if mask is None else target_before[name] * mask
        assert torch.equal(p.detach(), expected), name
    np.testing.assert_array_equal(sparse.predict(obs, deterministic=True)[0], dense_actions)

    before = counts(masks)
    sparse.learn(300)
    after = sparse_masks(sparse.policy)
    assert counts(after) == before
    assert sparse.policy.topology.n_updates > 0
    assert any(not torch.equal(after[n], masks[n]) for n in masks)
    assert check_targets_follow(sparse.policy) == len(given)


def test_sac_nonzero_masks_two_topologies():
    model = sac()
    pol = model.policy
    given = zero_by_hand(linears(pol.actor, "actor.") | linears(pol.critic, "critic."),
                         keep=0.4, seed=4)
    ent_coef = float(model.log_ent_coef.detach().exp())

    sparse = continue_sparse(model, "nonzero", updater="rigl", delta_t=4)

    assert type(sparse) is SAC and type(sparse.policy) is SparseSACPolicy
    topos = sparse.policy.topologies
    assert sorted(topos) == ["actor", "critic"]
    assert all(n.startswith("actor.") for n in topos["actor"].masks)
    assert all(n.startswith("critic.") for n in topos["critic"].masks)
    masks = sparse_masks(sparse.policy)
    assert masks.keys() == given.keys()
    for name, mask in masks.items():
        assert torch.equal(mask, given[name])
        assert torch.equal(sparse.policy.get_parameter(name), pol.get_parameter(name))
    assert float(sparse.log_ent_coef.detach().exp()) == pytest.approx(ent_coef)
    assert check_targets_follow(sparse.policy) == len(linears(pol.critic))
    obs = observations(model.observation_space)
    np.testing.assert_array_equal(sparse.predict(obs, deterministic=True)[0],
                                  model.predict(obs, deterministic=True)[0])

    before = counts(masks)
    sparse.learn(200)
    after = sparse_masks(sparse.policy)
    assert counts(after) == before
    assert all(t.n_updates > 0 for t in topos.values())
    for key in topos:
        assert any(not torch.equal(after[n], masks[n]) for n in topos[key].masks), key
        check_topology(topos[key])
    assert check_targets_follow(sparse.policy) == len(linears(pol.critic))


# ---------------------------------------------------------------------------- errors
def test_errors_name_the_parameter():
    model = ppo(steps=0)
    weight = "mlp_extractor.policy_net.0.weight"
    shape = model.policy.get_parameter(weight).shape
    with pytest.raises(ValueError, match="model must be"):
        continue_sparse(model.policy)
    with pytest.raises(ValueError, match="masks must be"):
        continue_sparse(model, "random")
    with pytest.raises(ValueError, match="masks='existing'.*no weight_mask"):
        continue_sparse(model)  # nothing pruned
    with pytest.raises(ValueError, match="masks names 'policy_net.0.weight'"):
        continue_sparse(model, {"policy_net.0.weight": torch.ones(shape, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"masks\[.*has shape"):
        continue_sparse(model, {weight: torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"masks\[.*0/1"):
        continue_sparse(model, {weight: torch.full(shape, 0.5)})
    with pytest.raises(ValueError, match="sparsity"):
        continue_sparse(model, "nonzero", sparsity=0.5)
    with pytest.raises(ValueError, match="unknown sparse options"):
        continue_sparse(model, "nonzero", sparsty=0.5)
    with pytest.raises(ValueError, match="topology_kwargs"):
        continue_sparse(model, "nonzero", topology_kwargs=dict(masks={}))
    with pytest.raises(ValueError, match="updater"):
        continue_sparse(model, "nonzero", updater="magic")
    with pytest.raises(ValueError, match="every weight is pruned"):
        continue_sparse(model, {n: torch.zeros_like(p, dtype=torch.bool)
                                for n, p in model.policy.named_parameters()
                                if n.endswith("weight")})
    sparse = PPO(SparseActorCriticPolicy, "CartPole-v1", n_steps=32, batch_size=32, device="cpu",
                 policy_kwargs=dict(net_arch=[8]))
    with pytest.raises(ValueError, match="model: its policy .* already sparse"):
        continue_sparse(sparse, "nonzero")


def test_dqn_masks_of_the_target_network_are_ignored():
    model = dqn()
    pol = model.policy
    online = zero_by_hand(linears(pol.q_net, "q_net."), keep=0.5, seed=5)
    target = {n.replace("q_net.", "q_net_target.", 1): ~m for n, m in online.items()}
    sparse = continue_sparse(model, {**online, **target}, updater="rigl")
    for name, mask in sparse_masks(sparse.policy).items():
        assert torch.equal(mask, online[name])  # the target follows the online masks
    check_targets_follow(sparse.policy)
    with pytest.raises(ValueError, match="masks: no layer an optimizer"):
        continue_sparse(model, target)
