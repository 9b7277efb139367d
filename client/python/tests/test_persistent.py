"""Tests of `serve_persistent`, the Python side of `agentctl worker --persistent`'s line protocol
(docs/persistent-actors.md): in-process over pipes (hello, results, failures, cancels, the end of
stdin), and `examples/persistent_actor.py` run as a process the way the worker runs it. No
daemon needed: the tests play the worker's part. They wait with deadlines, never sleeps."""

import io
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import unittest

from unittest import mock

from agentd_client import Cancelled, JobFailed, serve_persistent

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "..", "examples", "persistent_actor.py")
PYTHON_PACKAGE = os.path.join(HERE, "..")
#: Longest wait for one line from the actor.
LINE_TIMEOUT_S = 30.0


def job_line(n, payload=None, attempt=1):
    return json.dumps({"type": "job", "job_id": "job_{}".format(n), "lease_id": "lease_{}".format(n),
                       "attempt": attempt, "slot": 0, "queue": "q", "kind": "episode",
                       "payload": payload if payload is not None else {}, "task_id": None}) + "\n"


def cancel_line(n, reason="lease_lost"):
    return json.dumps({"type": "cancel", "job_id": "job_{}".format(n), "reason": reason}) + "\n"


class Lines:
    """Lines read from a stream by a thread, taken with a deadline."""

    def __init__(self, stream):
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def next(self):
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError("no line from the actor within {} s".format(LINE_TIMEOUT_S))
        return None if line is None else json.loads(line)


class InProcessTest(unittest.TestCase):
    """`serve_persistent` in a thread, stdin and stdout being pipes this test holds."""

    def setUp(self):
        # What the actor says on stderr (a traceback, warnings) is checked, not printed.
        self.actor_stderr = io.StringIO()
        stderr_patch = mock.patch("sys.stderr", self.actor_stderr)
        stderr_patch.start()
        self.addCleanup(stderr_patch.stop)
        job_read, self.job_write = os.pipe()
        answer_read, answer_write = os.pipe()
        self.to_actor = os.fdopen(self.job_write, "w")
        self.answers = Lines(os.fdopen(answer_read))
        self.started = threading.Event()
        self.release = threading.Event()
        self.done = {}
        actor_in = os.fdopen(job_read)
        actor_out = os.fdopen(answer_write, "w")

        def run():
            try:
                self.done["handled"] = serve_persistent(self.handle, client="unused", stdin=actor_in,
                                                        stdout=actor_out)
            finally:
                actor_out.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def tearDown(self):
        if not self.to_actor.closed:
            self.to_actor.close()
        self.thread.join(LINE_TIMEOUT_S)

    def handle(self, ctx):
        payload = ctx.payload
        if payload.get("fail"):
            raise JobFailed(payload["fail"], retryable=payload.get("retryable", True))
        if payload.get("crash"):
            raise RuntimeError("a bug in the handler")
        if payload.get("wait_for_cancel"):
            self.started.set()
            if not ctx.cancelled.wait(LINE_TIMEOUT_S):
                raise AssertionError("no cancel came")
            if payload.get("raise"):
                raise Cancelled()
            return {"finished": "anyway"}
        if payload.get("unserializable"):
            return {"value": object()}
        return {"job_id": ctx.job_id, "lease_id": ctx.lease_id, "attempt": ctx.attempt, "slot": ctx.slot,
                "echo": payload.get("echo"), "queue": ctx.job["queue"]}

    def send(self, line):
        self.to_actor.write(line)
        self.to_actor.flush()

    def test_hello_then_one_answer_per_job_then_exit_at_the_end_of_stdin(self):
        self.assertEqual(self.answers.next(), {"type": "hello", "protocol": 1, "pid": os.getpid()})
        self.send(job_line(1, {"echo": "hi"}, attempt=2))
        self.assertEqual(self.answers.next(), {
            "type": "result", "job_id": "job_1",
            "result": {"job_id": "job_1", "lease_id": "lease_1", "attempt": 2, "slot": 0, "echo": "hi",
                       "queue": "q"}})
        self.send(job_line(2, {"fail": "bad input", "retryable": False}))
        self.assertEqual(self.answers.next(),
                         {"type": "failure", "job_id": "job_2", "error": "bad input", "retryable": False})
        self.send(job_line(3, {"crash": True}))
        crashed = self.answers.next()
        self.assertEqual((crashed["type"], crashed["job_id"], crashed["retryable"]), ("failure", "job_3", True))
        self.assertIn("RuntimeError: a bug in the handler", crashed["error"])
        self.send(job_line(4, {"unserializable": True}))
        refused = self.answers.next()
        self.assertEqual((refused["type"], refused["retryable"]), ("failure", False))
        self.assertIn("not JSON-serializable", refused["error"])
        self.send("not json\n")
        self.send(json.dumps({"type": "mystery"}) + "\n")
        self.send(job_line(5))
        self.assertEqual(self.answers.next()["job_id"], "job_5")
        self.to_actor.close()
        self.assertIsNone(self.answers.next())
        self.thread.join(LINE_TIMEOUT_S)
        self.assertEqual(self.done.get("handled"), 5)
        said = self.actor_stderr.getvalue()
        # The traceback is on stderr too (the job's log), and odd input is said, not fatal.
        self.assertIn("RuntimeError: a bug in the handler", said)
        self.assertIn("not JSON", said)
        self.assertIn("unknown type 'mystery'", said)

    def test_a_cancel_reaches_the_running_handler_and_is_answered(self):
        self.assertEqual(self.answers.next()["type"], "hello")
        for n, raise_cancelled in ((1, False), (2, True)):
            self.started.clear()
            self.send(job_line(n, {"wait_for_cancel": True, "raise": raise_cancelled}))
            self.assertTrue(self.started.wait(LINE_TIMEOUT_S), "the handler did not start")
            # A cancel for another job changes nothing.
            self.send(cancel_line(99))
            self.send(cancel_line(n, "draining"))
            self.assertEqual(self.answers.next(), {"type": "cancelled", "job_id": "job_{}".format(n)})
        # The actor goes on with the next job.
        self.send(job_line(3, {"echo": "after"}))
        self.assertEqual(self.answers.next()["result"]["echo"], "after")


