"""A thin HTTP client for agentd: one method per route, JSON in and out, standard library only.

Why no `requests`/`httpx`: actor loops run next to vLLM in environments whose dependency set is
fixed by the model stack; a client that needs nothing cannot conflict with it.

Every method returns the daemon's JSON answer as plain dicts and lists (the shapes are the ones
in README.md and docs/domain.md). Every failure raises `AgentdError` with the daemon's stable
`code` (`lease_lost`, `not_found`, `conflict`, `invalid_request`, ...), so callers branch on the
code, never on message text.

`Client()` with no arguments reads the daemon's address, token and CA from the environment
(`AGENTD_URL`, `AGENTD_TOKEN`, `AGENTD_CA_CERT`), the same variables `agentctl` reads and
`agentctl worker` gives each job's process, so a job script reaches the daemon its worker uses.
"""

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:7070"
#: Environment variables read when the matching argument of `Client` is not given.
URL_ENV, TOKEN_ENV, CA_CERT_ENV = "AGENTD_URL", "AGENTD_TOKEN", "AGENTD_CA_CERT"
#: Seconds allowed for an ordinary request; a long-poll adds its wait to this.
REQUEST_TIMEOUT_S = 30.0
#: Most bytes of an error body kept in a message.
ERROR_BODY_CHARS_MAX = 500

#: Every stable `code` the daemon answers with, and its HTTP status (`schemas/src/error_code.rs`;
#: a Rust test checks this table against it). `running` (202) is not an error: an export or
#: build still running; `transport` is this client's own code for a request that got no answer.
ERROR_CODES = {
    "running": 202,
    "invalid_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "read_only_replica": 405,
    "lease_lost": 409,
    "invalid_state": 409,
    "conflict": 409,
    "body_too_large": 413,
    "payload_too_large": 413,
    "range_not_satisfiable": 416,
    "invalid_request": 422,
    "batch_too_large": 422,
    "too_many_tags": 422,
    "too_many_items": 422,
    "string_too_long": 422,
    "too_many_waiters": 429,
    "busy": 429,
    "internal": 500,
    "export_failed": 500,
    "primary_unavailable": 502,
    "timeout": 503,
    "unavailable": 503,
    "loading": 503,
    "shutting_down": 503,
    "disk_full": 507,
}


class AgentdError(Exception):
    """The daemon refused a request, or could not be reached.

    `status` is the HTTP status (0 when no answer came back), `code` the daemon's stable error
    code (`transport` when no answer came back), `message` the human explanation.
    """

    def __init__(self, status, code, message):
        super().__init__("{} (HTTP {}, code {})".format(message, status, code))
        self.status = status
        self.code = code
        self.message = message

    @property
    def transient(self):
        """True when retrying later may help (no answer, overload, disk full)."""
        return self.status in (0, 429, 503, 507)


def _quote(segment):
    """Percent-encodes one path segment (every byte outside RFC 3986's unreserved set), the same
    way the Rust client does, so a task id like `a/b c` round-trips."""
    return urllib.parse.quote(str(segment), safe="")


def _drop_none(fields):
    return {key: value for key, value in fields.items() if value is not None}


def _from_env(value, name):
    """`value` when given, else the environment variable `name`; empty counts as unset."""
    if value is not None:
        return value
    return os.environ.get(name) or None


