"""Case-by-case work spread over worker processes: :func:`map_cases`.

The data stages (LGG slice stacking, the manifest's checks, fingerprinting,
preprocessing) each do the same independent work once per case; a job asking
for ``threads`` CPUs runs ``threads`` cases at a time, each in its own process
(numpy, nibabel's gzip and PIL hold the GIL for most of that work, so threads
would not help). Results come back in the order of the cases, so what a stage
writes is the same bytes whatever ``threads`` is.

Workers are started with ``forkserver`` (``spawn`` where the platform has no
fork server), never ``fork``: the parent may already hold torch's OpenMP
thread pool (``glioseg --threads`` imports torch), and a forked child of a
process with OpenMP threads can deadlock. Each worker is held to one intra-op
thread, so ``threads`` workers use ``threads`` cores (docs/decisions.md,
"Data stages in parallel").
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

from tqdm import tqdm

from glioseg.errors import GliosegError

T = TypeVar("T")
R = TypeVar("R")

#: The environment variables that size the thread pools of OpenMP, BLAS and numexpr.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class CaseFailure(RuntimeError):
    """A bug (any exception but :class:`GliosegError`) met while working on one case; chained to the original."""


@dataclass(frozen=True)
class _Outcome(Generic[R]):
    """What one case gave back from a worker: a value, or a user-facing problem (a GliosegError's parts).

    A GliosegError is not sent back as itself: exceptions are pickled through
    their positional ``args``, which would lose its ``path`` and ``hint``.
    """

    value: R | None = None
    problem: str | None = None
    path: Path | None = None
    hint: str | None = None


def start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn``; never ``fork`` (see the module's docstring)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def map_cases(function: Callable[[T], R], items: Sequence[T], *, threads: int, desc: str,
              name: Callable[[T], str] = str) -> list[R]:
    """``[function(item) for item in items]``, run on ``threads`` worker processes, in the order of ``items``.

    ``threads <= 1`` (or a single item) runs everything in this process, with
    no pool. A progress bar (``desc``, in cases) advances as cases finish.

    ``function`` and every item must be picklable: ``function`` a module-level
    function of an importable module, or a :func:`functools.partial` of one
    (no lambda, no closure, nothing defined inside a function); it is imported
    afresh in each worker, where no earlier state of this process exists.
    ``name`` runs in this process only and may be anything. A script that
    calls this must guard its top level with ``if __name__ == "__main__":``,
    since workers import the main module.

    A case whose ``function`` raises :class:`GliosegError` does not stop the
    others: once every case has run, one :class:`GliosegError` lists every
    failed case with ``name(item)``, its problem and its file (a single failure
    keeps its own ``path`` and ``hint``; several keep every distinct hint).
    Any other exception is a bug: the remaining cases are cancelled and a
    :class:`CaseFailure` naming the case is raised from it. A worker killed
    from outside (out of memory) is a :class:`GliosegError` that says so.
    """
    items = list(items)
    results: list[R | None] = [None] * len(items)
    failures: dict[int, _Outcome[R]] = {}
    with tqdm(total=len(items), desc=desc, unit="case") as bar:
        for index, outcome in _outcomes(function, items, threads, desc, name):
            if outcome.problem is None:
                results[index] = outcome.value
            else:
                failures[index] = outcome
            bar.update()
    if failures:
        raise _failure_report([(name(items[i]), failures[i]) for i in sorted(failures)], len(items), desc)
    return results  # type: ignore[return-value]  # every slot was filled


def _outcomes(function: Callable[[T], R], items: list[T], threads: int, desc: str,
              name: Callable[[T], str]) -> Iterator[tuple[int, _Outcome[R]]]:
    """``(index, outcome)`` of every item as it finishes, in this process or in a pool."""
    if threads <= 1 or len(items) <= 1:
        for index, item in enumerate(items):
            try:
                outcome = _attempt(function, item)
            except Exception as exc:
                raise _bug(exc, name(item), desc) from exc
            yield index, outcome
        return
    context = multiprocessing.get_context(start_method())
    if context.get_start_method() == "forkserver":
        # Modules the fork server imports once, so that each worker forks with them loaded.
        context.set_forkserver_preload(sorted({__name__, _module_of(function)}))
    with _one_thread_environment(), ProcessPoolExecutor(min(threads, len(items)), mp_context=context,
                                                        initializer=_one_thread) as pool:
        pending: dict[Future, int] = {pool.submit(_attempt, function, item): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):  # a bug, if any, reported for the first case
                    index = pending.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool as exc:
                        raise GliosegError(
                            f"a worker process died while {desc}: killed from outside (most often for lack of memory), "
                            "or it could not start (its error is printed above)",
                            hint="give the job more memory, or fewer threads, and run it again.",
                        ) from exc
                    except Exception as exc:
                        raise _bug(exc, name(items[index]), desc) from exc
                    yield index, outcome
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # the cases not started yet are dropped
            raise


def _attempt(function: Callable[[T], R], item: T) -> _Outcome[R]:
    try:
        return _Outcome(value=function(item))
    except GliosegError as exc:
        return _Outcome(problem=exc.problem, path=exc.path, hint=exc.hint)


def _bug(exc: Exception, case: str, desc: str) -> CaseFailure:
    return CaseFailure(f"{desc}: case {case} failed with {type(exc).__name__}: {exc}")


def _failure_report(failures: list[tuple[str, _Outcome]], total: int, desc: str) -> GliosegError:
    """One error for every failed case: a single one as itself (prefixed by its case), several as a list."""
    if len(failures) == 1:
        case, outcome = failures[0]
        return GliosegError(f"case {case}: {outcome.problem}", path=outcome.path, hint=outcome.hint)
    lines = []
    for case, outcome in failures:
        where = f" ({outcome.path})" if outcome.path is not None else ""
        problem = (outcome.problem or "").replace("\n", "\n      ")
        lines.append(f"    {case}: {problem}{where}")
    hints = list(dict.fromkeys(outcome.hint for _, outcome in failures if outcome.hint))
    return GliosegError(f"{len(failures)} of {total} cases failed ({desc}):\n" + "\n".join(lines), hint=" ".join(hints) or None)


def _module_of(function: Callable) -> str:
    while isinstance(function, partial):
        function = function.func
    return getattr(function, "__module__", None) or "__main__"


@contextlib.contextmanager
def _one_thread_environment() -> Iterator[None]:
    """:data:`THREAD_VARIABLES` set to 1 while a pool starts: the fork server (and so every worker) inherits them.

    Libraries read them when they load, which in a worker is after it starts
    (or in the fork server, for the preloaded modules).
    """
    saved = {key: os.environ.get(key) for key in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _one_thread() -> None:
    """Worker initializer: one intra-op thread, also where the fork server was started before the variables were set."""
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
