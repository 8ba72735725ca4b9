#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, ruff, mypy, then pytest (arguments go to pytest).
#
#   scripts/test.sh                     everything
#   scripts/test.sh tests/e2e -x        only some tests; ruff and mypy still run
#
# Exit code: pytest's (but "no tests collected" is a failure); if pytest passed and ruff or
# mypy did not, 1. Lint problems do not stop the tests from running.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Tests run what users run: the compiled hot path (vigil/compiled.py), so it must build.
VIGIL_REQUIRE_COMPILED=1 bash scripts/bootstrap.sh --with-test-daemons || exit $?

# dockerd lives in /usr/sbin, which a non-login environment may lack.
case ":$PATH:" in
  *:/usr/sbin:*) ;;
  *) PATH="$PATH:/usr/sbin:/sbin" ;;
esac
export PATH

VENV="$ROOT/.venv/bin"
say() { printf 'test.sh: %s\n' "$*"; }

checks_failed=0
if [ -d vigil ]; then
  lint_dirs=()
  for d in vigil tests bench; do
    [ -d "$d" ] && lint_dirs+=("$d")
  done
  if [ ! -x "$VENV/ruff" ] || [ ! -x "$VENV/mypy" ]; then
    say "ruff or mypy missing from .venv (they belong in the dev extra of pyproject.toml)"
    checks_failed=1
  else
    if "$VENV/ruff" check -q --output-format=concise "${lint_dirs[@]}"; then
      say "ruff clean (${lint_dirs[*]})"
    else
      say "ruff found problems (above)"
      checks_failed=1
    fi
    if mypy_out="$("$VENV/mypy" vigil 2>&1)"; then
      say "mypy clean (vigil)"
    else
      printf '%s\n' "$mypy_out"
      say "mypy found problems (above)"
      checks_failed=1
    fi
  fi
else
  say "no vigil/ yet; skipping ruff and mypy"
fi

"$VENV/python" -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  say "FAILED: pytest collected no tests (exit 5); a test run must run tests"
  exit 1
fi
if [ "$rc" -eq 0 ] && [ "$checks_failed" -ne 0 ]; then
  say "FAILED: tests passed but ruff/mypy did not"
  exit 1
fi
exit "$rc"
