"""Tests of the Python client against a real agentd (scripts/test-python starts one and sets
AGENTD_URL). Each test uses its own queue and task ids, so they share one daemon safely."""

import os
import threading
import time
import unittest
import uuid

from agentd_client import AgentdError, Client, JobFailed, Worker

URL = os.environ.get("AGENTD_URL")


def unique(prefix):
    return "{}-{}".format(prefix, uuid.uuid4().hex[:10])


def wait_for(predicate, timeout_s=20.0, what="a condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out after {} s waiting for {}".format(timeout_s, what))


PATTERN = {"kind": "pattern", "language": "python", "pattern": "print($A)", "rewrite": "logger.info($A)"}


@unittest.skipUnless(URL, "needs a daemon: run scripts/test-python (it sets AGENTD_URL)")
class ClientTest(unittest.TestCase):
    def setUp(self):
        self.client = Client(URL)

    def test_submit_lease_complete_round_trip(self):
        queue = unique("q")
        submitted = self.client.submit(queue, "echo", {"word": "hi"}, task_id="t-1", max_attempts=2)
        self.assertTrue(submitted["job_id"].startswith("job_"))
        grants = self.client.lease("py-test", [queue], max_jobs=5, wait_ms=1000)
        self.assertEqual(len(grants), 1)
        grant = grants[0]
        self.assertEqual(grant["job"]["payload"], {"word": "hi"})
        self.assertEqual(grant["job"]["task_id"], "t-1")
        self.assertGreater(self.client.heartbeat(grant["lease_id"])["expires_at_ms"], 0)
        self.client.complete(grant["lease_id"], {"echo": "hi"})
        job = self.client.get_job(submitted["job_id"])
        self.assertEqual(job["state"], "completed")
        self.assertEqual(job["result"], {"echo": "hi"})
        self.assertEqual([entry["event"] for entry in job["history"]][-1], "job_completed")

    def test_batch_submit_and_non_retryable_failure(self):
        queue = unique("q")
        answer = self.client.submit_batch([
            {"queue": queue, "kind": "a", "payload": {"n": 1}, "max_attempts": 3},
            {"queue": queue, "kind": "b", "payload": {"n": 2}, "priority": 5},
        ])
        self.assertEqual(len(answer["jobs"]), 2)
        grants = self.client.lease("py-test", [queue], max_jobs=1, wait_ms=1000)
        self.assertEqual(grants[0]["job"]["kind"], "b", "higher priority first")
        self.client.fail(grants[0]["lease_id"], "bad input", retryable=False)
        failed = self.client.get_job(grants[0]["job_id"])
        self.assertEqual(failed["state"], "dead")
        self.assertEqual(failed["last_error"], "bad input")

    def test_errors_carry_status_and_stable_code(self):
        with self.assertRaises(AgentdError) as caught:
            self.client.get_job("job_999999999")
        self.assertEqual((caught.exception.status, caught.exception.code), (404, "not_found"))
        self.assertFalse(caught.exception.transient)
        queue = unique("q")
        self.client.submit(queue, "x", {})
        grant = self.client.lease("py-test", [queue], wait_ms=1000)[0]
        self.client.complete(grant["lease_id"])
        with self.assertRaises(AgentdError) as caught:
            self.client.heartbeat(grant["lease_id"])
        self.assertEqual(caught.exception.code, "lease_lost")
        with self.assertRaises(AgentdError) as caught:
            self.client.submit("", "x", {})
        self.assertEqual(caught.exception.status, 422)
        unreachable = Client("http://127.0.0.1:9", timeout=2)
        with self.assertRaises(AgentdError) as caught:
            unreachable.health()
        self.assertEqual((caught.exception.status, caught.exception.code), (0, "transport"))
        self.assertTrue(caught.exception.transient)

    def test_task_state_updates_merge_and_render(self):
        task = unique("task/with slash")
        empty = self.client.get_task_state(task)
        self.assertEqual((empty["updates"], empty["lsn"]), (0, 0))
        self.client.post_task_state(task, {"goals": ["replace print with logging"]}, next_focus="app.py")
        answer = self.client.post_task_state(task, decisions=["use logger.info"])
        self.assertEqual(answer["state"]["goals"], ["replace print with logging"])
        state = self.client.get_task_state(task)
        self.assertEqual(state["task_id"], task)
        self.assertEqual(state["updates"], 2)
        self.assertEqual(state["state"]["decisions"], ["use logger.info"])
        self.assertIn("replace print with logging", state["rendered"])

    def test_step_sandbox_reward_make_a_trajectory(self):
        task = unique("task")
        self.client.post_step(task, 0, model="m", policy_version="v", action=PATTERN,
                              think="swap print", state_update={"history": ["step 0"]},
                              sampling={"temperature": 0.2})
        self.client.post_sandbox(task, 0, "ok", exit_code=0, diff="-print(1)\n+logger.info(1)\n",
                                 tests_passed=1, tests_failed=0, duration_ms=12)
        self.client.post_reward(task, 0, 1.0, True, components={"applied": 1.0})
        self.client.post_step(task, 1, model="m", policy_version="v",
                              action={"kind": "rule", "yaml": "id: r\nlanguage: python\nrule:\n  pattern: x\nfix: y\n"})
        with self.assertRaises(AgentdError) as caught:
            self.client.post_reward(task, 0, 0.0, False)
        self.assertEqual(caught.exception.code, "conflict")
        with self.assertRaises(AgentdError) as caught:
            self.client.post_sandbox(task, 7, "ok")
        self.assertEqual(caught.exception.code, "not_found")
        steps = self.client.get_trajectory(task)["steps"]
        self.assertEqual([step["step"] for step in steps], [0, 1])
        self.assertEqual(steps[0]["action"], PATTERN)
        self.assertEqual(steps[0]["sandbox"]["outcome"], "ok")
        self.assertEqual(steps[0]["reward"]["verified"], True)
        self.assertEqual(steps[0]["reward"]["source"], "rule")
        self.assertEqual(steps[1]["state_before"]["history"], ["step 0"])
        self.assertIsNone(steps[1]["reward"])


