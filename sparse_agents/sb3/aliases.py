"""Policy aliases: ``PPO("SparseMlpPolicy", env)`` as SB3 takes ``PPO("MlpPolicy", env)``.

Importing :mod:`sparse_agents.sb3` calls :func:`register_aliases`, which adds
``"Sparse<alias>"`` next to every alias of an algorithm whose policy class has a sparse
class here: ``"SparseMlpPolicy"``, ``"SparseCnnPolicy"`` and ``"SparseMultiInputPolicy"``
of PPO, A2C, DQN, SAC, TD3 and DDPG and, when ``sb3_contrib`` is installed, of QR-DQN,
TQC, TRPO, MaskablePPO and CrossQ (``"SparseMlpPolicy"`` only, as its own aliases), and
RecurrentPPO's ``"SparseMlpLstmPolicy"``, ``"SparseCnnLstmPolicy"`` and
``"SparseMultiInputLstmPolicy"``. Each maps to the sparse version of the class that the
plain alias maps to for that algorithm (PPO's ``"SparseMlpPolicy"`` is
``SparseActorCriticPolicy``, DQN's is ``SparseDQNPolicy``, ...), so the sparse options go
through ``policy_kwargs`` as with the classes::

    PPO("SparseMlpPolicy", "CartPole-v1", policy_kwargs=dict(sparsity=0.9, updater="srigl"))

rl-baselines3-zoo's hyperparameter files name policies by alias: ``policy:
'SparseMlpPolicy'`` with ``--gym-packages sparse_agents.sb3`` (see docs/ecosystem.md).

The sb3-contrib sparse classes are module-level names of this module, so saved models
name them by reference. Two need more than :func:`make_sparse`:

* RecurrentPPO: ``RecurrentActorCriticPolicy`` builds (the topology hooks the optimizer
  ``_build`` made), then adds its LSTMs and replaces ``self.optimizer``; the sparse
  class moves the topology onto the new optimizer (else it never steps: static masks).
  The LSTMs (not Linear/Conv) and the critic's input Linear made after ``_build`` stay
  dense.
* TRPO: its actor step is a line search that writes ``param.data`` directly, along a
  conjugate-gradient direction started from random noise, so it moves weights outside
  the masks; the sparse TRPO classes re-apply the masks before every training-mode
  ``get_distribution`` (so the line search evaluates, and keeps, masked weights). The
  topology steps with the critic's optimizer (``n_critic_updates`` per batch), and the
  actor's layers have no gradient there: RigL/SRigL (growth by gradient) update only
  the critic's layers, SET updates all. ``t_end=None`` is placed from ``n_epochs``
  (TRPO has ``n_critic_updates``), so pass ``t_end`` explicitly for TRPO.

ARS gets none (see ``UNSUPPORTED``).
"""

from __future__ import annotations

import torch
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    MultiInputActorCriticPolicy,
)

from sparse_agents.sb3.mixin import SparsePolicyMixin, make_sparse, register_sparse_class
from sparse_agents.sb3.policies import (
    SparseActorCriticCnnPolicy,
    SparseActorCriticPolicy,
    SparseDQNCnnPolicy,
    SparseDQNMultiInputPolicy,
    SparseDQNPolicy,
    SparseMultiInputActorCriticPolicy,
    SparseSACCnnPolicy,
    SparseSACMultiInputPolicy,
    SparseSACPolicy,
    SparseTD3CnnPolicy,
    SparseTD3MultiInputPolicy,
    SparseTD3Policy,
)

__all__ = ["ALGORITHMS", "PREFIX", "UNSUPPORTED", "register_aliases", "sparse_aliases"]

#: what a sparse alias starts with: "SparseMlpPolicy" is the sparse "MlpPolicy"
PREFIX = "Sparse"

#: base policy class -> its module-level sparse class (the only ones given aliases)
_SPARSE: dict[type, type] = {
    cls.__mro__[2]: cls
    for cls in (SparseActorCriticPolicy, SparseActorCriticCnnPolicy,
                SparseMultiInputActorCriticPolicy, SparseDQNPolicy, SparseDQNCnnPolicy,
                SparseDQNMultiInputPolicy, SparseSACPolicy, SparseSACCnnPolicy,
                SparseSACMultiInputPolicy, SparseTD3Policy, SparseTD3CnnPolicy,
                SparseTD3MultiInputPolicy)
}
#: algorithm -> {base policy class -> sparse class} where it differs from ``_SPARSE``
_PER_ALGORITHM: dict[type, dict[type, type]] = {}

#: the algorithms :func:`register_aliases` registers by default
ALGORITHMS: list[type[BaseAlgorithm]] = [PPO, A2C, DQN, SAC, TD3, DDPG]

