"""Session: a stateful Python interpreter on takod, with a workspace (docs/SESSIONS.md).

    from tako_vm import Session

    with Session(job_type="default", idle_timeout=300) as s:   # POST /sessions
        s.run("import math; x = 21")
        r = s.run("x * 2")                                     # CellResult
        print(r.result)                                        # "42" (the repr)
        s.upload("data.csv", b"a,b\\n1,2\\n")
        s.run("print(open('data.csv').read())").raise_for_error()
        print(s.download("data.csv"))
    # leaving the block closes the session (DELETE /sessions/{id}), even on an exception

Every call maps to one route. A cell's failure (the code raised, timed out, was
interrupted, or crashed the interpreter) is not an exception: run() returns the CellResult
and raise_for_error() turns it into a CellError. The server's refusals are:

    ClientError ─ SessionBusyError      409: a cell is running (cells do not queue)
                ─ SessionEndedError     410: the session has ended (.status, .end_reason)
                ─ SessionLimitError     429: the key has its maximum of live sessions
    ServerError ─ SessionUnavailableError 503: the server is at its maximum of sessions,
                                        sessions are off, or the container did not start
"""
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from .exceptions import (APIError, CellError, MalformedResponseError, SessionBusyError,
                         SessionEndedError, SessionLimitError, SessionUnavailableError,
                         ValidationError)

_MAX_PATH = 1024
_MAX_COMPONENT = 255
_LIST_READ_TIMEOUT = 60.0
_FILE_READ_TIMEOUT = 600.0
_FALLBACK_CELL_READ_TIMEOUT = 930.0  # no timeout given: the job type's, at most 900 s
_SESSION_STATUSES = (409, 410, 429, 503)


@dataclass
class CellResult:
    """The answer of POST /sessions/{id}/execute (every field of it; raw is the JSON)."""
    session_id: Optional[str] = None
    cell_id: Optional[str] = None
    execution_count: Optional[int] = None
    status: str = ""
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    result: Optional[str] = None
    error: Optional[Dict[str, Any]] = None
    restarted: bool = False
    timed_out: bool = False
    interrupted: bool = False
    exit_code: Optional[int] = None
    execution_time: Optional[float] = None
    timing: Dict[str, Any] = field(default_factory=dict)
    files_changed: List[Dict[str, Any]] = field(default_factory=list)
    output: Any = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def raise_for_error(self) -> "CellResult":
        """Raise CellError unless the cell finished ok; returns self otherwise."""
        if not self.ok:
            raise CellError(self)
        return self

    @classmethod
    def from_response(cls, data: Any) -> "CellResult":
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise MalformedResponseError("the cell's answer has no status")
        err = data.get("error")
        return cls(
            session_id=data.get("session_id"),
            cell_id=data.get("cell_id"),
            execution_count=data.get("execution_count"),
            status=data["status"],
            stdout=data.get("stdout") or "",
            stderr=data.get("stderr") or "",
            stdout_truncated=bool(data.get("stdout_truncated")),
            stderr_truncated=bool(data.get("stderr_truncated")),
            result=data.get("result"),
            error=err if isinstance(err, dict) else None,
            restarted=bool(data.get("restarted")),
            timed_out=bool(data.get("timed_out")),
            interrupted=bool(data.get("interrupted")),
            exit_code=data.get("exit_code"),
            execution_time=data.get("execution_time"),
            timing=dict(data.get("timing") or {}),
            files_changed=list(data.get("files_changed") or []),
            output=data.get("output"),
            raw=data,
        )


def _retry_after(resp) -> Optional[float]:
    try:
        v = resp.header("Retry-After")
        return float(v) if v is not None else None
    except ValueError:
        return None


def session_error(client, resp) -> APIError:
    """The exception for an error answer of a session route."""
    base = client._error(resp)
    args = (resp.status, base.detail, base.correlation_id)
    if resp.status == 409:
        return SessionBusyError(*args)
    if resp.status == 410:
        status = end_reason = None
        try:
            data = json.loads(resp.body)
            if isinstance(data, dict):
                status, end_reason = data.get("status"), data.get("end_reason")
        except ValueError:
            pass
        msg = f"HTTP 410: the session has ended ({status or 'ended'})"
        if end_reason:
            msg += f": {end_reason}"
        return SessionEndedError(*args, message=msg, status=status, end_reason=end_reason)
    if resp.status == 429:
        return SessionLimitError(*args, retry_after=_retry_after(resp))
    if resp.status == 503:
        return SessionUnavailableError(*args, retry_after=_retry_after(resp))
    return base


