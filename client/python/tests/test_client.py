"""Tests of the Python client against a real agentd (scripts/test-python starts one and sets
AGENTD_URL). Each test uses its own queue and task ids, so they share one daemon safely.

`EnvironmentTest` and `TlsTest` need no daemon: they check which settings a `Client` picks up,
and https with a private CA against a small TLS server started here (certificates made with the
`openssl` command line, which scripts/test needs anyway)."""

import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import uuid
from unittest import mock

from agentd_client import DEFAULT_URL, AgentdError, Client, JobFailed, Worker

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

    def test_a_completion_records_its_log_tail(self):
        queue = unique("logs")
        job_id = self.client.submit(queue, "k", {})["job_id"]
        grant = self.client.lease("py-logs", [queue], wait_ms=1000)[0]
        self.client.complete(grant["lease_id"], {"ok": True}, log_tail="last lines\n")
        self.assertEqual(self.client.get_job(job_id)["log_tail"], "last lines\n")

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

    def test_threads_with_complete_batch_max_complete_every_job_once_in_fewer_records(self):
        queue = unique("batched")
        slots, rounds = 8, 2
        jobs = [self.client.submit(queue, "x", {"n": n}, max_attempts=1)["job_id"]
                for n in range(slots * rounds)]
        # Each round's handlers return together (the barrier), so their completions come while
        # one is in flight; the timeout only turns a hang into a failed job.
        barrier = threading.Barrier(slots, timeout=60)

        def handler(context):
            barrier.wait()
            return {"job": context.job_id, "n": context.payload["n"]}

        worker = Worker(self.client, [queue], handler, wait_ms=500, concurrency=slots,
                        complete_batch_max=slots)
        counts = worker.run(max_jobs=slots * rounds)
        self.assertEqual(counts, {"completed": slots * rounds, "failed": 0, "lost": 0})
        for n, job_id in enumerate(jobs):
            job = self.client.get_job(job_id)
            self.assertEqual((job["state"], job["attempt"]), ("completed", 1))
            self.assertEqual(job["result"], {"job": job_id, "n": n})
        records = {}
        after = 0
        while True:
            page = self.client.get("/v1/events", {"after": after, "limit": 1000})
            if not page["events"]:
                break
            for event in page["events"]:
                if event["type"] == "job_completed" and event["job_id"] in jobs:
                    records.setdefault(event["lsn"], []).append(event["job_id"])
            after = page["next_after"]
        completed = [job_id for record in records.values() for job_id in record]
        self.assertEqual(sorted(completed), sorted(jobs))
        # Only POST /v1/leases/complete puts several completions in one record.
        self.assertLess(len(records), len(jobs), records)

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


    def test_a_retried_episode_resumes_its_rollout(self):
        queue, task = unique("w"), unique("task")
        group = unique("grp")
        # The group travels in the payload, as `agentctl submit --rollouts` writes it.
        job_id = self.client.submit(queue, "episode", {"max_steps": 3, "group": group}, task_id=task,
                                    max_attempts=2, lease_ttl_ms=2000)["job_id"]
        seen = []

        def handler(context):
            rollout = context.rollout("m", "v1")
            self.assertEqual(rollout["group"], group)
            seen.append((context.attempt, context.job.get("rollout_id"), rollout["created"],
                         rollout["next_step"], context.rollout_id))
            for step in range(rollout["next_step"], context.payload["max_steps"]):
                self.client.post_rollout_step(context.rollout_id, step, model="m", policy_version="v1",
                                              action=PATTERN, lease_id=context.lease_id)
                if context.attempt == 1 and step == 0:
                    raise RuntimeError("crash after step 0")
            return {"rollout_id": context.rollout_id}

        worker = Worker(self.client, [queue], handler, wait_ms=500)
        deadline = time.monotonic() + 60
        while sum(worker.counts.values()) < 2 and time.monotonic() < deadline:
            worker.run_once()
        self.assertEqual(worker.counts, {"completed": 1, "failed": 1, "lost": 0})
        rollout_id = seen[0][4]
        self.assertEqual(seen, [(1, None, True, 0, rollout_id), (2, rollout_id, False, 1, rollout_id)])
        steps = self.client.get_rollout(rollout_id)["steps"]
        self.assertEqual([(step["step"], step["attempt"]) for step in steps], [(0, 1), (1, 2), (2, 2)])
        self.assertEqual(self.client.get_job(job_id)["result"], {"rollout_id": rollout_id})


