"""C helpers compiled on first use, for the loops numpy and Arrow have no kernel for.

Each source is compiled with the system C compiler into a cache directory, under a name
that carries a hash of the source and flags, so an edited source is rebuilt and concurrent
builds never see each other's half-written files. `make install` builds them once ahead.
ctypes releases the GIL for the duration of each call.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

COMPILE_FLAGS = ["-O3", "-shared", "-fPIC", "-std=c11", "-D_DEFAULT_SOURCE"]


class NativeBuildError(RuntimeError):
    """The C compiler is missing or failed."""


def cache_dir() -> Path:
    configured = os.environ.get("FLOODGATE_NATIVE_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "floodgate"


def build_library(source_path: Path, what: str) -> Path:
    """Compile `source_path` (`what` it is, for the messages) unless a build of this exact
    source is cached; return the shared library's path."""
    source = source_path.read_bytes()
    digest = hashlib.sha256(source + " ".join(COMPILE_FLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source_path.stem}-{digest}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise NativeBuildError(
            f"floodgate compiles its {what} with a C compiler, and none was "
            "found: install gcc (Debian/Ubuntu: apt-get install gcc) or set CC"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        result = subprocess.run([compiler, *COMPILE_FLAGS, "-o", tmp, str(source_path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise NativeBuildError(f"compiling {source_path} failed:\n{result.stderr}")
        os.replace(tmp, target)  # atomic: a concurrent builder sees the old name or a whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


_loaded: dict[Path, ctypes.CDLL] = {}
_loading = threading.Lock()


def load_library(source_path: Path, what: str, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL:
    """The compiled `source_path`, loaded once per process; `declare` sets its functions'
    argument and result types (and may check the build) before anyone calls them."""
    with _loading:
        if source_path not in _loaded:
            lib = ctypes.CDLL(str(build_library(source_path, what)))
            declare(lib)
            _loaded[source_path] = lib
        return _loaded[source_path]
