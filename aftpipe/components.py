"""Names → the registered components they stand for, in one step, where a config enters the API.

Configs are plain data: each checks its own values on construction and knows no registry. The names in them
(a dataset, a feature source, a student, a method) are looked up here, once, by `resolve(cfg)` at the API
boundary (`aftpipe.api`, a pipeline's validation), like torchtune's `config.instantiate` or timm's
`create_model`: an unknown name is a `ConfigError` at the field's path, listing the known ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

from aftpipe import config
from aftpipe.data import DATASETS
from aftpipe.errors import AftpipeError, option_hint
from aftpipe.methods import METHODS, check_options
from aftpipe.sources import SOURCES
from aftpipe.sources import check_options as check_source_options
from aftpipe.students import STUDENTS
from aftpipe.students import check_options as check_student_options

C = TypeVar("C", config.ExtractConfig, config.TrainConfig, config.DistillConfig)


def registered(registry: Any, spec: str, path: tuple[config.PathPart, ...],
               options: config.Config | None = None) -> Any:
    """The entry `spec` names in `registry`, or a config error at `path` (its message lists the known names);
    with `options`, the spec's own `@key=value` options are checked against them too."""
    try:
        name, extra = registry.split_options(spec)
        entry, _ = registry.resolve(name)
        if options is not None:
            config.with_overrides(options, extra, spec)
    except AftpipeError as e:
        raise config.ConfigError(path, str(e)) from None
    return entry


def resolve(cfg: C) -> C:
    """`cfg` once every name in it is known to its registry (with the options it carries); else the
    `ConfigError` of the first unknown one."""
    registered(DATASETS, cfg.dataset, ("dataset",))
    if isinstance(cfg, config.ExtractConfig):
        for i, spec in enumerate(cfg.sources):
            registered(SOURCES, spec, ("sources", i), cfg.source_options)
            with errors_at("sources", i):
                check_source_options([spec])
        with errors_at("source_options"):
            check_source_options(cfg.sources, cfg.source_options)
    elif isinstance(cfg, config.DistillConfig):
        if cfg.student is not None:
            registered(STUDENTS, cfg.student, ("student",))
    else:
        method = registered(METHODS, cfg.method, ("method",))
        registered(STUDENTS, cfg.student, ("student",), cfg.student_options)
        with errors_at("student_options"):
            check_student_options(cfg.student, cfg.student_options)
        config.require(not method.uses_features or len(cfg.features) > 0, "features", f"method `{cfg.method}` "
                       f"needs cached features; pass {option_hint('features', 'cache/<dataset>/<source>')}")
        config.require(cfg.phi_control == "none" or method.regularised(), "phi_control",
                       f"method `{cfg.method}` has no transfer term to control; use it with a regularised method")
        with errors_at("method_options"):  # every method's options in one place: the ones set must be its own
            check_options(cfg.method, cfg.method_options.changed())
    return cfg


@contextlib.contextmanager
def errors_at(*path: config.PathPart) -> Iterator[None]:
    """What a component refuses inside this block (an option it does not read) as a config error at `path`."""
    try:
        yield
    except config.ConfigError as e:
        raise e.under(*path) from None
    except AftpipeError as e:  # a spec's own `@key=value` options
        raise config.ConfigError(path, str(e)) from None


__all__ = ["errors_at", "registered", "resolve"]
