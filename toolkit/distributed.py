"""Run the toolkit on a ``dask.distributed`` cluster, or locally, and plan chunks for it.

Every pipeline function builds a lazy dask graph; *where* it is computed is
decided by the caller. This module finds the scheduler the user asked for
(an explicit address, a scheduler file, ``DASK_SCHEDULER_ADDRESS`` or the dask
configuration key ``scheduler-address``), connects to it, describes the cluster,
and plans cube chunks so that a cube several times larger than a worker's
memory is processed without the workers running out of memory.

Public functions
----------------
scheduler_address
    The scheduler address in effect (argument, environment, dask config) or None.
get_client
    A connected :class:`distributed.Client`, or None to run locally.
use_scheduler
    Context manager: a client for the block (closed afterwards), or local threads.
describe_cluster
    Workers, threads and memory limits of a client (or of this machine).
plan_chunks
    ``load_cube`` chunk sizes that keep every task well inside a worker's memory.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.errors import InputError, ToolkitError

__all__ = [
    "scheduler_address",
    "get_client",
    "use_scheduler",
    "ClusterInfo",
    "describe_cluster",
    "plan_chunks",
]

_ENV = "DASK_SCHEDULER_ADDRESS"
_CONFIG_KEYS = ("scheduler-address", "scheduler_address")
# Bytes held per pixel and date by the heaviest per-pixel step (change_map): the band
# mean in float64, its float32 copy, the NaN mask and the kernel's work arrays.
_WORK_BYTES_PER_PIXEL_DATE = 24
_DEFAULT_MEMORY_FRACTION = 0.25
_BLOCK_MULTIPLE = 64


# --------------------------------------------------------------------------- addresses


def scheduler_address(address: str | None = None) -> str | None:
    """The dask scheduler address to use, or None to compute locally.

    Parameters
    ----------
    address : str, optional
        An explicit address such as ``"tcp://10.0.0.5:8786"``; it wins over
        everything else. An empty string means "not given".

    Returns
    -------
    str or None
        ``address`` if given, else the ``DASK_SCHEDULER_ADDRESS`` environment
        variable, else the dask configuration value ``scheduler-address``
        (``~/.config/dask/*.yaml`` or ``dask.config.set``), else None.

    Examples
    --------
    >>> scheduler_address("tcp://127.0.0.1:8786")
    'tcp://127.0.0.1:8786'
    """
    if address:
        return str(address)
    env = os.environ.get(_ENV, "").strip()
    if env:
        return env
    import dask

    for key in _CONFIG_KEYS:
        value = dask.config.get(key, None)
        if value:
            return str(value)
    return None


def get_client(
    address: str | None = None,
    *,
    scheduler_file: str | os.PathLike | None = None,
    timeout: str = "10s",
):
    """Connect to the dask scheduler in effect; None when there is none (run locally).

    Parameters
    ----------
    address : str, optional
        Scheduler address; default from :func:`scheduler_address`.
    scheduler_file : path, optional
        A JSON file written by ``dask scheduler --scheduler-file``; used when
        no ``address`` is given (it wins over the environment and config).
    timeout : str
        How long to try to connect.

    Returns
    -------
    distributed.Client or None
        A connected client (it becomes dask's default scheduler until closed),
        or None when no scheduler is configured: computations then use dask's
        local threaded scheduler.

    Raises
    ------
    toolkit.errors.ToolkitError
        The scheduler cannot be reached or the scheduler file does not exist.

    Examples
    --------
    >>> import os
    >>> os.environ.get("DASK_SCHEDULER_ADDRESS") or get_client() is None
    True
    """
    # explicit arguments first (address, then scheduler file), then environment and config
    addr = address or (None if scheduler_file is not None else scheduler_address())
    if addr is None and scheduler_file is None:
        return None
    from distributed import Client

    if addr is None:
        path = os.fspath(scheduler_file)
        if not os.path.exists(path):
            raise ToolkitError(
                f"{path}: scheduler file not found; expected the file written by "
                f"'dask scheduler --scheduler-file {path}'; start the scheduler first or pass "
                f"its address"
            )
        target: dict[str, Any] = {"scheduler_file": path}
        where = path
    else:
        target = {"address": addr}
        where = addr
    try:
        return Client(**target, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ToolkitError(
            f"cannot reach the dask scheduler at {where} ({first}); expected a running "
            f"'dask scheduler'; start it, fix the address, or unset {_ENV} to run locally"
        ) from None


@contextlib.contextmanager
def use_scheduler(
    address: str | None = None,
    *,
    scheduler_file: str | os.PathLike | None = None,
    timeout: str = "10s",
) -> Iterator[Any]:
    """Compute the block on the configured cluster, or locally when none is configured.

    Yields the :class:`distributed.Client` (closed on exit) or None. Inside
    the block, ``.compute()`` on any toolkit result runs on that cluster.

    Examples
    --------
    >>> import os, dask.array as da
    >>> if not os.environ.get("DASK_SCHEDULER_ADDRESS"):
    ...     with use_scheduler() as client:
    ...         print(client, int(da.ones(10, chunks=5).sum().compute()))
    None 10
    """
    client = get_client(address, scheduler_file=scheduler_file, timeout=timeout)
    if client is None:
        yield None
        return
    try:
        yield client
    finally:
        client.close()


# --------------------------------------------------------------------------- cluster info


@dataclass(frozen=True, kw_only=True)
class ClusterInfo:
    """Where computations run: the scheduler and its workers.

    Attributes
    ----------
    scheduler : str
        Scheduler address, or ``"local threads"``.
    n_workers : int
        Worker processes (1 for the local threaded scheduler).
    threads : int
        Total worker threads.
    memory_limit_bytes : tuple of int
        Memory limit of each worker (0 = no limit); for the local scheduler the
        machine's available memory.
    worker_pids : tuple of int
        Process ids of the workers (this process for local runs).
    """

    scheduler: str
    n_workers: int
    threads: int
    memory_limit_bytes: tuple[int, ...] = field(default_factory=tuple)
    worker_pids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def min_memory_limit_bytes(self) -> int:
        """The smallest non-zero worker memory limit (0 if none is set)."""
        limits = [m for m in self.memory_limit_bytes if m > 0]
        return min(limits) if limits else 0

    @property
    def threads_per_worker(self) -> int:
        return max(1, self.threads // max(1, self.n_workers))

    def summary(self) -> str:
        mem = self.min_memory_limit_bytes
        mem_txt = f"{mem / 2**20:.0f} MiB per worker (smallest)" if mem else "no memory limit"
        return (
            f"Cluster: {self.scheduler}\n"
            f"  workers: {self.n_workers}, threads: {self.threads} "
            f"({self.threads_per_worker} per worker)\n"
            f"  memory: {mem_txt}"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in (
                ("scheduler", self.scheduler),
                ("workers", str(self.n_workers)),
                ("threads", str(self.threads)),
                (
                    "memory per worker",
                    ", ".join(f"{m / 2**20:.0f} MiB" for m in self.memory_limit_bytes) or "-",
                ),
            )
        )
        return f"<table><caption>ClusterInfo</caption>{rows}</table>"


def describe_cluster(client: Any = None) -> ClusterInfo:
    """Describe the workers of ``client`` (or the local threaded scheduler if None).

    Parameters
    ----------
    client : distributed.Client, optional
        A connected client; None describes this machine as dask's local
        threaded scheduler would use it.

    Returns
    -------
    ClusterInfo

    Examples
    --------
    >>> info = describe_cluster()
    >>> info.n_workers, info.threads >= 1
    (1, True)
    """
    if client is None:
        import psutil

        return ClusterInfo(
            scheduler="local threads",
            n_workers=1,
            threads=os.cpu_count() or 1,
            memory_limit_bytes=(int(psutil.virtual_memory().available),),
            worker_pids=(os.getpid(),),
        )
    info = client.scheduler_info(n_workers=-1)
    workers = sorted(info.get("workers", {}).items())
    pids = {addr: w.get("pid") for addr, w in workers}
    if not all(pids.values()):
        pids.update(client.run(os.getpid))
    return ClusterInfo(
        scheduler=str(info.get("address", client.scheduler.address)),
        n_workers=len(workers),
        threads=sum(int(w.get("nthreads", 1)) for _, w in workers),
        memory_limit_bytes=tuple(int(w.get("memory_limit") or 0) for _, w in workers),
        worker_pids=tuple(int(pids.get(addr) or 0) for addr, _ in workers),
    )


# --------------------------------------------------------------------------- chunk planning


def plan_chunks(
    cube: Any,
    *,
    memory_limit_bytes: int | None = None,
    threads_per_worker: int = 1,
    memory_fraction: float = _DEFAULT_MEMORY_FRACTION,
    max_block: int = 2048,
) -> dict[str, int]:
    """``load_cube`` chunks that keep the per-pixel time series of a block within memory.

    Counting works one date at a time (a task holds one date of the track
    window), but per-pixel analyses such as :func:`toolkit.change_map` hold the
    whole time series of a spatial block. This picks the largest square block
    (a multiple of 64 pixels, at most ``max_block``) whose full time series,
    with the working copies that analysis makes, stays below
    ``memory_fraction`` of one worker thread's share of the memory limit. The
    rest of a worker's memory is left to the interpreter and libraries (about
    250 MB per worker with the toolkit imported) and to tasks in flight.

    Parameters
    ----------
    cube : xarray.DataArray or mapping
        A (lazy) cube from :func:`toolkit.load_cube`, or a mapping with
        ``time``, ``band``, ``y``, ``x`` sizes and optionally ``dtype``.
    memory_limit_bytes : int, optional
        One worker's memory limit. Default: the smallest worker limit of the
        current ``distributed`` client if there is one, else the machine's
        available memory.
    threads_per_worker : int
        Tasks that run at once in one worker; each gets an equal share.
    memory_fraction : float
        Share of a thread's memory one block may use, in (0, 1].
    max_block : int
        Largest block edge in pixels (fewer, larger tasks are faster to
        schedule but read more than a small track window needs).

    Returns
    -------
    dict
        ``{"time": 1, "band": -1, "y": n, "x": n}``, to pass as
        ``load_cube(..., chunks=...)``.

    Raises
    ------
    toolkit.errors.InputError
        The sizes are missing or not positive, the fraction is out of range, or
        even a 64 x 64 block of the whole time series does not fit.

    Examples
    --------
    >>> sizes = {"time": 56, "band": 4, "y": 2048, "x": 2048, "dtype": "uint16"}
    >>> plan_chunks(sizes, memory_limit_bytes=600 * 2**20)
    {'time': 1, 'band': -1, 'y': 256, 'x': 256}
    >>> plan_chunks(sizes, memory_limit_bytes=64 * 2**30)["y"]
    2048
    """
    sizes, itemsize = _sizes_of(cube)
    if not 0 < memory_fraction <= 1:
        raise InputError(
            f"memory_fraction: expected a share in (0, 1], got {memory_fraction!r}; "
            f"pass e.g. memory_fraction=0.25"
        )
    if int(threads_per_worker) < 1:
        raise InputError(
            f"threads_per_worker: expected an int >= 1, got {threads_per_worker!r}; "
            f"pass the workers' --nthreads"
        )
    if memory_limit_bytes is None:
        memory_limit_bytes = _current_memory_limit()
    if not memory_limit_bytes or memory_limit_bytes <= 0:
        raise InputError(
            f"memory_limit_bytes: expected a positive number of bytes, got "
            f"{memory_limit_bytes!r}; pass the workers' memory limit"
        )
    budget = memory_limit_bytes * memory_fraction / int(threads_per_worker)
    per_pixel = sizes["time"] * (sizes["band"] * itemsize + _WORK_BYTES_PER_PIXEL_DATE)
    edge = int(math.sqrt(budget / per_pixel)) // _BLOCK_MULTIPLE * _BLOCK_MULTIPLE
    if edge < _BLOCK_MULTIPLE:
        need = _BLOCK_MULTIPLE**2 * per_pixel / memory_fraction * int(threads_per_worker)
        raise InputError(
            f"cube of {sizes['time']} dates x {sizes['band']} bands: even a "
            f"{_BLOCK_MULTIPLE}x{_BLOCK_MULTIPLE} block of its time series needs "
            f"{need / 2**20:.0f} MiB of worker memory, the limit is "
            f"{memory_limit_bytes / 2**20:.0f} MiB; give the workers more memory or split the "
            f"time range"
        )
    edge = min(edge, int(max_block), max(sizes["y"], sizes["x"]))
    return {"time": 1, "band": -1, "y": edge, "x": edge}


def _sizes_of(cube: Any) -> tuple[dict[str, int], int]:
    if hasattr(cube, "sizes") and hasattr(cube, "dtype"):
        sizes = dict(cube.sizes)
        dtype = cube.dtype
    elif isinstance(cube, Mapping):
        sizes = {k: v for k, v in cube.items() if k != "dtype"}
        dtype = cube.get("dtype", "float32")
    else:
        raise InputError(
            f"cube: expected a cube DataArray or a mapping of sizes, got {type(cube).__name__}; "
            f"pass the lazy cube from load_cube"
        )
    missing = [d for d in ("time", "band", "y", "x") if d not in sizes]
    if missing:
        raise InputError(
            f"cube: sizes lack {missing}; expected time, band, y and x; pass a cube from load_cube"
        )
    bad = {d: sizes[d] for d in ("time", "band", "y", "x") if int(sizes[d]) < 1}
    if bad:
        raise InputError(f"cube: sizes must be >= 1, found {bad}; load a non-empty cube")
    out = {d: int(sizes[d]) for d in ("time", "band", "y", "x")}
    return out, int(np.dtype(dtype).itemsize)


def _current_memory_limit() -> int:
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        client = None
    info = describe_cluster(client)
    return info.min_memory_limit_bytes
