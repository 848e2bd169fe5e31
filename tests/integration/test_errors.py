"""Errors: types, messages, remote tracebacks, crashes, cancellation."""

import os
import threading
import time

import pytest

import refbook
from refbook.exceptions import RefbookError, TaskCancelledError, TaskError, WorkerCrashedError

pytestmark = pytest.mark.usefixtures("cluster")


class MyError(Exception):
    def __init__(self, code, detail):      # a constructor with required arguments
        super().__init__(code, detail)
        self.code = code


@refbook.remote
def fail_with(kind):
    if kind == "value":
        raise ValueError("the value was wrong")
    if kind == "custom":
        raise MyError(7, "custom failure")
    if kind == "key":
        return {}["missing"]
    return kind


def test_task_error_is_both_task_error_and_original_class():
    with pytest.raises(ValueError) as ei:
        refbook.get(fail_with.remote("value"))
    e = ei.value
    assert isinstance(e, TaskError) and isinstance(e, RefbookError)
    assert "the value was wrong" in str(e)
    assert "Remote traceback" in str(e) and "fail_with" in e.traceback_str
    assert 'raise ValueError("the value was wrong")' in e.traceback_str


def test_traceback_names_the_file_and_line_of_code_pickled_by_value():
    """A function pickled by value (as every notebook or ``__main__`` function is) keeps
    its file name and source lines, even where the worker has no such file: cloudpickle
    3.1.3 renamed such code "<dynamic-code>" and tracebacks lost their lines."""
    import linecache
    filename = "/nonexistent/notes.py"
    src = "import numpy\n\ndef spread(n):\n    total = n * 2\n    return total / (n - n)\n"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns = {"__name__": "notes_by_value"}
    exec(compile(src, filename, "exec"), ns)
    try:
        f = refbook.remote(ns["spread"])
        with pytest.raises(ZeroDivisionError) as ei:
            refbook.get(f.remote(3))
    finally:
        linecache.cache.pop(filename, None)
    tb = ei.value.traceback_str
    assert f'File "{filename}", line 5, in spread' in tb, tb
    assert "return total / (n - n)" in tb and "<dynamic-code>" not in tb, tb


def test_custom_exception_with_required_args_keeps_its_attributes():
    with pytest.raises(MyError) as ei:
        refbook.get(fail_with.remote("custom"))
    assert ei.value.code == 7
    with pytest.raises(KeyError):
        refbook.get(fail_with.remote("key"))


def test_error_propagates_through_dependent_tasks():
    @refbook.remote
    def plus_one(x):
        return x + 1

    r = plus_one.remote(plus_one.remote(fail_with.remote("value")))
    with pytest.raises(ValueError, match="the value was wrong"):
        refbook.get(r)


def test_error_inside_nested_task_keeps_the_original_class():
    @refbook.remote
    def outer():
        return refbook.get(fail_with.remote("value"))

    with pytest.raises(ValueError):
        refbook.get(outer.remote())


def test_getting_an_error_twice_raises_twice():
    r = fail_with.remote("value")
    for _ in range(2):
        with pytest.raises(ValueError):
            refbook.get(r)


def test_unpicklable_argument_is_named_at_the_call():
    @refbook.remote
    def takes(data, lock=None):
        return 1

    with pytest.raises(TypeError) as ei:
        takes.remote([1, 2], lock=threading.Lock())
    msg = str(ei.value)
    assert "'lock'" in msg and "takes" in msg and "lock" in msg.lower()

    with pytest.raises(TypeError, match="'data'"):
        takes.remote(threading.Lock())


def test_unpicklable_return_value_is_a_clear_task_error():
    @refbook.remote
    def returns_lock():
        return threading.Lock()

    with pytest.raises(TypeError, match="cannot be pickled"):
        refbook.get(returns_lock.remote())


def test_worker_crash_without_retries_gives_worker_crashed_error():
    @refbook.remote(max_retries=0)
    def die():
        os._exit(1)

    with pytest.raises(WorkerCrashedError, match="max_retries=0"):
        refbook.get(die.remote(), timeout=30)
    assert refbook.get(fail_with.remote("ok")) == "ok"   # the pool recovered


def test_worker_crash_is_retried():
    marker = f"/tmp/refbook-test-crash-{os.getpid()}-{time.time_ns()}"

    @refbook.remote(max_retries=2)
    def die_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "second try"

    try:
        assert refbook.get(die_once.remote(marker), timeout=30) == "second try"
    finally:
        if os.path.exists(marker):
            os.unlink(marker)


def test_retry_exceptions_retries_application_errors():
    marker = f"/tmp/refbook-test-retry-{os.getpid()}-{time.time_ns()}"

    @refbook.remote(max_retries=2, retry_exceptions=[OSError])
    def flaky(path):
        if not os.path.exists(path):
            open(path, "w").close()
            raise OSError("transient")
        return "ok"

    try:
        assert refbook.get(flaky.remote(marker), timeout=30) == "ok"
    finally:
        os.unlink(marker)

    @refbook.remote(max_retries=2, retry_exceptions=[OSError])
    def wrong_kind():
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        refbook.get(wrong_kind.remote())


def test_cancel_force_kills_the_running_task():
    @refbook.remote
    def forever():
        time.sleep(60)

    r = forever.remote()
    time.sleep(0.5)
    t = time.monotonic()
    refbook.cancel(r, force=True)
    with pytest.raises(TaskCancelledError):
        refbook.get(r, timeout=10)
    assert time.monotonic() - t < 5
    assert refbook.get(fail_with.remote("after")) == "after"


def test_cancel_interrupts_a_running_task_and_skips_a_queued_one():
    @refbook.remote
    def sleepy(s):
        time.sleep(s)
        return s

    running = [sleepy.remote(30) for _ in range(2)]
    queued = sleepy.remote(30)
    time.sleep(0.5)
    refbook.cancel(queued)
    with pytest.raises(TaskCancelledError):
        refbook.get(queued, timeout=5)
    for r in running:
        refbook.cancel(r)
    for r in running:
        with pytest.raises(TaskCancelledError):
            refbook.get(r, timeout=10)
    assert refbook.get(sleepy.remote(0)) == 0
