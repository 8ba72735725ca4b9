#!/usr/bin/env bash
# Set up (Python venv with Vigil's dependencies) and run `vigil up`, the all-in-one.
# Extra arguments go to `vigil up`, e.g. ./scripts/up.sh --port 7555 --data-dir /var/lib/vigil
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/vigil up "$@"
