#!/usr/bin/env bash
# Set up everything (scripts/setup.sh) and run the whole test suite as root: first on this
# machine's kernel, then the tests marked needs_vm (bridge VLAN filtering, 8021q: features
# this kernel may lack, where they skip) again in one user-mode-linux guest boot
# (scripts/vm-run.sh), where they must run. Arguments go to both pytest runs.
# SPLICE_SKIP_VM=1 skips the guest step (local runs only; CI never sets it): a guest that
# cannot be prepared or booted fails the run.
# SPLICE_STRICT=1 (the default here): a test whose prerequisite is missing (root, a tool, a
# Python module, a usable nft, IPv6, the reference plugins) FAILS instead of skipping
# (tests/conftest.py `require`). A plain `pytest` leaves it unset and skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPLICE_STRICT="${SPLICE_STRICT:-1}"
./scripts/setup.sh
rc=0
.venv/bin/pytest "$@" || rc=$?
if [ "${SPLICE_SKIP_VM:-0}" = 1 ]; then
  echo "test.sh: SPLICE_SKIP_VM=1: the needs_vm tests did NOT run in the VM guest" >&2
  exit "$rc"
fi
vm_rc=0
# -p no:cacheprovider: the guest's pytest does not rewrite the host run's .pytest_cache
./scripts/vm-run.sh -- .venv/bin/pytest -p no:cacheprovider -m needs_vm "$@" || vm_rc=$?
if [ "$vm_rc" = 5 ] && [ $# -gt 0 ]; then
  vm_rc=0   # pytest: no test selected - the given arguments hold no needs_vm test
elif [ "$vm_rc" != 0 ]; then
  echo "test.sh: the needs_vm tests in the VM guest failed (exit $vm_rc)" >&2
fi
[ "$rc" = 0 ] || exit "$rc"
exit "$vm_rc"
