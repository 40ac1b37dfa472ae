"""Policy aliases: ``PPO("SparseMlpPolicy", env)`` as SB3 takes ``PPO("MlpPolicy", env)``.

Importing :mod:`sparse_agents.sb3` calls :func:`register_aliases`, which adds
``"Sparse<alias>"`` next to every alias of an algorithm whose policy class has a sparse
class here: ``SparseMlpPolicy``, ``SparseCnnPolicy`` and ``SparseMultiInputPolicy`` of
PPO, A2C, DQN, SAC, TD3 and DDPG and, when ``sb3_contrib`` is installed, of QR-DQN, TQC,
TRPO and MaskablePPO, and RecurrentPPO's ``SparseMlpLstmPolicy``,
``SparseCnnLstmPolicy`` and ``SparseMultiInputLstmPolicy``. Each maps to the sparse
version of the class the plain alias maps to for that algorithm (PPO's
``"SparseMlpPolicy"`` is ``SparseActorCriticPolicy``, DQN's is ``SparseDQNPolicy``, ...),
so options go through ``policy_kwargs`` as with the classes::

    PPO("SparseMlpPolicy", "CartPole-v1", policy_kwargs=dict(sparsity=0.9, updater="srigl"))

rl-baselines3-zoo's hyperparameter files name policies by alias: ``policy:
'SparseMlpPolicy'`` with ``--gym-packages sparse_agents.sb3`` (see docs/ecosystem.md).

The sb3-contrib sparse classes are module-level names of this module
(``SparseQRDQNPolicy``, ``SparseTQCPolicy``, ``SparseMaskableActorCriticPolicy``,
``SparseRecurrentActorCriticPolicy``, ...), so saved models name them by reference.
ARS (its policy has no optimizer: nothing for a topology to hook) and CrossQ (see
``UNSUPPORTED``) get no sparse aliases.
"""

from __future__ import annotations

from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from sparse_agents.sb3.mixin import make_sparse
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

#: the algorithms :func:`register_aliases` registers by default
ALGORITHMS: list[type[BaseAlgorithm]] = [PPO, A2C, DQN, SAC, TD3, DDPG]

#: sb3-contrib algorithms left out, and why
UNSUPPORTED: dict[str, str] = {
    "ARS": "ARSPolicy has no optimizer (ARS searches in parameter space): a topology "
           "hooks an optimizer's steps, so there is nothing to drive it",
}

try:  # sb3-contrib is optional
    import sb3_contrib
except ImportError:  # pragma: no cover - depends on the environment
    sb3_contrib = None

if sb3_contrib is not None:
    from sb3_contrib import QRDQN, TQC, TRPO, MaskablePPO, RecurrentPPO
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
    SparseMaskableActorCriticPolicy = make_sparse(MaskableActorCriticPolicy)
    SparseMaskableActorCriticCnnPolicy = make_sparse(MaskableActorCriticCnnPolicy)
    SparseMaskableMultiInputActorCriticPolicy = make_sparse(
        MaskableMultiInputActorCriticPolicy)
    SparseRecurrentActorCriticPolicy = make_sparse(RecurrentActorCriticPolicy)
    SparseRecurrentActorCriticCnnPolicy = make_sparse(RecurrentActorCriticCnnPolicy)
    SparseRecurrentMultiInputActorCriticPolicy = make_sparse(
        RecurrentMultiInputActorCriticPolicy)

    for _cls in (SparseQRDQNPolicy, SparseQRDQNCnnPolicy, SparseQRDQNMultiInputPolicy,
                 SparseTQCPolicy, SparseTQCCnnPolicy, SparseTQCMultiInputPolicy,
                 SparseMaskableActorCriticPolicy, SparseMaskableActorCriticCnnPolicy,
                 SparseMaskableMultiInputActorCriticPolicy,
                 SparseRecurrentActorCriticPolicy, SparseRecurrentActorCriticCnnPolicy,
                 SparseRecurrentMultiInputActorCriticPolicy):
        _SPARSE[_cls.__mro__[2]] = _cls
        __all__.append(_cls.__name__)
    del _cls
    ALGORITHMS += [QRDQN, TQC, TRPO, MaskablePPO, RecurrentPPO]


def sparse_aliases(algorithm: type[BaseAlgorithm]) -> dict[str, type]:
    """``{"Sparse<alias>": sparse class}`` for every alias of ``algorithm`` whose
    policy class has a sparse class here (empty for an algorithm with none)."""
    out = {}
    for alias, cls in algorithm.policy_aliases.items():
        if alias.startswith(PREFIX) or isinstance(cls, str):
            continue
        sparse = _SPARSE.get(cls)
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