#: sb3-contrib algorithms without sparse aliases, and why
UNSUPPORTED: dict[str, str] = {
    "ARS": "ARSPolicy never calls _build and has no optimizer (ARS searches in parameter "
           "space without gradients): there is no optimizer step for a topology to follow",
}


class _FollowsNewOptimizer:
    """For policies whose ``__init__`` replaces ``self.optimizer`` after ``_build``
    (sb3-contrib's recurrent policies): hook the topology to the final optimizer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        topo = self.topologies.get("policy")
        if topo is not None and topo.optimizer is not self.optimizer:
            topo.attach(self.optimizer)


class _RemasksForTRPO:
    """For TRPO, whose line search sets actor weights directly along a dense direction:
    masks re-applied before every training-mode ``get_distribution``."""

    def get_distribution(self, obs):
        if self.training:
            self.apply_masks()
        return super().get_distribution(obs)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every masked layer's weights outside its mask."""
        for topo in self.topologies.values():
            for layer in topo.layers:
                layer.weight.mul_(layer.mask_f)


class SparseTRPOPolicy(_RemasksForTRPO, SparsePolicyMixin, ActorCriticPolicy):
    """Sparse ``MlpPolicy`` for TRPO (re-masks after the line search's direct writes)."""


class SparseTRPOCnnPolicy(_RemasksForTRPO, SparsePolicyMixin, ActorCriticCnnPolicy):
    """Sparse ``CnnPolicy`` for TRPO."""


class SparseTRPOMultiInputPolicy(_RemasksForTRPO, SparsePolicyMixin,
                                 MultiInputActorCriticPolicy):
    """Sparse ``MultiInputPolicy`` for TRPO."""


_TRPO_CLASSES = {ActorCriticPolicy: SparseTRPOPolicy, ActorCriticCnnPolicy: SparseTRPOCnnPolicy,
                 MultiInputActorCriticPolicy: SparseTRPOMultiInputPolicy}
__all__ += ["SparseTRPOCnnPolicy", "SparseTRPOMultiInputPolicy", "SparseTRPOPolicy"]

try:  # sb3-contrib is optional
    import sb3_contrib
except ImportError:  # pragma: no cover - depends on the environment
    sb3_contrib = None