@unittest.skipUnless(URL, "needs a daemon: run scripts/test-python (it sets AGENTD_URL)")
class RolloutTest(unittest.TestCase):
    """Rollouts: episodes of a task with their own steps and state, grouped for advantages."""

    def setUp(self):
        self.client = Client(URL)

    def record_step(self, rollout_id, step, reward, lease_id=None):
        self.client.post_rollout_step(rollout_id, step, model="m", policy_version="v1",
                                      action=PATTERN, think="step {}".format(step),
                                      lease_id=lease_id, state_update={"history": ["step {}".format(step)]})
        self.client.post_rollout_sandbox(rollout_id, step, "ok", exit_code=0, tests_passed=2,
                                         tests_failed=0, duration_ms=5, lease_id=lease_id)
        self.client.post_rollout_reward(rollout_id, step, reward, reward > 0,
                                        components={"applied": reward}, lease_id=lease_id)

    def test_sixteen_concurrent_rollouts_of_one_group(self):
        task, group, threads_n, steps_n = unique("task"), unique("grp"), 16, 3
        barrier = threading.Barrier(threads_n)
        created, errors = [None] * threads_n, []

        def episode(index):
            try:
                client = Client(URL)
                barrier.wait(timeout=30)
                answer = client.create_rollout(task, "m", "v1", group=group,
                                               sampling={"temperature": 0.7, "seed": index})
                created[index] = answer
                for step in range(steps_n):
                    self.record_step(answer["rollout_id"], step, (index % 4) / 4.0)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append((index, repr(error)))

        threads = [threading.Thread(target=episode, args=(index,)) for index in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        self.assertEqual(errors, [])
        self.assertTrue(all(answer["created"] and answer["next_step"] == 0 for answer in created), created)
        self.assertTrue(all(answer["group"] == group and answer["task_id"] == task for answer in created))
        rollout_ids = {answer["rollout_id"] for answer in created}
        self.assertEqual(len(rollout_ids), threads_n)
        self.assertTrue(all(rollout_id.startswith("ro_") for rollout_id in rollout_ids))

        listed = self.client.list_rollouts(task)["rollouts"]
        self.assertEqual({entry["rollout_id"] for entry in listed}, rollout_ids)
        self.assertTrue(all((entry["steps"], entry["rewarded"]) == (steps_n, steps_n) for entry in listed), listed)

        answer = self.client.get_group(group)
        self.assertEqual(answer["group"], group)
        self.assertEqual({entry["rollout_id"] for entry in answer["rollouts"]}, rollout_ids)
        rewards = [steps_n * (index % 4) / 4.0 for index in range(threads_n)]  # a rollout's reward: its steps' sum
        mean = sum(rewards) / threads_n
        std = (sum((reward - mean) ** 2 for reward in rewards) / (threads_n - 1)) ** 0.5
        self.assertAlmostEqual(answer["mean"], mean)
        self.assertAlmostEqual(answer["std"], std)
        self.assertAlmostEqual(sum(entry["advantage"] for entry in answer["rollouts"]), 0.0, places=9)
        for entry in answer["rollouts"]:
            self.assertAlmostEqual(entry["advantage"], (entry["reward"] - mean) / std)

        for answer in created:
            rollout = self.client.get_rollout(answer["rollout_id"])
            steps = rollout["steps"]
            self.assertEqual([step["step"] for step in steps], list(range(steps_n)))
            self.assertTrue(all(step["sandbox"]["outcome"] == "ok" and step["reward"] is not None
                                for step in steps), steps)
            self.assertEqual(steps[2]["state_before"]["history"], ["step 0", "step 1"])

    def test_a_repeated_step_is_a_conflict_and_pages_are_followed(self):
        task = unique("task")
        answer = self.client.create_rollout(task, "m", "v1", state_from="empty")
        rollout_id = answer["rollout_id"]
        self.assertEqual(answer["group"], rollout_id, "the default group is named after the rollout")
        for step in range(3):
            self.record_step(rollout_id, step, 1.0)
        with self.assertRaises(AgentdError) as caught:
            self.client.post_rollout_step(rollout_id, 1, model="m", policy_version="v1", action=PATTERN)
        self.assertEqual((caught.exception.status, caught.exception.code), (409, "conflict"))
        with self.assertRaises(AgentdError) as caught:
            self.client.post_rollout_reward(rollout_id, 0, 0.0, False)
        self.assertEqual(caught.exception.code, "conflict")
        with self.assertRaises(AgentdError) as caught:
            self.client.post_rollout_sandbox(rollout_id, 9, "ok")
        self.assertEqual(caught.exception.code, "not_found")
        with self.assertRaises(AgentdError) as caught:
            self.client.get_rollout("ro_999999999")
        self.assertEqual(caught.exception.code, "not_found")
        with self.assertRaises(AgentdError) as caught:
            self.client.create_rollout(task, "m", "v1", group="ro_mine")
        self.assertEqual(caught.exception.code, "invalid_request")

        rollout = self.client.get_rollout(rollout_id, page_limit=1)  # three pages
        self.assertEqual([step["step"] for step in rollout["steps"]], [0, 1, 2])
        self.assertEqual((rollout["task_id"], rollout["model"], rollout["state_from"]), (task, "m", "empty"))
        self.assertNotIn("next_after", rollout)
        self.assertEqual(rollout["reward"], 3.0)
        # The task-level routes still write the task's default rollout, apart from this one.
        self.client.post_step(task, 0, model="m", policy_version="v1", action=PATTERN)
        self.assertEqual([step["step"] for step in self.client.get_trajectory(task)["steps"]], [0])
        listed = {entry["rollout_id"]: entry for entry in self.client.list_rollouts(task)["rollouts"]}
        self.assertEqual(set(listed), {None, rollout_id})
        self.assertEqual((listed[None]["steps"], listed[rollout_id]["steps"]), (1, 3))

    def test_a_job_has_one_rollout_and_writes_are_fenced_by_the_lease(self):
        task, queue = unique("task"), unique("q")
        job_id = self.client.submit(queue, "episode", {}, task_id=task, max_attempts=2)["job_id"]
        grant = self.client.lease("py-test", [queue], wait_ms=1000)[0]
        first = self.client.create_rollout(task, "m", "v1", lease_id=grant["lease_id"])
        self.assertEqual((first["created"], first["next_step"]), (True, 0))
        self.record_step(first["rollout_id"], 0, 1.0, lease_id=grant["lease_id"])
        with self.assertRaises(AgentdError) as caught:  # a job's rollout needs the job's lease
            self.client.create_rollout(task, "m", "v1", job_id=job_id)
        self.assertEqual(caught.exception.code, "invalid_request")
        again = self.client.create_rollout(task, "m", "v1", lease_id=grant["lease_id"])
        self.assertEqual((again["rollout_id"], again["created"], again["steps"], again["next_step"]),
                         (first["rollout_id"], False, 1, 1))
        rollout = self.client.get_rollout(first["rollout_id"])
        self.assertEqual((rollout["job_id"], rollout["lease_id"], rollout["attempt"]),
                         (job_id, grant["lease_id"], 1))
        self.client.complete(grant["lease_id"])
        with self.assertRaises(AgentdError) as caught:
            self.client.post_rollout_step(first["rollout_id"], 1, model="m", policy_version="v1",
                                          action=PATTERN, lease_id=grant["lease_id"])
        self.assertEqual(caught.exception.code, "lease_lost")
        with self.assertRaises(AgentdError) as caught:
            self.client.post_rollout_state(first["rollout_id"], lease_id=grant["lease_id"], goals=["x"])
        self.assertEqual(caught.exception.code, "lease_lost")

    def test_raw_outputs_are_parsed_and_unparseable_ones_are_recorded_as_negatives(self):
        task = unique("task")
        rollout_id = self.client.create_rollout(task, "m", "v1")["rollout_id"]
        good = ("<think>use logging</think>\n<action>\n" + json.dumps(PATTERN) + "\n</action>\n"
                "<state_update>{\"history\":[\"step 0: logging\"]}</state_update>")
        answer = self.client.post_rollout_step(rollout_id, 0, model="m", policy_version="v1",
                                               raw_output=good)
        self.assertNotIn("format_error", answer)
        self.assertEqual(answer["state"]["state"]["history"], ["step 0: logging"])
        bad = "Sure! Here is the fix: print -> logging"
        answer = self.client.post_rollout_step(rollout_id, 1, model="m", policy_version="v1",
                                               raw_output=bad)
        self.assertEqual(answer["format_error"]["code"], "text_outside_tags")
        steps = self.client.get_rollout(rollout_id)["steps"]
        self.assertEqual((steps[0]["action"], steps[0]["think"], steps[0]["raw_output"]),
                         (PATTERN, "use logging", good))
        self.assertIsNone(steps[1]["action"])
        self.assertEqual(steps[1]["raw_output"], bad)
        reward = steps[1]["reward"]
        self.assertEqual((reward["value"], reward["verified"], reward["components"]),
                         (0.0, False, {"format": 0.0}))
        # The daemon's parser and this package's agree (docs/output-format-cases.json).
        from agentd_client import output_format
        self.assertEqual(output_format.parse(good).action, PATTERN)
        with self.assertRaises(AgentdError) as caught:  # raw_output stands alone
            self.client.post_rollout_step(rollout_id, 2, model="m", policy_version="v1",
                                          raw_output=good, action=PATTERN)
        self.assertEqual(caught.exception.code, "invalid_request")

    def test_forget_takes_items_out_of_rollout_and_task_state(self):
        task = unique("task")
        self.client.post_task_state(task, goals=["g1", "g2"], hypotheses=["h1"], next_focus="f")
        answer = self.client.post_task_state(task, forget={"remove": {"goals": ["g1"]}, "retract": ["h1"]})
        self.assertEqual(answer["state"]["goals"], ["g2"])
        self.assertEqual(answer["state"]["hypotheses"], [])
        self.assertEqual(answer["state"]["next_focus"], "f")

        rollout_id = self.client.create_rollout(task, "m", "v1")["rollout_id"]
        state = self.client.get_rollout_state(rollout_id)
        self.assertEqual((state["rollout_id"], state["state"]["goals"]), (rollout_id, ["g2"]),
                         "state_from task: the rollout starts from the task's state")
        self.client.post_rollout_state(rollout_id, {"open_issues": ["flaky test"]}, goals=["g3"])
        answer = self.client.post_rollout_state(
            rollout_id, forget={"remove": {"goals": ["g2"]}, "resolve": ["flaky test"],
                                "clear_next_focus": True})
        self.assertEqual(answer["state"]["goals"], ["g3"])
        self.assertEqual(answer["state"]["open_issues"], [])
        self.assertIn("flaky test", answer["state"]["decisions"])
        self.assertIsNone(answer["state"]["next_focus"])
        state = self.client.get_rollout_state(rollout_id)
        self.assertEqual(state["updates"], 2)
        self.assertNotIn("g2", state["rendered"])
        self.assertEqual(self.client.get_task_state(task)["state"]["goals"], ["g2"],
                         "the task's own state is untouched")


def without_agentd_env(**variables):
    """An environment with the three AGENTD_ variables removed, then `variables` set."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("AGENTD_URL", "AGENTD_TOKEN", "AGENTD_CA_CERT")}
    environment.update(variables)
    return mock.patch.dict(os.environ, environment, clear=True)


class EnvironmentTest(unittest.TestCase):
    """`agentctl worker` gives a job AGENTD_URL, AGENTD_TOKEN and AGENTD_CA_CERT: `Client()`
    in the job must reach the daemon with them, without arguments."""

    def test_settings_come_from_the_environment_when_not_given(self):
        with without_agentd_env(AGENTD_URL="https://agentd.lab:7443/", AGENTD_TOKEN="agtk_env"):
            client = Client()
            self.assertEqual((client.url, client.token, client.ca_cert),
                             ("https://agentd.lab:7443", "agtk_env", None))

    def test_arguments_win_over_the_environment(self):
        with without_agentd_env(AGENTD_URL="http://from-env:1", AGENTD_TOKEN="agtk_env"):
            client = Client("http://given:2", token="agtk_given")
            self.assertEqual((client.url, client.token), ("http://given:2", "agtk_given"))

    def test_unset_or_empty_variables_mean_the_defaults(self):
        with without_agentd_env():
            client = Client()
            self.assertEqual((client.url, client.token, client.ca_cert), (DEFAULT_URL, None, None))
        with without_agentd_env(AGENTD_URL="", AGENTD_TOKEN="", AGENTD_CA_CERT=""):
            client = Client()
            self.assertEqual((client.url, client.token, client.ca_cert), (DEFAULT_URL, None, None))

    def test_a_ca_cert_that_is_not_a_certificate_is_refused_at_once(self):
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as not_pem:
            not_pem.write("not a certificate\n")
            not_pem.flush()
            with self.assertRaises(ValueError) as caught:
                Client("https://127.0.0.1:9", ca_cert=not_pem.name)
            self.assertIn(not_pem.name, str(caught.exception))

    def test_connection_refused_hints_that_the_daemon_is_not_running(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client = Client("http://127.0.0.1:{}".format(port), timeout=5)
        with self.assertRaises(AgentdError) as caught:
            client.health()
        self.assertEqual((caught.exception.status, caught.exception.code), (0, "transport"))
        self.assertIn("may not be running", caught.exception.message)


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


class TlsTest(unittest.TestCase):
    """https with a private CA: trusted through `ca_cert=` or AGENTD_CA_CERT, refused (with a
    hint) without it."""

    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise AssertionError("these tests need the openssl command line")
        cls.dir = tempfile.mkdtemp()
        path = lambda name: os.path.join(cls.dir, name)  # noqa: E731
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        with open(path("ext.cnf"), "w") as ext:
            ext.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
        openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=python test CA",
                "-keyout", path("ca.key"), "-out", path("ca.pem"))
        openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", path("key.pem"), "-out", path("server.csr"))
        openssl("x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                "-CAcreateserial", "-days", "1", "-extfile", path("ext.cnf"), "-out", path("cert.pem"))
        cls.ca_cert = path("ca.pem")
        cls.seen_authorization = []

        seen = cls.seen_authorization

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.headers.get("authorization"))
                body = json.dumps({"status": "ok", "durable_lsn": 0, "version": "test"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path("cert.pem"), path("key.pem"))
        cls.server.socket = context.wrap_socket(cls.server.socket, server_side=True)
        cls.url = "https://127.0.0.1:{}".format(cls.server.server_address[1])
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_ca_cert_makes_the_private_ca_trusted(self):
        with without_agentd_env():
            self.assertEqual(Client(self.url, ca_cert=self.ca_cert, timeout=5).health()["status"], "ok")

    def test_without_the_ca_the_certificate_is_refused_with_a_hint(self):
        with without_agentd_env():
            with self.assertRaises(AgentdError) as caught:
                Client(self.url, timeout=5).health()
        self.assertEqual((caught.exception.status, caught.exception.code), (0, "transport"))
        self.assertIn("pass ca_cert=FILE (or set AGENTD_CA_CERT)", caught.exception.message)

    def test_a_job_environment_is_enough(self):
        # What `agentctl --url ... --token ... --ca-cert ... worker -- python3 job.py` sets.
        with without_agentd_env(AGENTD_URL=self.url, AGENTD_TOKEN="agtk_job", AGENTD_CA_CERT=self.ca_cert):
            self.assertEqual(Client(timeout=5).health()["status"], "ok")
        self.assertEqual(self.seen_authorization[-1], "Bearer agtk_job")


if __name__ == "__main__":
    unittest.main()
