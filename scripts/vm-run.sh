#!/bin/bash
# vm-run.sh - run a command as root in a throw-away user-mode-linux (UML) guest whose
# kernel has what this machine's kernel may lack: bridge VLAN filtering, 8021q, ipvlan,
# dummy (plus veth, macvlan, vxlan, bridge, netns). Used by scripts/test.sh for the
# tests marked `needs_vm`.
#
#   scripts/vm-run.sh [options] [--] CMD [ARGS...]
#   scripts/vm-run.sh --setup          # only download/prepare the guest kernel
#
# The guest kernel is Debian bookworm's user-mode-linux 6.1 (a normal Linux process, no
# /dev/kvm needed), fetched with `apt-get download` and unpacked (not installed) into
# SPLICE_VM_CACHE (default <repo>/.vm-cache, git-ignored). Its root is the host's / read
# only with a tmpfs overlay on top (writes outside the shares are discarded); the repo
# (and every -s DIR) is shared read-write at the same path. The guest has no network
# device but `lo`, one CPU, and NO nftables ip/ip6/inet families (bridge family only):
# keep NAT tests on the host kernel. UML is not a security boundary (the guest runs as
# host root).
#
# Options
#   -s, --share DIR   another dir shared read-write at the same path (repeatable;
#                     the repo is always shared)
#   -m, --mem MB      guest RAM in MiB (SPLICE_VM_MEM, default 1024)
#   -t, --timeout S   kill the guest after S s -> exit 124 (SPLICE_VM_TIMEOUT, default 1800)
#   -M, --modules "M1 M2"  modprobe these before CMD (autoload works too)
#   -v, --verbose     print the guest kernel log and timings to stderr
#       --setup       only download/prepare, do not boot
#
# CMD runs in the guest with the caller's environment (plus SPLICE_VM=uml), current
# directory and argv; its stdout/stderr arrive on this script's stdout/stderr (separate
# guest serial lines); its stdin is /dev/null. Exit status: CMD's; 124 on timeout; 125 if
# the guest could not be prepared or died before CMD finished (its kernel log is printed).
#
# Adapted from the kernel-vm recipe (UML backend only; ~1.5 s per boot).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SELF")")
CACHE=${SPLICE_VM_CACHE:-$REPO/.vm-cache}
MEM=${SPLICE_VM_MEM:-1024}
TIMEOUT=${SPLICE_VM_TIMEOUT:-1800}
MODULES=${SPLICE_VM_MODULES:-}
VERBOSE=${SPLICE_VM_VERBOSE:-0}
KEEP=${SPLICE_VM_KEEP:-0}
SHARES=("$REPO")
SETUP_ONLY=0

usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    -s|--share) SHARES+=("$2"); shift 2;;
    -m|--mem) MEM=$2; shift 2;;
    -t|--timeout) TIMEOUT=$2; shift 2;;
    -M|--modules) MODULES=$2; shift 2;;
    -v|--verbose) VERBOSE=1; shift;;
    --setup) SETUP_ONLY=1; shift;;
    -h|--help) usage 0;;
    --) shift; break;;
    -*) echo "vm-run: unknown option $1" >&2; usage 2 >&2;;
    *) break;;
  esac
