"""Several processes, one job: the torch.distributed context `extract` and `train` run in.

    torchrun --nproc_per_node 4 -m aftpipe extract ...        # or any launcher that sets WORLD_SIZE, RANK,
    torchrun --nnodes 2 --nproc_per_node 8 ... -m aftpipe train  # LOCAL_RANK, MASTER_ADDR and MASTER_PORT

PyTorch's own stack, nothing home-made: torchrun (or Slurm, or Kubernetes) starts the processes and sets the
environment; `launch` joins them into a process group (gloo on CPU; on GPU `cpu:gloo,cuda:nccl`, so small
control messages travel over gloo and tensors over NCCL) and gives each rank its own GPU (`LOCAL_RANK`).
Without WORLD_SIZE (or with 1) nothing is initialised and every helper below is a no-op, so one code path
serves one process and many.

Every synchronisation point carries each rank's outcome: a rank that fails tells the others, and they stop
with one line naming it, instead of waiting for a rank that will never come. A rank that dies (killed, out
of memory) closes its connections, and the others stop at their next synchronisation point; a rank that
hangs is given up on after `timeout_s` (`--dist-timeout`). Either way the others exit with one line, and
what was finished is kept for the re-run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from aftpipe.errors import AftpipeError, option_hint

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 1800.0  # torch's own default for gloo; a rank may spend a whole shard ahead of the others


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank r of `world`, on GPU `local_rank` of its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def name(self) -> str:
        return f"rank {self.rank} of {self.world}"

    # -- data --------------------------------------------------------------------------------------
    def local_rows(self, rows: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch: every world-th row from its rank on (sizes differ by ≤ 1)."""
        return rows[self.rank::self.world] if self.active else rows

    def gather_batch(self, *parts: Any) -> tuple[Any, ...]:
        """The whole global batch of which each of `parts` (tensors of this rank's `local_rows`, or None) holds
        this rank's rows, on every rank, rows in the batch's own order: what one process holds for the batch.

        Why the gradient of this rank's rows is multiplied by `world`: every rank computes the same loss L on the
        whole batch, but its autograd reaches the student only through its own rows r, so rank r's gradient is
        ∂L/∂h_r · ∂h_r/∂θ and DDP's average of them is (1/world) Σ_r ∂L/∂h_r ∂h_r/∂θ = (1/world) ∂L/∂θ. Scaling
        the gradient into this rank's rows by `world` (their values untouched) makes that average ∂L/∂θ, the
        one-process gradient. A loss scale could not do it: state every rank holds whole (AFT's s) already gets
        the full ∂L/∂s on every rank, which DDP's average leaves as it is, so it must not be scaled."""
        if not self.active:
            return parts
        import torch
        import torch.distributed as dist

        first = next(p for p in parts if p is not None)
        n = torch.tensor([first.shape[0]], device=first.device)
        sizes = [torch.empty_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        counts = [int(s) for s in sizes]
        rows, most = sum(counts), max(counts)  # local shares differ by at most one row: pad to the largest
        out = []
        for x in parts:
            if x is None:
                out.append(None)
                continue
            mine = torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))]) if x.shape[0] < most else x
            every = [torch.empty_like(mine) for _ in range(self.world)]
            dist.all_gather(every, mine.detach().contiguous())
            if mine.requires_grad:  # the same values, exactly; the gradient times world
                mine = mine.detach() + (mine - mine.detach()) * self.world
            every[self.rank] = mine
            # rank r's j-th row is the batch's row j·world + r (local_rows): interleave, drop the padding at the end
            out.append(torch.stack(every, dim=1).reshape(most * self.world, *x.shape[1:])[:rows])
        return tuple(out)

    def owns(self, k: int) -> bool:
        """Whether the k-th item of a list every rank holds in the same order is this rank's (round robin)."""
        return k % self.world == self.rank

    # -- synchronisation ---------------------------------------------------------------------------
    # Every exchange is one all_gather of an envelope (where, this rank's error or None, a value) on a gloo
    # group of its own: one kind of collective, so a rank that fails and reports it meets the others wherever
    # they wait, and never pairs with the tensor collectives of DDP on the default group.
    def _exchange(self, what: str, value: Any = None, failed: BaseException | None = None) -> list[Any]:
        import torch.distributed as dist

        mine = {"what": what, "error": None if failed is None else _one_line(failed), "value": value}
        out: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(out, mine, group=control_group())
        except RuntimeError as e:  # gloo: a peer closed its connection, or the timeout passed
            if failed is not None:
                return [mine]  # already failing: our own error is the one to show
            raise AftpipeError(self._lost(what, e)) from None
        bad = [(r, env["error"]) for r, env in enumerate(out) if env["error"] is not None]
        if bad and failed is None:
            r, message = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise AftpipeError(f"{self.name}: stopped because rank {r} failed{more}: {message}")
        return [env["value"] for env in out]

    def _lost(self, what: str, e: BaseException) -> str:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        detail = detail.split("] ", 1)[-1][:160]  # drop gloo's source-file prefix
        return (f"{self.name}: lost the other ranks at {what}: one of them stopped or did not arrive within "
                f"{self.timeout_s:g} s ({detail}); see its own error, then re-run the same command (with any "
                f"number of processes) to resume, or raise {option_hint('dist_timeout', 'SECONDS')}")

    def sync(self, what: str, failed: BaseException | None = None) -> None:
        """A barrier that carries each rank's outcome: raises on every rank that did not fail itself when any
        rank failed (a rank that failed re-raises its own error after calling this)."""
        if self.active:
            self._exchange(what, None, failed)

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run the block on every rank and leave it on all of them together; if any rank fails inside,
        every rank raises (the failing one its own error, the others one naming it)."""
        try:
            yield
        except BaseException as e:
            self.sync(what, e)
            raise
        self.sync(what)

    def gather(self, value: Any, what: str) -> list[Any]:
        """`value` of every rank, on every rank (rank order)."""
        return self._exchange(what, value) if self.active else [value]

    def from_main(self, what: str, fn: Callable[[], T]) -> T:
        """Rank 0 runs `fn`; every rank gets its result, or raises (rank 0 its own error)."""
        if not self.active:
            return fn()
        if not self.is_main:
            return self._exchange(what)[0]
        try:
            value = fn()
        except BaseException as e:
            self._exchange(what, None, e)
            raise
        return self._exchange(what, value)[0]

    def agree(self, value: Any, what: str) -> None:
        """Refuse on every rank unless every rank holds the same `value` (ranks launched with different
        arguments would write one store with different features)."""
        if not self.active:
            return
        values = self._exchange(what, value)
        odd = [r for r, v in enumerate(values) if v != values[0]]
        if odd:
            raise AftpipeError(f"{self.name}: the ranks were launched with different arguments ({what} of rank "
                               f"{odd[0]} differs from rank 0's); start every rank with the same command")

    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Around tensor collectives (DDP's gradient all-reduce): a peer that died or timed out there is one
        line naming what was going on, not the backend's traceback."""
        if not self.active:
            yield
            return
        try:
            yield
        except RuntimeError as e:
            if not _lost_peer(e):
                raise
            raise AftpipeError(self._lost(what, e)) from None

    @contextlib.contextmanager
    def main_first(self, what: str) -> Iterator[None]:
        """Rank 0 runs the block first (filling caches: heads, downloaded shards), then the others."""
        if not self.active:
            yield
        elif self.is_main:
            with self.together(what):
                yield
        else:
            self.sync(what)  # waits for rank 0, and raises if it failed
            yield