if sb3_contrib is not None:
    from sb3_contrib import QRDQN, TQC, TRPO, CrossQ, MaskablePPO, RecurrentPPO
    from sb3_contrib.common.maskable.policies import (
        MaskableActorCriticCnnPolicy,
        MaskableActorCriticPolicy,
        MaskableMultiInputActorCriticPolicy,
    )
    from sb3_contrib.common.recurrent.policies import (
        RecurrentActorCriticCnnPolicy,
        RecurrentActorCriticPolicy,
        RecurrentMultiInputActorCriticPolicy,
    )
    from sb3_contrib.crossq.policies import CrossQPolicy
    from sb3_contrib.qrdqn.policies import CnnPolicy as _QRDQNCnnPolicy
    from sb3_contrib.qrdqn.policies import MultiInputPolicy as _QRDQNMultiInputPolicy
    from sb3_contrib.qrdqn.policies import QRDQNPolicy
    from sb3_contrib.tqc.policies import CnnPolicy as _TQCCnnPolicy
    from sb3_contrib.tqc.policies import MultiInputPolicy as _TQCMultiInputPolicy
    from sb3_contrib.tqc.policies import TQCPolicy

    # module-level names equal to __name__: SB3 pickles them by reference
    SparseQRDQNPolicy = make_sparse(QRDQNPolicy, "SparseQRDQNPolicy")
    SparseQRDQNCnnPolicy = make_sparse(_QRDQNCnnPolicy, "SparseQRDQNCnnPolicy")
    SparseQRDQNMultiInputPolicy = make_sparse(_QRDQNMultiInputPolicy,
                                              "SparseQRDQNMultiInputPolicy")
    SparseTQCPolicy = make_sparse(TQCPolicy, "SparseTQCPolicy")
    SparseTQCCnnPolicy = make_sparse(_TQCCnnPolicy, "SparseTQCCnnPolicy")
    SparseTQCMultiInputPolicy = make_sparse(_TQCMultiInputPolicy, "SparseTQCMultiInputPolicy")
    SparseCrossQPolicy = make_sparse(CrossQPolicy)
    SparseMaskableActorCriticPolicy = make_sparse(MaskableActorCriticPolicy)
    SparseMaskableActorCriticCnnPolicy = make_sparse(MaskableActorCriticCnnPolicy)
    SparseMaskableMultiInputActorCriticPolicy = make_sparse(
        MaskableMultiInputActorCriticPolicy)

    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    class _RecurrentDefaults:
        """``forward(obs)`` alone starts fresh episodes (zero LSTM states), so code that
        runs a policy's plain ``forward(obs, deterministic=True)`` (e.g. the FLOPs count
        of ``sparse_metrics``) works on recurrent policies too."""

        def forward(self, obs, lstm_states=None, episode_starts=None, deterministic=False):
            if lstm_states is None:
                first = next(iter(obs.values())) if isinstance(obs, dict) else obs
                layers, _, hidden = self.lstm_hidden_state_shape
                zeros = torch.zeros(layers, first.shape[0], hidden, device=first.device)
                lstm_states = RNNStates((zeros, zeros), (zeros, zeros))
                episode_starts = torch.ones(first.shape[0], device=first.device)
            return super().forward(obs, lstm_states, episode_starts, deterministic)

    class SparseRecurrentActorCriticPolicy(_FollowsNewOptimizer, SparsePolicyMixin,
                                           _RecurrentDefaults, RecurrentActorCriticPolicy):
        """Sparse ``MlpLstmPolicy`` for RecurrentPPO (LSTMs stay dense)."""

    class SparseRecurrentActorCriticCnnPolicy(_FollowsNewOptimizer, SparsePolicyMixin,
                                              _RecurrentDefaults, RecurrentActorCriticCnnPolicy):
        """Sparse ``CnnLstmPolicy`` for RecurrentPPO."""

    class SparseRecurrentMultiInputActorCriticPolicy(_FollowsNewOptimizer, SparsePolicyMixin,
                                                     _RecurrentDefaults,
                                                     RecurrentMultiInputActorCriticPolicy):
        """Sparse ``MultiInputLstmPolicy`` for RecurrentPPO."""

    _CONTRIB = {
        QRDQNPolicy: SparseQRDQNPolicy,
        _QRDQNCnnPolicy: SparseQRDQNCnnPolicy,
        _QRDQNMultiInputPolicy: SparseQRDQNMultiInputPolicy,
        TQCPolicy: SparseTQCPolicy,
        _TQCCnnPolicy: SparseTQCCnnPolicy,
        _TQCMultiInputPolicy: SparseTQCMultiInputPolicy,
        CrossQPolicy: SparseCrossQPolicy,
        MaskableActorCriticPolicy: SparseMaskableActorCriticPolicy,
        MaskableActorCriticCnnPolicy: SparseMaskableActorCriticCnnPolicy,
        MaskableMultiInputActorCriticPolicy: SparseMaskableMultiInputActorCriticPolicy,
        RecurrentActorCriticPolicy: SparseRecurrentActorCriticPolicy,
        RecurrentActorCriticCnnPolicy: SparseRecurrentActorCriticCnnPolicy,
        RecurrentMultiInputActorCriticPolicy: SparseRecurrentMultiInputActorCriticPolicy,
    }
    _SPARSE.update(_CONTRIB)
    for _base, _cls in _CONTRIB.items():
        register_sparse_class(_base, _cls)  # make_sparse(_base) returns these
    del _base, _cls
    _PER_ALGORITHM[TRPO] = _TRPO_CLASSES
    __all__ += sorted(cls.__name__ for cls in _CONTRIB.values())
    ALGORITHMS += [QRDQN, TQC, TRPO, MaskablePPO, RecurrentPPO, CrossQ]


def sparse_aliases(algorithm: type[BaseAlgorithm]) -> dict[str, type]:
    """``{"Sparse<alias>": sparse class}`` for every alias of ``algorithm`` whose
    policy class has a sparse class here (empty for an algorithm with none)."""
    special = _PER_ALGORITHM.get(algorithm, {})
    out = {}
    for alias, cls in algorithm.policy_aliases.items():
        if alias.startswith(PREFIX) or not isinstance(cls, type):
            continue
        sparse = special.get(cls) or _SPARSE.get(cls)
        if sparse is not None:
            out[PREFIX + alias] = sparse
    return out


def register_aliases(*algorithms: type[BaseAlgorithm]) -> dict[str, dict[str, type]]:
    """Add the sparse aliases to the ``policy_aliases`` of ``algorithms`` (default:
    ``ALGORITHMS``), in place (DDPG shares TD3's dict). Idempotent; the plain aliases
    are left as they are. Returns ``{algorithm name: {alias: class}}`` registered."""
    done = {}
    for algo in algorithms or ALGORITHMS:
        if not (isinstance(algo, type) and issubclass(algo, BaseAlgorithm)):
            raise ValueError(f"expected an SB3 algorithm class, got {algo!r}")
        aliases = sparse_aliases(algo)
        algo.policy_aliases.update(aliases)
        done[algo.__name__] = aliases
    return done
