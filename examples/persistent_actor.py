#!/usr/bin/env python3
"""A persistent actor: loads its (stub) model once, then handles many jobs in one process.

    agentctl worker --queue rollouts --persistent -- python3 examples/persistent_actor.py
    agentctl worker --queue rollouts --gpus all --episodes-per-gpu 8 \\
        --serve 'python -m vllm.entrypoints.openai.api_server --model ... --port {port}' \\
        --persistent -- python3 examples/persistent_actor.py

`agentctl worker --persistent` starts this once per slot, pinned as a per-job process would be
(CUDA_VISIBLE_DEVICES, AGENTD_MODEL_URL with --serve), waits for its hello, then writes it one
job at a time as a JSON line; `agentd_client.serve_persistent` reads them, calls `handle`, and
writes each result back (docs/persistent-actors.md). What the handler prints, on stdout or
stderr, goes to the job's log (`--log-dir`).

Every result carries `pid` and `loads` (how many times this process loaded its model: always
1), so a caller sees that many jobs shared one process:

    {"pid": 4242, "loads": 1, "handled": 7, "slot": 0, "job_id": "job_9", "attempt": 1,
     "completion": "...", "cuda_visible_devices": "0", "model_url": "http://127.0.0.1:8001"}

Payload keys, all optional: `prompt` (text for the stub model). The rest exist for the
end-to-end tests (tests/tests/e2e/worker_persistent.rs) and for trying the worker's handling of
a misbehaving actor by hand:

- `mark`: a path; the actor writes its pid there when the job starts;
- `sleep_s`: work this long, stopping early when cancelled;
- `wait_for_file`: a path; work until it exists (at most 120 s), stopping early when cancelled;
- `ignore_cancel`: work this many seconds (at most 600) and ignore a cancel (the worker kills
  the actor after its grace period and starts a new one);
- `exit_on_attempt`: crash (exit status 3) on this attempt of the job (the worker restarts the
  actor and the job is retried);
- `fail`: fail the job with this message (`retryable`, default true, says whether it may be
  retried).

Replace `load_model` and `generate` with a real model (torch, a tokenizer, or an HTTP client for
the GPU's vLLM at $AGENTD_MODEL_URL) to make it real.
"""

import os
import sys
import time

try:
    from agentd_client.worker import Cancelled, JobFailed, keep_stdout_for_protocol, serve_persistent
except ImportError:  # not installed: use the package from this repository
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "client", "python"))
    from agentd_client.worker import Cancelled, JobFailed, keep_stdout_for_protocol, serve_persistent

# First thing: stdout is the protocol's. Anything printed to it from here on (by us, by a
# library at import time, by a child process) goes to stderr, and so to the job's log.
keep_stdout_for_protocol()

#: How many times this process loaded its model (a persistent actor: once).
LOADS = 0
#: Jobs this process handled.
HANDLED = 0
#: Longest wait for `wait_for_file`, and longest `ignore_cancel`, in seconds.
WAIT_FOR_FILE_MAX_S = 120.0
IGNORE_CANCEL_MAX_S = 600.0


def load_model():
    """The expensive part a per-job process would repeat for every job."""
    global LOADS
    LOADS += 1
    print("loading the stub model in pid {} (slot {}, CUDA_VISIBLE_DEVICES={}, model server {})".format(
        os.getpid(), os.environ.get("AGENTD_SLOT"), os.environ.get("CUDA_VISIBLE_DEVICES"),
        os.environ.get("AGENTD_MODEL_URL")), file=sys.stderr, flush=True)
    return {"name": "stub-model", "suffix": " -- answered by the stub model"}


def generate(model, prompt):
    """A deterministic stand-in for a generation."""
    return prompt.strip().upper() + model["suffix"]


def work(context, seconds, until=None):
    """Works for `seconds` (or until the path `until` exists), returning early when the job is
    cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if until is not None and os.path.exists(until):
            return
        if context.cancelled.wait(0.05):
            print("{} cancelled ({}); stopping".format(context.job_id, context.cancel_reason),
                  file=sys.stderr, flush=True)
            return


def write_pid(path):
    partial = path + ".partial"
    with open(partial, "w") as marker:
        marker.write(str(os.getpid()))
    os.replace(partial, path)


def make_handler(model):
    def handle(context):
        global HANDLED
        payload = context.payload if isinstance(context.payload, dict) else {}
        print("handling {} (attempt {}) in pid {}".format(context.job_id, context.attempt, os.getpid()),
              file=sys.stderr, flush=True)
        if payload.get("mark"):
            write_pid(payload["mark"])
        if payload.get("exit_on_attempt") == context.attempt:
            print("crashing on purpose (exit_on_attempt)", file=sys.stderr, flush=True)
            os._exit(3)
        if payload.get("ignore_cancel"):
            time.sleep(min(float(payload["ignore_cancel"]), IGNORE_CANCEL_MAX_S))
        if payload.get("sleep_s"):
            work(context, float(payload["sleep_s"]))
        if payload.get("wait_for_file"):
            work(context, WAIT_FOR_FILE_MAX_S, until=payload["wait_for_file"])
        if context.cancelled.is_set():
            # The lease is gone (or the worker is stopping): no result counts any more.
            raise Cancelled()
        if payload.get("fail"):
            raise JobFailed(str(payload["fail"]), retryable=bool(payload.get("retryable", True)))
        HANDLED += 1
        # A stray print to stdout: it goes to the job's log, not into the protocol.
        print("done with {}".format(context.job_id))
        return {
            "pid": os.getpid(),
            "loads": LOADS,
            "handled": HANDLED,
            "slot": context.slot,
            "job_id": context.job_id,
            "attempt": context.attempt,
            "completion": generate(model, str(payload.get("prompt", ""))),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "model_url": os.environ.get("AGENTD_MODEL_URL"),
        }

    return handle


def main():
    model = load_model()
    handled = serve_persistent(make_handler(model))
    print("stdin closed after {} job(s) in pid {}; exiting".format(handled, os.getpid()),
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
