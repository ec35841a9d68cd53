"""
The real :class:`Slot` in-process: its child is a :class:`FakeChildProcess`
on a Clock, so timeouts, kills, crashes and restarts run through the slot's
own code with no process and no waiting.
"""

from __future__ import annotations

import json
import pickle

import pytest
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import Clock

from cwtx.client.serialize import pickle_arguments, pickle_function
from cwtx.testing import FakeProcessReactor
from cwtx.wire.payload import Payload
from cwtx.worker import slot as slot_module
from cwtx.worker.pipe import HAND_BACK_AFTER, TASK_FD, MessageDecoder, encode_message
from cwtx.worker.slot import RESULT_FD, SMALL_MESSAGE, Slot, Task
from tests.worker.task_pipe import Transport


class Harness:
    def __init__(self, hold: bool = True) -> None:
        self.clock = Clock()
        self.reactor = FakeProcessReactor(self.clock, hold=hold)
        self.results: list[tuple[int, str, bytes, dict]] = []
        self.frees = 0
        self.slot = Slot(0, self.reactor, self._result, self._free)
        self.slot.start()
        self.slot_ends = 0
        ended = self.slot.processEnded

        def count_ends(reason):
            self.slot_ends += 1
            ended(reason)

        self.slot.processEnded = count_ends

    def _result(self, task, status, value, error):
        self.results.append((task.task, status, value.tobytes(), json.loads(error or "{}")))

    def _free(self):
        self.frees += 1

    def kill_timers(self):
        """The slot's timeout timers that are armed (not the fake child's watch)."""
        return [c for c in self.clock.getDelayedCalls() if c.func == self.slot.kill]

    @property
    def child(self):
        return self.slot.transport

    def task(self, task_id: int, fn=abs, *args, timeout: float = 0.0) -> Task:
        f = pickle_function(fn)
        return Task(
            task_id,
            f.hash,
            f.env,
            Payload.of(f.code),
            Payload.of(pickle_arguments(args, {})),
            timeout=timeout,
        )


def test_a_job_runs_and_its_result_comes_back():
    h = Harness(hold=False)
    h.slot.run(h.task(1, abs, -5))
    assert not h.slot.free
    h.clock.advance(0)
    ((task, status, value, _),) = h.results
    assert (task, status, pickle.loads(value)) == (1, "ok", 5)
    assert h.slot.free and h.frees == 1


def test_the_function_goes_to_a_child_once():
    h = Harness(hold=False)
    first, second = h.task(1, abs, -1), h.task(2, abs, -2)
    h.slot.run(first)
    h.clock.advance(0)
    h.slot.run(second)
    h.clock.advance(0)
    assert [len(m) for m in h.child.messages] == [3, 2]  # header, args, then code once
    assert [pickle.loads(r[2]) for r in h.results] == [1, 2]


def test_a_restarted_child_is_sent_the_function_again():
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    h.child.exit(code=None, signal=9)  # killed from outside
    h.clock.advance(0)  # the slot restarts its child
    h.slot.run(h.task(2, abs, -2))
    assert [len(m) for m in h.child.messages] == [3]


def test_the_timeout_kills_the_child_and_reports_a_timeout():
    h = Harness()
    h.slot.run(h.task(1, abs, -1, timeout=5))
    first = h.child
    h.clock.advance(4.9)
    assert not first.ended and h.results == []
    h.clock.advance(0.2)
    h.clock.advance(0)
    assert first.ended
    ((task, status, _, error),) = h.results
    assert (task, status) == (1, "timeout")
    assert "timeout of 5 s" in error["message"]
    h.clock.advance(0)
    assert h.child is not first and h.slot.free  # a fresh child


def test_a_result_in_time_disarms_the_timeout():
    h = Harness()
    h.slot.run(h.task(1, abs, -1, timeout=5))
    h.clock.advance(1)
    h.child.finish()
    assert not h.clock.getDelayedCalls()
    h.slot.run(h.task(2, abs, -2))  # no timeout: the first job's must not hit it
    h.clock.advance(10)
    assert [r[1] for r in h.results] == ["ok"]
    assert not h.child.ended and h.slot.current.task == 2


def test_no_timeout_means_no_timer():
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    assert h.kill_timers() == []


@pytest.mark.parametrize("reason", ["cancelled", "requeue"])
def test_kill_reports_its_reason(reason):
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    h.slot.kill(reason)
    h.clock.advance(0)
    ((task, status, _, _),) = h.results
    assert (task, status) == (1, reason)


def test_a_kill_when_idle_does_nothing():
    h = Harness()
    h.slot.kill("cancelled")
    h.clock.advance(0)
    assert not h.child.ended and h.results == []


