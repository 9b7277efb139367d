#!/usr/bin/env python3
"""An actor loop against a local agentd, with a stub model (no GPU): one full episode.

    python3 examples/actor_loop.py [URL] [--agentctl PATH] [--json]

URL defaults to $AGENTD_URL, then http://127.0.0.1:7070. $AGENTD_TOKEN and $AGENTD_CA_CERT (a
token, a private CA for https) are read from the environment by `Client` and by the verifier's
`agentctl` alike. What it does, in the order of the seed's actor loop (section 6.2):

1. starts a verifier, `agentctl worker --builtin astgrep.verify`, on a queue of its own;
2. submits an `episode` job for a new task and leases it with `agentd_client.Worker` (which
   heartbeats the lease in the background);
3. per step: reads the task's agent state, asks the stub model for an ast-grep action, records
   the step (action, think, state update) under the lease, submits an `astgrep.verify` job for
   it, waits for the verifier's verdict (the verifier records the sandbox result and the
   rule-based reward on the step), and records a decision in the agent state;
4. completes the episode job and prints the trajectory (steps, sandbox results, rewards).

The stub model is deterministic: step 0 proposes the fixed pattern `print($A)` ->
`logger.info($A)` (the task's gold action), step 1 a YAML rule `$A == None` -> `$A is None`.
Each step is verified against the task's snapshot. Replace `stub_model` with a vLLM call to make
it real.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

try:
    from agentd_client import AgentdError, Client, JobFailed, Worker
except ImportError:  # not installed: use the package from this repository
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "client", "python"))
    from agentd_client import AgentdError, Client, JobFailed, Worker

MODEL = "stub-model"
POLICY_VERSION = "stub-v0"
STEPS = 2
#: Longest wait for one verification, in seconds (the sandbox's own wall budget is 30 s).
VERIFY_TIMEOUT_S = 120

APP = '''import logging

logger = logging.getLogger(__name__)


def greet(name):
    if name == None:
        return ""
    print(f"hello {name}")
    return name
'''
TEST = '''import sys
from app import greet

assert greet("x") == "x"
assert greet(None) == ""
sys.stdout.write("TESTS passed=2 failed=0\\n")
'''
FILES = {"app.py": APP, "test_app.py": TEST}
TEST_COMMAND = ["python3", "test_app.py"]
GOLD_ACTION = {"kind": "pattern", "language": "python", "pattern": "print($A)", "rewrite": "logger.info($A)"}


def stub_model(rendered_state, files, step):
    """Stands in for the policy: returns (think, action, state_update) for `step`."""
    if step == 0:
        return (
            "print() in library code should go through the module logger.",
            {"kind": "pattern", "language": "python", "pattern": "print($A)", "rewrite": "logger.info($A)"},
            {"hypotheses": ["print calls are the only logging problem"], "next_focus": "app.py: print"},
        )
    return (
        "Comparisons with None should use identity.",
        {"kind": "rule", "yaml": "id: none-identity\nlanguage: python\nrule:\n  pattern: $A == None\nfix: $A is None\n"},
        {"hypotheses": ["== None is a style problem too"], "next_focus": "app.py: == None"},
    )


def find_agentctl(explicit):
    candidates = [explicit, os.environ.get("AGENTCTL"), shutil.which("agentctl")]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    candidates += [os.path.join(root, "target", profile, "agentctl") for profile in ("release", "debug")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("actor_loop: cannot find agentctl (build it with `cargo build --release`, or pass --agentctl PATH)")


def wait_for_verdict(client, job_id, context, verifier):
    """Polls the verification job until it ends; our own lease keeps being renewed meanwhile."""
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while time.monotonic() < deadline:
        if context.lost.is_set():
            raise JobFailed("lease lost while waiting for verification")
        if verifier.poll() is not None:
            raise JobFailed("the astgrep.verify worker exited with status {}".format(verifier.returncode))
        job = client.get_job(job_id)
        if job["state"] == "completed":
            return job["result"]
        if job["state"] in ("dead", "cancelled"):
            raise JobFailed("verification {} ended {}: {}".format(job_id, job["state"], job.get("last_error")))
        time.sleep(0.1)
    raise JobFailed("verification {} did not finish within {} s".format(job_id, VERIFY_TIMEOUT_S))


def run_episode(client, verify_queue, verifier):
    """The handler of the `episode` job: the actor loop for one task."""

    def episode(context):
        task_id = context.task_id
        lease_id = context.lease_id
        client.post_task_state(task_id, lease_id=lease_id,
                               goals=["route output through logging", "keep tests green"],
                               constraints=["ast-grep actions only"])
        rewards = []
        for step in range(context.payload["max_steps"]):
            if context.lost.is_set():
                raise JobFailed("lease lost")
            state = client.get_task_state(task_id)
            think, action, update = stub_model(state["rendered"], context.payload["files"], step)
            prompt = "{}\n<files>{}</files>".format(state["rendered"], ",".join(sorted(FILES)))
            client.post_step(task_id, step, model=MODEL, policy_version=POLICY_VERSION, action=action,
                             job_id=context.job_id, lease_id=lease_id, think=think,
                             sampling={"temperature": 0.0, "seed": 0},
                             prompt_tokens=len(prompt.split()), completion_tokens=len(think.split()),
                             state_update=update)
            payload = {"step": step, "files": context.payload["files"], "action": action,
                       "test_command": TEST_COMMAND}
            if step == 0:
                payload["gold_action"] = GOLD_ACTION
            verify = client.submit(verify_queue, "astgrep.verify", payload, task_id=task_id, max_attempts=2)
            verdict = wait_for_verdict(client, verify["job_id"], context, verifier)
            rewards.append(verdict["reward"])
            decision = "step {}: {} ({})".format(step, "keep" if verdict["verified"] else "revert",
                                                 ", ".join("{}={:g}".format(k, v) for k, v in sorted(verdict["components"].items())))
            client.post_task_state(task_id, lease_id=lease_id, decisions=[decision],
                                   history=["step {} reward {:g}".format(step, verdict["reward"])])
        return {"task_id": task_id, "steps": len(rewards), "rewards": rewards}

    return episode


def print_trajectory(trajectory):
    print("trajectory of {}:".format(trajectory["task_id"]))
    for step in trajectory["steps"]:
        action = step["action"]
        what = "{pattern} -> {rewrite}".format(**action) if action["kind"] == "pattern" else "rule " + action["yaml"].split("\n")[0]
        sandbox = step.get("sandbox") or {}
        reward = step.get("reward") or {}
        print("  step {}: {} | sandbox {} tests {}/{} | reward {} verified={} {}".format(
            step["step"], what, sandbox.get("outcome"), sandbox.get("tests_passed"),
            sandbox.get("tests_failed"), reward.get("value"), reward.get("verified"),
            json.dumps(reward.get("components"), sort_keys=True)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("AGENTD_URL", "http://127.0.0.1:7070"))
    parser.add_argument("--agentctl", help="agentctl binary for the astgrep.verify worker")
    parser.add_argument("--json", action="store_true", help="print the trajectory as JSON")
    args = parser.parse_args()
    client = Client(args.url)  # token and CA from $AGENTD_TOKEN and $AGENTD_CA_CERT
    client.health()
    run = uuid.uuid4().hex[:8]
    actor_queue, verify_queue, task_id = "actor-" + run, "astgrep-verify-" + run, "demo-task-" + run
    verifier = subprocess.Popen(
        [find_agentctl(args.agentctl), "--url", args.url, "worker", "--queue", verify_queue,
         "--builtin", "astgrep.verify", "--wait-ms", "1000", "--worker-id", "verifier-" + run],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        episode = client.submit(actor_queue, "episode", {"files": FILES, "max_steps": STEPS}, task_id=task_id,
                      lease_ttl_ms=15000, max_attempts=1)
        counts = Worker(client, [actor_queue], run_episode(client, verify_queue, verifier),
                        worker_id="actor-" + run, wait_ms=1000).run(max_jobs=1)
        if counts["completed"] != 1:
            job = client.get_job(episode["job_id"])
            sys.exit("actor_loop: the episode did not complete ({}): {}".format(job["state"], job.get("last_error")))
    finally:
        verifier.send_signal(signal.SIGTERM)
        try:
            verifier.wait(timeout=30)
        except subprocess.TimeoutExpired:
            verifier.kill()
    trajectory = client.get_trajectory(task_id)
    state = client.get_task_state(task_id)
    if args.json:
        print(json.dumps({"trajectory": trajectory, "state": state}, indent=2, sort_keys=True))
    else:
        print_trajectory(trajectory)
        print("\nagent state after the episode ({} updates, {} tokens):\n{}".format(
            state["updates"], state["tokens"], state["rendered"]))
    rewards = [(step.get("reward") or {}).get("value") for step in trajectory["steps"]]
    print("trajectory: {} steps, rewards {}".format(len(trajectory["steps"]), rewards), file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AgentdError as error:
        sys.exit("actor_loop: {}".format(error))