class Client:
    """A handle to one daemon. Safe to share between threads (each call opens its own request).

    `url` (http:// or https://) defaults to `$AGENTD_URL`, then `DEFAULT_URL`; `token` (the
    bearer token, when the daemon requires one) to `$AGENTD_TOKEN`; `ca_cert` (the path of a PEM
    file of the CA that signed the daemon's certificate, for https with a private CA) to
    `$AGENTD_CA_CERT`. With `ca_cert`, only that CA is trusted, as with `agentctl --ca-cert`.
    """

    def __init__(self, url=None, token=None, timeout=REQUEST_TIMEOUT_S, ca_cert=None):
        self.url = (_from_env(url, URL_ENV) or DEFAULT_URL).rstrip("/")
        self.token = _from_env(token, TOKEN_ENV)
        self.timeout = timeout
        self.ca_cert = _from_env(ca_cert, CA_CERT_ENV)
        self._ssl_context = None
        if self.ca_cert:
            try:
                self._ssl_context = ssl.create_default_context(cafile=self.ca_cert)
            except (OSError, ssl.SSLError) as error:
                raise ValueError("cannot load ca_cert {}: {}".format(self.ca_cert, error)) from None

    # -- plumbing ---------------------------------------------------------------------------

    def request(self, method, path, body=None, query=None, timeout=None):
        """Sends one request and returns the decoded JSON answer; raises `AgentdError`."""
        url = self.url + path
        encoded = urllib.parse.urlencode(_drop_none(query or {}))
        if encoded:
            url += "?" + encoded
        data = None
        headers = {"accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["content-type"] = "application/json"
        if self.token:
            headers["authorization"] = "Bearer " + self.token
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout,
                                        context=self._ssl_context) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            message = "cannot reach agentd at {}: {}".format(url, reason)
            hint = self._transport_hint(reason)
            if hint:
                message += " (hint: {})".format(hint)
            raise AgentdError(0, "transport", message) from None
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError as error:
            raise AgentdError(0, "decode", "unexpected answer from {}: {}".format(path, error)) from None

    def _transport_hint(self, reason):
        """What to try for the usual causes: an untrusted certificate, nothing listening."""
        if isinstance(reason, ssl.SSLCertVerificationError):
            if self.ca_cert:
                return "the server's certificate is not signed by the CA in {}".format(self.ca_cert)
            return ("the server's certificate is not trusted; pass ca_cert=FILE (or set {}) with "
                    "the CA that signed it".format(CA_CERT_ENV))
        if isinstance(reason, ConnectionRefusedError):
            return "agentd may not be running at {} (set {} or pass url=)".format(self.url, URL_ENV)
        return None

    def get(self, path, query=None, timeout=None):
        return self.request("GET", path, query=query, timeout=timeout)

    def post(self, path, body, timeout=None):
        return self.request("POST", path, body=body if body is not None else {}, timeout=timeout)

    # -- jobs -------------------------------------------------------------------------------

    def health(self):
        return self.get("/healthz")

    def submit(self, queue, kind, payload=None, priority=None, delay_ms=None, run_at_ms=None,
               max_attempts=None, lease_ttl_ms=None, tags=None, task_id=None, idempotency_key=None):
        """Submits one job; returns `{"job_id", "lsn", "deduplicated"}`."""
        return self.post("/v1/jobs", _job(queue, kind, payload, priority, delay_ms, run_at_ms,
                                          max_attempts, lease_ttl_ms, tags, task_id, idempotency_key))

    def submit_batch(self, jobs):
        """Submits many jobs in one durable record. Each item is a dict with the keyword
        arguments of `submit` (`queue`, `kind`, `payload`, ...); returns `{"jobs": [...]}`."""
        return self.post("/v1/jobs/batch", {"jobs": [_job(**job) for job in jobs]})

    def get_job(self, job_id):
        """The job with its full history."""
        return self.get("/v1/jobs/" + _quote(job_id))

    def cancel(self, job_id):
        return self.post("/v1/jobs/{}/cancel".format(_quote(job_id)), {})

    def lease(self, worker_id, queues, tags=None, max_jobs=1, wait_ms=0):
        """Long-polls up to `wait_ms` for up to `max_jobs` jobs; returns the list of grants
        (`{"lease_id", "job_id", "attempt", "expires_at_ms", "job": {...}}`), maybe empty."""
        body = _drop_none({"worker_id": worker_id, "queues": list(queues), "tags": tags,
                           "max_jobs": max_jobs, "wait_ms": wait_ms})
        answer = self.post("/v1/leases", body, timeout=self.timeout + wait_ms / 1000.0)
        return answer["leases"]

    def heartbeat(self, lease_id):
        """Extends the lease by its TTL; raises `AgentdError` with code `lease_lost` once the
        lease is gone (expired, cancelled, superseded)."""
        return self.post("/v1/leases/{}/heartbeat".format(_quote(lease_id)), {})

    def complete(self, lease_id, result=None, log_tail=None, next=None):
        """Completes a leased job; `log_tail` (at most 8 KiB of the job's output) is recorded
        with it and shown by `get_job` and `agentctl jobs logs`. `next` (`{"worker_id",
        "queues", "tags"?, "max_jobs"?}`, a lease request without `wait_ms`) also leases the
        jobs ready right now, in the same durable record: the answer's `next_leases` holds them
        (empty when none was ready: then `lease` as usual). A `next` the lease route would
        refuse refuses the whole call, and the lease stays held."""
        return self.post("/v1/leases/{}/complete".format(_quote(lease_id)),
                         _drop_none({"result": result, "log_tail": log_tail, "next": next}))

    def complete_many(self, completions):
        """Completes many leases in one durable record: `completions` is a list of
        `{"lease_id", "result"?, "log_tail"?}` (1 to 10000). Each item succeeds or fails on its
        own: the answer is `{"results": [{"lease_id", "job_id"} or {"lease_id", "error":
        {"code", "message"}}, ...] in order, "lsn"}`. `Worker(complete_batch_max=N)` uses it
        through `agentd_client.completions.CompletionCoalescer`."""
        return self.post("/v1/leases/complete", {"completions": list(completions)})

    def fail(self, lease_id, error, retryable=True, log_tail=None):
        """Fails a leased job (retried unless `retryable` is false); `log_tail` as for
        `complete`."""
        return self.post("/v1/leases/{}/fail".format(_quote(lease_id)),
                         _drop_none({"error": str(error), "retryable": bool(retryable),
                                     "log_tail": log_tail}))

    # -- agent state ------------------------------------------------------------------------

    def get_task_state(self, task_id):
        """`{"task_id", "state", "rendered", "tokens", "encoding", "lsn", "updates"}`; the empty
        state (lsn 0) before any update."""
        return self.get("/v1/tasks/{}/state".format(_quote(task_id)))

    def post_task_state(self, task_id, update=None, lease_id=None, forget=None, **fields):
        """Merges an update (`goals`, `constraints`, `decisions`, `hypotheses`, `history`,
        `open_issues` lists and `next_focus`), given as a dict and/or keyword arguments. With
        `lease_id`, refused with `lease_lost` unless that lease is still held.

        `forget` takes items out in the same record: `{"remove": {field: [items]},
        "resolve": [open issues, moved to decisions], "retract": [hypotheses],
        "clear_next_focus": True}` (any subset)."""
        return self.post("/v1/tasks/{}/state".format(_quote(task_id)),
                         _state_body(update, lease_id, forget, fields))

    # -- trajectories -----------------------------------------------------------------------

    def post_step(self, task_id, step, model, policy_version, action=None, job_id=None,
                  lease_id=None, sampling=None, prompt_tokens=None, completion_tokens=None,
                  prompt=None, think=None, state_update=None, raw_output=None):
        """Records step `step` of a task (into its default rollout): the model's action
        (`{"kind": "pattern", "language", "pattern", "rewrite"}` or `{"kind": "rule", "yaml"}`),
        and optionally the state update merged in the same record. Or, instead of `action`,
        `think` and `state_update`, the model's `raw_output` (`<think>/<action>/<state_update>`,
        docs/output-format.md): the daemon parses it; an output that does not parse is recorded
        with its `format_error` and a reward of 0. A step already recorded is refused with
        `conflict`."""
        body = _step_body(step, model, policy_version, action, job_id, lease_id, sampling,
                          prompt_tokens, completion_tokens, prompt, think, state_update, raw_output)
        return self.post("/v1/tasks/{}/steps".format(_quote(task_id)), body)

    def post_sandbox(self, task_id, step, outcome, exit_code=None, diff=None, stdout=None,
                     stderr=None, tests_passed=None, tests_failed=None, duration_ms=None,
                     peak_rss_bytes=None, lease_id=None):
        """Records a step's sandbox result; `outcome` is `ok`, `failed`, `timed_out`,
        `killed_oom` or `rejected`."""
        body = _sandbox_body(outcome, exit_code, diff, stdout, stderr, tests_passed, tests_failed,
                             duration_ms, peak_rss_bytes, lease_id)
        return self.post("/v1/tasks/{}/steps/{}/sandbox".format(_quote(task_id), int(step)), body)

    def post_reward(self, task_id, step, value, verified, source="rule", components=None, lease_id=None):
        """Records a step's reward; `source` is `rule`, `teacher` or `human`."""
        body = _reward_body(value, verified, source, components, lease_id)
        return self.post("/v1/tasks/{}/steps/{}/reward".format(_quote(task_id), int(step)), body)

    def get_trajectory(self, task_id, pages_max=1000):
        """Every step of a task's default rollout in step order (following `next_after` across
        pages): `{"task_id", "steps": [...]}`."""
        steps = []
        after = None
        for _ in range(pages_max):
            page = self.get("/v1/tasks/{}/trajectory".format(_quote(task_id)), query={"after": after})
            steps.extend(page["steps"])
            after = page.get("next_after")
            if after is None:
                break
        return {"task_id": task_id, "steps": steps}

    # -- rollouts ---------------------------------------------------------------------------
    #
    # A rollout is one episode of a task by one policy: its own steps (indexes unique within the
    # rollout), its own agent state, and a group (the rollouts compared against each other for
    # GRPO advantages; one task per group). A job has at most one rollout: creating it again for
    # the same job (or under a lease of that job) answers the existing one, which is how a
    # retried episode resumes at `next_step`.

    def create_rollout(self, task_id, model, policy_version, sampling=None, group=None,
                       job_id=None, lease_id=None, state_from=None):
        """Creates a rollout of `task_id`, or finds the one of its job. Returns
        `{"rollout_id", "task_id", "group", "lsn", "created", "steps", "next_step"}`:
        `created` is False when the job (`job_id`, or the job of `lease_id`) already had a
        rollout, and `next_step` (one past the highest recorded step) is where to continue.
        `group` (default: a group of one named after the rollout) must not start with `ro_`;
        `state_from` is `"task"` (default: start from a copy of the task's agent state) or
        `"empty"`. With `lease_id` the write is fenced (`lease_lost` unless held)."""
        body = _drop_none({"model": model, "policy_version": policy_version, "sampling": sampling,
                           "group": group, "job_id": job_id, "lease_id": lease_id,
                           "state_from": state_from})
        return self.post("/v1/tasks/{}/rollouts".format(_quote(task_id)), body)

    def get_rollout(self, rollout_id, pages_max=1000, page_limit=None):
        """The rollout with every step in step order (following `next_after` across pages):
        `{"rollout_id", "task_id", "group", "model", "policy_version", "sampling", "job_id",
        "lease_id", "attempt", "worker_id", "state_from", "lsn", "ts_ms", "reward", "steps"}`;
        each step has the shape of a task trajectory's steps (plus `rollout_id`)."""
        rollout = None
        after = None
        for _ in range(pages_max):
            page = self.get("/v1/rollouts/{}".format(_quote(rollout_id)),
                            query={"after": after, "limit": page_limit})
            if rollout is None:
                rollout = page
            else:
                rollout["steps"].extend(page["steps"])
            after = page.get("next_after")
            if after is None:
                break
        rollout.pop("next_after", None)
        return rollout

    def list_rollouts(self, task_id):
        """`{"task_id", "rollouts": [{"rollout_id", "group", "model", "policy_version", "job_id",
        "steps", "rewarded", "reward", "advantage"}, ...]}`; the task's default rollout (its
        task-level steps) has `rollout_id` None."""
        return self.get("/v1/tasks/{}/rollouts".format(_quote(task_id)))

    def get_group(self, group):
        """`{"group", "mean", "std", "rollouts": [... with "reward" and "advantage"]}`: the
        GRPO advantage of each rollout, (reward - mean) / std with the sample std."""
        return self.get("/v1/groups/{}".format(_quote(group)))

    def get_rollout_state(self, rollout_id):
        """The rollout's agent state: `{"task_id", "rollout_id", "state", "rendered", "tokens",
        "encoding", "lsn", "updates"}`."""
        return self.get("/v1/rollouts/{}/state".format(_quote(rollout_id)))

    def post_rollout_state(self, rollout_id, update=None, lease_id=None, forget=None, **fields):
        """Merges an update into the rollout's agent state; the arguments are those of
        `post_task_state`."""
        return self.post("/v1/rollouts/{}/state".format(_quote(rollout_id)),
                         _state_body(update, lease_id, forget, fields))

    def post_rollout_step(self, rollout_id, step, model, policy_version, action=None, job_id=None,
                          lease_id=None, sampling=None, prompt_tokens=None, completion_tokens=None,
                          prompt=None, think=None, state_update=None, raw_output=None):
        """Records step `step` of a rollout (the arguments of `post_step`); the state update
        merges into the rollout's state. A step already recorded in this rollout is refused
        with `conflict`; with `lease_id`, a lease no longer held with `lease_lost`."""
        body = _step_body(step, model, policy_version, action, job_id, lease_id, sampling,
                          prompt_tokens, completion_tokens, prompt, think, state_update, raw_output)
        return self.post("/v1/rollouts/{}/steps".format(_quote(rollout_id)), body)

    def post_rollout_sandbox(self, rollout_id, step, outcome, exit_code=None, diff=None,
                             stdout=None, stderr=None, tests_passed=None, tests_failed=None,
                             duration_ms=None, peak_rss_bytes=None, lease_id=None):
        """Records the sandbox result of a rollout's step (the arguments of `post_sandbox`)."""
        body = _sandbox_body(outcome, exit_code, diff, stdout, stderr, tests_passed, tests_failed,
                             duration_ms, peak_rss_bytes, lease_id)
        return self.post("/v1/rollouts/{}/steps/{}/sandbox".format(_quote(rollout_id), int(step)), body)

    def post_rollout_reward(self, rollout_id, step, value, verified, source="rule",
                            components=None, lease_id=None):
        """Records the reward of a rollout's step (the arguments of `post_reward`)."""
        body = _reward_body(value, verified, source, components, lease_id)
        return self.post("/v1/rollouts/{}/steps/{}/reward".format(_quote(rollout_id), int(step)), body)


