"""
The scheduling policy: which queued job goes to which worker, and which
prefetched tasks to take back.  One pure object (:class:`FairShare`): no
reactor, no I/O.  The master feeds it events (a job queued, assigned,
started, released; workers and clients come and go) and acts on what it
decides (a :class:`~cwtx.master.jobs.Task` to send, :class:`Refuse`,
:class:`TakeBack`).

* **Fair share of slots**: the next free place goes to the client with the
  fewest tasks on workers for its share (``SetShare``, default 1).  Ties go
  to the client with the lowest *pass*: each job's run time (workers
  report it), over the client's share, advances it when the job ends
  (start-time fair queuing).  So clients get slot time in
  proportion to their shares, whatever their jobs' lengths.  A client that
  was idle starts at the pass of the jobs now starting: it banks no turns.
  Clients matching ``priority_clients`` form a tier that goes first.
* **Order at the worker.**  A task carries the pass it was sent at; a
  worker starts its waiting tasks lowest first, so a job sent later for a
  client below its share overtakes tasks prefetched for others.
* **Within a client**: higher priority first, then submission order.
* **Resources**: a worker's amounts are never oversubscribed; a job that no
  connected worker could ever fit waits, *unschedulable*, with the reason.
* **Work stealing**: a worker with idle slots and nothing to take from the
  queues takes back tasks prefetched to a worker whose slots are all busy.

Cost: dispatching a job is O(log n) (heaps of queues and of workers, with
lazy deletion; a queue is a FIFO per priority); a job that asks for
resources scans the workers that have the rarest resource it asks for.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import count
from typing import Any

from cwtx.master.jobs import Job, Task
from cwtx.master.sessions import UNKNOWN_VERSIONS, ClientSession, WorkerSession
from cwtx.wire.resources import describe

#: What sending a job charges its client's pass (its run time is charged
#: when it ends), so that equal clients take turns even before any ends.
SEND_COST = 1e-6
#: How far the priority tier's orders sit below everyone else's.
TIER_OFFSET = 1e12
#: Times a worker is asked for a task it did not hand back before the
#: master stops asking (a task whose record had not reached it yet is
#: handed back the next time).
ASKS = 3
#: Distinct resource requests one client may have queues for: each waiting
#: one is looked at again whenever a place frees.
MAX_SHAPES = 256


def compatible(client: tuple[str, str], worker: tuple[str, str]) -> bool:
    """Can a worker unpickle what this client pickled?  Same Python
    major.minor and the same cloudpickle (its format is not promised to
    carry across versions).  Unknown versions (tests) match anything."""
    if client == worker or UNKNOWN_VERSIONS in (client, worker):
        return True
    short = [".".join(v[0].split(".")[:2]) for v in (client, worker)]
    return short[0] == short[1] and client[1] == worker[1]


def mismatch_message(client: ClientSession, workers: Iterable[WorkerSession]) -> str:
    theirs = "; ".join(
        f"{w.name}: Python {w.versions[0]}, cloudpickle {w.versions[1]}" for w in list(workers)[:5]
    )
    return (
        f"no worker can run this client's jobs: the client runs Python "
        f"{client.versions[0]} with cloudpickle {client.versions[1]}, the workers run "
        f"{theirs}. Install the same Python (major.minor) and cloudpickle on both."
    )


def fits(needs: dict[str, float], have: dict[str, float]) -> bool:
    """Amounts are floats, added and taken back in any order: a difference
    of a billionth of the amount is rounding, not a shortage."""
    return all(have.get(n, 0) >= a - 1e-9 * max(a, 1.0) for n, a in needs.items())


def describe_needs(needs: dict[str, float]) -> str:
    return ",".join(f"{name}={describe(amount)}" for name, amount in sorted(needs.items()))


@dataclass
class Refuse:
    """No registered worker can ever run ``job`` (versions): end it."""

    job: Job


@dataclass
class TakeBack:
    """Ask ``victim`` to hand back these tasks, if they have not started,
    for ``taker`` (which has idle slots); then call :meth:`FairShare.taken_back`."""

    victim: WorkerSession
    tasks: list[Task]
    taker: WorkerSession


@dataclass(eq=False)
class _Queue:
    """One client's queued jobs that need the same resources: a FIFO per
    priority (a job costs one pointer in it), highest priority first.  A
    priority with one job holds the job itself: a client that gives every
    job a priority of its own does not pay for a FIFO each."""

    client: _Client
    needs: dict[str, float]
    levels: dict[int, Job | deque[Job]] = field(default_factory=dict)  # by priority
    order: list[int] = field(default_factory=list)  # heap of the levels' -priority
    entry: int = 0  # the sequence number of its live entry in the ready heap (0: none)
    parked: bool = False
    why: str = ""  # unschedulable: why no connected worker can ever run it
    hint: _Worker | None = None  # retried for a place freed on this worker
    stale: int = 0  # ended jobs it still holds
    count: int = 0  # jobs queued in it (it holds ended ones too)

    def peek(self) -> Job | None:
        """Its next job (ended ones on the way are dropped)."""
        while self.order:
            level = self.levels[-self.order[0]]
            job = level[0] if type(level) is deque else level
            if job.task is None and not job.ended:
                return job
            self.stale = max(0, self.stale - 1)
            self.pop()
        return None

    def pop(self) -> None:
        """Drop its next job (the one :meth:`peek` returned)."""
        priority = -self.order[0]
        level = self.levels[priority]
        if type(level) is deque and len(level) > 1:
            level.popleft()
        else:
            heapq.heappop(self.order)
            del self.levels[priority]

    def push(self, job: Job, front: bool) -> None:
        """Queue it last of its priority, or first (``front``)."""
        priority = job.options.priority
        level = self.levels.get(priority)
        if level is None:
            self.levels[priority] = job
            heapq.heappush(self.order, -priority)
        elif type(level) is not deque:
            self.levels[priority] = deque((job, level) if front else (level, job))
        elif front:
            level.appendleft(job)
        else:
            level.append(job)

    def compact(self) -> None:
        """Drop the ended jobs it holds."""
        for priority, level in list(self.levels.items()):
            jobs = level if type(level) is deque else [level]
            live = [j for j in jobs if j.task is None and not j.ended]
            if len(live) > 1:
                self.levels[priority] = deque(live)
            elif live:
                self.levels[priority] = live[0]
            else:
                del self.levels[priority]
        self.order = [-p for p in self.levels]
        heapq.heapify(self.order)
        self.stale = 0

    def jobs(self) -> list[Job]:
        """The jobs it holds (ended ones too), in no order (tests)."""
        return [j for v in self.levels.values() for j in (v if type(v) is deque else [v])]

    def clear(self) -> None:
        self.levels.clear()
        self.order.clear()


@dataclass(eq=False)
class _Client:
    session: ClientSession
    tier: int = 0
    weight: float = 1.0
    vpass: float = 0.0
    queued: int = 0
    load: int = 0  # its tasks on workers, started or waiting there
    queues: dict[str, _Queue] = field(default_factory=dict)

    def key(self) -> tuple[int, float, float]:
        """Its place in the ready heap: tier, slots held for its share, pass."""
        return (-self.tier, self.load / self.weight, self.vpass)


@dataclass(eq=False)
class _Worker:
    session: WorkerSession
    load: int = 0  # tasks assigned to it: started, or waiting in its queue
    started: int = 0
    reclaiming: int = 0  # of its waiting tasks, those asked back
    kept: int = 0  # of its waiting tasks, those it would not hand back
    expecting: int = 0  # tasks being taken back elsewhere for it
    avail: dict[str, float] = field(default_factory=dict)
    waiting: dict[Task, None] = field(default_factory=dict)  # unstarted, oldest first
    entry: int = 0
    slots: int = 0
    capacity: int = 0  # slots plus prefetch
    leaving: bool = False
    #: How many more tasks it may be sent (its capacity less its load; 0
    #: once it is leaving): it is sent a task only while this is above 0.
    free: int = 0

    @property
    def idle(self) -> int:
        """Slots with nothing to run, even counting what is on its way."""
        if self.leaving:
            return 0
        return self.slots - self.load - self.expecting

    @property
    def excess(self) -> int:
        """Tasks waiting for a slot here that may still be asked back."""
        return len(self.waiting) - max(0, self.slots - self.started) - self.reclaiming - self.kept


class FairShare:
    """The policy; see the module docstring."""

    def __init__(self, priority_clients: Iterable[str] = ()) -> None:
        self.priority_clients = [p for p in priority_clients if p]
        self._clients: dict[ClientSession, _Client] = {}
        self._workers: dict[WorkerSession, _Worker] = {}
        self._ready: list[tuple[tuple[int, float, float], int, _Queue]] = []
        # Queues whose next job found no place: waiting for any free place,
        # for a place with resources, or (unschedulable) for new workers.
        self._parked: list[_Queue] = []
        self._parked_needs: list[_Queue] = []
        self._stuck: list[_Queue] = []
        self._wheap: list[tuple[int, int, _Worker]] = []
        self._seq = count(1)
        self._free = 0  # free places over all workers
        self._vtime = 0.0  # the pass of the latest job to start
        self._victims: set[_Worker] = set()
        self._hungry: set[_Worker] = set()
        # Workers whose freed place a retried queue did not take (it held
        # only cancelled jobs, went elsewhere, or no longer fitted).
        self._redo: list[_Worker] = []
        self._changed: set[_Worker] = set()  # hungry or victims, changed since steals()
        self._ready_limit = 64  # compact the ready heap past this many entries
        self._wheap_limit = 64
        self._why: dict[tuple[tuple[str, str], str], str] = {}  # unschedulable, by shape
        #: Jobs taken back for a worker with idle slots, queued: they go to it.
        self._takers: dict[Job, WorkerSession] = {}

    # -- clients -------------------------------------------------------------

    def add_client(self, session: ClientSession) -> None:
        tier = int(any(fnmatchcase(session.name, p) for p in self.priority_clients))
        self._clients[session] = _Client(session, tier=tier, vpass=self._vtime)

    def remove_client(self, session: ClientSession) -> None:
        """A client left; the master has ended its jobs."""
        client = self._clients.pop(session, None)
        if client is not None:
            self._parked = [q for q in self._parked if q.client is not client]
            self._parked_needs = [q for q in self._parked_needs if q.client is not client]
            self._stuck = [q for q in self._stuck if q.client is not client]
            for q in client.queues.values():
                q.clear()

    def set_share(self, session: ClientSession, share: float) -> None:
        if not share > 0:
            raise ValueError(f"a share must be above 0, not {share!r}")
        client = self._clients[session]
        client.weight = share
        self._rekey(client)

    def tier(self, session: ClientSession) -> int:
        client = self._clients.get(session)
        return client.tier if client is not None else 0

    def share(self, session: ClientSession) -> float:
        client = self._clients.get(session)
        return client.weight if client is not None else 1.0

    # -- workers -------------------------------------------------------------

    def add_worker(self, session: WorkerSession) -> None:
        w = _Worker(
            session,
            avail=dict(session.amounts),
            slots=session.slots,
            capacity=session.capacity,
            leaving=session.leaving,
            free=0 if session.leaving else session.capacity,
        )
        self._workers[session] = w
        self._free += w.free
        self._push_worker(w)
        self._update(w)
        self._unpark(everything=True)

    def remove_worker(self, session: WorkerSession) -> None:
        """A worker left; the master has released its jobs first."""
        w = self._workers.pop(session, None)
        if w is not None:
            self._free -= w.free
            self._victims.discard(w)
            self._hungry.discard(w)
            w.entry = 0
            self._unpark(everything=True)  # what only it could run is unschedulable now

    def leaving(self, session: WorkerSession) -> None:
        """It takes no more tasks (call before setting ``session.leaving``)."""
        w = self._workers[session]
        self._free -= w.free
        session.leaving = w.leaving = True
        w.free = 0
        self._update(w)

    @property
    def workers(self) -> list[WorkerSession]:
        return list(self._workers)

    def started_count(self, session: WorkerSession) -> int:
        w = self._workers.get(session)
        return w.started if w is not None else 0

    # -- jobs ----------------------------------------------------------------

    def enqueue(self, job: Job, front: bool = False) -> None:
        """Queue a job (``front``: first of its priority, as a retried one)."""
        client = self._clients[job.client]
        options = job.options
        q = client.queues.get(options.resources)
        if q is None:
            q = client.queues[options.resources] = _Queue(client, options.needs)
        if client.queued == 0:
            client.vpass = max(client.vpass, self._vtime)  # no banked credit
        client.queued += 1
        q.count += 1
        q.push(job, front)
        if not q.parked and not q.entry:
            self._push_ready(q)

    def has_room_for(self, session: ClientSession, shape: str) -> bool:
        """May this client queue a job of this shape (MAX_SHAPES)?"""
        client = self._clients.get(session)
        if client is None or shape in client.queues:
            return True
        live = [k for k, q in client.queues.items() if q.levels]
        for k in [k for k, q in client.queues.items() if not q.levels and not q.entry]:
            if not client.queues[k].parked:
                del client.queues[k]  # empty: forget it
        return len(live) < MAX_SHAPES

    def dequeued(self, job: Job) -> None:
        """A queued job ended (cancelled, or its client left): its queue
        skips it, and is compacted once it holds mostly such jobs."""
        if self._takers:
            self._takers.pop(job, None)
        client = self._clients.get(job.client)
        if client is None:
            return
        client.queued -= 1
        q = client.queues.get(job.options.resources)
        if q is not None:
            q.count -= 1
            q.stale += 1
            if q.stale > 64 and q.stale > q.count:
                q.compact()

    def next(self) -> Task | Refuse | None:
        """The next decision: a task to send (the policy has counted it on
        its worker), a job to refuse, or None when nothing more can start now."""
        budget = 2 * (len(self._parked) + len(self._parked_needs)) + 2
        while True:
            decision = self._next()
            if decision is not None:
                return decision
            if not self._redo or budget <= 0:
                self._redo.clear()
                return None
            budget -= 1
            while self._redo:  # places a retry did not use: retry others
                self._unpark(freed=self._redo.pop())

    def _next(self) -> Task | Refuse | None:
        ready = self._ready
        while ready and self._free > 0:
            key, seq, q = ready[0]
            if q.entry != seq:
                heapq.heappop(ready)  # superseded
                continue
            job = q.peek()
            if job is None:
                heapq.heappop(ready)
                q.entry = 0
                if q.hint is not None:
                    self._redo.append(q.hint)
                    q.hint = None
                continue
            client = q.client
            if key != client.key():
                self._push_ready(q, replace_top=True)  # its standing moved: re-sort
                continue
            hint = q.hint
            worker = self._place(job, q)
            if hint is not None and worker is not hint and hint.free > 0:
                self._redo.append(hint)
            if worker is None:
                heapq.heappop(ready)
                q.entry = 0
                if self._workers and not any(
                    compatible(client.session.versions, w.versions) for w in self._workers
                ):
                    self._pop(q)
                    if q.count:
                        self._push_ready(q)  # its next job is refused too, in turn
                    return Refuse(job)
                q.why = self._unschedulable(job)
                q.parked = True
                if q.why:
                    self._stuck.append(q)
                elif q.needs:
                    self._parked_needs.append(q)
                else:
                    self._parked.append(q)
                continue
            self._pop(q)
            task = self._assign(job, worker, client)
            if q.count:
                self._push_ready(q, replace_top=True)
            else:
                heapq.heappop(ready)
                q.entry = 0
            return task
        return None

    @staticmethod
    def _pop(q: _Queue) -> None:
        q.pop()
        q.client.queued -= 1
        q.count -= 1

    def _assign(self, job: Job, worker: _Worker, client: _Client) -> Task:
        task = Task(job, worker.session, client.vpass - client.tier * TIER_OFFSET, client.vpass)
        client.vpass += SEND_COST / client.weight
        client.load += 1
        self._free -= 1  # it had room: it was chosen
        worker.load += 1
        worker.free -= 1
        needs = job.options.needs
        if needs:
            for name, amount in needs.items():
                worker.avail[name] -= amount
        worker.waiting[task] = None
        self._push_worker(worker, replace_top=True)
        self._update(worker)
        return task

    def started(self, task: Task, now: float) -> None:
        """Its worker reports it started (once)."""
        worker = self._workers.get(task.worker)
        if worker is None or task.started:
            return
        task.started = True
        task.started_at = now
        if worker.waiting.pop(task, 0) is None and task.asked:
            self._left_waiting(task, worker)
        worker.started += 1
        self._vtime = max(self._vtime, task.vstart)
        self._update(worker)

    def ran(self, job: Job, seconds: float) -> None:
        """It ran ``seconds`` in its slot (the master caps the worker's figure
        at the time since it sent the task): charged to its client's pass,
        divided by its share, so clients share slot time.  (Its key rises:
        its ready queues are re-sorted when they reach the heap's top.)"""
        client = self._clients.get(job.client)
        if client is not None and seconds > 0:
            client.vpass += seconds / client.weight

    def released(self, task: Task) -> None:
        """The task left its worker: it ended, was lost, handed back, or
        cancelled."""
        worker = self._workers.get(task.worker)
        if worker is None:
            return
        client = self._clients.get(task.job.client)
        if client is not None:
            client.load -= 1
            if len(self._clients) > 1:
                self._rekey(client)
        if task.started:
            worker.started -= 1
        elif worker.waiting.pop(task, 0) is None and task.asked:
            self._left_waiting(task, worker)
        if not worker.leaving:
            self._free += 1
            worker.free += 1
        worker.load -= 1
        needs = task.job.options.needs
        if needs:
            for name, amount in needs.items():
                worker.avail[name] += amount
        self._push_worker(worker)
        self._update(worker)
        if self._parked or self._parked_needs:
            self._unpark(freed=worker)

    def _left_waiting(self, task: Task, worker: _Worker) -> None:
        """It no longer waits on ``worker`` (it started, or left): it stops
        counting as asked back there, as kept there, and as on its way to
        the worker that asked for it (only a task ever ``asked`` back can)."""
        if task.reclaiming:
            worker.reclaiming -= 1
            task.reclaiming = False
        if task.kept:
            worker.kept -= 1
            task.kept = False
        self._settle(task)

    def _settle(self, task: Task) -> None:
        """Its take-back, if any, no longer brings it to the taker (a worker
        that never answers cannot pin the taker's idle slots this way)."""
        decision = task.reclaim_by
        if decision is None:
            return
        task.reclaim_by = None
        taker = self._workers.get(decision.taker)
        if taker is not None:
            taker.expecting -= 1
            self._update(taker)

    def _rekey(self, client: _Client) -> None:
        """Its standing fell (a task left a worker, a bigger share): its
        ready queues move up now (a rise is found when they are popped)."""
        for q in client.queues.values():
            if q.entry:
                self._push_ready(q)

    # -- work stealing -------------------------------------------------------

    def steals(self) -> list[TakeBack]:
        """Tasks to take back for workers with idle slots (call after
        :meth:`next` returned None)."""
        changed, self._changed = self._changed, set()
        if not self._hungry or not self._victims:
            return []
        # Only pairs with a worker changed since the last call can have
        # become possible: the others were looked at then.
        victims = sorted(self._victims, key=lambda w: -w.excess)
        fresh = [v for v in victims if v in changed]
        out: list[TakeBack] = []
        for taker in sorted(self._hungry, key=lambda w: -w.idle):
            for victim in victims if taker in changed else fresh:
                need = min(taker.idle, victim.excess)
                if need <= 0:
                    continue
                tasks = [
                    t
                    for t in reversed(victim.waiting)
                    if not t.reclaiming and not t.kept and self._could_run(taker, t.job)
                ][:need]
                if not tasks:
                    continue
                decision = TakeBack(victim.session, tasks, taker.session)
                for t in tasks:
                    t.asked = t.reclaiming = True
                    t.reclaim_by = decision  # only its answer settles them
                victim.reclaiming += len(tasks)
                taker.expecting += len(tasks)
                self._update(victim)
                self._update(taker)
                out.append(decision)
                if taker.idle <= 0:
                    break
        return out

    def taken_back(self, decision: TakeBack, returned: set[int]) -> list[Task]:
        """The victim answered: ``returned`` are the task ids it handed
        back.  Those tasks leave it (the master requeues their jobs at the
        front); the others started, or ended, there as usual."""
        back = []
        for task in decision.tasks:
            if task.reclaim_by is not decision:
                continue  # it moved on since (started, ended, lost)
            self._settle(task)
            if task.reclaiming and task.job.task is task and task.id in returned:
                self._takers[task.job] = decision.taker  # not back to where it waited
                back.append(task)
            elif task.reclaiming:
                task.reclaiming = False
                # It started (its report is on its way), or its record had
                # not reached the worker yet (sent after the take-back):
                # asked again, up to ASKS times in all.
                task.asks += 1
                victim = self._workers.get(decision.victim)
                if victim is not None:
                    victim.reclaiming -= 1
                    if task.asks >= ASKS:
                        task.kept = True
                        victim.kept += 1
                    self._update(victim)
        return back

    def _could_run(self, w: _Worker, job: Job) -> bool:
        """Could ``w`` start ``job`` now: its versions, and resources it has free."""
        return compatible(job.client.versions, w.session.versions) and fits(
            job.options.needs, w.avail
        )

    def _update(self, w: _Worker) -> None:
        """Keep the sets of workers with idle slots and with waiting tasks."""
        if w.leaving or w.session not in self._workers:
            self._hungry.discard(w)
            self._victims.discard(w)
            self._changed.discard(w)
            return
        slots = w.slots
        interesting = False
        if slots - w.load - w.expecting > 0:
            self._hungry.add(w)
            interesting = True
        else:
            self._hungry.discard(w)
        room = slots - w.started
        if len(w.waiting) - (room if room > 0 else 0) - w.reclaiming - w.kept > 0:
            self._victims.add(w)
            interesting = True
        else:
            self._victims.discard(w)
        if interesting:
            self._changed.add(w)

    # -- placement -----------------------------------------------------------

    def _push_ready(self, q: _Queue, replace_top: bool = False) -> None:
        """(Re-)enter a queue in the ready heap; ``replace_top``: its entry
        is the heap's top, replaced in one step."""
        seq = next(self._seq)
        q.entry = seq
        if replace_top:
            heapq.heapreplace(self._ready, (q.client.key(), seq, q))
            return
        heapq.heappush(self._ready, (q.client.key(), seq, q))
        if len(self._ready) > self._ready_limit:  # drop superseded entries
            self._ready = [e for e in self._ready if e[2].entry == e[1]]
            heapq.heapify(self._ready)
            self._ready_limit = 2 * len(self._ready) + 64  # amortised O(1)

    def _push_worker(self, w: _Worker, replace_top: bool = False) -> None:
        """(Re-)enter a worker in the heap of free ones; ``replace_top``:
        if its live entry is the top, replace it in one step."""
        top = (
            replace_top and self._wheap and self._wheap[0][2] is w and self._wheap[0][1] == w.entry
        )
        free = w.free
        if free <= 0 or w.session not in self._workers:
            w.entry = 0
            if top:
                heapq.heappop(self._wheap)
            return
        seq = next(self._seq)
        w.entry = seq
        if top:
            heapq.heapreplace(self._wheap, (-free, seq, w))
            return
        heapq.heappush(self._wheap, (-free, seq, w))
        if len(self._wheap) > self._wheap_limit:
            self._wheap = [e for e in self._wheap if e[2].entry == e[1]]
            heapq.heapify(self._wheap)
            self._wheap_limit = 2 * len(self._wheap) + 64

    def _place(self, job: Job, q: _Queue) -> _Worker | None:
        """The worker with the most free places that can run ``job`` now
        (one it has not failed on, if there is one)."""
        session = self._takers.pop(job, None) if self._takers else None
        taker = self._workers.get(session) if session is not None else None
        if taker is not None and taker.free > 0 and self._could_run(taker, job):
            return taker  # it was taken back for this worker
        hint, q.hint = q.hint, None
        if (
            hint is not None
            and hint.free > 0
            and hint.session in self._workers
            and self._could_run(hint, job)
            and not any(a["worker"] == hint.session.name for a in job.attempts)
        ):
            return hint  # the place it was retried for
        if job.options.needs:
            return self._place_with_resources(job)
        versions = job.client.versions
        failed = {a["worker"] for a in job.attempts} if job.attempts else ()
        aside: list[_Worker] = []
        chosen = None
        while self._wheap:
            _, seq, w = self._wheap[0]
            if w.entry != seq or w.leaving or w.load >= w.capacity:
                heapq.heappop(self._wheap)
                continue
            if compatible(versions, w.session.versions) and w.session.name not in failed:
                chosen = w
                break
            heapq.heappop(self._wheap)
            aside.append(w)
            if len(aside) > 64:
                break
        if chosen is None:
            chosen = next((w for w in aside if compatible(versions, w.session.versions)), None)
        if chosen is None and len(aside) > 64:  # many others first: look at all
            chosen = next(
                (
                    w
                    for w in self._workers.values()
                    if w.free > 0 and compatible(versions, w.session.versions)
                ),
                None,
            )
        for w in aside:
            self._push_worker(w)
        return chosen

    def _place_with_resources(self, job: Job) -> _Worker | None:
        candidates = [
            w
            for w in self._workers.values()
            if w.free > 0
            and fits(job.options.needs, w.avail)
            and compatible(job.client.versions, w.session.versions)
        ]
        if not candidates:
            return None
        failed = {a["worker"] for a in job.attempts}
        return max(candidates, key=lambda w: (w.session.name not in failed, w.free))

    def _unschedulable(self, job: Job) -> str:
        """Why no connected worker could ever run ``job`` ("" if one could,
        once it has room)."""
        if not job.options.needs or not self._workers:
            return ""
        key = (job.client.versions, job.options.resources)
        why = self._why.get(key)
        if why is None:
            why = self._why[key] = self._why_not(job)
        return why

    def _why_not(self, job: Job) -> str:
        needs = job.options.needs
        able = [w for w in self._workers if compatible(job.client.versions, w.versions)]
        if any(fits(needs, w.amounts) for w in able):
            return ""
        short = [n for n in sorted(needs) if not any(w.amounts.get(n) for w in able)]
        if short:
            return f"needs {describe_needs(needs)}; no connected worker has {', '.join(short)}"
        most = {n: max(w.amounts.get(n, 0) for w in able) for n in needs}
        return (
            f"needs {describe_needs(needs)}; no connected worker has that much "
            f"(the most any has: {describe_needs(most)})"
        )

    def _unpark(self, everything: bool = False, freed: _Worker | None = None) -> None:
        """Parked queues try again: all of them when workers change
        (``everything``); when places free on worker ``freed``, as many as
        it has free places, of those it could run, in turn (so an event
        costs no more than the places it frees, however many queues wait)."""
        if everything:
            self._why.clear()  # the workers changed
            parked = self._parked + self._parked_needs + self._stuck
            self._parked, self._parked_needs, self._stuck = [], [], []
            for q in parked:
                self._retry(q)
            return
        if freed is None or freed.free <= 0:
            return
        room = freed.free
        versions = freed.session.versions
        for name in ("_parked", "_parked_needs") if freed.avail else ("_parked",):
            parked: list[_Queue] = getattr(self, name)
            keep = []
            for i, q in enumerate(parked):
                if room <= 0:
                    keep.extend(parked[i:])
                    break
                if (q.needs and not fits(q.needs, freed.avail)) or not compatible(
                    q.client.session.versions, versions
                ):
                    keep.append(q)
                    continue
                q.hint = freed
                self._retry(q)
                room -= 1
            setattr(self, name, keep)

    def _retry(self, q: _Queue) -> None:
        q.parked = False
        if q.client.session in self._clients and not q.entry:
            self._push_ready(q)

    # -- status --------------------------------------------------------------

    def unschedulable(self, session: ClientSession) -> list[dict[str, Any]]:
        """This client's jobs that wait because no connected worker could
        ever run them: how many, and why."""
        client = self._clients.get(session)
        if client is None:
            return []
        out = []
        for q in client.queues.values():
            if q.parked and q.why and q.count:
                out.append({"jobs": q.count, "why": q.why})
        return out
