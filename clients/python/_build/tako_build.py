"""PEP 517 build backend for tako-vm: setuptools, with a standard-library fallback.

setuptools (< 70.1) needs the separate `wheel` package to build wheels. Debian's python3-pip
brings python3-wheel, but other Pythons (pyenv, a bare venv) may have setuptools without it,
and an offline `pip install --no-build-isolation --no-index clients/python` cannot fetch it.
So: when setuptools can build wheels, everything is delegated to setuptools.build_meta;
otherwise the (pure Python, dependency-free) wheel is written here with zipfile, from the
metadata in pyproject.toml.
"""
import base64
import hashlib
import os
import re
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "tako_vm"


def _setuptools_can_build_wheels():
    try:
        import setuptools
        from setuptools import build_meta  # noqa: F401
    except ImportError:
        return False
    try:
        import wheel  # noqa: F401
        return True
    except ImportError:
        pass
    v = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
    return v >= (70, 1)  # bdist_wheel moved into setuptools


if _setuptools_can_build_wheels():
    from setuptools.build_meta import *  # noqa: F401,F403

else:
    def _project():
        with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
            text = f.read()
        section = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S).group(1)

        def field(key):
            m = re.search(r'^%s\s*=\s*"([^"]*)"' % re.escape(key), section, re.M)
            return m.group(1) if m else None

        return {"name": field("name"), "version": field("version"),
                "summary": field("description") or "",
                "requires_python": field("requires-python")}

    def _dist_info_name(p):
        return f"{p['name'].replace('-', '_')}-{p['version']}.dist-info"

    def _metadata_files(p):
        meta = (f"Metadata-Version: 2.1\nName: {p['name']}\nVersion: {p['version']}\n"
                f"Summary: {p['summary']}\n")
        if p["requires_python"]:
            meta += f"Requires-Python: {p['requires_python']}\n"
        readme = os.path.join(ROOT, "README.md")
        if os.path.exists(readme):
            with open(readme, encoding="utf-8") as f:
                meta += "Description-Content-Type: text/markdown\n\n" + f.read()
        wheel = ("Wheel-Version: 1.0\nGenerator: tako_build\nRoot-Is-Purelib: true\n"
                 "Tag: py3-none-any\n")
        return {"METADATA": meta, "WHEEL": wheel, "top_level.txt": PACKAGE + "\n"}

    def _record_line(arcname, data):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{arcname},sha256={digest},{len(data)}"

    def _write_wheel(wheel_directory, files):
        p = _project()
        name = f"{p['name'].replace('-', '_')}-{p['version']}-py3-none-any.whl"
        dist_info = _dist_info_name(p)
        for fname, text in _metadata_files(p).items():
            files.append((f"{dist_info}/{fname}", text.encode("utf-8")))
        record = [_record_line(a, d) for a, d in files] + [f"{dist_info}/RECORD,,"]
        files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode("utf-8")))
        with zipfile.ZipFile(os.path.join(wheel_directory, name), "w",
                             zipfile.ZIP_DEFLATED) as z:
            for arcname, data in files:
                z.writestr(arcname, data)
        return name

    def _package_files():
        out = []
        pkg = os.path.join(ROOT, PACKAGE)
        for dirpath, dirnames, filenames in os.walk(pkg):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fn in sorted(filenames):
                if fn.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(dirpath, fn)
                with open(path, "rb") as f:
                    out.append((os.path.relpath(path, ROOT).replace(os.sep, "/"), f.read()))
        return out

    def get_requires_for_build_wheel(config_settings=None):
        return []

    def get_requires_for_build_sdist(config_settings=None):
        return []

    def get_requires_for_build_editable(config_settings=None):
        return []

    def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
        p = _project()
        d = os.path.join(metadata_directory, _dist_info_name(p))
        os.makedirs(d, exist_ok=True)
        for fname, text in _metadata_files(p).items():
            with open(os.path.join(d, fname), "w", encoding="utf-8") as f:
                f.write(text)
        return os.path.basename(d)

    prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        return _write_wheel(wheel_directory, _package_files())

    def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
        return _write_wheel(wheel_directory, [("tako_vm_editable.pth", (ROOT + "\n").encode())])

    def build_sdist(sdist_directory, config_settings=None):
        from setuptools.build_meta import build_sdist as _sdist
        return _sdist(sdist_directory, config_settings)
