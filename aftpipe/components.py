"""Names → the registered components they stand for, in one step, where a config enters the API.

Configs are plain data: each checks its own values on construction and knows no registry. The names in them
(a dataset, a feature source, a student, a method) are looked up here, once, by `resolve(cfg)` at the API
boundary (`aftpipe.api`, a pipeline's validation), like torchtune's `config.instantiate` or timm's
`create_model`: an unknown name is a `ConfigError` at the field's path, listing the known ones.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aftpipe.config import (
    Config,
    ConfigError,
    DistillConfig,
    ExtractConfig,
    PathPart,
    TrainConfig,
    require,
    with_overrides,
)
from aftpipe.data import DATASETS
from aftpipe.errors import AftpipeError, option_hint
from aftpipe.methods import METHODS
from aftpipe.sources import SOURCES
from aftpipe.students import STUDENTS

C = TypeVar("C", bound=Config)


def registered(registry: Any, spec: str, path: tuple[PathPart, ...], options: Config | None = None) -> Any:
    """The entry `spec` names in `registry`, or a config error at `path` (its message lists the known names);
    with `options`, the spec's own `@key=value` options are checked against them too."""
    try:
        name, extra = registry.split_options(spec)
        entry, _ = registry.resolve(name)
        if options is not None:
            with_overrides(options, extra, spec)
    except AftpipeError as e:
        raise ConfigError(path, str(e)) from None
    return entry


def _extract(cfg: ExtractConfig) -> None:
    registered(DATASETS, cfg.dataset, ("dataset",))
    for i, spec in enumerate(cfg.sources):
        registered(SOURCES, spec, ("sources", i), cfg.source_options)


def _train(cfg: TrainConfig) -> None:
    registered(DATASETS, cfg.dataset, ("dataset",))
    method = registered(METHODS, cfg.method, ("method",))
    registered(STUDENTS, cfg.student, ("student",), cfg.student_options)
    require(not method.uses_features or len(cfg.features) > 0, "features",
            f"method `{cfg.method}` needs cached features; pass {option_hint('features', 'cache/<dataset>/<source>')}")
    require(cfg.phi_control == "none" or (method.uses_features and method.uses_student), "phi_control",
            f"method `{cfg.method}` has no transfer term to control; use it with a regularised method")


def _distill(cfg: DistillConfig) -> None:
    registered(DATASETS, cfg.dataset, ("dataset",))
    if cfg.student is not None:
        registered(STUDENTS, cfg.student, ("student",))


_RESOLVERS = {ExtractConfig: _extract, TrainConfig: _train, DistillConfig: _distill}


def resolve(cfg: C) -> C:
    """`cfg` once every name in it is known to its registry (with the options it carries); else the
    `ConfigError` of the first unknown one."""
    _RESOLVERS[type(cfg)](cfg)
    return cfg


__all__ = ["registered", "resolve"]