_CONTROL: list[Any] = []


def _lost_peer(e: RuntimeError) -> bool:
    """Whether a collective failed because a peer went away or did not arrive (not a bug of our own)."""
    import torch.distributed as dist

    text = str(e)
    return isinstance(e, getattr(dist, "DistError", ())) or any(
        w in text for w in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset", "imed out"))


def control_group() -> Any:
    """The gloo group of the control messages (created once per process group)."""
    import torch.distributed as dist

    if not _CONTROL:
        _CONTROL.append(dist.new_group(backend="gloo"))
    return _CONTROL[0]


SINGLE = Context()


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, AftpipeError) and text:
        return text.splitlines()[0]
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise AftpipeError(f"{name}={raw!r} is not an integer; launch with torchrun, which sets it") from None


def env_world() -> int:
    """WORLD_SIZE as the launcher set it (1 when unset)."""
    return _env_int("WORLD_SIZE") or 1


def is_main_process() -> bool:
    """Rank 0, or not launched as one of several processes (for what only one process should print)."""
    return (_env_int("RANK") or 0) == 0


def wants_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


@contextlib.contextmanager
def launch(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Context]:
    """The context of this process: joins the process group when the launcher started several processes
    (and leaves it at the end), else the single-process context. A process group the caller initialised
    already is used as it is."""
    world = env_world()
    if world <= 1:
        yield SINGLE
        return
    import torch
    import torch.distributed as dist

    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or not 0 <= rank < world:
        raise AftpipeError(f"WORLD_SIZE={world} is set but RANK={os.environ.get('RANK')!r} is not a rank below it; "
                           "launch with torchrun (or set RANK for every process)")
    local = rank if local is None else local
    if dist.is_initialized():
        yield Context(dist.get_rank(), dist.get_world_size(), local, timeout_s)
        return
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise AftpipeError(f"WORLD_SIZE={world} is set but {var} is not; launch with torchrun, or set MASTER_ADDR "
                               "and MASTER_PORT to rank 0's host and a free port on every process")
    cuda = wants_cuda(device)
    if cuda:
        if local >= torch.cuda.device_count():
            raise AftpipeError(f"rank {rank} has LOCAL_RANK {local} but this node has {torch.cuda.device_count()} GPUs; "
                               "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local)
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=world)
    except (RuntimeError, ValueError) as e:
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise AftpipeError(f"rank {rank} of {world}: could not join the other processes at "
                           f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_s:g} s ({detail}); "
                           "start every rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE") from None
    try:
        yield Context(rank, world, local, timeout_s)
    finally:
        _CONTROL.clear()
        with contextlib.suppress(Exception):  # a group broken by a lost rank may refuse a clean shutdown
            dist.destroy_process_group()


def resolve_device(device: str) -> torch.device:
    """`device` (auto, cpu, cuda or cuda:N) as a torch.device this machine has."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise AftpipeError(f"unknown {option_hint('device', device)}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AftpipeError(f"{option_hint('device', 'cuda')} asked for but no CUDA device is visible; use "
                           f"{option_hint('device', 'cpu')}")
    return dev


def device_for(device: str, ctx: Context) -> str:
    """The device string of this rank: with several processes, `auto`/`cuda` mean this rank's own GPU."""
    if ctx.active and wants_cuda(device) and device in ("auto", "cuda"):
        return f"cuda:{ctx.local_rank}"
    return device


__all__ = ["Context", "DEFAULT_TIMEOUT_S", "SINGLE", "device_for", "env_world", "is_main_process", "launch",
           "resolve_device"]