def _call(client, method: str, path: str, *, json_body: Any = None,
          params: Optional[dict] = None, read_timeout: float = _LIST_READ_TIMEOUT,
          ok_statuses: tuple = ()):
    """client._request, with the session statuses turned into their exceptions (they are
    never retried: a busy session, an ended one or a full server stay so for a while)."""
    resp = client._request(method, path, json_body=json_body, params=params,
                           read_timeout=read_timeout, retry=(method == "GET"),
                           ok_statuses=_SESSION_STATUSES + tuple(ok_statuses))
    if resp.status in _SESSION_STATUSES and resp.status not in ok_statuses:
        raise session_error(client, resp)
    return resp


def _json_object(resp, what: str) -> dict:
    data = resp.json()
    if not isinstance(data, dict):
        raise MalformedResponseError(f"{what}: the answer is not a JSON object")
    return data


def workspace_path(path: str) -> str:
    """Check a workspace path (docs/SESSIONS.md "Files") and escape it for a URL: its
    components are escaped, the slashes between them kept."""
    import urllib.parse
    if not isinstance(path, str):
        raise ValidationError(f"a workspace path is a string, not {type(path).__name__}")
    raw = path.encode("utf-8", "surrogatepass")
    if not 1 <= len(raw) <= _MAX_PATH:
        raise ValidationError(f"a workspace path is 1 to {_MAX_PATH} bytes, not {len(raw)}")
    if path.startswith("/") or "\0" in path:
        raise ValidationError(f"workspace path {path!r}: relative, without NUL bytes")
    parts = path.rstrip("/").split("/")
    for p in parts:
        if p in ("", ".", ".."):
            raise ValidationError(
                f"workspace path {path!r}: no empty, '.' or '..' components")
        if len(p.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT:
            raise ValidationError(
                f"workspace path {path!r}: a component is longer than {_MAX_COMPONENT} bytes")
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)


