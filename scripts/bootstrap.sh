#!/usr/bin/env bash
# Idempotent set-up shared by the run and the test command.
#
#   scripts/bootstrap.sh                      .venv with vigil[dev] installed (editable), and
#                                             the analysis hot path compiled (mypyc)
#   scripts/bootstrap.sh --with-test-daemons  also the Debian packages the e2e tests start:
#                                             docker.io, docker-registry, busybox-static (root only)
#
# The editable install is redone only when pyproject.toml changed since the last one
# (sha256 kept in .venv/.vigil-installed). Prints one line per step; a failing step shows
# the tail of its own output.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

with_daemons=0
for arg in "$@"; do
  case "$arg" in
    --with-test-daemons) with_daemons=1 ;;
    -h | --help)
      sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bootstrap: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

say() { printf 'bootstrap: %s\n' "$*"; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Run a command silently; on failure show the end of its output and stop.
quiet() {
  if ! "$@" >"$WORK/out" 2>&1; then
    tail -n 40 "$WORK/out" >&2
    say "FAILED: $*" >&2
    exit 1
  fi
}

is_root() { [ "$(id -u)" -eq 0 ]; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    quiet env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- 1. virtual environment --------------------------------------------------------------
VENV="$ROOT/.venv"
# The interpreter: $VIGIL_PYTHON, else the distribution's own python3 when it is 3.11 or newer
# (Debian builds it with PGO and LTO: about twice as fast as a plain source build such as pyenv's),
# else whatever python3 is first on PATH.
PY="${VIGIL_PYTHON:-}"
if [ -z "$PY" ]; then
  PY=python3
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY=/usr/bin/python3
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" >"$WORK/out" 2>&1; then
    # Debian's own python3 needs python3-venv for ensurepip.
    if is_root && command -v apt-get >/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv
      quiet "$PY" -m venv "$VENV"
    else
      cat "$WORK/out" >&2
      say "FAILED: $PY -m venv .venv (on Debian: apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
  say "created .venv with $PY ($("$VENV/bin/python" --version 2>&1))"
else
  say ".venv present ($("$VENV/bin/python" --version 2>&1))"
fi

# --- 2. the project, editable, with the dev extra -------------------------------------------
STAMP="$VENV/.vigil-installed"
if [ ! -f pyproject.toml ]; then
  say "no pyproject.toml yet; nothing to install"
else
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  have="$(cat "$STAMP" 2>/dev/null || true)"
  if [ "$want" != "$have" ]; then
    quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
    printf '%s\n' "$want" >"$STAMP"
    say "installed vigil[dev] (editable) into .venv"
  else
    say "vigil[dev] up to date (pyproject.toml unchanged)"
  fi
fi

# --- 2b. the analysis hot path compiled by mypyc (vigil/compiled.py) -------------------------
# Rebuilt only when its sources changed (the build keeps their digest). Needs a C compiler and
# Python's headers, installed here when missing and root. A failed build leaves Vigil in pure
# Python, slower; with VIGIL_REQUIRE_COMPILED=1 (the test command) it is an error.
if [ -f scripts/build_compiled.py ] && [ "${VIGIL_PURE_PYTHON:-}" != "1" ]; then
  headers="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h"
  build_pkgs=()
  command -v cc >/dev/null || build_pkgs+=(gcc)
  [ -f "$headers" ] || build_pkgs+=(python3-dev)
  if [ "${#build_pkgs[@]}" -gt 0 ] && is_root && command -v apt-get >/dev/null; then
    apt_install "${build_pkgs[@]}"
    say "installed ${build_pkgs[*]} to compile the analysis hot path"
  fi
  if "$VENV/bin/python" scripts/build_compiled.py >"$WORK/out" 2>&1; then
    say "analysis hot path: $(tail -n 1 "$WORK/out" | sed 's/^build_compiled: //')"
  else
    tail -n 20 "$WORK/out" >&2
    if [ "${VIGIL_REQUIRE_COMPILED:-}" = "1" ]; then
      say "FAILED: could not compile the analysis hot path (VIGIL_REQUIRE_COMPILED=1)" >&2
      exit 1
    fi
    say "could not compile the analysis hot path; Vigil runs as pure Python (slower)"
  fi
fi

# --- 3. daemons the e2e tests start (optional) -------------------------------------------
if [ "$with_daemons" -eq 1 ]; then
  PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
  missing_cmds=()
  missing_pkgs=()
  if ! command -v dockerd >/dev/null; then
    missing_cmds+=(dockerd)
    missing_pkgs+=(docker.io)
  fi
  if ! command -v docker-registry >/dev/null; then
    missing_cmds+=(docker-registry)
    missing_pkgs+=(docker-registry)
  fi
  # The test image copies /bin/busybox into an empty rootfs, so it must be the static build
  # (busybox-static); Debian's plain busybox package also installs a /bin/busybox, dynamic.
  busybox_static="$(dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null || true)"
  if [ ! -x /bin/busybox ] || [ "$busybox_static" != "installed" ]; then
    missing_cmds+=("static /bin/busybox")
    missing_pkgs+=(busybox-static)
  fi
  # Real journal files for the journal collector's tests (journald itself needs systemd as PID 1).
  if [ ! -x /lib/systemd/systemd-journal-remote ] && [ ! -x /usr/lib/systemd/systemd-journal-remote ]; then
    missing_cmds+=(systemd-journal-remote)
    missing_pkgs+=(systemd-journal-remote)
  fi

  if [ "${#missing_pkgs[@]}" -eq 0 ]; then
    say "test daemons present (dockerd, docker-registry, static busybox, systemd-journal-remote)"
  elif is_root && command -v apt-get >/dev/null; then
    apt_install "${missing_pkgs[@]}"
    say "installed ${missing_pkgs[*]} for the e2e tests"
  else
    missing_list="$(printf '%s, ' "${missing_cmds[@]}")"
    say "missing ${missing_list%, } (needs root: apt-get install ${missing_pkgs[*]}); e2e tests will be skipped"
  fi
fi
