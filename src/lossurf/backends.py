"""Where work runs: a tiny ``Backend`` protocol, the in-process ``LocalBackend``, the
``ProcessBackend`` (worker processes on this machine) and ``RayBackend``.

A backend maps a function over work items and yields the results *as they complete* (in any
order), so the caller can persist each result at once. Work items and the function must be
picklable (plain tuples and module-level callables or dataclasses) so that a distributed
backend can ship them to workers.

Only this module imports ray, and only inside :class:`RayBackend` (``pip install
'lossurf[ray]'``). The function of one ``map`` is shipped once (``ray.put``) and every worker
process deserializes it once and keeps it for the map's later items, so a callable that carries
big shared objects (a model, evaluation data, anchor weights) is not re-sent per item: only
the small items travel per task.
"""

from __future__ import annotations

import atexit
import inspect
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from lossurf.errors import LossurfError
from lossurf.reaper import descendants, reap_on_exit

__all__ = ["Backend", "LocalBackend", "ProcessBackend", "RayBackend", "MapStats", "BACKENDS",
           "make_backend", "runs_at_once"]

T = TypeVar("T")
R = TypeVar("R")

_INSTALL = "pip install 'lossurf[ray]'"


@runtime_checkable
class Backend(Protocol):
    """Runs ``fn`` on every item and yields the results as they complete."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Yield ``fn(item)`` for each item, in completion order (not necessarily item order)."""
        ...


class LocalBackend:
    """Runs every item in this process, one after the other, in order."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Yield ``fn(item)`` for each item, in order; stop at the first exception."""
        for item in items:
            yield fn(item)

    def __repr__(self) -> str:
        return "LocalBackend()"


@dataclass
class MapStats:
    """Timings of the last :meth:`RayBackend.map`.

    Attributes:
        task_seconds: wall time of each task inside its worker (``fn(item)`` only), in
            completion order.
        task_cpu_seconds: CPU time of the worker process during each ``fn(item)``; well below
            ``task_seconds`` means the task waited for a core (an oversubscribed node).
        wall_seconds: driver-observed time from the first submission to the last result.
        workers: distinct worker processes that ran the tasks.
    """

    task_seconds: list[float] = field(default_factory=list)
    task_cpu_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    workers: set[int] = field(default_factory=set)

    def record(self, seconds: float, cpu_seconds: float, worker: int, began: float) -> None:
        """Add one finished task; ``began`` is the map's ``time.perf_counter()`` start."""
        self.task_seconds.append(seconds)
        self.task_cpu_seconds.append(cpu_seconds)
        self.workers.add(worker)
        self.wall_seconds = time.perf_counter() - began

    def overhead_per_task(self, slots: int) -> float:
        """Seconds per task that the workers' ``slots`` spent outside ``fn``: scheduling,
        (de)serialization, transfers and idling, ``(wall * slots - sum(task)) / tasks``."""
        if not self.task_seconds:
            return 0.0
        return (self.wall_seconds * slots - sum(self.task_seconds)) / len(self.task_seconds)


# Worker side. Deserialized callables of recent maps, by object id: each worker process
# unpickles a map's function once (a model, data, anchors) and reuses it, with whatever it has
# cached (prepared evaluation runners), for that map's later items. Two entries are enough for
# one map at a time plus the previous one; older ones are dropped so memory does not grow.
_FUNCTIONS: OrderedDict[str, Callable[[Any], Any]] = OrderedDict()
_KEEP = 2


def _run_task(fn_box: list, item: Any, threads: int) -> tuple[Any, float, float, int]:
    """Run one item on a Ray worker: ``(fn(item), wall and CPU seconds inside fn, pid)``.

    ``fn_box`` holds the function's ObjectRef inside a list so that Ray passes the reference
    itself (a top-level ref argument would be fetched and unpickled again for every task).
    """
    import ray
    import torch

    ref = fn_box[0]
    key = ref.hex()
    fn = _FUNCTIONS.get(key)
    if fn is None:
        fn = ray.get(ref)
        _FUNCTIONS[key] = fn
        while len(_FUNCTIONS) > _KEEP:
            _FUNCTIONS.popitem(last=False)
    # A worker evaluates with as many torch threads as CPUs its task reserved: more would
    # oversubscribe the node's cores shared with the other tasks.
    torch.set_num_threads(threads)
    return timed_call(fn, item)


def timed_call(fn: Callable[[Any], Any], item: Any) -> tuple[Any, float, float, int]:
    """``(fn(item), wall and CPU seconds inside fn, this process's pid)``: what a worker of
    any backend reports for one item (the driver adds it to its :class:`MapStats`)."""
    began, cpu = time.perf_counter(), time.process_time()
    result = fn(item)
    return result, time.perf_counter() - began, time.process_time() - cpu, os.getpid()


