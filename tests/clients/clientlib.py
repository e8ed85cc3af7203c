"""
clientlib.py — shared set-up for the client tests (test_cli.py, test_sdk.py).

They reuse the integration harness (tests/integration/harness.py) to start a real takod
with its own data_dir and managed PostgreSQL, and need the same things it does: dockerd up
and the executor image built.

Environment (set by ctest, see tests/CMakeLists.txt):
  TAKOD_BIN        the takod under test (read by the harness)
  TAKO_BIN         the tako CLI under test (default: build/tako)
  TAKO_SOURCE_DIR  the source tree (default: two levels up)
  TAKO_TEST_INSTALLED_SDK  set: test the installed tako_vm instead of clients/python
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("TAKO_SOURCE_DIR", os.path.join(HERE, "..", "..")))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))
if not os.environ.get("TAKO_TEST_INSTALLED_SDK"):  # test the source tree's SDK, not an
    sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))  # installed copy

import harness  # noqa: E402

TAKO_BIN = os.path.abspath(os.environ.get("TAKO_BIN", os.path.join(SOURCE_DIR, "build", "tako")))
os.environ["TAKO_BIN"] = TAKO_BIN  # the SDK's Sandbox finds the same binary
TAKOD_BIN = harness.TAKOD_BIN
CONF = harness.CONF


def tako_available():
    return os.path.isfile(TAKO_BIN) and os.access(TAKO_BIN, os.X_OK)


def takod_config_text():
    """`takod -t` output: what the server under test knows how to configure."""
    try:
        return subprocess.run([TAKOD_BIN, "-t", "-c", CONF], capture_output=True, text=True,
                              timeout=30).stdout
    except OSError:
        return ""


def config_key(key):
    """"section.key" if takod knows `key` (its `-t` output lists it), else None."""
    section = None
    for line in takod_config_text().splitlines():
        m = re.match(r"\s*\[([^\]]+)\]", line)
        if m:
            section = m.group(1).strip()
            continue
        if section and re.match(r"\s*#?\s*%s\s*=" % re.escape(key), line):
            return f"{section}.{key}"
    return None


def api_keys_option():
    """"section.api_keys" if takod has API keys, else None."""
    return config_key("api_keys")


def start_takod(*overrides):
    """A started harness.Takod (the caller cleans it up). Its rate limit is off when it has
    one: these tests send bursts from one address and are about the clients."""
    rate = config_key("rate_limit_per_minute")
    if rate:
        overrides = (f"{rate}=0", *overrides)
    return harness.Takod(*overrides).start()


def tako(*args, env=None, input=None, timeout=300, url=None):
    """Run the CLI: (exit code, stdout, stderr)."""
    e = dict(os.environ)
    e.pop("TAKO_API_KEY", None)
    if url is not None:
        e["TAKO_URL"] = url
    e.update(env or {})
    p = subprocess.run([TAKO_BIN, *args], capture_output=True, text=True, env=e, input=input,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr
