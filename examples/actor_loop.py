#!/usr/bin/env python3
"""An actor loop against a local agentd, with a stub model (no GPU): one full episode, resumable.

    python3 examples/actor_loop.py [URL] [--agentctl PATH] [--json] [--run ID]
                                   [--crash-after-step N] [--lease-ttl-ms MS]

URL defaults to $AGENTD_URL, then http://127.0.0.1:7070. $AGENTD_TOKEN and $AGENTD_CA_CERT (a
token, a private CA for https) are read from the environment by `Client` and by the verifier's
`agentctl` alike. What it does, in the order of the seed's actor loop (section 6.2):

1. starts a verifier, `agentctl worker --builtin astgrep.verify`, on a queue of its own;
2. submits an `episode` job for the task (idempotently: the same `--run` finds the same job)
   and leases it with `agentd_client.Worker`, which heartbeats the short lease (`--lease-ttl-ms`,
   default 3 s) in the background;
3. creates the episode's rollout under the lease (`context.rollout(...)`), or, when an earlier
   attempt of the job created one, resumes it at its `next_step`;
4. per step: reads the rollout's agent state, asks the stub model for an ast-grep action, records
   the step (action, think, state update) into the rollout under the lease, submits an
   `astgrep.verify` job naming the rollout (`rollout_id` in the payload), waits for the
   verifier's verdict (the verifier records the sandbox result and the rule-based reward on the
   rollout's step), and records a decision in the rollout's state;
5. completes the episode job and prints the rollout (steps, sandbox results, rewards).

Crash and resume: `--crash-after-step N` makes the process exit at once (`os._exit(3)`, after
killing its verifier) right after recording step N, before verifying it and without completing
the job. Running the same command again with the same `--run ID` (and no crash option) finds the
same episode job, leases it once the crashed attempt's lease expired (`--lease-ttl-ms`), and
resumes the rollout: steps the earlier attempt recorded but did not see verified are verified now
(the verify jobs are submitted idempotently, so one already done is not run twice), and the
episode continues at `next_step`. Every step ends up recorded exactly once, in one rollout.

`--json` prints `{"run", "task_id", "job": {"job_id", "state", "attempt", "result"},
"rollout": <GET /v1/rollouts/{id}, all steps>, "group": <GET /v1/groups/{group}>,
"state": <GET /v1/rollouts/{id}/state>}`; each step of `rollout["steps"]` carries `attempt` (the
episode attempt that recorded it), `sandbox` and `reward`.

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
SAMPLING = {"temperature": 0.0, "seed": 0}
STEPS = 2
#: Longest wait for one verification, in seconds (the sandbox's own wall budget is 30 s).
VERIFY_TIMEOUT_S = 120
#: The episode job's lease TTL by default, in ms: short, so that a crashed actor's job is
#: leased again within seconds (the worker heartbeats every TTL/3 while the episode runs).
LEASE_TTL_MS = 3000
#: Attempts of the episode job (a crashed or lease-losing attempt is retried).
EPISODE_ATTEMPTS = 3
#: Exit status of `--crash-after-step`.
CRASH_EXIT = 3
#: Longest wait for the episode job to be leased, in seconds past its lease TTL.
LEASE_WAIT_S = 60

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


def log(message):
    print("actor_loop: " + message, file=sys.stderr, flush=True)


def crash(verifier, step):
    """Dies the way a killed actor does: no exception handlers, no job report, no lease release.
    The verifier (our child) goes first so that it does not outlive us."""
    log("crashing after recording step {} (--crash-after-step)".format(step))
    verifier.kill()
    verifier.wait()
    sys.stdout.flush()
    os._exit(CRASH_EXIT)


def run_episode(client, verify_queue, verifier, crash_after_step=None):
    """The handler of the `episode` job: the actor loop for one task, in the job's rollout."""

    def verify(context, step, action):
        """Has the verifier judge the rollout's step `step` (it records the sandbox result and
        the reward there), then records the decision in the rollout's state. The verify job is
        submitted idempotently: a resumed attempt finds the one an earlier attempt submitted."""
        payload = {"rollout_id": context.rollout_id, "step": step, "files": context.payload["files"],
                   "action": action, "test_command": TEST_COMMAND}
        if step == 0:
            payload["gold_action"] = GOLD_ACTION
        job = client.submit(verify_queue, "astgrep.verify", payload, task_id=context.task_id,
                            max_attempts=2,
                            idempotency_key="verify-{}-{}".format(context.rollout_id, step))
        verdict = wait_for_verdict(client, job["job_id"], context, verifier)
        decision = "step {}: {} ({})".format(step, "keep" if verdict["verified"] else "revert",
                                             ", ".join("{}={:g}".format(k, v) for k, v in sorted(verdict["components"].items())))
        client.post_rollout_state(context.rollout_id, lease_id=context.lease_id, decisions=[decision],
                                  history=["step {} reward {:g}".format(step, verdict["reward"])])
        return verdict["reward"]

    def episode(context):
        task_id = context.task_id
        lease_id = context.lease_id
        rollout = context.rollout(MODEL, POLICY_VERSION, sampling=SAMPLING)
        rollout_id = rollout["rollout_id"]
        log("attempt {}: {} rollout {} of {} (group {}), from step {}".format(
            context.attempt, "created" if rollout["created"] else "resumed", rollout_id, task_id,
            rollout["group"], rollout["next_step"]))
        state = client.get_rollout_state(rollout_id)["state"]
        goals = [g for g in ("route output through logging", "keep tests green") if g not in state["goals"]]
        constraints = [c for c in ("ast-grep actions only",) if c not in state["constraints"]]
        if goals or constraints:
            client.post_rollout_state(rollout_id, lease_id=lease_id, goals=goals, constraints=constraints)
        if not rollout["created"]:
            # An earlier attempt may have recorded a step and died before its verdict.
            for recorded in client.get_rollout(rollout_id)["steps"]:
                if recorded["reward"] is None:
                    log("verifying step {}, recorded by attempt {}".format(recorded["step"], recorded["attempt"]))
                    verify(context, recorded["step"], recorded["action"])
        for step in range(rollout["next_step"], context.payload["max_steps"]):
            if context.lost.is_set():
                raise JobFailed("lease lost")
            state = client.get_rollout_state(rollout_id)
            think, action, update = stub_model(state["rendered"], context.payload["files"], step)
            prompt = "{}\n<files>{}</files>".format(state["rendered"], ",".join(sorted(FILES)))
            client.post_rollout_step(rollout_id, step, model=MODEL, policy_version=POLICY_VERSION,
                                     action=action, lease_id=lease_id, think=think, sampling=SAMPLING,
                                     prompt_tokens=len(prompt.split()),
                                     completion_tokens=len(think.split()), state_update=update)
            if crash_after_step == step:
                crash(verifier, step)
            verify(context, step, action)
        steps = client.get_rollout(rollout_id)["steps"]
        return {"task_id": task_id, "rollout_id": rollout_id, "steps": len(steps),
                "rewards": [(s["reward"] or {}).get("value") for s in steps]}

    return episode


