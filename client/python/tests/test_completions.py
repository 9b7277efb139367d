"""The completion coalescer against a fake daemon whose calls wait on a gate, so a test decides
exactly which completions arrive while a call is in flight. No daemon needed."""

import threading
import time
import unittest

from agentd_client import AgentdError
from agentd_client.completions import CompletionCoalescer


def wait_for(predicate, what, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.001)


class FakeDaemon:
    """Records each call when it starts, then waits for the gate; leases in `refused` fail with
    their (status, code), every other `lease_<n>` completes `job_<n>`."""

    def __init__(self, refused=None, many_fails_with=None):
        self.calls = []
        self.gate = threading.Semaphore(0)
        self.refused = refused or {}
        self.many_fails_with = many_fails_with

    def complete(self, lease_id, result=None, log_tail=None):
        self.calls.append(("one", lease_id))
        self.gate.acquire()
        if lease_id in self.refused:
            status, code = self.refused[lease_id]
            raise AgentdError(status, code, "refused")
        return {"job_id": lease_id.replace("lease", "job"), "state": "completed"}

    def complete_many(self, items):
        self.calls.append(("many", [item["lease_id"] for item in items]))
        self.gate.acquire()
        if self.many_fails_with:
            raise AgentdError(*self.many_fails_with, "the whole call failed")
        results = []
        for item in items:
            lease_id = item["lease_id"]
            if lease_id in self.refused:
                results.append({"lease_id": lease_id,
                                "error": {"code": self.refused[lease_id][1], "message": "refused"}})
            else:
                results.append({"lease_id": lease_id, "job_id": lease_id.replace("lease", "job")})
        return {"results": results, "lsn": 9}


class Slot(threading.Thread):
    """A worker thread completing one lease: keeps its job id or its error."""

    def __init__(self, coalescer, lease_id):
        super().__init__(daemon=True)
        self.coalescer, self.lease_id = coalescer, lease_id
        self.job_id = self.error = None
        self.start()

    def run(self):
        try:
            self.job_id = self.coalescer.complete(self.lease_id, {"ok": True})
        except AgentdError as error:
            self.error = error


def in_flight_then_queued(daemon, batch_max, queued):
    """lease_1 goes out alone and holds the gate; `queued` are handed over meanwhile."""
    coalescer = CompletionCoalescer(daemon, batch_max)
    first = Slot(coalescer, "lease_1")
    wait_for(lambda: daemon.calls == [("one", "lease_1")], "the first call")
    rest = [Slot(coalescer, lease_id) for lease_id in queued]
    wait_for(lambda: coalescer._waiting.qsize() == len(queued), "the queued completions")
    return coalescer, first, rest


class CompletionCoalescerTest(unittest.TestCase):
    def test_a_completion_in_an_idle_state_goes_out_alone(self):
        daemon = FakeDaemon()
        daemon.gate.release()
        coalescer = CompletionCoalescer(daemon, 8)
        self.assertEqual(coalescer.complete("lease_7"), "job_7")
        self.assertEqual(daemon.calls, [("one", "lease_7")])
        coalescer.close()

    def test_completions_arriving_during_a_call_go_together_in_the_next(self):
        daemon = FakeDaemon()
        coalescer, first, rest = in_flight_then_queued(daemon, 8, ["lease_2", "lease_3", "lease_4"])
        daemon.gate.release(2)
        for slot in [first] + rest:
            slot.join(10)
            self.assertEqual(slot.job_id, slot.lease_id.replace("lease", "job"))
        self.assertEqual(daemon.calls, [("one", "lease_1"),
                                        ("many", ["lease_2", "lease_3", "lease_4"])])
        coalescer.close()

    def test_a_call_carries_at_most_batch_max(self):
        daemon = FakeDaemon()
        coalescer, first, rest = in_flight_then_queued(daemon, 2, ["lease_2", "lease_3", "lease_4"])
        daemon.gate.release(3)
        for slot in [first] + rest:
            slot.join(10)
            self.assertIsNone(slot.error)
        self.assertEqual(daemon.calls, [("one", "lease_1"), ("many", ["lease_2", "lease_3"]),
                                        ("one", "lease_4")])
        coalescer.close()

    def test_an_item_refused_on_its_own_raises_only_in_its_thread_as_complete_would(self):
        daemon = FakeDaemon(refused={"lease_3": (409, "lease_lost")})
        coalescer, first, rest = in_flight_then_queued(daemon, 8, ["lease_2", "lease_3", "lease_4"])
        daemon.gate.release(2)
        for slot in [first] + rest:
            slot.join(10)
        self.assertEqual([slot.job_id for slot in rest], ["job_2", None, "job_4"])
        self.assertEqual((rest[1].error.status, rest[1].error.code), (409, "lease_lost"))
        coalescer.close()

    def test_a_failed_whole_call_raises_in_every_thread_and_is_not_retried(self):
        daemon = FakeDaemon(many_fails_with=(503, "unavailable"))
        coalescer, first, rest = in_flight_then_queued(daemon, 8, ["lease_2", "lease_3"])
        daemon.gate.release(2)
        for slot in [first] + rest:
            slot.join(10)
        self.assertEqual(first.job_id, "job_1")
        for slot in rest:
            self.assertEqual((slot.error.status, slot.error.code), (503, "unavailable"))
            self.assertTrue(slot.error.transient)
        self.assertEqual(daemon.calls, [("one", "lease_1"), ("many", ["lease_2", "lease_3"])])
        coalescer.close()

    def test_a_batch_over_the_body_limit_is_sent_again_one_by_one(self):
        daemon = FakeDaemon(many_fails_with=(413, "body_too_large"))
        coalescer, first, rest = in_flight_then_queued(daemon, 8, ["lease_2", "lease_3"])
        daemon.gate.release(4)
        for slot in [first] + rest:
            slot.join(10)
            self.assertIsNone(slot.error)
        self.assertEqual(daemon.calls, [("one", "lease_1"), ("many", ["lease_2", "lease_3"]),
                                        ("one", "lease_2"), ("one", "lease_3")])
        coalescer.close()


if __name__ == "__main__":
    unittest.main()
