"""The completion coalescer of `Worker(..., complete_batch_max=N)`, the Python twin of
`agentctl worker --complete-batch-max N`: the worker's threads hand their completions to one
completer thread, which sends them to the daemon.

When no call is in flight, a completion goes out at once, alone, through the single
`POST /v1/leases/{id}/complete` (an idle worker adds no latency). Completions that arrive while
a call is in flight wait and go together in the next `POST /v1/leases/complete` (up to
`batch_max`, and never more than the route's limit of 10000). Why: each completion is answered
only once its record is durable, so while one call waits for its fsync the next ones can only
wait too; together they cost the daemon one record and one request.

`complete()` blocks until ITS item is answered, so a job is counted done only once its
completion is durable, as with `Client.complete`. An item refused on its own (`lease_lost`,
`not_found`, `string_too_long`, `payload_too_large`, ...) raises the same `AgentdError` (same
status and code) that `Client.complete` would have raised; a failure of the whole call (no
answer, an overloaded daemon) raises that error in every caller of the call, and is not retried
here, as `Client.complete` is not. Only `body_too_large` (the batch itself was over the daemon's
body limit, which no single completion would have hit) sends the items again, one by one.
"""

import queue
import threading

from .client import ERROR_CODES, AgentdError

#: Most completions in one `POST /v1/leases/complete` (the daemon's fixed limit of the route).
COMPLETE_BATCH_MAX = 10000
#: Completions waiting for the completer thread, at most; a full queue makes `complete` wait.
WAITING_COMPLETIONS_MAX = COMPLETE_BATCH_MAX


class _Waiting:
    """One completion handed over, and its answer once the completer has it."""

    def __init__(self, item):
        self.item = item
        self.answered = threading.Event()
        self.job_id = None
        self.error = None

    def answer(self, job_id=None, error=None):
        self.job_id = job_id
        self.error = error
        self.answered.set()


class CompletionCoalescer:
    """Sends the completions of many threads, several per call while a call is in flight.

    `client` needs `complete(lease_id, result, log_tail)` and `complete_many(items)` (a `Client`).
    Safe to share between threads; `close()` stops the completer once it answered what it has.
    """

    def __init__(self, client, batch_max):
        self.client = client
        self.batch_max = max(1, min(int(batch_max), COMPLETE_BATCH_MAX))
        self._waiting = queue.Queue(maxsize=WAITING_COMPLETIONS_MAX)
        self._thread = threading.Thread(target=self._complete_until_closed,
                                        name="agentd-completer", daemon=True)
        self._thread.start()

    def complete(self, lease_id, result=None, log_tail=None):
        """Completes `lease_id` and returns its job id once the completion is durable; raises
        the `AgentdError` that `Client.complete` would have raised."""
        waiting = _Waiting(_drop_none({"lease_id": lease_id, "result": result,
                                       "log_tail": log_tail}))
        self._waiting.put(waiting)
        waiting.answered.wait()
        if waiting.error is not None:
            raise waiting.error
        return waiting.job_id

    def close(self):
        """Stops the completer thread after the completions already handed over."""
        self._waiting.put(None)
        self._thread.join()

    def _complete_until_closed(self):
        closing = False
        while not closing:
            first = self._waiting.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    following = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    closing = True
                    break
                batch.append(following)
            self._send(batch)

    def _send(self, batch):
        """One call for `batch` (the single route when alone); answers every item, whatever
        happens, so no caller waits forever."""
        try:
            if len(batch) == 1:
                self._send_each(batch)
            else:
                self._send_together(batch)
        except Exception as error:  # noqa: BLE001 - a bug here must reach the callers, not hang them
            for waiting in batch:
                if not waiting.answered.is_set():
                    waiting.answer(error=_copy(error) if isinstance(error, AgentdError) else error)

    def _send_each(self, batch):
        for waiting in batch:
            item = waiting.item
            try:
                answer = self.client.complete(item["lease_id"], item.get("result"),
                                              log_tail=item.get("log_tail"))
            except AgentdError as error:
                waiting.answer(error=error)
                continue
            waiting.answer(job_id=answer["job_id"])

    def _send_together(self, batch):
        try:
            answer = self.client.complete_many([waiting.item for waiting in batch])
        except AgentdError as error:
            if error.code == "body_too_large":
                return self._send_each(batch)
            # Every caller raises its own copy: one exception object raised in several
            # threads would share (and garble) its traceback.
            for waiting in batch:
                waiting.answer(error=_copy(error))
            return
        results = answer.get("results") or []
        for position, waiting in enumerate(batch):
            result = results[position] if position < len(results) else None
            waiting.answer(**_item_outcome(waiting.item["lease_id"], result))


def _item_outcome(lease_id, result):
    """An item's result as `Client.complete` would have answered it."""
    if result is None or result.get("lease_id") != lease_id:
        return {"error": AgentdError(0, "decode", "POST /v1/leases/complete: no result for {} "
                                     "in the answer".format(lease_id))}
    error = result.get("error")
    if error:
        code = error.get("code", "unknown")
        # A code this client does not know is a newer daemon's refusal: 422, "not as is".
        return {"error": AgentdError(ERROR_CODES.get(code, 422), code, error.get("message", ""))}
    if result.get("job_id") is None:
        return {"error": AgentdError(0, "decode", "POST /v1/leases/complete: the result for {} "
                                     "has neither a job nor an error".format(lease_id))}
    return {"job_id": result["job_id"]}


def _copy(error):
    return AgentdError(error.status, error.code, error.message)


def _drop_none(fields):
    return {key: value for key, value in fields.items() if value is not None}
