"""TakoVM: the HTTP client for takod (and Tako VM servers), standard library only.

Typed calls (send, send_raw, submit) ship a function's source; the async lifecycle
(submit_code, get_status, get_result, cancel, rerun, fork, download_artifact) and history
and metadata calls map one-to-one onto the REST API (shared/API.md).

Transport: one http.client connection per request; connect_timeout bounds the connect,
the read timeout is derived from the job's timeout. GETs are retried (3 times, backoff
0.5 s) on 502/503/504 and connection errors; submits are retried on transport errors and
502/503/504 with the same idempotency key, so a retry can never create a second job; both
also wait out a 429 (Retry-After). The synchronous POST /execute is never retried.
"""
import dataclasses
import hashlib
import http.client
import inspect
import json
import os
import socket
import ssl
import time
import typing
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import _codegen
from ._runtime import _tako_from_json, _tako_to_json
from .exceptions import (APIError, ClientError, ExecutionError, MalformedResponseError,
                         ServerError, TransportError, ValidationError)

DEFAULT_BASE_URL = "http://localhost:8000"
MAX_REQUIREMENTS = 50
MAX_WAIT_TIMEOUT = 300
_RETRY_STATUSES = (502, 503, 504)
_RETRY_AFTER_CAP = 30.0  # a 429's Retry-After is honoured up to this many seconds
_TERMINAL = ("succeeded", "failed", "timeout", "oom", "cancelled")
_FALLBACK_READ_TIMEOUT = 930.0

try:
    from importlib.metadata import version as _pkg_version
    __version__ = _pkg_version("tako-vm")
except Exception:  # not installed (PYTHONPATH): the source tree's version
    __version__ = "0.1.0"


@dataclass
class ExecutionResult:
    """The result of one run (POST /execute, or a finished job's record)."""
    success: bool
    output: Any = None
    execution_time: Optional[float] = None
    stdout: str = ""
    stderr: str = ""
    error: Optional[str] = None
    job_type: Optional[str] = None
    exit_code: Optional[int] = None
    correlation_id: Optional[str] = None
    job_id: Optional[str] = None
    runtime: Optional[str] = None
    deserialization_error: Optional[str] = None
    status: Optional[str] = None
    error_type: Optional[str] = None
    artifacts: List[dict] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_response(cls, data: dict, correlation_id: Optional[str] = None) -> "ExecutionResult":
        err = data.get("error")
        error_type = data.get("error_type")
        if isinstance(err, dict):
            error_type = err.get("type", error_type)
            err = err.get("message")
        status = data.get("status")
        success = data.get("success")
        if success is None:
            success = status == "succeeded"
        exec_time = data.get("execution_time")
        if exec_time is None:
            ms = (data.get("timing") or {}).get("execution_ms")
            if ms is None:
                ms = data.get("duration_ms")
            exec_time = ms / 1000.0 if isinstance(ms, (int, float)) else None
        return cls(
            success=bool(success),
            output=data.get("output"),
            execution_time=exec_time,
            stdout=data.get("stdout") or "",
            stderr=data.get("stderr") or "",
            error=err,
            job_type=data.get("job_type"),
            exit_code=data.get("exit_code"),
            correlation_id=correlation_id or data.get("correlation_id"),
            job_id=data.get("job_id") or data.get("execution_id"),
            runtime=data.get("runtime"),
            status=status or ("succeeded" if success else "failed"),
            error_type=error_type,
            artifacts=list(data.get("artifacts") or []),
            raw=data,
        )


class _Response:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name) if self.headers is not None else None

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise MalformedResponseError(
                f"the server's answer (HTTP {self.status}) is not JSON: {e}") from None


