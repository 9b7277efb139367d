"""Schemathesis hooks for scripts/test-schemathesis.

GET /openapi.json states every rule the daemon checks on a request, where JSON Schema can say it.
These hooks cover the few rules it cannot say, each narrowly, so that `positive_data_acceptance`
and `negative_data_rejection` can run as errors without false positives:

- integers written as whole floats (`2.0`) in JSON bodies;
- `run_at_ms` of a job, which is bounded relative to the current time;
- the grammar of an SPDX license expression (`format: spdx-license-expression`);
- the refusals that depend on what the log holds, not on the request's shape.

Two more work around the tools, not the API: a `null` id schemathesis reuses from a response as a
path parameter, and a thread-safety bug of CPython's `ast.parse`.
"""

import ast
import re
import threading
import time

import schemathesis
from hypothesis import strategies as st

# Not a rule of the API: CPython 3.11 (seen with 3.11.7) can fail `ast.parse` run by two threads
# at once ("AST constructor recursion depth mismatch", CPython gh-106905), which Hypothesis does
# (to describe lambdas, to read filters) while the two workers generate; the run then ends with
# an error. Parse one source at a time.
_parse = ast.parse
_parse_lock = threading.Lock()


def _parse_one_at_a_time(*args, **kwargs):
    with _parse_lock:
        return _parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time


def _has_whole_float(value):
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_has_whole_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_whole_float(item) for item in value)
    return False


def _as_integers(value):
    """`value` with every whole float (`2.0`) written as an integer (`2`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_integers(item) for item in value]
    return value


# JSON Schema counts `2.0` as an integer; the daemon's decoder (serde) reads only `2` into an
# integer field, and answers 422 for `2.0`. No keyword makes a schema refuse the fractional
# spelling of a whole number, so it cannot be stated: send integers as integers. (A float with a
# fraction, `2.5`, stays, and is still refused where an integer is wanted.)
#
# `POST /v1/jobs` and `/v1/jobs/batch` refuse a `run_at_ms` more than 366 days from now
# (`QueueLimits::delay_ms_max`), which no static document can state: such a time becomes now.
RUN_AT_AHEAD_MS_MAX = 366 * 24 * 3600 * 1000


def _run_at_within_limit(job):
    run_at_ms = job.get("run_at_ms") if isinstance(job, dict) else None
    if isinstance(run_at_ms, int) and not isinstance(run_at_ms, bool):
        now_ms = int(time.time() * 1000)
        # A margin for the time between here and the daemon's decision.
        if run_at_ms > now_ms + RUN_AT_AHEAD_MS_MAX - 60_000:
            job["run_at_ms"] = now_ms


@schemathesis.hook
def before_call(context, case, **kwargs):
    if _has_whole_float(case.body):
        case.body = _as_integers(case.body)
    operation = case.operation
    if operation.method.upper() != "POST" or not isinstance(case.body, dict):
        return
    if operation.path == "/v1/jobs":
        _run_at_within_limit(case.body)
    elif operation.path == "/v1/jobs/batch" and isinstance(case.body.get("jobs"), list):
        for job in case.body["jobs"]:
            _run_at_within_limit(job)


# `POST /v1/datasets`: `license` is an SPDX expression (SPDX 2.3 annex D), which needs a grammar,
# not a regex: the document names the format, and this strategy writes valid expressions.
_KEYWORDS = {"AND", "OR", "WITH"}
_identifiers = st.from_regex(r"\A[A-Za-z0-9.+-]{1,24}\Z").filter(lambda name: name not in _KEYWORDS)


def _expressions(inner):
    atoms = st.one_of(_identifiers, inner.map(lambda expression: f"({expression})"))
    with_exceptions = st.one_of(
        atoms, st.tuples(atoms, _identifiers).map(lambda pair: f"{pair[0]} WITH {pair[1]}")
    )
    return st.tuples(
        with_exceptions,
        st.lists(st.tuples(st.sampled_from([" AND ", " OR "]), with_exceptions), max_size=3),
    ).map(lambda parts: parts[0] + "".join(operator + operand for operator, operand in parts[1]))


schemathesis.openapi.format(
    "spdx-license-expression",
    st.recursive(_identifiers, _expressions, max_leaves=8).filter(lambda text: len(text) <= 256),
)


# A lease must be a lease of the job the request names, and a rollout created under a job takes
# writes only under a held lease of that job: the daemon answers 422 `invalid_request` when the
# ids in a request (each valid alone) name a lease, job and rollout that do not belong together.
# Which job a lease or rollout belongs to is in the log, not in the request, so the document
# cannot state it; only these refusals are exempt from `positive_data_acceptance`.
_MISMATCHED_IDS = re.compile(
    r"(^lease_id: lease_[0-9]+ is a lease of job_[0-9]+"
    r"|^(lease_id|job_id): rollout ro_[0-9]+ runs under job_[0-9]+)"
)


# Not a rule of the API: schemathesis's fuzzing phase reuses ids seen in responses as path
# parameters, and takes the `null` `rollout_id` of a task's default rollout (`RolloutSummary`)
# too, sending `/v1/rollouts/null` as a valid request although the parameter's schema is a
# string of pattern `^ro_(0|[1-9][0-9]{0,17})$`. The daemon rightly refuses it.
_NULL_ROLLOUT = 'invalid rollout id "null"'


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) != "ST202" or response.status_code != 422:
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    if not isinstance(body, dict) or body.get("code") != "invalid_request":
        return True
    message = str(body.get("message", ""))
    if _NULL_ROLLOUT in message and (case.path_parameters or {}).get("rollout_id") in (None, "null"):
        return False
    return not _MISMATCHED_IDS.search(message)
