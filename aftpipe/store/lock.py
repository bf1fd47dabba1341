"""One writer per store or run folder: an advisory lock on `<path>.lock` beside it.

flock rather than a pid file: the kernel drops the lock when its holder dies, even by SIGKILL, so a killed
extract or train never leaves a stale lock that blocks the resume (the file it leaves behind is simply
locked afresh). The file names its holder (pid, host, start time) for the message a second writer gets,
and is removed on release. Removing a lock file races with a process that opened it just before: that
process may then lock a file no longer at the path, so after locking it checks that the file it holds is
the one at the path, and starts again if not.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
from pathlib import Path

from aftpipe.errors import AftpipeError


class WriterLock:
    """`with WriterLock(path, "store", "before extracting again"):` — refuse a second writer of `path`."""

    def __init__(self, target: Path, what: str, then: str) -> None:
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + ".lock")
        self.what, self.then = what, then
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 300).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise AftpipeError(f"{self.what} {self.target} is being written by {holder}; wait for it to finish "
                                   f"(or stop it) {self.then}") from None
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # its holder removed the file as we opened it: lock the one now at the path
        os.ftruncate(fd, 0)
        since = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename} (since {since})".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # still held: nobody can lock this file between the two steps
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class StoreLock(WriterLock):
    """One extract per store."""

    def __init__(self, store_path: Path) -> None:
        super().__init__(store_path, "store", "before extracting again")
