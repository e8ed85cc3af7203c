"""Sandbox: library mode, no server and no database.

Each run() is one `tako run --json` (the C CLI), which runs the code through takod's own
executor code: the same hardened container, launcher, limits and result classification.

The tako binary is found through $TAKO_BIN, then PATH, then ../../build/tako relative to
this package's source tree (clients/python in a takod checkout).
"""
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .exceptions import TakoVMError, ValidationError

DEFAULT_IMAGE = "code-executor:latest"
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_SOURCE_ROOT = os.path.normpath(os.path.join(_PKG_DIR, "..", "..", ".."))


@dataclass
class SandboxResult:
    """What one Sandbox.run() produced."""
    stdout: str
    stderr: str
    exit_code: Optional[int]
    success: bool
    output: Optional[Any] = None
    error: Optional[str] = None
    duration_ms: Optional[int] = None
    status: Optional[str] = None
    error_type: Optional[str] = None
    artifacts: List[dict] = field(default_factory=list)
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @classmethod
    def from_json(cls, d: dict) -> "SandboxResult":
        return cls(stdout=d.get("stdout") or "", stderr=d.get("stderr") or "",
                   exit_code=d.get("exit_code"), success=bool(d.get("success")),
                   output=d.get("output"), error=d.get("error"),
                   duration_ms=d.get("duration_ms"), status=d.get("status"),
                   error_type=d.get("error_type"), artifacts=list(d.get("artifacts") or []),
                   stdout_truncated=bool(d.get("stdout_truncated")),
                   stderr_truncated=bool(d.get("stderr_truncated")))


def find_tako_binary() -> str:
    """$TAKO_BIN, else `tako` on PATH, else build/tako of the source tree."""
    env = os.environ.get("TAKO_BIN")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise TakoVMError(f"TAKO_BIN={env} is not an executable file")
        return env
    found = shutil.which("tako")
    if found:
        return found
    dev = os.path.join(_SOURCE_ROOT, "build", "tako")
    if os.path.isfile(dev) and os.access(dev, os.X_OK):
        return dev
    raise TakoVMError("the tako binary was not found: set TAKO_BIN, put tako on PATH, or build "
                      "it (cmake --build build --target tako)")


class Sandbox:
    """Run code in a fresh, locked-down container on this machine (no server).

    Sandbox(image="code-executor:latest", timeout=30, memory_limit="512m", cpu_limit=1.0,
            network_enabled=False, package_dirs=[], auto_build=True)

    package_dirs are local Python packages, mounted read-only and importable by their
    directory name (package_dirs=["./my_utils"] → `from my_utils import helper`).
    auto_build builds the default image with `tako setup` when it is missing.
    run(..., requirements=["pandas"]) installs them once into an image cached for that set
    (from the configured pip index or wheelhouse, else Debian's python3-* packages).
    """

    def __init__(self, image: str = DEFAULT_IMAGE, timeout: int = 30,
                 memory_limit: str = "512m", cpu_limit: float = 1.0,
                 network_enabled: bool = False, package_dirs: Optional[List[str]] = None,
                 auto_build: bool = True, tako_bin: Optional[str] = None):
        self.image = image
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.cpu_limit = cpu_limit
        self.network_enabled = network_enabled
        self.package_dirs = [os.path.abspath(os.fspath(p)) for p in (package_dirs or [])]
        self.auto_build = auto_build
        self._tako_bin = tako_bin
        self._closed = False
        self._built = False

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays running between runs (each run has its own container, removed
        when it ends); after close() the sandbox refuses new runs."""
        self._closed = True

    def _argv(self, tako: str, code_path: str, input_path: str, timeout: int,
              requirements: Optional[List[str]]) -> List[str]:
        argv = [tako, "run", code_path, "--json", "--input", input_path,
                "--timeout", str(int(timeout)), "--memory", str(self.memory_limit),
                "--cpus", str(self.cpu_limit), "--image", self.image]
        if self.network_enabled:
            argv.append("--network")
        for d in self.package_dirs:
            argv += ["--package-dir", d]
        for r in requirements or []:
            argv += ["--requirement", r]
        return argv

    def run(self, code: str, input_data: Optional[Dict[str, Any]] = None,
            timeout: Optional[int] = None, requirements: Optional[List[str]] = None
            ) -> SandboxResult:
        """Run `code`; input_data becomes /input/data.json, /output/result.json becomes
        .output. Returns a SandboxResult whether or not the code succeeded; raises
        TakoVMError when it could not run at all (no Docker, no image, no tako binary)."""
        if self._closed:
            raise TakoVMError("this Sandbox is closed")
        if not isinstance(code, str) or not code.strip():
            raise ValidationError("code must be a non-empty string")
        if input_data is not None and not isinstance(input_data, dict):
            raise ValidationError("input_data must be a dict (it becomes /input/data.json)")
        t = int(timeout if timeout is not None else self.timeout)
        if t < 1:
            raise ValidationError("timeout must be at least 1 second")
        tako = self._tako_bin or find_tako_binary()
        with tempfile.TemporaryDirectory(prefix="tako-sdk-") as tmp:
            code_path = os.path.join(tmp, "main.py")
            input_path = os.path.join(tmp, "data.json")
            with open(code_path, "w", encoding="utf-8") as f:
                f.write(code)
            with open(input_path, "w", encoding="utf-8") as f:
                json.dump(input_data or {}, f)
            argv = self._argv(tako, code_path, input_path, t, requirements)
            for attempt in range(2):
                proc = self._exec(argv, t)
                data = self._parse(proc)
                if proc.returncode in (0, 1) and data is not None:
                    return SandboxResult.from_json(data)
                error_type = (data or {}).get("error_type")
                message = ((data or {}).get("error") or proc.stderr.strip()
                           or f"tako exited with {proc.returncode}")
                if error_type == "image_missing" and attempt == 0 and self._try_build():
                    continue
                if proc.returncode == 2:
                    raise ValidationError(message)
                raise TakoVMError(message)
        raise TakoVMError("unreachable")

    @staticmethod
    def _exec(argv: List[str], timeout: int) -> subprocess.CompletedProcess:
        try:
            # the job's own timeout is enforced inside; this bound covers container start
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout + 180)
        except subprocess.TimeoutExpired:
            raise TakoVMError(f"tako run did not finish within {timeout + 180} s") from None
        except OSError as e:
            raise TakoVMError(f"cannot run {argv[0]}: {e}") from None

    @staticmethod
    def _parse(proc: subprocess.CompletedProcess) -> Optional[dict]:
        try:
            data = json.loads(proc.stdout)
            return data if isinstance(data, dict) else None
        except ValueError:
            return None

    def _try_build(self) -> bool:
        if not self.auto_build or self._built or self.image != DEFAULT_IMAGE:
            return False
        self._built = True
        r = subprocess.run([self._tako_bin or find_tako_binary(), "setup"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise TakoVMError(f"building {self.image} with `tako setup` failed:\n"
                              f"{r.stderr[-2000:]}")
        return True


def sandbox_run(code: str, input_data: Optional[Dict[str, Any]] = None,
                timeout: Optional[int] = None, requirements: Optional[List[str]] = None,
                **sandbox_options) -> SandboxResult:
    """One run in a new Sandbox(**sandbox_options)."""
    with Sandbox(**sandbox_options) as sb:
        return sb.run(code, input_data=input_data, timeout=timeout, requirements=requirements)