#: Seconds to wait for a TCP connection to a cluster's address before calling it unreachable.
CONNECT_TIMEOUT = 5.0


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast if nothing accepts a connection at ``HOST:PORT`` (or ``ray://HOST:PORT``).

    ``ray.init`` retries an address where nothing listens for minutes, logging a warning every
    few seconds; a plain TCP connect answers in milliseconds (refused) or ``timeout`` seconds
    (dropped). ``auto`` is left to Ray, which fails at once when it finds no cluster.
    """
    target = address.removeprefix("ray://")
    if target == "auto":
        return
    host, _, port = target.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LossurfError(
            f"Ray address {address!r} is not auto, HOST:PORT or ray://HOST:PORT; "
            "pass e.g. --address 10.0.0.5:6379"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        why = f"no answer in {timeout:g} s" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise LossurfError(
            f"could not reach the Ray cluster at {address!r} ({why}); start it "
            "with `ray start --head` (and `ray start --address HEAD:6379` on workers), "
            "or drop --address to start a local one"
        ) from None


def _positive(name: str, value: Any, minimum: float, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise LossurfError(f"{name} must be {kind} >= {minimum}, got {value!r}")


class RayBackend:
    """Runs every item as a Ray task, on a local Ray instance or an existing cluster.

    Args:
        address: None (default) starts a new local Ray instance with ``local_cpus`` CPUs,
            unless Ray is already initialized in this process (then that instance is used) or
            ``RAY_ADDRESS`` is set (then it is joined); ``"auto"`` or ``"HOST:PORT"`` /
            ``"ray://HOST:PORT"`` joins an existing cluster.
        num_cpus: CPUs each task reserves (default 1); a task's torch thread count.
        num_gpus: GPUs each task reserves (default 0; fractions share a GPU).
        max_retries: times Ray re-runs a task whose worker process died (default 3). A task
            that raises is never retried: the exception stops the map and is re-raised here.
        local_cpus: size of the local instance that ``address=None`` starts (default: this
            machine's CPU count). Ignored when joining a cluster.

    Raises:
        LossurfError: Ray is not installed, or an option is invalid.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        num_gpus: float = 0,
        max_retries: int = 3,
        local_cpus: int | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise LossurfError(f"the ray backend needs Ray, which is not installed; {_INSTALL}") from None
        self.num_cpus = 1 if num_cpus is None else num_cpus
        _positive("num_cpus", self.num_cpus, 1, integer=True)
        _positive("num_gpus", num_gpus, 0, integer=False)
        _positive("max_retries", max_retries, 0, integer=True)
        if local_cpus is not None:
            _positive("local_cpus", local_cpus, 1, integer=True)
        self.address, self.num_gpus, self.max_retries = address, num_gpus, max_retries
        self.stats = MapStats()
        self._ray = ray
        self._started = False
        self._reaper: subprocess.Popen | None = None
        if not ray.is_initialized():
            # Ray's own default would join the last cluster `ray start` made on this machine
            # (someone else's, on a shared one); RAY_ADDRESS is the usual way to mean that.
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address:
                _check_reachable(address)
                try:
                    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
                except (ConnectionError, ValueError, RuntimeError) as err:
                    raise LossurfError(
                        f"could not join the Ray cluster at {address!r} ({err}); start it with "
                        "`ray start --head` (and `ray start --address HEAD:6379` on workers), "
                        "or drop --address to start a local one"
                    ) from None
            else:
                ray.init(
                    address="local",
                    num_cpus=local_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    ignore_reinit_error=True,
                    log_to_driver=False,
                )
                # Ray's agents outlive a killed driver by a minute (see lossurf.reaper).
                self._reaper = reap_on_exit(descendants(containing="ray"))
            self._started = True
        self._remote = ray.remote(_run_task).options(
            num_cpus=self.num_cpus,
            num_gpus=num_gpus,
            max_retries=max_retries,
            retry_exceptions=False,
        )

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Run ``fn(item)`` as one Ray task per item; yield results as they complete.

        ``fn`` is put in the object store once. The first task that raises stops the map:
        the other tasks are cancelled and the task's own exception (a ``LossurfError`` stays
        a ``LossurfError``) is raised here, with the worker's traceback as a note. Closing
        the iterator early (an error or Ctrl-C in the caller) cancels what is still pending.
        """
        ray = self._ray
        self.stats = stats = MapStats()
        began = time.perf_counter()
        try:
            box = [ray.put(fn)]
        except Exception as err:  # pickling runs user code: any error means "does not ship"
            # Ray's own message is a page of serializability diagnostics; the cause says it.
            detail = err.__cause__ or err
            first = str(detail).strip().splitlines()[0] if str(detail).strip() else ""
            raise LossurfError(
                f"cannot send {type(fn).__name__} to Ray workers: it does not pickle "
                f"({type(detail).__name__}: {first}); pass a module-level function or a "
                "dataclass of picklable fields"
            ) from err
        threads = int(self.num_cpus)
        pending = {self._remote.remote(box, item, threads) for item in items}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    pending.discard(ref)
                    try:
                        result, seconds, cpu, pid = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        raise _unwrap(err) from None
                    stats.record(seconds, cpu, pid, began)
                    yield result
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        """Shut down the local Ray instance if this backend started it."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
        if self._reaper is not None:  # its processes are gone: let the watcher finish
            self._reaper.stdin.close()  # type: ignore[union-attr]
            self._reaper.wait(timeout=30)
            self._reaper = None

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RayBackend(address={self.address!r}, num_cpus={self.num_cpus}, "
            f"num_gpus={self.num_gpus}, max_retries={self.max_retries})"
        )


def _unwrap(err: Exception) -> BaseException:
    """The exception a task raised, as its own type (Ray wraps it in RayTaskError)."""
    cause = getattr(err, "cause", None)
    if not isinstance(cause, Exception):
        return err
    # str(err) is the worker's traceback (with its pid and ip), coloured for a terminal
    trace = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    cause.add_note(f"raised in a Ray task; the worker's traceback:\n{trace}")
    return cause


class _Worker:
    """One worker process (``python -m lossurf.workers``) and the driver's end of its socket."""

    def __init__(self, threads: int) -> None:
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        # The worker imports lossurf before it hears the driver's sys.path: a driver that found
        # lossurf through its own sys.path (a checkout, not installed) tells it where, here.
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lossurf.workers", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env,
        )
        theirs.close()  # the worker holds its end: EOF here means the worker is gone
        self.conn = Connection(ours.detach())
        # PR_SET_PDEATHSIG follows the thread that starts the child: armed only from the main
        # thread, whose end is the process's (a worker thread's end would kill healthy workers).
        deathsig = threading.current_thread() is threading.main_thread()
        try:
            self.conn.send_bytes(pickle.dumps((os.getpid(), threads, deathsig, list(sys.path))))
        except OSError:  # died at once; the map sees the closed socket
            pass
        self.map_id = 0  # the map whose function this worker already has

    def stop(self, kill: bool) -> None:
        """End the worker: close its socket (an idle worker then returns), terminating it first
        when ``kill`` (it is busy with an item nobody waits for)."""
        if kill and self.process.poll() is None:
            self.process.terminate()
        self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _exit_reason(code: int | None) -> str:
    """A worker's exit code in words (``killed by SIGKILL``, ``exit code 1``)."""
    if code is not None and code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ProcessBackend:
    """Runs items in ``jobs`` worker processes on this machine, yielding results as they complete.

    Each worker is a fresh interpreter (``python -m lossurf.workers``, spawned, never forked:
    CUDA cannot be used in a forked child) that runs one item at a time, so work that shares a
    device (runs of one experiment on one GPU) goes side by side in separate processes, each
    exactly as it would run alone. POSIX only (the worker inherits a socket). Workers start
    on the first ``map`` that needs them and serve later maps until :meth:`close` (or the
    driver's exit); they die with the driver however it ends (see :mod:`lossurf.workers`).

    Args:
        jobs: worker processes, i.e. items at once (at least 1).
        threads: torch CPU threads per worker; default ``LOSSURF_THREADS``, else the usable
            cores divided by ``jobs`` (at least 1). Bitwise equality with a run trained alone
            needs the same count in both (e.g. ``LOSSURF_THREADS=1``).

    Raises:
        LossurfError: ``jobs`` or ``threads`` is not a positive integer.
    """

    def __init__(self, jobs: int, threads: int | None = None) -> None:
        from lossurf.threads import env_threads, usable_cores

        _positive("jobs", jobs, 1, integer=True)
        if threads is not None:
            _positive("threads", threads, 1, integer=True)
        self.jobs = jobs
        self.threads = threads or env_threads() or max(1, usable_cores() // jobs)
        self.stats = MapStats()
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._maps = 0
        # Idle workers wait for work until their socket closes: close it at exit at the latest.
        atexit.register(self.close)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Run ``fn(item)`` in the workers; yield results as they complete.

        ``fn`` is pickled once and sent to each worker with its first item of this map. The
        first item that raises stops the map: the workers still busy are terminated and the
        item's own exception is raised here (a ``LossurfError`` as the same one-line error).
        Closing the iterator early (an error or Ctrl-C in the caller) terminates the workers
        still busy too. A worker that dies is a ``LossurfError`` naming its item.
        """
        from multiprocessing.connection import wait

        from lossurf.workers import raise_payload

        try:
            blob = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # pickling runs user code: any error means "does not ship"
            raise LossurfError(
                f"cannot send {type(fn).__name__} to worker processes: it does not pickle "
                f"({type(err).__name__}: {err}); pass a module-level function or a dataclass "
                "of picklable fields"
            ) from None
        self._maps += 1
        map_id = self._maps
        self.stats = stats = MapStats()
        began = time.perf_counter()
        todo = deque(enumerate(items))
        busy: dict[_Worker, Any] = {}  # worker -> its item
        try:
            while todo or busy:
                while todo and len(busy) < self.jobs:
                    worker = self._idle.pop() if self._idle else self._start()
                    index, item = todo.popleft()
                    busy[worker] = item
                    self._send(worker, map_id, blob, index, item)
                ready = set(wait([w.conn for w in busy]))
                for worker in [w for w in busy if w.conn in ready]:
                    item = busy.pop(worker)
                    try:  # a dead worker's socket still gives what it sent, then EOF
                        kind, _, payload = pickle.loads(worker.conn.recv_bytes())
                    except (EOFError, OSError):
                        try:
                            code = worker.process.wait(timeout=5)
                        except subprocess.TimeoutExpired:  # closed its socket yet lives on
                            code = None
                        self._drop(worker)
                        raise LossurfError(
                            f"a worker process died while working on {item!r} ({_exit_reason(code)}"
                            "; out of memory?); run the same command again to resume"
                        ) from None
                    self._idle.append(worker)
                    if kind == "error":
                        raise_payload(payload, worker.process.pid)
                    result, seconds, cpu, pid = payload
                    stats.record(seconds, cpu, pid, began)
                    yield result
        finally:
            # Items still running are no longer wanted (an error, Ctrl-C, a closed iterator):
            # stop their processes now rather than let them go on unseen.
            for worker in busy:
                self._drop(worker)

    def _send(self, worker: _Worker, map_id: int, blob: bytes, index: int, item: Any) -> None:
        """Send one item (with the map's function if this worker does not have it yet)."""
        message = (map_id, blob if worker.map_id != map_id else None, index, item)
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise LossurfError(
                f"cannot send the work item {item!r} to a worker process: it does not pickle "
                f"({type(err).__name__}: {err}); pass plain values (names, numbers, tuples)"
            ) from None
        try:
            worker.conn.send_bytes(data)
        except OSError:  # the process is gone: map's wait sees its socket closed
            return
        worker.map_id = map_id

    def _start(self) -> _Worker:
        worker = _Worker(self.threads)
        self._workers.append(worker)
        return worker

    def _drop(self, worker: _Worker) -> None:
        """Forget a worker and stop it (terminated unless it is idle)."""
        idle = worker in self._idle
        if idle:
            self._idle.remove(worker)
        if worker in self._workers:
            self._workers.remove(worker)
        worker.stop(kill=not idle)

    def close(self) -> None:
        """Stop every worker: idle ones return at once, busy ones are terminated."""
        for worker in list(self._workers):
            self._drop(worker)
        atexit.unregister(self.close)

    def __enter__(self) -> ProcessBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProcessBackend(jobs={self.jobs}, threads={self.threads})"


#: Registered backends by name; ``make_backend`` builds one.
BACKENDS: dict[str, Callable[..., Any]] = {
    "local": LocalBackend, "processes": ProcessBackend, "ray": RayBackend,
}


@contextmanager
def runs_at_once(jobs: int, backend: Backend | None) -> Iterator[Backend | None]:
    """Where runs train for ``jobs=`` / ``backend=`` arguments: the given backend, else ``jobs``
    worker processes (a :class:`ProcessBackend`, closed at the end), else None (here, one after
    the other).

    Raises:
        LossurfError: both were given.
    """
    if backend is not None and jobs != 1:
        raise LossurfError("pass backend= or jobs=, not both; jobs=N is the processes backend")
    if backend is not None or jobs == 1:
        yield backend
    else:
        with ProcessBackend(jobs) as pool:
            yield pool


def make_backend(name: str = "local", **options: Any) -> Backend:
    """Build a registered backend by name.

    Args:
        name: a key of :data:`BACKENDS` (default ``local``).
        **options: passed to the backend's constructor (``processes``: ``jobs``, ``threads``,
            see :class:`ProcessBackend`; ``ray``: ``address``, ``num_cpus``, ``num_gpus``,
            ``max_retries``, ``local_cpus``, see :class:`RayBackend`).

    Returns:
        The backend instance.

    Raises:
        LossurfError: unknown name or option; ``ray`` without Ray installed.
    """
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise LossurfError(
            f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}"
        ) from None
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as err:
        raise LossurfError(
            f"bad option for the {name} backend ({err}); valid options: "
            f"{list(inspect.signature(factory).parameters) or 'none'}"
        ) from None
    return factory(**options)
