"""The SDK's exceptions. Everything it raises on purpose derives from TakoVMError.

    TakoVMError
    ├── TransportError            no answer: connection refused, reset, timed out
    ├── APIError                  an HTTP error answer (.status_code, .detail, .correlation_id)
    │   ├── ServerError           5xx (.retryable for 502/503/504)
    │   └── ClientError           4xx
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