done
[ $# -gt 0 ] || [ "$SETUP_ONLY" = 1 ] || usage 2 >&2
[ "$(id -u)" = 0 ] || { echo "vm-run: must run as root" >&2; exit 2; }

log() { if [ "$VERBOSE" = 1 ]; then echo "vm-run: $*" >&2; fi; }
die() { echo "vm-run: $*" >&2; exit 125; }

mkdir -p "$CACHE"
CACHE=$(readlink -f "$CACHE")

# ------------------------------------------------------------------ guest-side scripts
stage1() { cat <<'EOS'
#!/bin/bash
# UML stage 1: PID 1 on the read-only hostfs root. Builds an overlay root (host /
# read-only below, tmpfs above) and pivots into it. (Each exec costs ~20-30 ms in UML.)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
insmod "$kv_overlay_ko" 2>/dev/null
mount -t tmpfs -o mode=755 kvrw /run
mkdir -p /run/upper/.kvold /run/work /run/root
mount -t overlay kvroot -o lowerdir=/,upperdir=/run/upper,workdir=/run/work /run/root ||
  { echo "vm: overlay mount failed" >&2; exec "$kv_stage2"; }
cd /run/root && pivot_root . .kvold && exec chroot . "$kv_stage2"
echo "vm: pivot_root failed" >&2; exec chroot /run/root "$kv_stage2"
EOS
}

stage2() { cat <<'EOS'
#!/bin/bash
# stage 2: PID 1 inside the overlay root. A single `mount -a` with the fstab the host
# wrote into the run's state dir (readable through the read-only root) mounts the pseudo
# filesystems, the modules dir, the state dir and the shares; then the command runs, its
# exit status is recorded and the guest powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
S=$kv_state
trap 'sync; echo o > /proc/sysrq-trigger; sleep 30' EXIT
mount -a -T "$S/fstab" || echo "vm: some mounts failed" >&2
read -r t_stage2 _ < /proc/uptime
. "$S/config"
[ -d /.kvold ] && umount -l /.kvold
cp -a "$KV_GUEST_DIR/devlinks/." /dev/     # /dev/fd, /dev/std{in,out,err} (devtmpfs lacks them)
[ -x /usr/sbin/modprobe ] && echo /usr/sbin/modprobe > /proc/sys/kernel/modprobe
for m in $KV_MODULES; do modprobe "$m" || echo "vm: modprobe $m failed" >&2; done
echo splicevm > /proc/sys/kernel/hostname
ip link set lo up
stty -F /dev/ttyS0 raw -echo $KV_TTYSIZE; stty -F /dev/ttyS1 raw -echo $KV_TTYSIZE
# CMD sees a tty only where the host side is a tty; otherwise a pipe (via cat)
if [ "$KV_OUT_TTY" = 1 ]; then exec 5>/dev/ttyS0; else exec 5> >(exec cat >/dev/ttyS0); p5=$!; fi
if [ "$KV_ERR_TTY" = 1 ]; then exec 6>/dev/ttyS1; else exec 6> >(exec cat >/dev/ttyS1); p6=$!; fi
while IFS= read -r -d '' kv; do
  case ${kv%%=*} in PWD|OLDPWD|SHLVL|_|BASH_FUNC_*|HOSTNAME) continue;; esac
  export "$kv" 2>/dev/null
done < "$S/env0"
export SPLICE_VM=uml
read -r t_cmd _ < /proc/uptime
cmd=$(<"$S/cmd")
( cd "$KV_CWD" 2>/dev/null || cd /; exec 5>&- 6>&-; eval "exec $cmd" ) </dev/null >&5 2>&6
rc=$?
exec 5>&- 6>&-
for p in ${p5:-} ${p6:-}; do wait "$p"; done
read -r t_end _ < /proc/uptime
echo "stage2=$t_stage2 cmd_start=$t_cmd cmd_end=$t_end" > "$S/timing"
echo "$rc" > "$S/rc"
EOS
}

