"""A worker loop for Python job handlers: lease, heartbeat, run, report.

The handler is any callable taking a `JobContext`. Its return value (JSON-serializable) completes
the job; raising `JobFailed(message, retryable=False)` fails it for good; any other exception
fails it as retryable (another attempt may succeed). While it runs, a heartbeat thread renews
the lease every TTL/3; when the lease is lost (cancelled, expired, or the daemon unreachable
until the lease surely expired) it sets `context.lost`, and the worker reports nothing for that
job: someone else may already hold it. Long handlers should check `context.lost` between
steps and stop early, and pass `context.lease_id` to the state/step routes so that a stale
worker's writes are refused.

An episode job records into a rollout: `context.rollout(model, policy_version)` creates the
job's rollout, or, when an earlier attempt of the job created one (that attempt crashed or lost
its lease), finds it, and answers `next_step`, the step to continue from:

    def episode(context):
        rollout = context.rollout("my-model", "v7", group="task-1/batch-3")
        for step in range(rollout["next_step"], context.payload["max_steps"]):
            ...
            context.client.post_rollout_step(context.rollout_id, step, ..., lease_id=context.lease_id)

One job at a time per `Worker` thread: `Worker(..., concurrency=N)` runs N in threads (each
leases, heartbeats and reports its own job). With `complete_batch_max=N` (above 1) the threads
hand their completions to one `CompletionCoalescer` (`agentd_client.completions`): alone when no
call is in flight, else several per `POST /v1/leases/complete`; each job still counts as
completed only once its own completion is durable, and an item refused on its own raises what
`Client.complete` would have. Failures and heartbeats keep their own calls.

By default (`lease_on_complete=True`) each thread's completion also asks for its next job
(`next`): the daemon leases one that is ready in the same durable record, and the thread runs it
without a lease round trip; when none came back it long-polls as before. Completions that go
through the coalescer do not ask.

A persistent actor (`agentctl worker --persistent -- python3 actor.py`) loads its model once and
handles many jobs in one process: `serve_persistent(handle)` speaks the worker's line protocol on
stdin/stdout (docs/persistent-actors.md) and calls the same kind of handler with a
`PersistentJobContext` (a `JobContext` whose `cancelled`, also `lost`, is set when the worker
sends a cancel):

    from agentd_client.worker import keep_stdout_for_protocol, serve_persistent
    keep_stdout_for_protocol()          # first thing: stray prints go to stderr, not the protocol
    model = load_model()                # once
    serve_persistent(lambda ctx: {"completion": model.generate(ctx.payload["prompt"])})
"""

import json
import os
import queue
import socket
import sys
import threading
import time
import traceback

from .client import AgentdError, Client
from .completions import CompletionCoalescer

#: Heartbeat every lease TTL divided by this.
HEARTBEAT_DIVISOR = 3
#: Shortest pause between two heartbeats, in seconds.
HEARTBEAT_INTERVAL_MIN_S = 0.05
#: Longest failure message sent to the daemon (it refuses longer ones).
ERROR_CHARS_MAX = 8000


class JobFailed(Exception):
    """Raise from a handler to fail the job with this message; `retryable=False` makes it dead
    at once (bad input: another attempt cannot help)."""

    def __init__(self, message, retryable=True):
        super().__init__(message)
        self.retryable = retryable


class JobContext:
    """What a handler gets for one leased job."""

    def __init__(self, client, grant):
        self.client = client
        #: The lease grant as the daemon sent it.
        self.grant = grant
        self.job = grant["job"]
        self.job_id = grant["job_id"]
        self.lease_id = grant["lease_id"]
        self.attempt = grant["attempt"]
        self.payload = self.job.get("payload")
        self.task_id = self.job.get("task_id")
        #: The job's rollout: the one an earlier attempt created (from the grant), or the one
        #: `rollout()` created or found; None until then.
        self.rollout_id = self.job.get("rollout_id")
        #: Set when the lease is lost: stop, and do not write anything more for this job.
        self.lost = threading.Event()

    def rollout(self, model, policy_version, group=None, sampling=None, state_from=None):
        """Creates this job's rollout of `task_id` under the lease, or finds the one an earlier
        attempt created (a job has one rollout), and returns the daemon's answer:
        `{"rollout_id", "task_id", "group", "created", "steps", "next_step", ...}`. Sets
        `self.rollout_id`. `next_step` is where the episode continues: 0 for a new rollout,
        one past the highest recorded step for a resumed one (so a retried episode records
        every step exactly once). `group` defaults to the payload's `"group"` (what `agentctl
        submit --rollouts` writes), so every attempt names the same one; a resumed attempt must
        name the group, model and policy version the rollout began with (else 409 `conflict`).
        `sampling` and `state_from` only matter when the rollout is created. Raises
        `AgentdError` (`lease_lost` when the lease is gone); `ValueError` when the job has no
        `task_id`."""
        if not self.task_id:
            raise ValueError("job {} has no task_id: a rollout belongs to a task".format(self.job_id))
        if group is None and isinstance(self.payload, dict):
            group = self.payload.get("group")
        answer = self.client.create_rollout(self.task_id, model, policy_version, sampling=sampling,
                                            group=group, lease_id=self.lease_id,
                                            state_from=state_from)
        self.rollout_id = answer["rollout_id"]
        return answer