def _state_body(update, lease_id, forget, fields):
    body = dict(update or {})
    body.update(fields)
    if lease_id is not None:
        body["lease_id"] = lease_id
    if forget is not None:
        body["forget"] = forget
    return body


def _step_body(step, model, policy_version, action, job_id, lease_id, sampling, prompt_tokens,
               completion_tokens, prompt, think, state_update, raw_output=None):
    return _drop_none({
        "step": step, "job_id": job_id, "lease_id": lease_id, "model": model,
        "policy_version": policy_version, "sampling": sampling,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "prompt": prompt, "think": think, "action": action, "state_update": state_update,
        "raw_output": raw_output,
    })


def _sandbox_body(outcome, exit_code, diff, stdout, stderr, tests_passed, tests_failed,
                  duration_ms, peak_rss_bytes, lease_id):
    body = _drop_none({
        "outcome": outcome, "diff": diff, "stdout": stdout, "stderr": stderr,
        "tests_passed": tests_passed, "tests_failed": tests_failed,
        "duration_ms": duration_ms, "peak_rss_bytes": peak_rss_bytes, "lease_id": lease_id,
    })
    body["exit_code"] = exit_code
    return body


def _reward_body(value, verified, source, components, lease_id):
    return _drop_none({"value": float(value), "verified": bool(verified), "source": source,
                       "components": components, "lease_id": lease_id})


def _job(queue, kind, payload=None, priority=None, delay_ms=None, run_at_ms=None, max_attempts=None,
         lease_ttl_ms=None, tags=None, task_id=None, idempotency_key=None):
    return _drop_none({
        "queue": queue, "kind": kind, "payload": payload if payload is not None else {},
        "priority": priority, "delay_ms": delay_ms, "run_at_ms": run_at_ms,
        "max_attempts": max_attempts, "lease_ttl_ms": lease_ttl_ms, "tags": tags,
        "task_id": task_id, "idempotency_key": idempotency_key,
    })


def _api_error(error):
    raw = b""
    try:
        raw = error.read()
    except OSError:
        pass
    try:
        body = json.loads(raw.decode("utf-8"))
        return AgentdError(error.code, body.get("code", "unknown"), body.get("message", ""))
    except (ValueError, AttributeError):
        text = raw.decode("utf-8", "replace")[:ERROR_BODY_CHARS_MAX]
        return AgentdError(error.code, "unknown", text or str(error))