class TakoVM:
    """A client for one takod server.

    TakoVM(base_url="http://localhost:8000", timeout=30, headers=None, session=None,
           connect_timeout=10.0, correlation_id=None, api_key=None)

    timeout is the default execution timeout (seconds) sent with jobs (None: the job
    type's). api_key (default: $TAKO_API_KEY) is sent as X-API-Key; headers are added to
    every request. session exists for signature compatibility with Tako VM's
    requests-based client and is ignored (kept as .http_session; .session() creates a
    takod session, docs/SESSIONS.md).
    """

    def __init__(self, base_url: Optional[str] = None, timeout: Optional[int] = 30,
                 headers: Optional[Dict[str, str]] = None, session: Any = None,
                 connect_timeout: float = 10.0, correlation_id: Optional[str] = None,
                 api_key: Optional[str] = None, max_retries: int = 3):
        base_url = base_url or os.environ.get("TAKO_URL") or DEFAULT_BASE_URL
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port], not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._scheme = u.scheme
        self._host = u.hostname
        self._port = u.port
        self._prefix = u.path.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.correlation_id = correlation_id
        self.max_retries = max_retries
        self.headers = {"User-Agent": f"tako-vm-python/{__version__}",
                        "Accept": "application/json"}
        key = api_key if api_key is not None else os.environ.get("TAKO_API_KEY")
        if key:
            self.headers["X-API-Key"] = key
        if headers:
            self.headers.update(headers)
        self.http_session = session  # not .session: that is the method making a Session

    def __repr__(self):
        return f"TakoVM({self.base_url!r})"

    # ---- transport ----

    def _connection(self, read_timeout: float):
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(self._host, self._port,
                                               timeout=self.connect_timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port,
                                              timeout=self.connect_timeout)
        conn.connect()
        conn.sock.settimeout(read_timeout)
        return conn

    def _once(self, method: str, path: str, body: Optional[bytes], headers: dict,
              read_timeout: float) -> _Response:
        conn = None
        try:
            conn = self._connection(read_timeout)
            conn.request(method, self._prefix + path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            return _Response(r.status, r.headers, data)
        except socket.timeout as e:
            raise TransportError(f"{method} {self.base_url}{path}: timed out ({e})") from None
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(f"cannot reach {self.base_url}: {e}") from None
        finally:
            if conn is not None:
                conn.close()

    def _request(self, method: str, path: str, *, json_body: Any = None,
                 params: Optional[dict] = None, read_timeout: float = 60.0,
                 retry: Optional[bool] = None, correlation_id: Optional[str] = None,
                 ok_statuses: tuple = ()) -> _Response:
        if params:
            q = {k: ("true" if v is True else "false" if v is False else v)
                 for k, v in params.items() if v is not None}
            if q:
                path += "?" + urllib.parse.urlencode(q)
        headers = dict(self.headers)
        cid = correlation_id or self.correlation_id
        if cid:
            headers["X-Correlation-ID"] = cid
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif method == "POST":
            body = b""
        if retry is None:
            retry = method in ("GET", "HEAD")
        attempts = 1 + (self.max_retries if retry else 0)
        delay = 0.5
        for attempt in range(attempts):
            try:
                resp = self._once(method, path, body, headers, read_timeout)
            except TransportError:
                if attempt + 1 >= attempts:
                    raise
            else:
                if resp.status < 400 or resp.status in ok_statuses:
                    return resp
                retryable = resp.status in _RETRY_STATUSES or resp.status == 429
                if not (retryable and attempt + 1 < attempts):
                    raise self._error(resp)
                if resp.status == 429:  # rate limited: wait as long as the server asks
                    try:
                        wait = float(resp.header("Retry-After") or delay)
                    except ValueError:
                        wait = delay
                    time.sleep(min(max(wait, 0.1), _RETRY_AFTER_CAP))
                    continue
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise TransportError(f"{method} {path}: no answer")  # not reached

    @staticmethod
    def _error(resp: _Response) -> APIError:
        detail: Any = None
        cid = resp.header("X-Correlation-ID")
        try:
            data = json.loads(resp.body)
            if isinstance(data, dict):
                detail = data.get("detail", data)
                cid = data.get("correlation_id") or cid
            else:
                detail = data
        except ValueError:
            detail = resp.body.decode("utf-8", "replace")[:500]
        cls = ServerError if resp.status >= 500 else ClientError
        return cls(resp.status, detail, cid)

    @staticmethod
    def _q(s: str) -> str:
        return urllib.parse.quote(str(s), safe="")

    # ---- typed calls ----

    def _job_body(self, code: str, input_data: Any, timeout, job_type, requirements,
                  startup_timeout, idempotency_key=None) -> dict:
        body: Dict[str, Any] = {"code": code}
        if input_data is not None:
            body["input_data"] = input_data
        t = timeout if timeout is not None else self.timeout
        if t is not None:
            body["timeout"] = int(t)
        if startup_timeout is not None:
            body["startup_timeout"] = int(startup_timeout)
        if job_type is not None:
            body["job_type"] = job_type
        if requirements:
            reqs = list(requirements)
            if len(reqs) > MAX_REQUIREMENTS:
                raise ValidationError(f"at most {MAX_REQUIREMENTS} requirements")
            body["requirements"] = reqs
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return body

    def _read_timeout(self, timeout, startup_timeout) -> float:
        t = timeout if timeout is not None else self.timeout
        if t is None:
            return _FALLBACK_READ_TIMEOUT
        return float(t) + float(startup_timeout if startup_timeout is not None else 120) + 30.0

    @staticmethod
    def _input_json(func, input_data) -> dict:
        if dataclasses.is_dataclass(input_data) and not isinstance(input_data, type):
            hints = _codegen.resolve_hints(func)
            params = [p for p in _signature_params(func)]
            if params:
                want = hints.get(params[0])
                if isinstance(want, type) and dataclasses.is_dataclass(want) and \
                        not isinstance(input_data, want):
                    raise ValidationError(
                        f"{func.__name__} takes {want.__name__}, "
                        f"not {type(input_data).__name__}")
        elif not isinstance(input_data, dict):
            raise ValidationError(
                "input_data must be a dataclass instance (or a dict), "
                f"not {type(input_data).__name__}")
        try:
            data = _tako_to_json(input_data)
        except TypeError as e:
            raise ValidationError(f"input_data cannot be sent as JSON: {e}") from None
        return data

    @staticmethod
    def _typed_output(func, output):
        hints = _codegen.resolve_hints(func, _codegen.shipped_classes(func))
        rt = hints.get("return", typing.Any)
        if rt is typing.Any or isinstance(rt, str):
            return output
        try:
            return _tako_from_json(rt, output)
        except (TypeError, ValueError, KeyError) as e:
            raise ValidationError(
                f"the output of {func.__name__} does not match {getattr(rt, '__name__', rt)}: "
                f"{e}") from None

    def send_raw(self, func: Callable, input_data: Any, timeout: Optional[int] = None,
                 job_type: Optional[str] = None, requirements: Optional[List[str]] = None,
                 startup_timeout: Optional[int] = None, idempotency_key: Optional[str] = None,
                 correlation_id: Optional[str] = None) -> ExecutionResult:
        """Run func(input_data) remotely; return the ExecutionResult (never raises on a
        failed run). output is the raw JSON; deserialization_error says when it does not
        match the return type."""
        code = _codegen.build_script(func)
        data = self._input_json(func, input_data)
        result = self.execute(code, data, timeout=timeout, job_type=job_type,
                              requirements=requirements, startup_timeout=startup_timeout,
                              idempotency_key=idempotency_key, correlation_id=correlation_id)
        if result.success:
            try:
                self._typed_output(func, result.output)
            except ValidationError as e:
                result.deserialization_error = str(e)
        return result

    def send(self, func: Callable, input_data: Any, timeout: Optional[int] = None,
             job_type: Optional[str] = None, requirements: Optional[List[str]] = None,
             startup_timeout: Optional[int] = None, idempotency_key: Optional[str] = None,
             correlation_id: Optional[str] = None):
        """Run func(input_data) remotely and return its output as func's return type.

        Raises ExecutionError if the run failed, ValidationError for bad types."""
        result = self.send_raw(func, input_data, timeout=timeout, job_type=job_type,
                               requirements=requirements, startup_timeout=startup_timeout,
                               idempotency_key=idempotency_key, correlation_id=correlation_id)
        if not result.success:
            raise ExecutionError(
                f"{func.__name__} failed: {result.error or result.status}",
                stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code,
                correlation_id=result.correlation_id, error_type=result.error_type,
                result=result)
        return self._typed_output(func, result.output)

    def execute(self, code: str, input_data: Optional[dict] = None, *,
                timeout: Optional[int] = None, job_type: Optional[str] = None,
                requirements: Optional[List[str]] = None, startup_timeout: Optional[int] = None,
                idempotency_key: Optional[str] = None,
                correlation_id: Optional[str] = None) -> ExecutionResult:
        """POST /execute: run code and wait (never retried). Does not raise on a failed run."""
        body = self._job_body(code, input_data, timeout, job_type, requirements, startup_timeout,
                              idempotency_key)
        resp = self._request("POST", "/execute", json_body=body,
                             read_timeout=self._read_timeout(timeout, startup_timeout),
                             retry=False, correlation_id=correlation_id)
        data = resp.json()
        if not isinstance(data, dict):
            raise MalformedResponseError("POST /execute did not answer a JSON object")
        return ExecutionResult.from_response(data, resp.header("X-Correlation-ID"))

    # ---- async lifecycle ----

    def submit(self, func: Callable, input_data: Any, timeout: Optional[int] = None,
               job_type: Optional[str] = None, requirements: Optional[List[str]] = None,
               startup_timeout: Optional[int] = None, idempotency_key: Optional[str] = None,
               correlation_id: Optional[str] = None) -> str:
        """Queue func(input_data); return the job id (get_result() to fetch it)."""
        return self.submit_code(_codegen.build_script(func), self._input_json(func, input_data),
                                timeout=timeout, startup_timeout=startup_timeout,
                                job_type=job_type, requirements=requirements,
                                idempotency_key=idempotency_key, correlation_id=correlation_id)

    def submit_code(self, code: str, input_data: Optional[dict] = None, *,
                    timeout: Optional[int] = None, startup_timeout: Optional[int] = None,
                    job_type: Optional[str] = None, requirements: Optional[List[str]] = None,
                    idempotency_key: Optional[str] = None,
                    correlation_id: Optional[str] = None) -> str:
        """POST /execute/async; return the job id. An idempotency key is generated when none
        is given, and retries (transport errors, 502/503/504) reuse it."""
        key = idempotency_key or uuid.uuid4().hex
        body = self._job_body(code, input_data, timeout, job_type, requirements, startup_timeout,
                              key)
        resp = self._request("POST", "/execute/async", json_body=body, read_timeout=60.0,
                             retry=True, correlation_id=correlation_id)
        data = resp.json()
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if not job_id:
            raise MalformedResponseError("POST /execute/async answered no job_id")
        return job_id

    def get_status(self, job_id: str) -> dict:
        """GET /jobs/{id}: {job_id, status, created_at, started_at, ended_at, duration_ms,
        queue_position}."""
        return self._request("GET", f"/jobs/{self._q(job_id)}").json()

    def get_result(self, job_id: str, timeout: Optional[float] = None,
                   view: Optional[str] = None, wait: bool = True) -> dict:
        """GET /jobs/{id}/result: the job's record. With wait (default), long-polls until the
        job has finished or `timeout` seconds (default and cap 300) have passed, then raises
        ClientError 408. Without wait, an unfinished job gives {job_id, status, message}."""
        if not wait:
            return self._request("GET", f"/jobs/{self._q(job_id)}/result",
                                 params={"view": view}).json()
        total = min(float(timeout if timeout is not None else MAX_WAIT_TIMEOUT),
                    float(MAX_WAIT_TIMEOUT))
        deadline = time.monotonic() + total
        pause = 0.2
        last = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            slice_s = max(1, min(int(left + 0.999), MAX_WAIT_TIMEOUT))
            resp = self._request("GET", f"/jobs/{self._q(job_id)}/result",
                                 params={"wait": True, "timeout": slice_s, "view": view},
                                 read_timeout=slice_s + 30.0, ok_statuses=(408,))
            if resp.status == 408:
                continue
            data = resp.json()
            last = data
            if not isinstance(data, dict) or data.get("status") in _TERMINAL or \
                    ("status" not in data and "success" in data):
                return data
            # answered "unfinished" at once (no long-poll): poll politely
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 2.0)
        raise ClientError(408, "Timeout waiting for job", None,
                          f"job {job_id} did not finish within {total:g} s "
                          f"(last status: {(last or {}).get('status', 'unknown')})")

    def wait(self, job_id: str, timeout: Optional[float] = None) -> ExecutionResult:
        """get_result() as an ExecutionResult."""
        return ExecutionResult.from_response(self.get_result(job_id, timeout=timeout,
                                                             view="full"))

    def cancel(self, job_id: str) -> dict:
        """POST /jobs/{id}/cancel: {status: "cancelled", job_id}."""
        return self._request("POST", f"/jobs/{self._q(job_id)}/cancel").json()

    def rerun(self, job_id: str, job_type: Optional[str] = None,
              timeout: Optional[int] = None) -> str:
        """POST /jobs/{id}/rerun: a new job with the same code and input; its id."""
        body: Dict[str, Any] = {}
        if job_type is not None:
            body["job_type"] = job_type
        if timeout is not None:
            body["timeout"] = int(timeout)
        data = self._request("POST", f"/jobs/{self._q(job_id)}/rerun", json_body=body,
                             retry=False).json()
        return data["job_id"]

    def fork(self, job_id: str, code: str, job_type: Optional[str] = None,
             timeout: Optional[int] = None) -> str:
        """POST /jobs/{id}/fork: a new job running `code` on the same input; its id."""
        body: Dict[str, Any] = {"code": code}
        if job_type is not None:
            body["job_type"] = job_type
        if timeout is not None:
            body["timeout"] = int(timeout)
        data = self._request("POST", f"/jobs/{self._q(job_id)}/fork", json_body=body,
                             retry=False).json()
        return data["job_id"]

    def download_artifact(self, job_id: str, name: str) -> bytes:
        """GET /jobs/{id}/artifacts/{name}: the file's bytes (checked against the ETag)."""
        resp = self._request("GET", f"/jobs/{self._q(job_id)}/artifacts/{self._q(name)}",
                             read_timeout=300.0)
        etag = (resp.header("ETag") or "").strip('"')
        if len(etag) == 64 and hashlib.sha256(resp.body).hexdigest() != etag.lower():
            raise MalformedResponseError(f"artifact {name}: the bytes do not match the ETag")
        return resp.body

    # ---- history and metadata ----

    def list_executions(self, status: Optional[str] = None, job_type: Optional[str] = None,
                        limit: int = 100, offset: int = 0, view: Optional[str] = None) -> dict:
        """GET /executions: {items, limit, offset, has_more, count}, newest first."""
        return self._request("GET", "/executions", params={
            "status": status, "job_type": job_type, "limit": limit, "offset": offset,
            "view": view}).json()

    def get_execution(self, execution_id: str, view: Optional[str] = None) -> dict:
        """GET /executions/{id}: one record."""
        return self._request("GET", f"/executions/{self._q(execution_id)}",
                             params={"view": view}).json()

    def list_job_types(self) -> List[dict]:
        """GET /job-types: [{name, requirements, python_version, memory_limit, ...}]."""
        data = self._request("GET", "/job-types").json()
        if isinstance(data, dict):
            data = data.get("job_types", data.get("items", []))
        return data

    def get_job_type(self, name: str) -> dict:
        """GET /job-types/{name}."""
        return self._request("GET", f"/job-types/{self._q(name)}").json()

    def build_job_type(self, name: str, version_tag: Optional[str] = None) -> dict:
        """POST /job-types/{name}/build: {status: "built", job_type, version, digest,
        image_ref}."""
        path = f"/job-types/{self._q(name)}/build"
        if version_tag:
            path += "?" + urllib.parse.urlencode({"version_tag": version_tag})
        return self._request("POST", path, read_timeout=3600.0, retry=False).json()

    # ---- sessions (docs/SESSIONS.md) ----

    def session(self, job_type: Optional[str] = None, idle_timeout: Optional[int] = None,
                max_lifetime: Optional[int] = None, memory=None, cpus: Optional[float] = None,
                env: Optional[dict] = None):
        """Create a session (POST /sessions): a tako_vm.Session, usable with `with`."""
        from .session import Session
        return Session(self, job_type=job_type, idle_timeout=idle_timeout,
                       max_lifetime=max_lifetime, memory=memory, cpus=cpus, env=env)

    def list_sessions(self) -> List[dict]:
        """GET /sessions: the caller's live sessions (the admin key: everyone's)."""
        from .session import list_sessions
        return list_sessions(self)

    def health(self) -> dict:
        """GET /health: {status, docker_available, database_available, version, queue_stats}."""
        return self._request("GET", "/health").json()

    def pool_stats(self) -> dict:
        return self._request("GET", "/pool/stats").json()

    def dlq_stats(self) -> dict:
        return self._request("GET", "/dlq/stats").json()


def _signature_params(func) -> List[str]:
    return [p.name for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


# ---- the module-level default client ----

_default: Optional[TakoVM] = None


def configure(base_url: str = DEFAULT_BASE_URL, timeout: Optional[int] = 30, **kwargs) -> TakoVM:
    """Set up the client behind the module functions (send, submit, get_result, ...).
    Takes TakoVM's arguments."""
    global _default
    _default = TakoVM(base_url, timeout, **kwargs)
    return _default


def get_client() -> TakoVM:
    """The default client (configure() first, else $TAKO_URL or http://localhost:8000)."""
    global _default
    if _default is None:
        _default = TakoVM()
    return _default
