"""Training objectives: cross-entropy plus a transfer term, one registry entry per method.

The maths lives in `losses.py` (pure functions), the learnable state in one module per method family.
Every built-in method is registered below, explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aftpipe.config import Config, MethodConfig, refuse_undeclared
from aftpipe.methods.aft import AFT, AFTPrimal
from aftpipe.methods.base import LossTerms, Method, masked_cross_entropy
from aftpipe.methods.kd import RKD, KDFeature, KDLogit
from aftpipe.methods.simple import LinearProbe, NoTransfer
from aftpipe.methods.teacher import FeatureHead, fit_linear_head
from aftpipe.methods.tokt import TOKT
from aftpipe.registry import Registry

__all__ = [
    "METHODS",
    "FeatureHead",
    "LossTerms",
    "Method",
    "MethodConfig",
    "build_method",
    "check_options",
    "fit_linear_head",
    "masked_cross_entropy",
]

METHODS: Registry[type[Method]] = Registry("method")
for _cls in (NoTransfer, LinearProbe, AFT, AFTPrimal, KDFeature, RKD, KDLogit, TOKT):
    METHODS.register(_cls.name, _cls)


def build_method(
    name: str, cfg: Config, student_dim: int, feature_dims: Sequence[int], num_classes: int
) -> Method:
    """The method `name` for a student with `student_dim` features and sources of `feature_dims` features;
    `cfg` holds its options (the flat `MethodConfig`, or the method's own `Options`)."""
    cls = METHODS.get(name)  # an unknown name raises AftpipeError listing the known ones
    return cls(cfg, student_dim, feature_dims, num_classes)


def check_options(name: str, given: Iterable[str]) -> None:
    """Refuse the first of the options `given` (MethodConfig field names) that method `name` does not declare,
    as a `ConfigError` at that field."""
    refuse_undeclared("method", name, METHODS.get(name).Options, given)
