"""Reward functions for trainers that score completions the way agentd does.

An online RL trainer samples its own completions for the prompts of agentd's ``trl_grpo`` or
``verl_rl`` export and needs them scored by the same rule agentd's ``astgrep.verify`` workers
apply. These functions do exactly that, one completion at a time:

1. parse the completion with the shared output-format parser (``output_format.parse``, the
   one the daemon uses for ``raw_output``); an output that does not parse scores 0 with a
   ``format`` component, as the daemon records it;
2. put the parsed action into the row's ``verify_payload`` (the ``astgrep.verify`` payload less
   its action, built by the daemon from the dataset record: docs/exports.md);
3. run ``agentctl verify --json`` on it: the worker's own payload validation, sandbox (test
   files protected, trusted test runner) and rule, with the row's ``reward_settings`` (the
   ``[rewards]`` the daemon recorded), and return its ``reward``.

TRL (``GRPOTrainer(reward_funcs=[trl_reward], ...)``) passes the dataset's extra columns as
keyword arguments; verl (``custom_reward_function.path`` pointing at this file, ``name:
compute_score``) passes the row's ``extra_info``. Standard library only; ``agentctl`` is found
through ``$AGENTCTL`` or ``PATH``. Tests that run a test command need the sandbox's user switch,
so score as root (or in a container) when the records have ``test_command``.
"""

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

from .output_format import OutputFormatError
from .output_format import parse as parse_output

__all__ = ["VerifyError", "completion_text", "compute_score", "trl_reward", "verify"]

#: Most ``agentctl verify`` processes a batch runs at once (default: the machine's CPUs).
PARALLEL_ENV = "AGENTD_REWARD_PARALLEL"


class VerifyError(RuntimeError):
    """``agentctl verify`` reached no verdict (invalid payload, sandbox could not run)."""


def _agentctl():
    found = os.environ.get("AGENTCTL") or shutil.which("agentctl")
    if not found:
        raise VerifyError("agentctl not found: put it on PATH or set $AGENTCTL")
    return found


def completion_text(completion):
    """The model's text: a plain string, or the last message of a conversational completion
    (TRL's ``[{"role": "assistant", "content": ...}]``)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        if isinstance(last, dict) and isinstance(last.get("content"), str):
            return last["content"]
    raise TypeError("a completion is a string or a list of {role, content} messages")


def _as_json_object(value, what):
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a JSON object or its text")
    return value


def verify(completion, verify_payload, reward_settings=None, timeout=None):
    """The full verdict of one completion, as ``agentctl verify --json`` prints it (``reward``,
    ``verified``, ``components``, ``reasons``, ``outcome``, ``diff``, ...); for an output that
    does not parse, ``{"reward": 0.0, "verified": False, "components": {"format": 0.0},
    "format_error": {"code", "message"}}`` without any sandbox run."""
    payload = _as_json_object(verify_payload, "verify_payload")
    if payload is None:
        raise VerifyError("this record has no verify_payload (see docs/exports.md)")
    try:
        parsed = parse_output(completion_text(completion))
    except OutputFormatError as error:
        return {
            "reward": 0.0,
            "verified": False,
            "components": {"format": 0.0},
            "reasons": {"format": str(error)},
            "format_error": {"code": error.code, "message": str(error)},
        }
    payload = dict(payload, action=parsed.action)
    command = [_agentctl(), "verify", "--payload", "-", "--json"]
    settings = _as_json_object(reward_settings, "reward_settings")
    if settings is not None:
        command += ["--rewards", json.dumps(settings)]
    try:
        done = subprocess.run(
            command,
            input=json.dumps(payload).encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise VerifyError(f"agentctl verify took longer than {timeout} s") from error
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise VerifyError(f"agentctl verify exited {done.returncode}: {message}")
    return json.loads(done.stdout)


def _score(completion, verify_payload, reward_settings):
    return float(verify(completion, verify_payload, reward_settings)["reward"])


def trl_reward(prompts, completions, verify_payload, reward_settings=None, **columns):
    """A TRL reward function: ``(prompts, completions, **columns) -> list[float]``.

    ``verify_payload`` and ``reward_settings`` are the ``trl_grpo`` export's columns, one value
    per completion (TRL repeats a prompt's row for each of its completions). A row without a
    payload (a language the verifier does not run) scores ``None``, which TRL leaves out."""
    count = len(completions)
    if len(verify_payload) != count:
        raise ValueError("one verify_payload per completion")
    settings = list(reward_settings) if reward_settings is not None else [None] * count

    def one(index):
        if verify_payload[index] is None:
            return None
        return _score(completions[index], verify_payload[index], settings[index])

    workers = int(os.environ.get(PARALLEL_ENV) or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, count or 1))) as pool:
        return list(pool.map(one, range(count)))


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's ``compute_score(data_source, solution_str, ground_truth, extra_info)``.

    Reads ``verify_payload`` and ``reward_settings`` from ``extra_info`` (the ``verl_rl``
    export's); ``ground_truth`` (the record's ``post``) is already in the payload. A row
    without a payload scores 0.0."""
    extra_info = extra_info or {}
    payload = extra_info.get("verify_payload")
    if payload is None:
        return 0.0
    return _score(solution_str, payload, extra_info.get("reward_settings"))
