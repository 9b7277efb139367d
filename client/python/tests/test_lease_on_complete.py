"""Complete-then-lease from Python: `Client.complete(..., next=...)` and the `Worker` that asks
for its next job with each completion (`lease_on_complete`, the default). Needs a daemon:
scripts/test-python starts one and sets AGENTD_URL."""

import os
import unittest
import uuid

from agentd_client import AgentdError, Client, Worker

URL = os.environ.get("AGENTD_URL")


def unique(prefix):
    return "{}-{}".format(prefix, uuid.uuid4().hex[:10])


@unittest.skipUnless(URL, "needs a daemon: run scripts/test-python (it sets AGENTD_URL)")
class LeaseOnCompleteTest(unittest.TestCase):
    def setUp(self):
        self.client = Client(URL)

    def test_a_worker_leases_its_next_job_with_each_completion(self):
        queue = unique("chained")
        jobs = [self.client.submit(queue, "x", {"n": n}, max_attempts=1)["job_id"]
                for n in range(6)]
        counts = Worker(self.client, [queue], lambda context: {"n": context.payload["n"]},
                        wait_ms=500).run(max_jobs=len(jobs))
        self.assertEqual(counts, {"completed": len(jobs), "failed": 0, "lost": 0})
        for n, job_id in enumerate(jobs):
            job = self.client.get_job(job_id)
            self.assertEqual((job["state"], job["attempt"], job["result"]), ("completed", 1, {"n": n}))
        leased_with_a_completion = self._leased_with_a_completion(jobs)
        # The first job needs a lease call; every later one came with the previous completion.
        self.assertEqual(leased_with_a_completion, set(jobs[1:]))

    def test_a_bad_next_completes_nothing(self):
        queue = unique("q")
        job_id = self.client.submit(queue, "x", {})["job_id"]
        lease_id = self.client.lease("py-test", [queue], wait_ms=1000)[0]["lease_id"]
        with self.assertRaises(AgentdError) as refused:
            self.client.complete(lease_id, {"ok": 1},
                                 next={"worker_id": "py-test", "queues": [queue], "max_jobs": 0})
        self.assertEqual((refused.exception.status, refused.exception.code), (422, "invalid_request"))
        self.assertEqual(self.client.get_job(job_id)["state"], "leased")
        answer = self.client.complete(lease_id, {"ok": 1},
                                      next={"worker_id": "py-test", "queues": [queue]})
        self.assertEqual((answer["state"], answer["next_leases"]), ("completed", []))

    def test_without_lease_on_complete_every_job_is_leased_by_its_own_call(self):
        queue = unique("plain")
        jobs = [self.client.submit(queue, "x", {"n": n}, max_attempts=1)["job_id"]
                for n in range(3)]
        counts = Worker(self.client, [queue], lambda context: None, wait_ms=500,
                        lease_on_complete=False).run(max_jobs=len(jobs))
        self.assertEqual(counts, {"completed": len(jobs), "failed": 0, "lost": 0})
        self.assertEqual(self._leased_with_a_completion(jobs), set())

    def _leased_with_a_completion(self, jobs):
        """The jobs of `jobs` leased in a record that also completed one of them."""
        leased_with_a_completion = set()
        after = 0
        while True:
            page = self.client.get("/v1/events", {"after": after, "limit": 1000})
            if not page["events"]:
                break
            by_record = {}
            for event in page["events"]:
                if event.get("job_id") in jobs:
                    by_record.setdefault(event["lsn"], []).append(event)
            for events in by_record.values():
                if any(event["type"] == "job_completed" for event in events):
                    leased_with_a_completion.update(
                        event["job_id"] for event in events if event["type"] == "job_leased")
            after = page["next_after"]
        return leased_with_a_completion
