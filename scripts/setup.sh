#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) to run splice, its demo and its tests.
# Idempotent: installs the Debian packages splice needs, creates .venv (Debian's
# /usr/bin/python3, with system site-packages for python3-nftables) and installs
# splice into it with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (splice manages network namespaces and nftables)" >&2
  exit 1
fi

APT_PACKAGES=(
  python3 python3-venv python3-pip python3-nftables  # interpreter + libnftables JSON bindings
  nftables libnftables1                              # nft (tests' oracle) and the library
  iproute2 util-linux procps iputils-ping conntrack  # ip/bridge (oracle), nsenter, ping
  containernetworking-plugins                        # the Go reference plugins, compared against
  podman runc containerd busybox-static              # real clients (tests/clients) + their image
  docker.io                                          # dockerd 20.10 + /usr/bin/docker (tests/docker)
  kmod                                               # modprobe/insmod for the UML guest (scripts/vm-run.sh)
  etcd-server                                        # /usr/bin/etcd 3.4: tests/cluster's 3-member cluster (in namespaces)
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Wait (up to 10 min) for the dpkg lock another apt run holds (unattended-upgrades on a
  # fresh machine) instead of failing at once. `apt-get update` also takes the lists lock,
  # which not every apt waits for: retry it while the failure is a lock.
  APT_OPTS=(-o DPkg::Lock::Timeout=600)
  for try in $(seq 120); do
    if out=$(apt-get "${APT_OPTS[@]}" update -qq 2>&1); then break; fi
    if ! grep -qi "lock" <<<"$out" || [ "$try" = 120 ]; then echo "$out" >&2; exit 1; fi
    echo "setup.sh: apt-get update: a lock is held, retrying in 5 s" >&2
    sleep 5
  done
  # The tests start private daemons only: keep the packages' own services (dockerd with its
  # docker0 bridge and iptables rules, containerd) from being started by the install, unless
  # the machine already has a policy-rc.d (Debian's hook; exit 101 = do not start).
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
fi

# The CNI executables' interpreter is the venv's python, a symlink to Debian's
# /usr/bin/python3 (starts in ~10 ms; a pyenv shim takes ~110 ms).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import nftables' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
# The UML guest kernel for the needs_vm tests (apt-get download + unpack into .vm-cache/,
# git-ignored; nothing installed). SPLICE_SKIP_VM=1 skips it (local runs only).
if [ "${SPLICE_SKIP_VM:-0}" != 1 ]; then
  ./scripts/vm-run.sh --setup
fi
echo "setup.sh: ready (.venv/bin/splice-bridge, .venv/bin/splice-ipam)"