class ExampleActorTest(unittest.TestCase):
    """`examples/persistent_actor.py` as a process, spoken to as `agentctl worker` does."""

    def test_one_process_loads_once_handles_many_jobs_and_keeps_stdout_for_the_protocol(self):
        env = dict(os.environ, PYTHONPATH=PYTHON_PACKAGE, AGENTD_SLOT="3", CUDA_VISIBLE_DEVICES="1")
        with tempfile.TemporaryDirectory() as directory:
            stderr_path = os.path.join(directory, "stderr")
            with open(stderr_path, "w") as stderr:
                actor = subprocess.Popen([sys.executable, EXAMPLE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=stderr, env=env, text=True)
                try:
                    answers = Lines(actor.stdout)
                    hello = answers.next()
                    self.assertEqual((hello["type"], hello["protocol"], hello["pid"]), ("hello", 1, actor.pid))
                    results = []
                    for n in range(1, 4):
                        actor.stdin.write(job_line(n, {"prompt": "step {}".format(n)}))
                        actor.stdin.flush()
                        answer = answers.next()
                        self.assertEqual((answer["type"], answer["job_id"]), ("result", "job_{}".format(n)))
                        results.append(answer["result"])
                    self.assertEqual({result["pid"] for result in results}, {actor.pid})
                    self.assertEqual([result["loads"] for result in results], [1, 1, 1])
                    self.assertEqual([result["handled"] for result in results], [1, 2, 3])
                    self.assertEqual(results[1]["completion"], "STEP 2 -- answered by the stub model")
                    self.assertEqual(results[0]["cuda_visible_devices"], "1")

                    # Cancelled while it waits for a file that never comes: answered, still alive.
                    marker = os.path.join(directory, "started")
                    actor.stdin.write(job_line(4, {"mark": marker,
                                                   "wait_for_file": os.path.join(directory, "never")}))
                    actor.stdin.flush()
                    actor.stdin.write(cancel_line(4))
                    actor.stdin.flush()
                    self.assertEqual(answers.next(), {"type": "cancelled", "job_id": "job_4"})
                    with open(marker) as pid:
                        self.assertEqual(int(pid.read()), actor.pid)

                    actor.stdin.close()
                    self.assertIsNone(answers.next())
                    self.assertEqual(actor.wait(timeout=LINE_TIMEOUT_S), 0)
                finally:
                    if actor.poll() is None:
                        actor.kill()
                        actor.wait()
                    actor.stdout.close()
            with open(stderr_path) as stderr:
                said = stderr.read()
        # The handler's print() to stdout went to stderr (the job's log), not into the protocol.
        self.assertIn("done with job_2", said)
        self.assertEqual(said.count("loading the stub model"), 1)
        self.assertIn("job_4 cancelled (lease_lost)", said)
        self.assertIn("stdin closed after 4 job(s)", said)


if __name__ == "__main__":
    unittest.main()
