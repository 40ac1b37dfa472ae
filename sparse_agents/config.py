"""``SparseConfig``: every option of :class:`~sparse_agents.SparseTopology` in one frozen
value, checked once (model-independent checks; the model-dependent ones, such as a
layer pattern that matches nothing, stay in ``SparseTopology``).

Consumers (``TaskMasks``, the Avalanche plugins, the CL runner, the study) build one
config and carry it; adding a topology option is one field here plus its use in
``SparseTopology``. See docs/architecture.md.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from sparse_agents.distributions import METHODS, check_power, check_sparsity
from sparse_agents.schedules import UpdateSchedule
from sparse_agents.sparse_init import check_sparse_init
from sparse_agents.updaters import get_updater

__all__ = ["COMPUTE", "GRAD_MASKING", "MASK_SOURCES", "SparseConfig", "check_choice",
           "check_compute", "check_mask_source", "check_unit"]

GRAD_MASKING = ("step", "backward")
COMPUTE = ("masked", "condensed", "auto")
#: the sources of ``masks=`` given by name (else a mapping of parameter name -> mask)
MASK_SOURCES = ("existing", "nonzero")


def check_choice(value: Any, choices: Iterable, name: str) -> Any:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming ``name``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_compute(compute: object) -> str:
    """``compute`` if it is one of :data:`COMPUTE`, else a ``ValueError`` naming it."""
    return check_choice(compute, COMPUTE, "compute")


def check_mask_source(source: object) -> str:
    """``source`` if it is one of :data:`MASK_SOURCES`, else a ``ValueError``."""
    if source not in MASK_SOURCES:
        raise ValueError(f"masks must be a mapping or one of {MASK_SOURCES}, got {source!r}")
    return source


def check_unit(value: object, name: str) -> float:
    """``value`` as float if it is a number in [0, 1], else a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _patterns(value: object, name: str) -> tuple:
    """Layer patterns as a tuple; one name, regex or index alone is a 1-tuple."""
    if isinstance(value, (str, int)):
        return (value,)
    if not isinstance(value, Iterable) or isinstance(value, Mapping):
        raise ValueError(f"{name} must be a list of layer names, regexes or indices, "
                         f"got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class SparseConfig:
    """The options of :class:`~sparse_agents.SparseTopology` (everything after the model
    and the optimizer), with its defaults; each field is documented there.

    Built, every option is checked (``ValueError`` naming the parameter and its range or
    choices). Layer-pattern fields become tuples and mappings shallow copies, so a config
    without mappings is hashable. ``SparseTopology.from_config(model, optimizer, config)``
    builds a topology from one; ``topology.config`` is the one it was built with.
    """

    #: the option names, in ``SparseTopology``'s order
    FIELDS: ClassVar[tuple[str, ...]]

    sparsity: float = 0.9
    updater: str = "srigl"
    distribution: str = "erk"
    delta_t: int = 100
    t_end: int | None = None
    drop_fraction: float = 0.3
    schedule: str = "cosine"
    gamma_sal: float | Mapping[str, float] = 0.3
    dense_layers: tuple[str | int, ...] = ()
    seed: int = 0
    power: float = 1.0
    renormalise: bool = False
    output_layers: tuple[str | int, ...] | None = None
    ablate_output: bool = False
    grad_masking: str = "step"
    exclude_layers: tuple[str | int, ...] = ()
    budgets: Mapping[str, int] | None = None
    masks: Mapping[str, Tensor] | str | None = None
    sparse_init: str | None = None
    compute: str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # the frozen dataclass's own way to normalise a field
        check_choice(self.distribution, METHODS, "distribution")
        check_choice(self.grad_masking, GRAD_MASKING, "grad_masking")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        set_(self, "seed", int(self.seed))
        check_compute(self.compute)
        check_sparse_init(self.sparse_init)
        set_(self, "sparsity", check_sparsity(self.sparsity))
        get_updater(self.updater)
        self.update_schedule()  # delta_t, t_end, drop_fraction and schedule
        check_power(self.power)
        if isinstance(self.gamma_sal, Mapping):
            set_(self, "gamma_sal", {pattern: check_unit(value, f"gamma_sal[{pattern!r}]")
                                     for pattern, value in self.gamma_sal.items()})
        else:
            set_(self, "gamma_sal", check_unit(self.gamma_sal, "gamma_sal"))
        set_(self, "dense_layers", _patterns(self.dense_layers, "dense_layers"))
        set_(self, "exclude_layers", _patterns(self.exclude_layers, "exclude_layers"))
        if self.output_layers is not None:
            set_(self, "output_layers", _patterns(self.output_layers, "output_layers"))
        if self.budgets is not None:
            if not isinstance(self.budgets, Mapping):
                raise ValueError("budgets must be a mapping of parameter name -> weight "
                                 f"count, got {self.budgets!r}")
            set_(self, "budgets", dict(self.budgets))
        if isinstance(self.masks, str):
            check_mask_source(self.masks)
        elif self.masks is not None:
            if not isinstance(self.masks, Mapping):
                check_mask_source(self.masks)
            set_(self, "masks", dict(self.masks))

    def update_schedule(self) -> UpdateSchedule:
        """The :class:`UpdateSchedule` of ``delta_t``, ``t_end``, ``drop_fraction`` and
        ``schedule``."""
        return UpdateSchedule(self.delta_t, self.t_end, self.drop_fraction, self.schedule)

    def replace(self, **changes: Any) -> SparseConfig:
        """A copy with ``changes`` (checked like a new config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Option name -> value (the keywords of ``SparseTopology``); masks are not
        copied."""
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, options: Mapping[str, Any], what: str = "SparseConfig"
                  ) -> SparseConfig:
        """The config of ``options`` (missing ones take the defaults); a key that is no
        option is a ``ValueError`` naming ``what`` and listing the options."""
        unknown = set(options) - set(cls.FIELDS)
        if unknown:
            raise ValueError(f"{what} got unknown topology options {sorted(unknown)}; "
                             f"the options are {list(cls.FIELDS)}")
        return cls(**options)

    @classmethod
    def pick(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``options`` that are topology options."""
        return {k: v for k, v in options.items() if k in cls.FIELDS}

    @classmethod
    def resolve(cls, config: SparseConfig | None, what: str, /, **options: Any
                ) -> SparseConfig:
        """``config`` or, without one, the config of ``options`` (a consumer's topology
        keywords). With ``config``, every option must be left at its default: a value
        given both ways is a ``ValueError`` naming ``what``."""
        if config is None:
            return cls.from_dict(options, what)
        if not isinstance(config, SparseConfig):
            raise ValueError(f"{what}: config must be a SparseConfig or None, got "
                             f"{type(config).__name__}")
        probe = cls.from_dict(options, what)  # unknown keys and bad values are named
        defaults = cls()
        given = sorted(k for k in options if getattr(probe, k) != getattr(defaults, k))
        if given:
            raise ValueError(f"{what} got config= and the topology options {given}: "
                             "set them in the config (config.replace(...))")
        return config


SparseConfig.FIELDS = tuple(f.name for f in dataclasses.fields(SparseConfig))