def print_rollout(rollout):
    print("rollout {} of {} (group {}, reward {}):".format(
        rollout["rollout_id"], rollout["task_id"], rollout["group"], rollout["reward"]))
    for step in rollout["steps"]:
        action = step["action"]
        what = "{pattern} -> {rewrite}".format(**action) if action["kind"] == "pattern" else "rule " + action["yaml"].split("\n")[0]
        sandbox = step.get("sandbox") or {}
        reward = step.get("reward") or {}
        print("  step {} (attempt {}): {} | sandbox {} tests {}/{} | reward {} verified={} {}".format(
            step["step"], step["attempt"], what, sandbox.get("outcome"), sandbox.get("tests_passed"),
            sandbox.get("tests_failed"), reward.get("value"), reward.get("verified"),
            json.dumps(reward.get("components"), sort_keys=True)))


def lease_and_run(client, actor_queue, worker, lease_ttl_ms):
    """Leases the episode job (after a crashed attempt: once its lease expired) and runs it."""
    deadline = time.monotonic() + lease_ttl_ms / 1000.0 + LEASE_WAIT_S
    while time.monotonic() < deadline:
        if worker.run_once(wait_ms=1000):
            return
    sys.exit("actor_loop: the episode job was not leased within {} s".format(LEASE_WAIT_S))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("AGENTD_URL", "http://127.0.0.1:7070"))
    parser.add_argument("--agentctl", help="agentctl binary for the astgrep.verify worker")
    parser.add_argument("--json", action="store_true", help="print the episode as JSON")
    parser.add_argument("--run", help="names the task, queues and episode job (default: random); "
                                      "run again with the same ID to resume a crashed episode")
    parser.add_argument("--crash-after-step", type=int, metavar="N",
                        help="exit abruptly (status {}) right after recording step N".format(CRASH_EXIT))
    parser.add_argument("--lease-ttl-ms", type=int, default=LEASE_TTL_MS,
                        help="the episode job's lease TTL (default %(default)s)")
    args = parser.parse_args()
    client = Client(args.url)  # token and CA from $AGENTD_TOKEN and $AGENTD_CA_CERT
    client.health()
    run = args.run or uuid.uuid4().hex[:8]
    actor_queue, verify_queue, task_id = "actor-" + run, "astgrep-verify-" + run, "demo-task-" + run
    verifier = subprocess.Popen(
        [find_agentctl(args.agentctl), "--url", args.url, "worker", "--queue", verify_queue,
         "--builtin", "astgrep.verify", "--wait-ms", "1000", "--worker-id", "verifier-" + run],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        episode = client.submit(actor_queue, "episode", {"files": FILES, "max_steps": STEPS}, task_id=task_id,
                                lease_ttl_ms=args.lease_ttl_ms, max_attempts=EPISODE_ATTEMPTS,
                                idempotency_key="episode-" + run)
        job = client.get_job(episode["job_id"])
        if episode["deduplicated"]:
            log("run {}: episode job {} exists ({}, attempt {})".format(run, job["job_id"], job["state"], job["attempt"]))
        if job["state"] not in ("completed", "dead", "cancelled"):
            worker = Worker(client, [actor_queue], run_episode(client, verify_queue, verifier, args.crash_after_step),
                            worker_id="actor-" + run, wait_ms=1000)
            lease_and_run(client, actor_queue, worker, args.lease_ttl_ms)
        job = client.get_job(episode["job_id"])
        if job["state"] != "completed":
            sys.exit("actor_loop: the episode did not complete ({}): {}".format(job["state"], job.get("last_error")))
    finally:
        verifier.send_signal(signal.SIGTERM)
        try:
            verifier.wait(timeout=30)
        except subprocess.TimeoutExpired:
            verifier.kill()
    rollout = client.get_rollout(job["result"]["rollout_id"])
    group = client.get_group(rollout["group"])
    state = client.get_rollout_state(rollout["rollout_id"])
    if args.json:
        print(json.dumps({"run": run, "task_id": task_id,
                          "job": {key: job.get(key) for key in ("job_id", "state", "attempt", "result")},
                          "rollout": rollout, "group": group, "state": state}, indent=2, sort_keys=True))
    else:
        print_rollout(rollout)
        print("\nagent state of the rollout after the episode ({} updates, {} tokens):\n{}".format(
            state["updates"], state["tokens"], state["rendered"]))
    rewards = [(step.get("reward") or {}).get("value") for step in rollout["steps"]]
    log("rollout {}: {} steps, rewards {}, episode attempt {}".format(
        rollout["rollout_id"], len(rollout["steps"]), rewards, job["attempt"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AgentdError as error:
        sys.exit("actor_loop: {}".format(error))
