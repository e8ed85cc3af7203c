"""The SDK's exceptions. Everything it raises on purpose derives from TakoVMError.

    TakoVMError
    ├── TransportError            no answer: connection refused, reset, timed out
    ├── APIError                  an HTTP error answer (.status_code, .detail, .correlation_id)
    │   ├── ServerError           5xx (.retryable for 502/503/504)
    │   │   └── SessionUnavailableError  503 from a session route (no room for a session)
    │   └── ClientError           4xx
    │       ├── SessionBusyError  409: the session is running a cell
    │       ├── SessionEndedError 410: the session has ended (.status, .end_reason)
    │       └── SessionLimitError 429: the key has its maximum of live sessions
    ├── MalformedResponseError    the answer is not the JSON it should be
    ├── ExecutionError            the job ran and failed (.stdout, .stderr, .exit_code, ...)
    │   (alias SDKExecutionError)
    └── ValidationError           bad input or output types for send()
"""
from typing import Any, Optional


class TakoVMError(Exception):
    """Base class of every error the SDK raises."""


class TransportError(TakoVMError):
    """The server could not be reached, or the connection failed or timed out."""


class APIError(TakoVMError):
    """The server answered with an HTTP error status."""

    def __init__(self, status_code: int, detail: Any = None, correlation_id: Optional[str] = None,
                 message: Optional[str] = None):
        self.status_code = status_code
        self.detail = detail
        self.correlation_id = correlation_id
        super().__init__(message or f"HTTP {status_code}: {_detail_text(detail)}")


class ServerError(APIError):
    """A 5xx answer. `retryable` is True for 502, 503 and 504."""

    @property
    def retryable(self) -> bool:
        return self.status_code in (502, 503, 504)


class ClientError(APIError):
    """A 4xx answer (bad request, not found, unauthorized, conflict, ...)."""


class MalformedResponseError(TakoVMError):
    """The server's answer could not be understood."""


class ExecutionError(TakoVMError):
    """The code ran but did not succeed (exception, exit code, timeout, OOM, cancel)."""

    def __init__(self, message: str, stdout: str = "", stderr: str = "",
                 exit_code: Optional[int] = None, correlation_id: Optional[str] = None,
                 error_type: Optional[str] = None, result: Any = None):
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code
        self.correlation_id = correlation_id
        self.error_type = error_type
        self.result = result


SDKExecutionError = ExecutionError


class SessionBusyError(ClientError):
    """409: the session is running a cell; wait for it, or interrupt() it."""


class SessionEndedError(ClientError):
    """410: the session has ended. .status is closed, expired, lost or failed; .end_reason
    says why ("idle for 600 s", "closed by the client", ...)."""

    def __init__(self, status_code, detail=None, correlation_id=None, message=None,
                 status: Optional[str] = None, end_reason: Optional[str] = None):
        super().__init__(status_code, detail, correlation_id, message)
        self.status = status
        self.end_reason = end_reason


class SessionLimitError(ClientError):
    """429: this API key already has its maximum of live sessions (sessions.max_per_key).
    .retry_after is the server's Retry-After (seconds) when it sent one."""

    def __init__(self, status_code, detail=None, correlation_id=None, message=None,
                 retry_after: Optional[float] = None):
        super().__init__(status_code, detail, correlation_id, message)
        self.retry_after = retry_after


class SessionUnavailableError(ServerError):
    """503: no session could be made (the server's maximum of live sessions, sessions off,
    or the container could not be started). .retry_after as for SessionLimitError."""

    def __init__(self, status_code, detail=None, correlation_id=None, message=None,
                 retry_after: Optional[float] = None):
        super().__init__(status_code, detail, correlation_id, message)
        self.retry_after = retry_after


class CellError(ExecutionError):
    """A cell did not finish ok. .type, .message and .traceback come from the cell's error
    (.error_type is .type, as for ExecutionError); .status is the cell's status (error,
    timeout, interrupted, crashed); .cell is the CellResult."""

    def __init__(self, cell):  # cell: tako_vm.session.CellResult
        err = cell.error if isinstance(cell.error, dict) else {}
        self.type = err.get("type") or cell.status
        self.message = err.get("message") or ""
        self.traceback = err.get("traceback") or ""
        self.status = cell.status
        self.cell = cell
        text = f"cell {cell.execution_count} {cell.status}: {self.type}"
        if self.message:
            text += f": {self.message}"
        super().__init__(text, stdout=cell.stdout, stderr=cell.stderr, error_type=self.type,
                         result=cell.result)


class ValidationError(TakoVMError):
    """The input or the output did not match the function's types."""


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for e in detail:
            if isinstance(e, dict):
                loc = ".".join(str(p) for p in e.get("loc", []) if p != "body")
                parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg")))
            else:
                parts.append(str(e))
        return "; ".join(parts)
    return "" if detail is None else str(detail)
