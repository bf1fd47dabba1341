"""One extract per store: an advisory lock on `<store>.lock`.

flock rather than a pid file: the kernel drops the lock when its holder dies, even by SIGKILL, so a
killed extract never leaves a stale lock that blocks the resume.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from aftpipe.errors import AftpipeError


class StoreLock:
    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(store_path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> "StoreLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise AftpipeError(
                f"store {self.path.with_suffix('') if self.path.suffix == '.lock' else self.path} is being written by "
                f"{holder}; wait for it to finish (or stop it) before extracting again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