class _Heartbeat(threading.Thread):
    """Renews one lease until stopped; sets `context.lost` when the lease is gone."""

    def __init__(self, context, divisor):
        super().__init__(daemon=True, name="agentd-heartbeat-" + str(context.lease_id))
        self.context = context
        self.ttl_s = context.job["lease_ttl_ms"] / 1000.0
        self.interval_s = max(self.ttl_s / divisor, HEARTBEAT_INTERVAL_MIN_S)
        self.done = threading.Event()
        self.beats = 0

    def run(self):
        # The lease was granted just now; each answered heartbeat renews it for a TTL from when
        # it was sent (a conservative reading of the daemon's clock).
        held_until = time.monotonic() + self.ttl_s
        while not self.done.wait(self.interval_s):
            sent_at = time.monotonic()
            try:
                self.context.client.heartbeat(self.context.lease_id)
                held_until = sent_at + self.ttl_s
                self.beats += 1
            except AgentdError as error:
                if error.code in ("lease_lost", "not_found") or time.monotonic() >= held_until:
                    self.context.lost.set()
                    return

    def stop(self):
        self.done.set()
        self.join()


class Worker:
    """Leases jobs from `queues` and runs `handler(context)` for each.

    `counts` tracks `completed`, `failed` and `lost` jobs. `concurrency` threads run jobs at
    once in `run()`; `complete_batch_max` above 1 sends their completions through one
    `CompletionCoalescer` (see the module documentation).
    """

    def __init__(self, client, queues, handler, worker_id=None, tags=None, wait_ms=20000,
                 heartbeat_divisor=HEARTBEAT_DIVISOR, concurrency=1, complete_batch_max=1,
                 lease_on_complete=True):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if complete_batch_max < 1:
            raise ValueError("complete_batch_max must be at least 1")
        self.client = client
        self.queues = list(queues)
        self.handler = handler
        self.worker_id = worker_id or "{}-py-{}".format(socket.gethostname(), os.getpid())
        self.tags = tags
        self.wait_ms = wait_ms
        self.heartbeat_divisor = max(2, heartbeat_divisor)
        self.concurrency = concurrency
        self.counts = {"completed": 0, "failed": 0, "lost": 0}
        self._counts_lock = threading.Lock()
        self.completer = (CompletionCoalescer(client, complete_batch_max)
                          if complete_batch_max > 1 else None)
        self.lease_on_complete = lease_on_complete and self.completer is None

    def run_once(self, wait_ms=None):
        """Leases one job and handles it. Returns False when no job came within the wait."""
        grants = self.client.lease(self.worker_id, self.queues, tags=self.tags, max_jobs=1,
                                   wait_ms=self.wait_ms if wait_ms is None else wait_ms)
        if not grants:
            return False
        self.handle(grants[0])
        return True

    def run(self, max_jobs=None, stop=None):
        """Handles jobs until `max_jobs` were handled or `stop` (a `threading.Event`) is set,
        in `concurrency` threads. Transient daemon errors are retried with backoff; any other
        error stops every thread and is raised once they returned."""
        stop = stop if stop is not None else threading.Event()
        budget = _JobBudget(max_jobs)
        if self.concurrency == 1:
            self._run_thread(budget, stop)
            return dict(self.counts)
        failures = []
        halt = threading.Event()

        def run_thread():
            try:
                self._run_thread(budget, _AnyEvent(stop, halt))
            except BaseException as error:  # noqa: BLE001 - raised again by run()
                failures.append(error)
                halt.set()

        threads = [threading.Thread(target=run_thread, name="agentd-worker-{}".format(index))
                   for index in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return dict(self.counts)

    def _run_thread(self, budget, stop):
        """One thread of `run`: leases one job at a time while the budget lasts, and runs the
        job each completion leased with it (already taken from the budget) before leasing
        again."""
        backoff_s = 0.1
        held = None
        while held is not None or (not stop.is_set() and budget.take()):
            try:
                if held is None:
                    grants = self.client.lease(self.worker_id, self.queues, tags=self.tags,
                                               max_jobs=1, wait_ms=self.wait_ms)
                    if not grants:
                        budget.give_back()
                        continue
                    held = grants[0]
                grant, held = held, None
                held = self._handle(grant, budget, stop)
                backoff_s = 0.1
            except AgentdError as error:
                budget.give_back()
                if not error.transient:
                    raise
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)

    def handle(self, grant):
        """Runs the handler for one grant under heartbeats and reports how it ended."""
        self._handle(grant, None, None)

    def _handle(self, grant, budget, stop):
        """`handle`; with a `budget` (and `lease_on_complete`), a completion asks for the next
        job, which is returned (None when none came)."""
        context = JobContext(self.client, grant)
        heartbeat = _Heartbeat(context, self.heartbeat_divisor)
        heartbeat.start()
        outcome = None
        try:
            result = self.handler(context)
            outcome = ("complete", result)
        except JobFailed as failure:
            outcome = ("fail", str(failure), failure.retryable)
        except Exception:  # noqa: BLE001 - any handler bug fails this job, not the worker
            outcome = ("fail", traceback.format_exc()[-ERROR_CHARS_MAX:], True)
        finally:
            heartbeat.stop()
        if context.lost.is_set():
            self._count("lost")
            return None
        next_grant = None
        try:
            if outcome[0] == "complete":
                next_grant = self._complete(context.lease_id, outcome[1], budget, stop)
                self._count("completed")
            else:
                self.client.fail(context.lease_id, outcome[1][:ERROR_CHARS_MAX], outcome[2])
                self._count("failed")
        except AgentdError as error:
            if error.code != "lease_lost":
                raise
            self._count("lost")
        return next_grant

    def _complete(self, lease_id, result, budget, stop):
        """Returns once the completion is durable, through the coalescer when there is one;
        with the job leased with it, when it asked for one (a budget to take it from, not
        stopping) and one was ready."""
        if self.completer is not None:
            self.completer.complete(lease_id, result)
            return None
        ask = (self.lease_on_complete and budget is not None and not stop.is_set()
               and budget.take())
        if not ask:
            self.client.complete(lease_id, result)
            return None
        next_request = {"worker_id": self.worker_id, "queues": self.queues, "max_jobs": 1}
        if self.tags is not None:
            next_request["tags"] = self.tags
        try:
            answer = self.client.complete(lease_id, result, next=next_request)
        except BaseException:
            budget.give_back()
            raise
        grants = answer.get("next_leases") or []
        if not grants:
            budget.give_back()
            return None
        return grants[0]

    def _count(self, outcome):
        with self._counts_lock:
            self.counts[outcome] += 1


