"""Compile Vigil's analysis hot path with mypyc into <venv>/vigil-compiled (see vigil/compiled.py).

    .venv/bin/python scripts/build_compiled.py [--force]

Does nothing when the build is of the current sources. Needs a C compiler and Python's headers
(Debian: gcc, python3-dev). Exit 0 when the build is current; 1 when it failed, and then Vigil runs
as pure Python, the same program, slower.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["VIGIL_PURE_PYTHON"] = "1"  # this process must not load the build it replaces

from vigil.compiled import GROUP, HOT_MODULES, MANIFEST, build_dir, read_manifest, source_path, sources_digest  # noqa: E402


def build(target: Path) -> tuple[dict[str, str], str]:
    """Compile into `target`: the compiled files by module name (relative to it), and mypyc's version."""
    from mypy.version import __version__ as mypy_version
    from mypyc.build import mypycify
    from setuptools import setup

    work = Path(tempfile.mkdtemp(prefix="vigil-mypyc-"))
    try:
        os.chdir(ROOT)  # mypyc names modules by their path from here
        paths = [str(source_path(module).relative_to(ROOT)) for module in HOT_MODULES]
        extensions = mypycify(paths, group_name=GROUP, opt_level="3", target_dir=str(work / "c"))
        setup(name="vigil-compiled", ext_modules=extensions, script_name="build_compiled.py",
              script_args=["-q", "build_ext", "--parallel", str(os.cpu_count() or 1), "--build-lib", str(target),
                           "--build-temp", str(work / "o")])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    files = {}
    for path in target.rglob("*.so"):  # vigil/manager/analysis/engine.cpython-311-x86_64-linux-gnu.so
        relative = path.relative_to(target)
        files[".".join((*relative.parent.parts, relative.name.split(".", 1)[0]))] = str(relative)
    missing = set(HOT_MODULES) - set(files)
    if missing:
        raise RuntimeError(f"mypyc built no module for {', '.join(sorted(missing))}")
    return files, mypy_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="build even when the build is current")
    args = parser.parse_args(argv)
    final = build_dir()
    digest = sources_digest()
    manifest = read_manifest(final)
    if not args.force and manifest is not None and manifest.get("digest") == digest:
        print(f"build_compiled: up to date ({final})")
        return 0
    fresh = final.with_name(final.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    try:
        files, mypyc_version = build(fresh)
    except (Exception, SystemExit) as exc:  # setup() reports a compiler failure as SystemExit
        shutil.rmtree(fresh, ignore_errors=True)
        print(f"build_compiled: FAILED ({type(exc).__name__}: {exc}); Vigil runs as pure Python", file=sys.stderr)
        return 1
    (fresh / MANIFEST).write_text(json.dumps({"digest": digest, "mypyc": mypyc_version, "files": files}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    fresh.rename(final)
    print(f"build_compiled: built {len(HOT_MODULES)} modules with mypyc {mypyc_version} into {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
