"""Python client for agentd (standard library only).

    from agentd_client import Client, Worker, JobFailed, AgentdError

    client = Client("http://127.0.0.1:7070")   # or Client(): $AGENTD_URL, $AGENTD_TOKEN, $AGENTD_CA_CERT
    job = client.submit("actor", "episode", {"prompt": "..."}, task_id="task-1")
    Worker(client, ["actor"], handle).run(max_jobs=1)

    from agentd_client import OutputFormatError, parse_output, render_output
    parsed = parse_output(completion)     # <think>/<action>/<state_update>; also output_format.parse

    from agentd_client import gpu          # nvidia-smi discovery, selection, pinning, tags
    from agentd_client import serve_persistent   # be the long-lived actor of `agentctl worker --persistent`

See `client/python/README.md`, `examples/actor_loop.py` and `examples/persistent_actor.py`.
"""

from . import gpu, output_format
from .client import DEFAULT_URL, AgentdError, Client
from .output_format import OutputFormatError, ParsedOutput
from .output_format import parse as parse_output
from .output_format import render as render_output
from .worker import (Cancelled, JobContext, JobFailed, PersistentJobContext, Worker,
                     keep_stdout_for_protocol, serve_persistent)

__all__ = [
    "AgentdError",
    "Cancelled",
    "Client",
    "DEFAULT_URL",
    "JobContext",
    "JobFailed",
    "OutputFormatError",
    "ParsedOutput",
    "PersistentJobContext",
    "Worker",
    "gpu",
    "keep_stdout_for_protocol",
    "output_format",
    "parse_output",
    "render_output",
    "serve_persistent",
]
__version__ = "0.1.0"