class _JobBudget:
    """The jobs `run(max_jobs=)` may still lease, shared by its threads: a thread takes one
    before it leases and gives it back when no job came."""

    def __init__(self, max_jobs):
        self._left = max_jobs
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            if self._left is None:
                return True
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give_back(self):
        with self._lock:
            if self._left is not None:
                self._left += 1


class _AnyEvent:
    """Set when either event is: the caller's `stop`, or a sibling thread's fatal error."""

    def __init__(self, first, second):
        self._events = (first, second)

    def is_set(self):
        return any(event.is_set() for event in self._events)


#: The version of the persistent-actor protocol `serve_persistent` speaks (`agentctl worker
#: --persistent` sets AGENTD_PERSISTENT_PROTOCOL to the version it speaks).
PROTOCOL_VERSION = 1

_protocol_stream = None
_protocol_stream_lock = threading.Lock()


class Cancelled(Exception):
    """Raise from a persistent handler once `ctx.cancelled` is set, to stop the job;
    `serve_persistent` answers `cancelled` (it does so too when the handler returns after a
    cancel)."""


class PersistentJobContext(JobContext):
    """What a persistent handler gets for one job: everything a `JobContext` has (`job_id`,
    `lease_id`, `attempt`, `payload`, `task_id`, `job`, `client`, `rollout()`), plus `slot` and
    `cancelled`, a `threading.Event` set when the worker sends a cancel for this job (the lease
    was lost, the worker's drain deadline passed, or the GPU's model server went down). `lost` is
    the same event, so a handler written for `Worker` works unchanged. `cancel_reason` says which
    (`lease_lost`, `draining`, `server_lost`)."""

    def __init__(self, client, line):
        grant = {"job_id": line.get("job_id"), "lease_id": line.get("lease_id"),
                 "attempt": line.get("attempt"), "job": line}
        super().__init__(client, grant)
        self.slot = line.get("slot")
        self.cancelled = self.lost
        self.cancel_reason = None


def keep_stdout_for_protocol():
    """Keeps file descriptor 1 for the protocol and sends everything else written to stdout to
    stderr instead (Python prints, C libraries, child processes), so a stray print cannot break
    the protocol and lands in the job's log. Returns the protocol stream. Call it first thing in
    an actor, before imports that may print; `serve_persistent` calls it too. Idempotent."""
    global _protocol_stream
    with _protocol_stream_lock:
        if _protocol_stream is None:
            sys.stdout.flush()
            protocol_fd = os.dup(1)
            os.dup2(2, 1)
            _protocol_stream = os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n")
            try:
                # stdout is now the stderr pipe: line by line, so logs keep their order.
                sys.stdout.reconfigure(line_buffering=True)
            except (AttributeError, ValueError):
                pass
        return _protocol_stream