# ------------------------------------------------------------------ host setup (idempotent)
fetch_extract() {  # fetch_extract PKG DESTDIR: download the .deb (no install), unpack it
  local pkg=$1 dest=$2 deb
  mkdir -p "$CACHE/debs"
  deb=$(ls "$CACHE/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    log "downloading $pkg"
    if ! (cd "$CACHE/debs" && apt-get download -q "$pkg" >/dev/null 2>"$CACHE/debs/$pkg.err"); then
      log "apt-get download $pkg failed; apt-get update and retry"
      apt-get update -q -o DPkg::Lock::Timeout=600 >"$CACHE/apt-update.log" 2>&1 || true
      (cd "$CACHE/debs" && apt-get download -q "$pkg" >/dev/null 2>"$CACHE/debs/$pkg.err") ||
        { cat "$CACHE/debs/$pkg.err" >&2; die "apt-get download $pkg failed"; }
    fi
    deb=$(ls "$CACHE/debs/${pkg}_"*.deb | head -n1)
  fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp" && dpkg-deb -x "$deb" "$dest.tmp" &&
    rm -rf "$dest" && mv "$dest.tmp" "$dest" && rm -f "$deb" "$CACHE/debs/$pkg.err"
}
write_if_changed() {  # write_if_changed FILE MODE < content  (atomic)
  local f=$1 mode=$2 tmp; tmp=$(mktemp "$f.XXXXXX")
  cat > "$tmp"; chmod "$mode" "$tmp"
  if cmp -s "$tmp" "$f"; then rm -f "$tmp"; else mv -f "$tmp" "$f"; fi
}
setup() {
  command -v modprobe >/dev/null 2>&1 ||
    die "modprobe not found: the guest runs the host's kmod (install kmod: scripts/setup.sh)"
  mkdir -p "$CACHE/guest" "$CACHE/runs"
  local d=$CACHE/uml
  [ -x "$d/pkg/usr/bin/linux.uml" ] || fetch_extract user-mode-linux "$d/pkg"
  KVER=$(ls "$d/pkg/usr/lib/uml/modules" | head -n1)
  [ -n "$KVER" ] || die "no module tree in $d/pkg/usr/lib/uml/modules"
  MODDIR=$d/pkg/usr/lib/uml/modules/$KVER
  stage1 | write_if_changed "$CACHE/guest/stage1.sh" 755
  stage2 | write_if_changed "$CACHE/guest/stage2.sh" 755
  if [ ! -L "$CACHE/guest/devlinks/stderr" ]; then
    mkdir -p "$CACHE/guest/devlinks"
    ln -sfn /proc/self/fd "$CACHE/guest/devlinks/fd"
    ln -sfn /proc/self/fd/0 "$CACHE/guest/devlinks/stdin"
    ln -sfn /proc/self/fd/1 "$CACHE/guest/devlinks/stdout"
    ln -sfn /proc/self/fd/2 "$CACHE/guest/devlinks/stderr"
  fi
}

exec 9>"$CACHE/.lock"
flock 9
setup
flock -u 9; exec 9>&-
if [ "$SETUP_ONLY" = 1 ]; then echo "vm-run: guest ready (user-mode-linux $KVER in $CACHE)" >&2; exit 0; fi

# ------------------------------------------------------------------ per-run state
SHARE_DIRS=()
for s in "${SHARES[@]}"; do
  [ -d "$s" ] || die "share $s is not a directory"
  SHARE_DIRS+=("$(readlink -f "$s")")
done

S=$(mktemp -d "$CACHE/runs/r.XXXXXX")
VM_PID=
cleanup() {
  if [ -n "$VM_PID" ]; then kill -KILL -- "-$VM_PID" 2>/dev/null || true; fi
  if [ "$KEEP" = 1 ]; then echo "vm-run: state kept in $S" >&2; else rm -rf "$S"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

env -0 > "$S/env0"
printf '%q ' "$@" > "$S/cmd"
out_tty=0; [ -t 1 ] && out_tty=1
err_tty=0; [ -t 2 ] && err_tty=1
ttysize=
if [ "$out_tty" = 1 ] && sz=$(stty size 2>/dev/null) && [ -n "$sz" ]; then
  ttysize="rows ${sz% *} cols ${sz#* }"
fi
printf 'KV_CWD=%q\nKV_MODULES=%q\nKV_OUT_TTY=%s\nKV_ERR_TTY=%s\nKV_TTYSIZE=%q\nKV_GUEST_DIR=%q\n' \
  "$PWD" "$MODULES" "$out_tty" "$err_tty" "$ttysize" "$CACHE/guest" > "$S/config"
fsesc() { local p=${1//\\/\\134}; p=${p// /\\040}; p=${p//$'\t'/\\011}; printf '%s' "$p"; }
share_line() { printf '%s %s hostfs %s,X-mount.mkdir 0 0\n' "$1" "$(fsesc "$2")" "$(fsesc "$2")"; }
{
  echo "proc /proc proc defaults 0 0"
  echo "sys /sys sysfs defaults 0 0"
  echo "dev /dev devtmpfs defaults 0 0"
  echo "devpts /dev/pts devpts newinstance,ptmxmode=0666,X-mount.mkdir 0 0"
  echo "shm /dev/shm tmpfs mode=1777,X-mount.mkdir 0 0"
  echo "run /run tmpfs mode=755 0 0"
  echo "cgroup2 /sys/fs/cgroup cgroup2 nofail 0 0"
  echo "$(fsesc "$MODDIR") /lib/modules/$KVER none bind,X-mount.mkdir 0 0"
  i=0; for d in "${SHARE_DIRS[@]}"; do share_line "kvs$i" "$d"; i=$((i+1)); done
  share_line kvstate "$S"     # last, so that a share above the cache dir cannot hide it
} > "$S/fstab"

# ------------------------------------------------------------------ boot
exec 3>&1 4>&2
t0=$(date +%s.%N)
memdir=/dev/shm; [ -w /dev/shm ] || memdir=${TMPDIR:-/tmp}
# initcall_blacklist=raid6_select_algo skips a ~0.9 s RAID6 benchmark.
TMPDIR=$memdir setsid "$CACHE/uml/pkg/usr/bin/linux.uml" \
  mem="${MEM}M" rootfstype=hostfs rootflags=/ ro \
  init="$CACHE/guest/stage1.sh" quiet loglevel=3 \
  initcall_blacklist=raid6_select_algo \
  uml_dir="$S" umid=kv con=null con0=null,fd:5 ssl=null ssl0=fd:3 ssl1=fd:4 \
  kv_state="$S" kv_stage2="$CACHE/guest/stage2.sh" \
  kv_overlay_ko="$MODDIR/kernel/fs/overlayfs/overlay.ko" \
  </dev/null >"$S/uml.log" 2>&1 5>"$S/kernel.log" &
VM_PID=$!

wd=
if [ "$TIMEOUT" != 0 ]; then
  ( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$TIMEOUT" & sp=$!; wait "$sp"
    touch "$S/timed_out"; kill -KILL -- "-$VM_PID" 2>/dev/null ) 3>&- 4>&- &
  wd=$!
fi
{ wait "$VM_PID"; } 2>/dev/null || true
# make sure no process of the VM's process group (UML helpers) survives
kill -KILL -- "-$VM_PID" 2>/dev/null || true
for _ in $(seq 100); do kill -0 -- "-$VM_PID" 2>/dev/null || break; sleep 0.05; done
VM_PID=
if [ -n "$wd" ]; then kill "$wd" 2>/dev/null || true; wait "$wd" 2>/dev/null || true; fi
t1=$(date +%s.%N)

if [ "$VERBOSE" = 1 ]; then
  echo "----- guest kernel log -----" >&2
  cat "$S/kernel.log" "$S/uml.log" >&2 2>/dev/null || true
  echo "vm-run: wall=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")s guest uptime: $(cat "$S/timing" 2>/dev/null)" >&2
fi
if [ -f "$S/timed_out" ]; then echo "vm-run: timeout after ${TIMEOUT}s" >&2; exit 124; fi
if [ -f "$S/rc" ]; then exit "$(cat "$S/rc")"; fi
echo "vm-run: guest died before the command finished; kernel log tail:" >&2
tail -n 40 "$S/kernel.log" "$S/uml.log" >&2 2>/dev/null || true
exit 125