@pytest.mark.parametrize(
    ("code", "signal", "cause"), [(3, None, "exit code 3"), (None, 11, "signal 11")]
)
def test_a_child_that_dies_under_a_job_loses_it(code, signal, cause):
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    h.child.exit(code=code, signal=signal)
    ((task, status, _, error),) = h.results
    assert (task, status) == (1, "lost")
    assert cause in error["message"]
    h.clock.advance(0)
    assert h.slot.free  # restarted at once: the job was to blame


def test_a_child_that_keeps_dying_idle_is_restarted_with_backoff():
    h = Harness()
    starts = []
    for _ in range(4):
        h.child.exit(code=1)
        before = len(h.reactor.children)
        waited = 0.0
        while len(h.reactor.children) == before:
            h.clock.advance(0.05)
            waited += 0.05
        starts.append(round(waited, 2))
    assert starts == sorted(starts) and starts[-1] > starts[0] * 4


def test_corrupt_bytes_from_the_child_kill_it_and_lose_the_job():
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    h.slot.childDataReceived(RESULT_FD, b"\xff\xff\xff\xff nonsense")
    h.clock.advance(0)
    assert [r[1] for r in h.results] == ["lost"]
    assert "corrupt data on the result pipe" in h.results[0][3]["message"]


def test_a_result_for_another_task_kills_the_child():
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    header = json.dumps({"task": 99, "status": "ok"}).encode()
    h.slot.childDataReceived(RESULT_FD, b"".join(encode_message([header, b""])))
    h.clock.advance(0)
    assert [(r[0], r[1]) for r in h.results] == [(1, "lost")]
    assert "corrupt data" in h.results[0][3]["message"]


def test_a_result_that_races_a_kill_is_reported_once_as_the_kill():
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    h.slot.kill("cancelled")  # SIGKILL is on its way
    header = json.dumps({"task": 1, "status": "ok"}).encode()
    h.slot.childDataReceived(RESULT_FD, b"".join(encode_message([header, pickle.dumps(1)])))
    h.clock.advance(0)  # then the child dies of it
    assert [r[1] for r in h.results] == ["cancelled"]


def test_stop_ends_the_child_for_good():
    h = Harness()
    ended = []
    h.slot.stop(lambda: ended.append(True))
    h.clock.advance(0)
    h.clock.advance(10)
    assert ended == [True] and len(h.reactor.children) == 1 and not h.slot.free


def test_stop_while_running_kills_the_job():
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    ended = []
    h.slot.stop(lambda: ended.append(True))
    h.clock.advance(0)
    assert ended == [True] and [r[1] for r in h.results] == ["lost"]


def test_data_on_another_fd_is_ignored():
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    h.slot.childDataReceived(2, b"\xff garbage on stderr")
    h.clock.advance(0)
    assert h.results == [] and not h.child.ended


def test_a_kill_that_finds_the_child_gone_is_harmless():
    h = Harness()
    h.slot.run(h.task(1, abs, -1))
    child = h.child
    child.ended = True  # it died, and we have not heard yet
    h.slot.kill("cancelled")
    child.ended = False
    child.exit(code=None, signal=9)
    assert [r[1] for r in h.results] == ["cancelled"]


def test_stopping_while_a_restart_is_due_starts_nothing():
    h = Harness()
    h.child.exit(code=1)  # a restart is scheduled
    ended = []
    h.slot.stop(lambda: ended.append(True))  # the child is already gone
    h.clock.advance(10)
    assert ended == [True] and len(h.reactor.children) == 1


def test_the_fake_child_behaves_like_a_process():
    h = Harness()
    child = h.child
    assert child.running is None
    h.slot.run(h.task(7, abs, -1))
    assert child.running == 7
    child.closeStdout()
    child.closeStderr()
    child.writeToChild(0, b"ignored: not the task pipe")
    child.loseConnection()  # closes its task pipe: it ends once its job is done
    child.finish()
    h.clock.advance(0)
    assert child.ended and [r[1] for r in h.results] == ["ok"]
    with pytest.raises(ProcessExitedAlready):
        child.signalProcess("KILL")
    child.finish()  # nothing more to run
    child.exit(0)  # and it ends only once
    assert h.slot_ends == 1


