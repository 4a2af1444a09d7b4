#!/usr/bin/env bash
# Set up everything (scripts/setup.sh) and run the whole test suite as root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/pytest "$@"
