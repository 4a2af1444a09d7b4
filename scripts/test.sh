#!/usr/bin/env bash
# Set up everything (scripts/setup.sh) and run the whole test suite as root: on this
# machine's kernel and, at the same time, the tests marked needs_vm (bridge VLAN filtering,
# 8021q, ipvlan: features this kernel may lack, where they skip) in one user-mode-linux
# guest boot (scripts/vm-run.sh), where they must run; the guest's output follows the host
# run's. Arguments go to both pytest runs.
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
vm_rc=0
vm_pid=
vm_log=
if [ "${SPLICE_SKIP_VM:-0}" != 1 ]; then
  # The guest run goes on beside the host run (it is one user-mode-linux process, mostly one
  # core): the whole suite takes about the longer of the two instead of their sum.
  # SPLICE_VM_SERIAL=1 runs it after the host run instead.
  vm_log=$(mktemp /tmp/splice-vm-tests.XXXXXX)
  trap '[ -n "$vm_pid" ] && kill "$vm_pid" 2>/dev/null; rm -f "$vm_log"' EXIT
  # -p no:cacheprovider: the guest's pytest does not rewrite the host run's .pytest_cache
  if [ "${SPLICE_VM_SERIAL:-0}" != 1 ]; then
    ./scripts/vm-run.sh -- .venv/bin/pytest -p no:cacheprovider -m needs_vm "$@" >"$vm_log" 2>&1 &
    vm_pid=$!
  fi
fi
.venv/bin/pytest "$@" || rc=$?
if [ "${SPLICE_SKIP_VM:-0}" = 1 ]; then
  echo "test.sh: SPLICE_SKIP_VM=1: the needs_vm tests did NOT run in the VM guest" >&2
  exit "$rc"
fi
if [ -n "$vm_pid" ]; then
  wait "$vm_pid" || vm_rc=$?
  vm_pid=
else
  ./scripts/vm-run.sh -- .venv/bin/pytest -p no:cacheprovider -m needs_vm "$@" >"$vm_log" 2>&1 || vm_rc=$?
fi
echo "== the needs_vm tests in the user-mode-linux guest (scripts/vm-run.sh) =="
cat "$vm_log"
if [ "$vm_rc" = 5 ] && [ $# -gt 0 ]; then
  vm_rc=0   # pytest: no test selected - the given arguments hold no needs_vm test
elif [ "$vm_rc" != 0 ]; then
  echo "test.sh: the needs_vm tests in the VM guest failed (exit $vm_rc)" >&2
fi
[ "$rc" = 0 ] || exit "$rc"
exit "$vm_rc"