def test_a_large_task_is_written_piece_by_piece_even_with_empty_pieces():
    """A pipe asks for the next piece only after it has written one: an
    empty piece must not stop the feed (it once stalled a slot for good)."""
    from cwtx.worker.slot import _PiecesProducer

    class Pipe:
        """Like Twisted's: asks its producer for more only once it has
        written something and drained; writing nothing writes nothing."""

        def __init__(self):
            self.written, self.producer, self.draining = [], None, False

        def write(self, data):
            if data:
                self.written.append(data)
                self.draining = True

        def unregisterProducer(self):
            self.producer = None

        def registerProducer(self, producer):
            self.producer = producer
            producer.resumeProducing()

    pipe = Pipe()
    pipe.registerProducer(_PiecesProducer(pipe, [b"head", b"", b"x" * 10, b"", b"tail"]))
    while pipe.producer is not None and pipe.draining:
        pipe.draining = False
        pipe.producer.resumeProducing()  # it drained: the next piece
    assert pipe.producer is None, "the write stalled"
    assert pipe.written == [b"head", b"x" * 10, b"tail"]


# -- tasks written ahead (PIPELINE_DEPTH) ----------------------------------------


class AheadHarness(Harness):
    """A slot whose child ran one short task already, so that it writes
    ahead; it records what the slot says of tasks that never started."""

    def __init__(self) -> None:
        super().__init__(hold=True)
        self.unstarted: list[tuple[int, str | None]] = []
        self.started: list[int] = []
        self.slot._on_unstarted = lambda task, reason: self.unstarted.append((task.task, reason))
        self.slot._on_started = lambda task: self.started.append(task.task)
        self.slot.run(self.task(100, abs, -1))
        self.child.finish()
        self.started.clear()
        self.results.clear()

    def result_message(self, task: int, next_task: int | None = None) -> bytes:
        header = {"task": task, "status": "ok"}
        if next_task is not None:
            header["next"] = next_task
        return b"".join(encode_message([json.dumps(header).encode(), pickle.dumps(task)]))


def test_a_slot_writes_the_next_task_before_the_first_result():
    h = AheadHarness()
    first, second = h.task(1, abs, -1), h.task(2, abs, -2)
    h.slot.run(first)
    assert h.slot.room == 1
    h.slot.run(second)
    assert h.slot.room == 0
    # Both are in the child before the first result; only the first started.
    assert [json.loads(m[0])["task"] for m in h.child.messages] == [100, 1, 2]
    assert h.results == [] and h.started == [1] and list(h.slot.queued) == [second]
    h.child.finish()  # its result names the second, which starts there and then
    assert [r[0] for r in h.results] == [1] and h.started == [1, 2]
    assert h.slot.current is second and not h.slot.queued
    h.child.finish()
    assert [pickle.loads(r[2]) for r in h.results] == [1, 2]


def test_no_task_is_written_ahead_behind_a_fresh_child_or_a_long_task():
    h = Harness(hold=True)
    h.slot.run(h.task(1, abs, -1))
    assert h.slot.room == 0  # a fresh child: its tasks' length is unknown
    h.clock.advance(HAND_BACK_AFTER)
    h.child.finish()
    h.slot.run(h.task(2, abs, -2))
    assert h.slot.room == 0  # the last one ran long
    h = AheadHarness()
    h.slot.run(h.task(3, abs, -3))
    assert h.slot.room == 1
    h.clock.advance(HAND_BACK_AFTER)
    assert h.slot.room == 0  # this one runs long


def test_a_task_written_ahead_times_out_counting_from_its_start():
    h = AheadHarness()
    h.slot.run(h.task(1, abs, -1))
    h.slot.run(h.task(2, abs, -2, timeout=0.3))
    h.clock.advance(0.4)  # longer than its timeout, but it has not started
    assert h.results == [] and h.kill_timers() == []
    h.child.finish()  # the first ends; the second starts now
    h.clock.advance(0.29)
    assert [r[1] for r in h.results] == ["ok"] and not h.child.ended
    h.clock.advance(0.02)
    h.clock.advance(0)
    assert [r[1] for r in h.results] == ["ok", "timeout"]


def test_a_cancelled_task_written_ahead_is_skipped_and_never_runs():
    h = AheadHarness()
    h.slot.run(h.task(1, abs, -1))
    second = h.task(2, abs, -2)
    h.slot.run(second)
    assert h.slot.skip(second, "cancelled")
    assert json.loads(h.child.messages[-1][0]) == {"skip": 2}
    assert h.unstarted == [] and h.slot.queued  # the child reads it between tasks
    h.child.finish()  # the child reads the skip before starting the next
    assert h.unstarted == [(2, "cancelled")] and not h.slot.queued
    h.clock.advance(10)
    assert [r[0] for r in h.results] == [1] and h.reactor.ran == [100, 1]
    assert not h.child.ended and h.slot.free


