"""tako_vm — the Python SDK for takod (compatible with Tako VM's SDK).

Server mode:

    import tako_vm
    tako_vm.configure("http://localhost:8000")
    result = tako_vm.send(add, Input(10, 20))      # typed: returns the Output dataclass
    job_id = tako_vm.submit_code("print(1)")       # async: get_result(job_id) later

Sessions (a stateful interpreter; docs/SESSIONS.md):

    with tako_vm.session() as s:
        s.run("x = 21")
        print(s.run("x * 2").result)               # "42"

Library mode (no server: runs through the `tako run` CLI):

    from tako_vm import Sandbox
    with Sandbox() as sb:
        print(sb.run("print(1 + 1)").stdout)       # "2\\n"
"""
from .client import (DEFAULT_BASE_URL, MAX_REQUIREMENTS, ExecutionResult, TakoVM, __version__,
                     configure, get_client)
from .exceptions import (APIError, ClientError, ExecutionError, MalformedResponseError,
                         SDKExecutionError, ServerError, TakoVMError, TransportError,
                         ValidationError)
from .session import (CellError, CellResult, Session, SessionBusyError, SessionEndedError,
                      SessionLimitError, SessionUnavailableError)
from .sandbox import DEFAULT_IMAGE, Sandbox, SandboxResult, find_tako_binary, sandbox_run

__all__ = [
    "configure", "get_client", "send", "send_raw", "submit", "submit_code", "execute",
    "get_status", "get_result", "cancel", "rerun", "fork", "download_artifact",
    "list_executions", "get_execution", "list_job_types", "get_job_type", "build_job_type",
    "health", "pool_stats", "dlq_stats", "session", "list_sessions",
    "Session", "CellResult", "CellError", "SessionBusyError", "SessionEndedError",
    "SessionLimitError", "SessionUnavailableError",
    "TakoVM", "ExecutionResult", "Sandbox", "SandboxResult", "sandbox_run", "find_tako_binary",
    "TakoVMError", "TransportError", "APIError", "ServerError", "ClientError",
    "MalformedResponseError", "ExecutionError", "SDKExecutionError", "ValidationError",
    "DEFAULT_BASE_URL", "DEFAULT_IMAGE", "MAX_REQUIREMENTS", "__version__",
]


def send(func, input_data, timeout=None, job_type=None, **kwargs):
    """Run func(input_data) on the server; return the output as func's return type.
    Raises ExecutionError when the run fails, ValidationError for bad types."""
    return get_client().send(func, input_data, timeout=timeout, job_type=job_type, **kwargs)


def send_raw(func, input_data, timeout=None, job_type=None, **kwargs):
    """Like send(), but return the ExecutionResult and never raise on a failed run."""
    return get_client().send_raw(func, input_data, timeout=timeout, job_type=job_type, **kwargs)


def submit(func, input_data, timeout=None, job_type=None, **kwargs):
    """Queue func(input_data); return the job id."""
    return get_client().submit(func, input_data, timeout=timeout, job_type=job_type, **kwargs)


def submit_code(code, input_data=None, **kwargs):
    """Queue code (POST /execute/async); return the job id."""
    return get_client().submit_code(code, input_data, **kwargs)


def execute(code, input_data=None, **kwargs):
    """Run code and wait (POST /execute); return an ExecutionResult."""
    return get_client().execute(code, input_data, **kwargs)


def get_status(job_id):
    return get_client().get_status(job_id)


def get_result(job_id, timeout=None, view=None, wait=True):
    return get_client().get_result(job_id, timeout=timeout, view=view, wait=wait)


def cancel(job_id):
    return get_client().cancel(job_id)


def rerun(job_id, job_type=None, timeout=None):
    return get_client().rerun(job_id, job_type=job_type, timeout=timeout)


def fork(job_id, code, job_type=None, timeout=None):
    return get_client().fork(job_id, code, job_type=job_type, timeout=timeout)


def download_artifact(job_id, name):
    return get_client().download_artifact(job_id, name)


def list_executions(status=None, job_type=None, limit=100, offset=0, view=None):
    return get_client().list_executions(status=status, job_type=job_type, limit=limit,
                                        offset=offset, view=view)


def get_execution(execution_id, view=None):
    return get_client().get_execution(execution_id, view=view)


def list_job_types():
    return get_client().list_job_types()


def get_job_type(name):
    return get_client().get_job_type(name)


def build_job_type(name, version_tag=None):
    return get_client().build_job_type(name, version_tag=version_tag)


def health():
    return get_client().health()


def pool_stats():
    return get_client().pool_stats()


def dlq_stats():
    return get_client().dlq_stats()


def session(job_type=None, idle_timeout=None, max_lifetime=None, memory=None, cpus=None,
            env=None):
    """Create a session on the default client (a Session; use it with `with`)."""
    return get_client().session(job_type=job_type, idle_timeout=idle_timeout,
                                max_lifetime=max_lifetime, memory=memory, cpus=cpus, env=env)


def list_sessions():
    return get_client().list_sessions()
