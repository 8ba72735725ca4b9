"""The analysis hot path compiled to C by mypyc, used only when it was built from these very sources.

A log line goes through a few dozen small Python calls (header, decoders, candidate rules,
conditions, alert). mypyc, mypy's compiler (it also builds mypy and black), turns the same typed
source into C extension modules that run it about 1.4x as fast (BENCHMARKS.md, log analysis).

`scripts/build_compiled.py` (run by scripts/bootstrap.sh) builds them into `<venv>/vigil-compiled`,
outside the source tree, with a manifest holding a digest of the sources it compiled. When `vigil` is
imported, `activate` puts a finder for them first on `sys.meta_path`, but only if that digest is
the current sources' one: after an edit the whole set falls back to the Python source (the compiled
modules call each other directly, so it is all or none), and a stale build never runs. Without a
build, or with `VIGIL_PURE_PYTHON=1`, Vigil is the same program in pure Python.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

# The modules compiled: what every text line and event runs through, and nothing that is
# subclassed or patched from outside (compiled classes cannot be).
HOT_MODULES = (
    "vigil.event",
    "vigil.alert",
    "vigil.manager.analysis.fields",
    "vigil.manager.analysis.re2fast",
    "vigil.manager.analysis.conditions",
    "vigil.manager.analysis.rules",
    "vigil.manager.analysis.codegen",
    "vigil.manager.analysis.ruleset",
    "vigil.manager.analysis.correlation",
    "vigil.manager.analysis.engine",
    "vigil.manager.analysis.syslog_header",
    "vigil.manager.analysis.text_decoders",
    "vigil.manager.analysis.decoders",
    "vigil.manager.analysis.analyzer",
    # Kubernetes audit events: every webhook body and audit log line (bench/k8s_audit_throughput.py).
    "vigil.agent.modules.kubernetes.audit_payload",
    "vigil.agent.modules.kubernetes.posture",
    "vigil.agent.modules.kubernetes.audit_normalize",
)
GROUP = "vigil._hotpath"  # mypyc's shared library for the group: vigil._hotpath__mypyc
MANIFEST = "manifest.json"
PURE_PYTHON_ENV = "VIGIL_PURE_PYTHON"
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the directory holding the `vigil` package


class Status(NamedTuple):
    """Whether the compiled modules are in use, and why not when they are not."""

    active: bool
    detail: str


def build_dir() -> Path:
    """Where the build goes: inside the virtual environment, so it goes away with it."""
    return Path(sys.prefix) / "vigil-compiled"


def source_path(module: str) -> Path:
    return SOURCE_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def sources_digest() -> str:
    """What a build must have been made from: every hot module's source, and this interpreter."""
    digest = hashlib.sha256(sys.version.encode())
    for module in HOT_MODULES:
        digest.update(b"\0" + module.encode() + b"\0")
        digest.update(source_path(module).read_bytes())
    return digest.hexdigest()


class _CompiledFinder:
    """Finds the compiled modules (and their shared library) in the build directory: a meta path
    finder (importlib.abc.MetaPathFinder, not imported for its base class: it costs 10 ms)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        return None if file is None else importlib.util.spec_from_file_location(fullname, file)


def read_manifest(directory: Path) -> dict[str, object] | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def check(directory: Path) -> tuple[Status, dict[str, Path]]:
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        return Status(False, f"pure Python ({PURE_PYTHON_ENV}=1)"), {}
    manifest = read_manifest(directory)
    if manifest is None:
        return Status(False, "pure Python (not built: scripts/bootstrap.sh builds it)"), {}
    if manifest.get("digest") != sources_digest():
        return Status(False, "pure Python (the build is of older sources: run scripts/bootstrap.sh)"), {}
    listed = manifest.get("files")
    files = {name: directory / rel for name, rel in listed.items()} if isinstance(listed, dict) else {}
    if set(HOT_MODULES) - set(files) or not all(path.is_file() for path in files.values()):
        return Status(False, "pure Python (the build is incomplete: run scripts/build_compiled.py --force)"), {}
    return Status(True, f"compiled (mypyc {manifest.get('mypyc', '?')})"), files


STATUS = Status(False, "pure Python (not activated)")


def activate(directory: Path | None = None) -> Status:
    """Use the compiled modules if they match the sources; called once, as `vigil` is imported."""
    global STATUS
    status, files = check(directory or build_dir())
    already = [name for name in HOT_MODULES if name in sys.modules]
    if status.active and already:  # too late to swap them
        status = Status(False, f"pure Python ({already[0]} was imported before vigil)")
    if status.active:
        sys.meta_path.insert(0, _CompiledFinder(files))
    STATUS = status
    return status
