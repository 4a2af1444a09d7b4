#!/usr/bin/env bash
# Set up everything (scripts/setup.sh) and run the demo as root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python scripts/demo.py
