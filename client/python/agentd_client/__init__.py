"""Python client for agentd (standard library only).

    from agentd_client import Client, Worker, JobFailed, AgentdError

    client = Client("http://127.0.0.1:7070")   # or Client(): $AGENTD_URL, $AGENTD_TOKEN, $AGENTD_CA_CERT
    job = client.submit("actor", "episode", {"prompt": "..."}, task_id="task-1")
    Worker(client, ["actor"], handle).run(max_jobs=1)

See `client/python/README.md` and `examples/actor_loop.py`.
"""

from .client import DEFAULT_URL, AgentdError, Client
from .worker import JobContext, JobFailed, Worker

__all__ = ["AgentdError", "Client", "DEFAULT_URL", "JobContext", "JobFailed", "Worker"]
__version__ = "0.1.0"