def test_a_cancel_that_comes_after_the_task_started_kills_it_and_the_rest_come_back(
    monkeypatch,
):
    """The child started the task (its result naming it is on the way)
    before it read the skip: the task is killed as cancelled, and the task
    written after it goes back to be run in the next child."""
    monkeypatch.setattr(slot_module, "PIPELINE_DEPTH", 2)
    h = AheadHarness()
    h.slot.run(h.task(1, abs, -1))
    second, third = h.task(2, abs, -2), h.task(3, abs, -3)
    h.slot.run(second)
    h.slot.run(third)
    first_child = h.child
    h.slot.skip(second, "cancelled")
    # The result names it: the child started it before it read the skip.
    h.slot.childDataReceived(RESULT_FD, h.result_message(1, next_task=2))
    h.clock.advance(0)  # the child dies of the kill
    assert first_child.ended
    assert [(r[0], r[1]) for r in h.results] == [(1, "ok"), (2, "cancelled")]
    assert "cancelled while running" in h.results[1][3]["message"]
    assert h.unstarted == [(3, None)]  # it never started: to run again
    assert third.args.size  # (its arguments are kept to send again)


def test_a_child_that_dies_with_a_task_written_ahead_gives_it_back():
    h = AheadHarness()
    h.slot.run(h.task(1, abs, -1))
    second = h.task(2, abs, -2)
    h.slot.run(second)
    h.child.exit(code=None, signal=11)
    assert [(r[0], r[1]) for r in h.results] == [(1, "lost")]
    assert h.unstarted == [(2, None)] and h.started == [1]
    h.clock.advance(0)
    assert h.slot.free and second.args.size
    h.slot.run(second)  # into the fresh child, with its function
    assert [len(m) for m in h.child.messages] == [3]
    h.child.finish()
    assert [(r[0], r[1]) for r in h.results] == [(1, "lost"), (2, "ok")]


def test_a_result_that_names_no_next_task_starts_the_one_written_ahead():
    """The child had read nothing more when it sent the result: the task
    written ahead starts as soon as it reads it."""
    h = AheadHarness()
    h.slot.run(h.task(1, abs, -1))
    h.slot.run(h.task(2, abs, -2, timeout=5))
    h.slot.childDataReceived(RESULT_FD, h.result_message(1))
    assert h.started == [1, 2] and h.slot.current.task == 2 and len(h.kill_timers()) == 1


def test_a_result_that_names_a_task_not_written_ahead_kills_the_child():
    h = AheadHarness()
    h.slot.run(h.task(1, abs, -1))
    h.slot.run(h.task(2, abs, -2))
    child = h.child
    h.slot.childDataReceived(RESULT_FD, h.result_message(1, next_task=7))
    h.clock.advance(0)
    assert child.ended
    assert [(r[0], r[1]) for r in h.results] == [(1, "lost")]
    assert h.unstarted == [(2, None)]


def test_the_child_hands_back_what_waits_behind_a_long_task():
    h = AheadHarness()
    h.slot.run(h.task(1, abs, -1))
    h.slot.run(h.task(2, abs, -2))
    h.clock.advance(HAND_BACK_AFTER)
    assert h.unstarted == [(2, None)] and not h.slot.queued
    assert h.reactor.ran == [100, 1] and h.slot.room == 0


def test_a_skip_written_while_a_large_task_is_written_goes_after_it():
    """Messages never interleave on the task pipe: a skip (or a task)
    written while a large one is still being fed waits behind it."""
    from cwtx.worker.slot import _PiecesProducer, _write_pieces

    transport = Transport()
    writer = transport.pipes[TASK_FD]
    big = encode_message([b"{}", b"x" * (SMALL_MESSAGE + 1)])
    _write_pieces(transport, TASK_FD, big)
    assert isinstance(writer.producer, _PiecesProducer)
    writer.producer.resumeProducing()  # one piece went
    _write_pieces(transport, TASK_FD, encode_message([b'{"skip": 1}']))
    while writer.producer is not None:
        writer.producer.resumeProducing()
    decoded = MessageDecoder().feed(b"".join(writer.written))
    assert [m[0].tobytes() for m in decoded] == [b"{}", b'{"skip": 1}']


def test_a_skip_that_crosses_a_result_without_next_lets_the_task_run():
    """The child had nothing more when it sent the result; it starts the
    task written ahead as it reads it, skip or not (the child's rule): the
    slot counts it as started, and, not cancelled, it runs (here: handed
    back by a leaving worker)."""
    h = AheadHarness()
    h.slot.run(h.task(1, abs, -1))
    second = h.task(2, abs, -2)
    h.slot.run(second)
    h.slot.skip(second, "requeue")
    h.slot.childDataReceived(RESULT_FD, h.result_message(1))  # no next: it crossed the skip
    assert h.slot.current is second and h.started == [1, 2] and h.unstarted == []
    assert not h.child.ended