@unittest.skipUnless(URL, "needs a daemon: run scripts/test-python (it sets AGENTD_URL)")
class WorkerTest(unittest.TestCase):
    def setUp(self):
        self.client = Client(URL)

    def test_handler_results_complete_and_job_failed_fails(self):
        queue = unique("w")
        good = self.client.submit(queue, "x", {"n": 2})["job_id"]
        bad = self.client.submit(queue, "x", {"n": -1}, max_attempts=3)["job_id"]
        crash = self.client.submit(queue, "x", {"n": "boom"}, max_attempts=1)["job_id"]

        def handler(context):
            n = context.payload["n"]
            if n == "boom":
                raise ValueError("handler bug")
            if n < 0:
                raise JobFailed("negative input", retryable=False)
            return {"double": n * 2}

        counts = Worker(self.client, [queue], handler, wait_ms=500).run(max_jobs=3)
        self.assertEqual(counts, {"completed": 1, "failed": 2, "lost": 0})
        self.assertEqual(self.client.get_job(good)["result"], {"double": 4})
        bad_job = self.client.get_job(bad)
        self.assertEqual((bad_job["state"], bad_job["attempt"]), ("dead", 1))
        self.assertEqual(bad_job["last_error"], "negative input")
        self.assertIn("ValueError: handler bug", self.client.get_job(crash)["last_error"])

    def test_heartbeats_keep_a_long_job_alive(self):
        queue = unique("w")
        job_id = self.client.submit(queue, "slow", {}, lease_ttl_ms=1000)["job_id"]
        seen = {}

        def handler(context):
            time.sleep(2.5)  # over two TTLs: only heartbeats keep the lease
            seen["lost"] = context.lost.is_set()
            return "done"

        counts = Worker(self.client, [queue], handler, wait_ms=500).run(max_jobs=1)
        self.assertEqual(counts["completed"], 1)
        self.assertFalse(seen["lost"])
        job = self.client.get_job(job_id)
        self.assertEqual((job["state"], job["attempt"]), ("completed", 1))

    def test_a_cancelled_job_sets_lost_and_is_not_reported(self):
        queue = unique("w")
        job_id = self.client.submit(queue, "slow", {}, lease_ttl_ms=1500)["job_id"]
        started = threading.Event()
        noticed = {}

        def handler(context):
            started.set()
            noticed["lost"] = context.lost.wait(timeout=15)
            return "should not be reported"

        worker = Worker(self.client, [queue], handler, wait_ms=500)
        thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 1})
        thread.start()
        self.assertTrue(started.wait(20))
        self.client.cancel(job_id)
        thread.join(30)
        self.assertFalse(thread.is_alive())
        self.assertTrue(noticed["lost"], "the heartbeat thread must notice the lost lease")
        self.assertEqual(worker.counts, {"completed": 0, "failed": 0, "lost": 1})
        job = self.client.get_job(job_id)
        self.assertEqual(job["state"], "cancelled")
        self.assertIsNone(job["result"])


if __name__ == "__main__":
    unittest.main()