def serve_persistent(handle, client=None, stdin=None, stdout=None):
    """Runs this process as a persistent actor of `agentctl worker --persistent`: says hello,
    then for each job line on stdin calls `handle(ctx)` with a `PersistentJobContext` and writes
    its answer: the return value (JSON-serializable) as the result; `JobFailed(message,
    retryable=)` as a failure; any other exception as a retryable failure with the traceback;
    `cancelled` when the job was cancelled meanwhile (or the handler raised `Cancelled`).
    Returns the number of jobs handled once stdin ends (the worker is stopping): then exit.

    One job at a time; a reader thread takes `cancel` lines while the handler runs and sets
    `ctx.cancelled`. Python cannot stop a thread, so a handler must check `ctx.cancelled`
    between steps: the worker kills an actor that does not answer a cancel within its grace
    period (`--persistent-cancel-grace`, default 10 s) and starts a new one.

    `client` defaults to `Client()` (the worker gives the actor AGENTD_URL, AGENTD_TOKEN,
    AGENTD_CA_CERT). `stdin`/`stdout` are for tests; by default stdin, and stdout kept for the
    protocol by `keep_stdout_for_protocol()`."""
    out = stdout if stdout is not None else keep_stdout_for_protocol()
    lines_in = stdin if stdin is not None else sys.stdin
    if client is None:
        client = Client()
    write_lock = threading.Lock()

    def send(message):
        line = json.dumps(message, separators=(",", ":"), allow_nan=False)
        # What the handler wrote on stderr belongs to this job: out before the answer.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        with write_lock:
            out.write(line + "\n")
            out.flush()

    jobs = queue.Queue()
    state_lock = threading.Lock()
    state = {"running": None, "early_cancels": {}}

    def read_lines():
        try:
            for raw in lines_in:
                try:
                    message = json.loads(raw)
                except ValueError:
                    _say("ignoring a line on stdin that is not JSON: {!r}".format(raw[:200]))
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "job":
                    jobs.put(message)
                elif kind == "cancel":
                    with state_lock:
                        context = state["running"]
                        if context is not None and context.job_id == message.get("job_id"):
                            context.cancel_reason = message.get("reason")
                            context.cancelled.set()
                        elif len(state["early_cancels"]) < 64:
                            # A cancel that overtook its job: applied when the job starts.
                            state["early_cancels"][message.get("job_id")] = message.get("reason")
                else:
                    _say("ignoring a message of unknown type {!r} on stdin".format(kind))
        except (OSError, ValueError) as error:
            _say("stdin failed: {}".format(error))
        finally:
            jobs.put(None)

    send({"type": "hello", "protocol": PROTOCOL_VERSION, "pid": os.getpid()})
    reader = threading.Thread(target=read_lines, name="agentd-persistent-stdin", daemon=True)
    reader.start()
    handled = 0
    while True:
        message = jobs.get()
        if message is None:
            return handled
        context = PersistentJobContext(client, message)
        with state_lock:
            if context.job_id in state["early_cancels"]:
                context.cancel_reason = state["early_cancels"][context.job_id]
                context.cancelled.set()
            state["early_cancels"].clear()
            state["running"] = context
        answer = _answer(handle, context)
        with state_lock:
            state["running"] = None
        try:
            send(answer)
        except (TypeError, ValueError) as error:
            send({"type": "failure", "job_id": context.job_id, "retryable": False,
                  "error": "the handler's result is not JSON-serializable: {}".format(error)})
        handled += 1


def _answer(handle, context):
    """Runs the handler and turns its outcome into an answer line."""
    cancelled = {"type": "cancelled", "job_id": context.job_id}
    try:
        result = handle(context)
    except Cancelled:
        return cancelled
    except JobFailed as failure:
        if context.cancelled.is_set():
            return cancelled
        return {"type": "failure", "job_id": context.job_id, "error": str(failure)[:ERROR_CHARS_MAX],
                "retryable": failure.retryable}
    except Exception:  # noqa: BLE001 - any handler bug fails this job, not the actor
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        if context.cancelled.is_set():
            return cancelled
        return {"type": "failure", "job_id": context.job_id, "error": trace[-ERROR_CHARS_MAX:],
                "retryable": True}
    if context.cancelled.is_set():
        return cancelled
    return {"type": "result", "job_id": context.job_id, "result": result}


def _say(text):
    sys.stderr.write("agentd_client.serve_persistent: {}\n".format(text))
