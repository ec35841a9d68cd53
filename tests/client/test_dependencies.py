"""
Jobs whose arguments are other jobs (cwtx.client.dependencies): where a
dependency may sit, how it is replaced, and the Deferred client holding a
job until its dependencies end, on a MemoryCluster (no process, no socket).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import operator
import pickle
import threading

import pytest
from twisted.internet.defer import Deferred, succeed

import cwtx
from cwtx.client import dependencies
from cwtx.client.dependencies import find, pickle_arguments, substitute, wait_for
from cwtx.testing import MemoryCluster

# -- where a dependency may sit -------------------------------------------------------------------


def test_find_in_arguments_keywords_and_one_level_of_list_tuple_dict():
    a, b, c, d, e = (Deferred() for _ in range(5))
    args = (a, [b, 1], (c,), {"k": d}, "x")
    kwargs = {"e": e, "also_a": a, "in_list": [a]}
    assert find(args, kwargs, Deferred) == [a, b, c, d, e]  # in order, each once


def test_find_ignores_what_is_deeper_and_container_subclasses():
    deep = Deferred()
    Pair = collections.namedtuple("Pair", "x y")
    args = ([[deep]], {"k": {"j": deep}}, Pair(deep, 1), {deep: 1})
    assert find(args, {}, Deferred) == []


def test_substitute_makes_new_containers_of_the_same_types():
    a, b = cf.Future(), cf.Future()
    args, kwargs = (a, [a, 1], (b,), {"k": b}), {"kw": a, "t": (1, b)}
    values = {id(a): "A", id(b): "B"}
    assert substitute(args, kwargs, cf.Future, values) == (
        ("A", ["A", 1], ("B",), {"k": "B"}),
        {"kw": "A", "t": (1, "B")},
    )
    assert args[1] == [a, 1]  # the caller's own list is left alone


@pytest.mark.parametrize(
    "argument",
    [[[cf.Future()]], {"k": [Deferred()]}, [{"j": cf.Future()}]],
)
def test_a_future_or_deferred_left_in_the_arguments_is_a_clear_type_error(argument):
    with pytest.raises(TypeError, match="replaced by its result"):
        pickle_arguments((argument,), {})


def test_pickled_arguments_are_what_cloudpickle_would_send():
    args, kwargs = (1, [2, "x"], lambda y: y + 1), {"k": {"j": 3}}
    got_args, got_kwargs = pickle.loads(pickle_arguments(args, kwargs))
    assert got_args[:2] == (1, [2, "x"]) and got_args[2](1) == 2 and got_kwargs == kwargs


def test_check_picklable_ignores_the_dependencies_but_not_the_rest():
    d = Deferred()
    dependencies.check_picklable((d, [d], {"k": d}), {"kw": d}, Deferred)
    with pytest.raises(TypeError, match="lock"):
        dependencies.check_picklable((d, threading.Lock()), {}, Deferred)


# -- waiting for dependencies ---------------------------------------------------------------------


def waiter(deps):
    """wait_for over Deferreds; what it called back, in a list."""
    outcome: list = []
    wait_for(
        deps,
        dependencies.watch_deferred,
        lambda values: outcome.append(("ready", values)),
        lambda error: outcome.append(("failed", error)),
    )
    return outcome


def test_ready_once_every_dependency_succeeded():
    a, b = Deferred(), Deferred()
    outcome = waiter([a, b])
    b.callback("B")
    assert outcome == []
    a.callback("A")
    assert outcome == [("ready", {id(a): "A", id(b): "B"})]
    # The Deferreds' own results pass on unchanged.
    assert [a.result, b.result] == ["A", "B"]


def test_fails_at_the_first_failed_dependency_and_only_once():
    a, b, c = Deferred(), Deferred(), Deferred()
    outcome = waiter([a, b, c])
    a.callback(1)
    b.errback(ZeroDivisionError("boom"))
    c.errback(KeyError("later"))
    ((what, error),) = outcome
    assert what == "failed" and isinstance(error, cwtx.DependencyFailed)
    assert isinstance(error.error, ZeroDivisionError) and error.__cause__ is error.error
    assert "failed: ZeroDivisionError: boom" in str(error)
    for d in (b, c):
        d.addErrback(lambda _: None)  # handled here, so not logged as unhandled


def test_already_fired_dependencies_are_ready_at_once():
    assert waiter([succeed(1)])[0][0] == "ready"


def test_a_cancelled_dependency_says_so():
    d = Deferred()
    outcome = waiter([d])
    d.cancel()
    d.addErrback(lambda _: None)
    assert "was cancelled" in str(outcome[0][1])


class ImmediateReactor:
    def callFromThread(self, f, *args):
        f(*args)


@pytest.mark.parametrize(
    ("end", "expect"),
    [
        (lambda f: f.set_result(3), ("ready", 3)),
        (lambda f: f.set_exception(KeyError("k")), ("failed", KeyError)),
        (lambda f: f.cancel(), ("failed", cf.CancelledError)),
    ],
)
def test_concurrent_futures_are_watched_through_the_reactor(end, expect):
    future = cf.Future()
    outcome: list = []
    wait_for(
        [future],
        dependencies.watch_future(ImmediateReactor()),
        lambda values: outcome.append(("ready", values[id(future)])),
        lambda error: outcome.append(("failed", type(error.error))),
    )
    end(future)
    assert outcome == [expect]


def test_dependency_failed_pickles_and_is_exported():
    error = cwtx.DependencyFailed("a job this job depends on failed", ValueError("v"))
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and isinstance(again.error, ValueError)
    assert isinstance(error, cwtx.CwtxError)


# -- the Deferred client --------------------------------------------------------------------------


def test_a_deferred_argument_is_replaced_by_its_result():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    a = client.submit(pow, 2, 10)
    b = client.submit(operator.add, a, 1)
    c = client.submit(sum, [a, b, 5])
    d = client.submit(dict, x={"a": c})
    cluster.flush()
    assert cluster.result(b) == 1025
    assert cluster.result(c) == 2054
    assert cluster.result(d) == {"x": {"a": 2054}}
    assert cluster.result(a) == 1024  # its own result still there for its user


def test_the_dependent_job_is_sent_only_once_its_dependency_ended():
    cluster = MemoryCluster(workers=1, slots=2, hold=True)
    client = cluster.client()
    first = client.submit(abs, -1)
    second = client.submit(operator.neg, first)
    cluster.flush()
    worker = cluster.workers[0]
    assert len(cluster.ran(worker)) == 1  # only the first, though a slot is free
    cluster.finish(worker)
    assert cluster.result(first) == 1 and len(cluster.ran(worker)) == 2
    cluster.finish(worker)
    assert cluster.result(second) == -1


def test_a_failed_dependency_fails_the_job_which_is_never_sent():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    bad = client.submit(operator.truediv, 1, 0)
    dependent = client.submit(operator.add, bad, 1)
    cluster.flush()
    with pytest.raises(cwtx.DependencyFailed) as info:
        cluster.result(dependent)
    assert isinstance(info.value.error, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        cluster.result(bad)  # the dependency's own Deferred keeps its failure
    assert len(cluster.ran(cluster.workers[0])) == 1


def test_awaiting_the_failed_dependency_after_its_dependent_works():
    """The dependent fails on a later turn, not from inside the dependency's
    own callbacks: awaiting the dependency next must not trip Twisted."""
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    bad = client.submit(operator.truediv, 1, 0)
    dependent = client.submit(operator.add, bad, 1)

    async def handle() -> str:
        try:
            await dependent
        except cwtx.DependencyFailed:
            pass
        try:
            await bad
        except ZeroDivisionError:
            return "both failed, each handled"
        return "bad did not fail"

    outcome = Deferred.fromCoroutine(handle())
    cluster.flush()
    assert cluster.result(outcome) == "both failed, each handled"


def test_cancelling_a_held_job_drops_it_unsent():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    first = client.submit(abs, -1)
    dependent = client.submit(operator.neg, first)
    cluster.flush()
    dependent.cancel()
    with pytest.raises(cwtx.JobCancelled):
        cluster.result(dependent)
    cluster.finish()
    assert cluster.result(first) == 1
    assert len(cluster.ran(cluster.workers[0])) == 1


def test_cancelling_a_dependent_job_once_sent_cancels_the_job():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    first = client.submit(abs, -1)
    dependent = client.submit(operator.neg, first)
    cluster.flush()
    cluster.finish()
    assert client.pending == 1  # the dependent job, sent and running
    dependent.cancel()
    cluster.flush()
    with pytest.raises(cwtx.JobCancelled):
        cluster.result(dependent)
    assert client.pending == 0


def test_a_cancelled_dependency_fails_its_dependent():
    cluster = MemoryCluster(workers=1, hold=True)
    client = cluster.client()
    first = client.submit(abs, -1)
    dependent = client.submit(operator.neg, first)
    first.cancel()
    cluster.flush()
    with pytest.raises(cwtx.DependencyFailed, match="was cancelled") as info:
        cluster.result(dependent)
    assert isinstance(info.value.error, cwtx.JobCancelled)
    first.addErrback(lambda _: None)


def test_deferreds_of_another_client_or_of_anything_are_dependencies():
    cluster = MemoryCluster(workers=1)
    one, other = cluster.client("one"), cluster.client("other")
    theirs = other.submit(pow, 3, 2)
    plain: Deferred = Deferred()
    dependent = one.submit(operator.add, theirs, plain)
    cluster.flush()
    plain.callback(7)
    cluster.flush()
    assert cluster.result(dependent) == 16


def test_a_job_whose_client_closed_while_it_waited_fails():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    plain: Deferred = Deferred()
    dependent = client.submit(abs, plain)
    client.close()
    cluster.flush()
    plain.callback(-1)
    with pytest.raises(RuntimeError, match="closed"):
        cluster.result(dependent)


def test_a_dependency_result_that_cannot_be_pickled_fails_the_job():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    plain: Deferred = Deferred()
    dependent = client.submit(id, plain)
    plain.callback(threading.Lock())
    with pytest.raises(TypeError, match="lock"):
        cluster.result(dependent)
    assert client.pending == 0


def test_unpicklable_arguments_beside_a_dependency_fail_at_submit():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    with pytest.raises(TypeError, match="lock"):
        client.submit(operator.add, Deferred(), threading.Lock())
    with pytest.raises(TypeError, match="replaced by its result"):
        client.submit(len, [[Deferred()]])
    assert client.pending == 0


def test_share_and_name_are_per_client_not_per_job():
    cluster = MemoryCluster(workers=1)
    client = cluster.client()
    with pytest.raises(TypeError, match="share is per client"):
        client.options(share=2)
    with pytest.raises(TypeError, match="name is per client"):
        client.options(timeout=1).options(name="x")
