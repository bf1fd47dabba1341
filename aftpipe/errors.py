"""User-facing errors, and how a message names the option that fixes it.

Anything the user can fix (a bad name, a missing file, a store built with other arguments) raises
`AftpipeError` with one sentence that names the problem and the fix. The CLI prints it on one line and
exits non-zero; everything else is a bug and keeps its traceback.

The fix is often an option, and the caller should read it in their own terms: `pass --overwrite` on the
command line, `pass overwrite=True` from Python. Messages therefore name options through `option_hint`,
which writes Python keyword syntax unless the CLI has said, through `speaking_to_cli`, how its flags are
spelled. Messages are built where they are raised, so this is decided per call, not per message.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar


class AftpipeError(Exception):
    """An error the user can fix; its message names the problem and the fix."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a long call, with what was kept: `kept` says what is on disk, `resume` how to continue
    (the CLI prints both on one line). Still a KeyboardInterrupt, so code that handles that keeps working."""

    def __init__(self, kept: str, resume: str = "re-run the same command to resume") -> None:
        super().__init__(f"interrupted: {kept}; {resume}")
        self.kept, self.resume = kept, resume


_FLAG_OF: ContextVar[Callable[[str], str] | None] = ContextVar("aftpipe_flag_of", default=None)
_PLACEHOLDER = re.compile(r"[A-Z][A-Z_]*")  # N, NAME, DIR: a value for the user to fill in


def option_hint(name: str, value: object = True) -> str:
    """Option `name` (a config field name) set to `value`, as the caller writes it: `--overwrite`,
    `--labels N` on the command line; `overwrite=True`, `labels=N` from Python. A value in capitals is a
    placeholder and is shown as it is."""
    flag_of = _FLAG_OF.get()
    if flag_of is not None:
        flag = flag_of(name)
        return flag if value is True else f"{flag} {value}"
    if isinstance(value, str) and not _PLACEHOLDER.fullmatch(value):
        return f'{name}="{value}"'
    return f"{name}={value}"


def option_name(name: str) -> str:
    """Option `name` itself, as the caller writes it: `--holdout` on the command line, `holdout` from Python."""
    flag_of = _FLAG_OF.get()
    return flag_of(name) if flag_of is not None else f"`{name}`"


def speaking_cli() -> bool:
    """Whether messages are being worded for the command line (inside `speaking_to_cli`)."""
    return _FLAG_OF.get() is not None


@contextlib.contextmanager
def speaking_to_cli(flag_of: Callable[[str], str]) -> Iterator[None]:
    """Within this block, `option_hint` names options by their command-line flag (`flag_of("out")` → `--out`)."""
    token = _FLAG_OF.set(flag_of)
    try:
        yield
    finally:
        _FLAG_OF.reset(token)


__all__ = ["AftpipeError", "Interrupted", "option_hint", "option_name", "speaking_cli", "speaking_to_cli"]