class Session:
    """A live session on takod: created by the constructor (POST /sessions).

    Session(client=None, job_type=None, idle_timeout=None, max_lifetime=None, memory=None,
            cpus=None, env=None)

    client is a TakoVM (default: tako_vm.get_client()). memory is "256m", "1g" or bytes;
    env is {NAME: value}, the session's own environment variables (docs/SESSIONS.md);
    Use it as a context manager, or call
    close(). Session.attach(session_id) works on one that exists already.
    """

    def __init__(self, client=None, job_type: Optional[str] = None,
                 idle_timeout: Optional[int] = None, max_lifetime: Optional[int] = None,
                 memory: Union[str, int, None] = None, cpus: Optional[float] = None,
                 env: Optional[Dict[str, str]] = None, *, _info: Optional[dict] = None):
        if client is None:
            from .client import get_client
            client = get_client()
        self.client = client
        self.closed = False
        if _info is not None:
            self._info = _info
        else:
            body: Dict[str, Any] = {}
            for name, value in (("job_type", job_type), ("idle_timeout", idle_timeout),
                                ("max_lifetime", max_lifetime), ("memory", memory),
                                ("cpus", cpus), ("env", env)):
                if value is not None:
                    body[name] = value
            # a create is not retried: a lost answer could leave a second session behind
            resp = _call(client, "POST", "/sessions", json_body=body, read_timeout=180.0)
            self._info = _json_object(resp, "POST /sessions")
        sid = self._info.get("session_id")
        if not isinstance(sid, str) or not sid:
            raise MalformedResponseError("the session has no session_id")
        self.id = sid

    @classmethod
    def attach(cls, session_id: str, client=None) -> "Session":
        """A Session for an existing session id (GET /sessions/{id})."""
        if client is None:
            from .client import get_client
            client = get_client()
        resp = _call(client, "GET", f"/sessions/{client._q(session_id)}")
        return cls(client, _info=_json_object(resp, f"GET /sessions/{session_id}"))

    @property
    def session_id(self) -> str:
        return self.id

    @property
    def data(self) -> dict:
        """The session as last seen (the create answer, or the last info())."""
        return dict(self._info)

    def __repr__(self):
        return f"Session({self.id!r}, status={self._info.get('status')!r})"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.close()
        except Exception:
            if exc_type is None:  # do not hide the exception that ended the block
                raise
        return False

    def _path(self, suffix: str = "") -> str:
        return f"/sessions/{self.client._q(self.id)}{suffix}"

    # ---- cells ----

    def run(self, code: str, timeout: Optional[int] = None,
            stdin: Optional[str] = None) -> CellResult:
        """Run one cell (POST /sessions/{id}/execute) and return its CellResult. A cell that
        raised, timed out or crashed is a CellResult too (.ok is False)."""
        if not isinstance(code, str) or not code:
            raise ValidationError("code must be a non-empty string")
        body: Dict[str, Any] = {"code": code}
        if timeout is not None:
            body["timeout"] = int(timeout)
        if stdin is not None:
            if not isinstance(stdin, str):
                raise ValidationError("stdin must be a string")
            body["stdin"] = stdin
        read_timeout = (float(timeout) + 60.0) if timeout is not None \
            else _FALLBACK_CELL_READ_TIMEOUT
        resp = _call(self.client, "POST", self._path("/execute"), json_body=body,
                     read_timeout=read_timeout)
        return CellResult.from_response(resp.json())

    def interrupt(self) -> bool:
        """Interrupt the running cell (KeyboardInterrupt). True if one was running."""
        resp = _call(self.client, "POST", self._path("/interrupt"))
        return bool(_json_object(resp, "interrupt").get("interrupted"))

    def cells(self, limit: Optional[int] = None, offset: Optional[int] = None) -> dict:
        """The cells run so far, oldest first: {items, limit, offset, has_more}."""
        resp = _call(self.client, "GET", self._path("/cells"),
                     params={"limit": limit, "offset": offset})
        return _json_object(resp, "cells")

    # ---- the session ----

    def info(self) -> dict:
        """GET /sessions/{id}: the session (status, expires_at, execution_count, ...)."""
        resp = _call(self.client, "GET", self._path())
        self._info = _json_object(resp, "session")
        return dict(self._info)

    def close(self) -> dict:
        """End the session (DELETE /sessions/{id}); its container goes. Returns the ended
        session. Closing one that has already ended (or closing twice) is not an error."""
        if self.closed:
            return dict(self._info)
        try:
            resp = _call(self.client, "DELETE", self._path())
            self._info = _json_object(resp, "close")
        except SessionEndedError as e:
            self._info = dict(self._info, status=e.status or "closed",
                              end_reason=e.end_reason)
        self.closed = True
        return dict(self._info)

    # ---- the workspace ----

    def upload(self, path: str, data: Union[bytes, bytearray, str, "os.PathLike"]) -> dict:
        """Write a workspace file (PUT): data is bytes, or the name of a local file (str or
        a path object). Returns {path, size, sha256}."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
        elif isinstance(data, (str, os.PathLike)):
            with open(data, "rb") as f:
                raw = f.read()
        else:
            raise ValidationError("upload() takes bytes or a local file's name")
        rel = workspace_path(path)
        headers = dict(self.client.headers)
        headers["Content-Type"] = "application/octet-stream"
        if self.client.correlation_id:
            headers["X-Correlation-ID"] = self.client.correlation_id
        resp = self.client._once("PUT", self._path("/files/" + rel), raw, headers,
                                 _FILE_READ_TIMEOUT)
        if resp.status >= 400:
            raise session_error(self.client, resp)
        info = _json_object(resp, "upload")
        want = hashlib.sha256(raw).hexdigest()
        if isinstance(info.get("sha256"), str) and info["sha256"].lower() != want:
            raise MalformedResponseError(f"upload {path}: the server stored other bytes")
        return info

    def download(self, path: str, to: Union[str, "os.PathLike", None] = None) -> bytes:
        """Read a workspace file (checked against its ETag, the sha256). With to=, also
        write it to that local file (atomically: a temporary name, then a rename)."""
        resp = _call(self.client, "GET", self._path("/files/" + workspace_path(path)),
                     read_timeout=_FILE_READ_TIMEOUT)
        etag = (resp.header("ETag") or "").strip('"')
        if len(etag) == 64 and hashlib.sha256(resp.body).hexdigest() != etag.lower():
            raise MalformedResponseError(f"download {path}: the bytes do not match the ETag")
        if to is not None:
            tmp = f"{os.fspath(to)}.part.{os.getpid()}"
            try:
                with open(tmp, "wb") as f:
                    f.write(resp.body)
                os.replace(tmp, to)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return resp.body

    def files(self, dir: str = "") -> List[dict]:
        """List a workspace directory ("" is the top): [{name, path, type, size, mtime}]."""
        if dir:
            workspace_path(dir)  # checked; sent as a query parameter
        resp = _call(self.client, "GET", self._path("/files"), params={"dir": dir or None})
        data = _json_object(resp, "files")
        items = data.get("items")
        if not isinstance(items, list):
            raise MalformedResponseError("the file list has no items")
        return items

    def remove(self, path: str) -> None:
        """Remove a workspace file or empty directory."""
        _call(self.client, "DELETE", self._path("/files/" + workspace_path(path)))


def list_sessions(client) -> List[dict]:
    """GET /sessions: the caller's live sessions (the admin key: everyone's)."""
    resp = _call(client, "GET", "/sessions")
    data = _json_object(resp, "GET /sessions")
    items = data.get("items")
    if not isinstance(items, list):
        raise MalformedResponseError("GET /sessions: no items")
    return items
