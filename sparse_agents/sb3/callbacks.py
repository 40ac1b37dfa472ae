"""``SparsityCallback``: sparsity metrics history (and explicit logging) for SB3.

Sparse policies already record their metrics under ``sparse/`` in the algorithm's
logger on their own; this callback is for scripts that want the values themselves
(``callback.history``: one ``(num_timesteps, metrics)`` per rollout end), or logging
with ``log_sparsity=False`` on the policy.
"""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback

from sparse_agents.sb3.mixin import record_metrics

__all__ = ["SparsityCallback"]


class SparsityCallback(BaseCallback):
    """Keep sparse metrics at each rollout end (and at training end).

    Args:
        record: also write them to the logger under ``sparse/`` (``None``: only when
            the policy does not already, i.e. it was built with ``log_sparsity=False``).
        verbose: 1 prints global density, update count and ITOP at training end.
    """

    def __init__(self, record: bool | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.record = record
        self.history: list[tuple[int, dict[str, float]]] = []

    def _metrics(self) -> dict[str, float]:
        fn = getattr(self.model.policy, "sparse_metrics", None)
        if fn is None:
            raise ValueError(
                f"SparsityCallback needs a sparse policy (sparse_agents.sb3), got "
                f"{type(self.model.policy).__name__}")
        return fn()

    def _init_callback(self) -> None:
        self._metrics()  # fail early on a dense policy

    def _log(self) -> None:
        metrics = self._metrics()
        self.history.append((int(self.num_timesteps), dict(metrics)))
        record = self.record
        if record is None:
            record = not self.model.policy._sparse_options.get("log_sparsity", True)
        if record:
            record_metrics(self.logger, metrics)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._log()

    def _on_training_end(self) -> None:
        self._log()
        if self.verbose:
            m = self.history[-1][1]
            print(f"sparse: density {m['density']:.4f}, updates {m['updates']}, "
                  f"itop {m.get('itop', float('nan')):.3f}")
