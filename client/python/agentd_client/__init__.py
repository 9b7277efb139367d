"""Python client for agentd (standard library only).

    from agentd_client import Client, Worker, JobFailed, AgentdError

    client = Client("http://127.0.0.1:7070")   # or Client(): $AGENTD_URL, $AGENTD_TOKEN, $AGENTD_CA_CERT
    job = client.submit("actor", "episode", {"prompt": "..."}, task_id="task-1")
    Worker(client, ["actor"], handle).run(max_jobs=1)

    from agentd_client import OutputFormatError, parse_output, render_output
    parsed = parse_output(completion)     # <think>/<action>/<state_update>; also output_format.parse

See `client/python/README.md` and `examples/actor_loop.py`.
"""

from . import output_format
from .client import DEFAULT_URL, AgentdError, Client
from .output_format import OutputFormatError, ParsedOutput
from .output_format import parse as parse_output
from .output_format import render as render_output
from .worker import JobContext, JobFailed, Worker

__all__ = [
    "AgentdError",
    "Client",
    "DEFAULT_URL",
    "JobContext",
    "JobFailed",
    "OutputFormatError",
    "ParsedOutput",
    "Worker",
    "output_format",
    "parse_output",
    "render_output",
]
__version__ = "0.1.0"
