"""map_cases: the worker pool every case-by-case data stage runs on."""

from __future__ import annotations

import functools
import os
import time

import pytest

from glioseg.errors import GliosegError
from glioseg.parallel import THREAD_VARIABLES, CaseFailure, map_cases


# Module-level, so that the worker processes can import them.
def square_after(item: int, *, scale: float = 0.02) -> tuple[int, int]:
    """``item**2`` and the process it ran in; early items sleep longest, so they finish last."""
    time.sleep(scale * (8 - item) if item < 8 else 0)
    return item * item, os.getpid()


def fail_odd(item: int) -> int:
    if item % 2:
        raise GliosegError(f"item {item} is odd", path=f"/data/case{item}.nii.gz", hint=f"make item {item} even.")
    return item


def bug_at_three(item: int) -> int:
    if item == 3:
        raise ValueError("not a number I like")
    return item


def thread_settings(_: int) -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in THREAD_VARIABLES}


def case_name(item: int) -> str:
    return f"case-{item}"


@pytest.mark.parametrize("threads", [1, 2])
def test_results_come_back_in_the_order_of_the_items(threads):
    items = list(range(10))
    results = map_cases(functools.partial(square_after, scale=0.02), items, threads=threads, desc="squaring")
    assert [value for value, _ in results] == [i * i for i in items]
    workers = {pid for _, pid in results}
    if threads == 1:
        assert workers == {os.getpid()}  # no pool at all
    else:
        assert os.getpid() not in workers and len(workers) == 2


def test_one_item_runs_in_this_process_whatever_the_threads():
    assert map_cases(square_after, [8], threads=4, desc="one") == [(64, os.getpid())]
    assert map_cases(square_after, [], threads=4, desc="none") == []


@pytest.mark.parametrize("threads", [1, 2])
def test_every_failed_case_is_listed_in_one_error(threads):
    with pytest.raises(GliosegError) as caught:
        map_cases(fail_odd, range(6), threads=threads, desc="checking", name=case_name)
    error = caught.value
    assert error.problem.startswith("3 of 6 cases failed (checking):\n")
    for item in (1, 3, 5):
        assert f"    case-{item}: item {item} is odd (/data/case{item}.nii.gz)" in error.message
    assert "case-2" not in error.message and "case-4" not in error.message
    assert error.hint == "make item 1 even. make item 3 even. make item 5 even."  # every distinct hint, in case order


@pytest.mark.parametrize("threads", [1, 2])
def test_a_single_failure_keeps_its_path_and_hint(threads):
    with pytest.raises(GliosegError) as caught:
        map_cases(fail_odd, [0, 2, 7, 4], threads=threads, desc="checking", name=case_name)
    error = caught.value
    assert error.problem == "case case-7: item 7 is odd"
    assert str(error.path) == "/data/case7.nii.gz" and error.hint == "make item 7 even."


@pytest.mark.parametrize("threads", [1, 2])
def test_a_bug_propagates_naming_its_case(threads):
    with pytest.raises(CaseFailure, match=r"^counting: case case-3 failed with ValueError: not a number I like$") as caught:
        map_cases(bug_at_three, range(6), threads=threads, desc="counting", name=case_name)
    assert isinstance(caught.value.__cause__, ValueError)


def test_workers_run_one_intra_op_thread_and_the_parent_is_left_as_it_was(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    settings = map_cases(thread_settings, range(3), threads=2, desc="threads")
    assert all(s == dict.fromkeys(THREAD_VARIABLES, "1") for s in settings)
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_unpicklable_functions_are_refused():
    with pytest.raises(CaseFailure, match="case 1 failed with"):
        map_cases(lambda item: item, [1, 2], threads=2, desc="lambda")
