#!/bin/bash
# usage: bash .ci/s3-ceph.sh start|stop|status
#
# A throwaway real S3 server for streamrelay's tests: Ceph RADOS Gateway from
# Debian's packages (installed when missing), with one monitor and one memstore
# OSD, listening on 127.0.0.1 only.  `start` writes
#   export S3_ENDPOINT_URL=... S3_ACCESS_KEY=... S3_SECRET_KEY=... S3_REGION=...
# to $S3_DIR/env (default /tmp/ci-ceph-s3/env), where tests/s3env.py finds it;
# `stop` ends every daemon it started (by PID) and removes $S3_DIR.
#
# Adapted from the shared recipe (../shared/recipes/s3-ceph.sh).  Differences:
# RGW's garbage collector runs every few seconds with no minimum wait, so
# that objects deleted and multipart uploads aborted by the tests free the
# in-memory OSD at once (the default waits two hours, and 1 GiB tests fill it);
# the memstore size is S3_MEMSTORE_BYTES (default 4 GiB).
# Ports: S3_PORT (RGW, default 7480) and the monitor's S3_MON_PORT and
# S3_MON_V1_PORT (default 3300 and 6789); a default another program holds
# is replaced by a free port, so a second run on one machine does not collide.
# `start` and `stop` hold the machine-wide CI lock (.ci/lib.sh) while they run,
# waiting for a CI run that holds it: they would stop that run's server (under
# .ci/run they have it already).
set -euo pipefail
# shellcheck source=.ci/lib.sh
. "$(dirname "$0")/lib.sh"

pick() {  # the port $1, or a free one when something listens there
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else echo "$1"; fi
}

D=${S3_DIR:-/tmp/ci-ceph-s3}; C=$D/ceph.conf; K=$D/keyring
AK=${S3_ACCESS_KEY:-ciaccesskey}; SK=${S3_SECRET_KEY:-cisecretkey0123456789}
MEMSTORE=${S3_MEMSTORE_BYTES:-4294967296}

stop() {
  for n in client.rgw.a osd.0 mon.a; do
    f=$D/run/$n.pid; [ -f "$f" ] || continue; p=$(cat "$f"); kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$D"
}

ready() {  # a SigV4-signed ListBuckets answers 200
  PORT=${PORT:-$(cat "$D/port" 2>/dev/null || echo 7480)}
  [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:us-east-1:s3 -u "$AK:$SK" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "http://127.0.0.1:$PORT/" || true)" = 200 ]
}

start() {
  command -v radosgw >/dev/null && command -v ceph-osd >/dev/null && command -v ceph-mon >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      radosgw ceph-mon ceph-osd >/tmp/ceph-apt.log 2>&1 || { cat /tmp/ceph-apt.log; exit 1; }; }
  command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
  stop; mkdir -p "$D"/{mon.a,osd.0,run,log,rgw}
  PORT=${S3_PORT:-$(pick 7480)}; MON2=${S3_MON_PORT:-$(pick 3300)}; MON1=${S3_MON_V1_PORT:-$(pick 6789)}
  echo "$PORT" > "$D/port"
  FSID=$(cat /proc/sys/kernel/random/uuid); OSDU=$(cat /proc/sys/kernel/random/uuid)
  cat > "$C" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON2,v1:127.0.0.1:$MON1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
keyring = $K
run dir = $D/run
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 1
auth allow insecure global id reclaim = false
[mon]
mon data = $D/mon.\$id
[osd]
osd data = $D/osd.\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $D/rgw
rgw gc obj min wait = 0
rgw gc processor period = 5
rgw gc processor max time = 5
EOF
  ceph-authtool --create-keyring "$K" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$K" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$K" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
  ceph-authtool "$K" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:$MON2,v1:127.0.0.1:$MON1]" --fsid "$FSID" "$D/monmap" >/dev/null
  ceph-mon -c "$C" --mkfs -i a --monmap "$D/monmap" --keyring "$K"
  # the daemons outlive this script: without the CI lock's fd 8
  ceph-mon -c "$C" -i a 8>&-
  ceph -c "$C" osd new "$OSDU" >/dev/null              # uuid must match the OSD's mkfs uuid
  ceph-osd -c "$C" -i 0 --mkfs --osd-uuid "$OSDU" 2>/dev/null
  ceph-osd -c "$C" -i 0 2>/dev/null 8>&-
  for _ in $(seq 120); do ceph -c "$C" osd stat 2>/dev/null | grep -q ' 1 up' && break; sleep 0.5; done
  radosgw -c "$C" -n client.rgw.a 8>&-
  radosgw-admin -c "$C" user create --uid=ci --display-name=ci --access-key="$AK" --secret-key="$SK" >/dev/null
  ok=0; for _ in $(seq 240); do ready && { ok=1; break; }; sleep 0.5; done
  [ "$ok" = 1 ] || { echo "rgw not ready" >&2; tail -n 20 "$D"/log/*.log >&2; stop; exit 1; }
  printf 'export S3_ENDPOINT_URL=http://127.0.0.1:%s S3_ACCESS_KEY=%s S3_SECRET_KEY=%s S3_REGION=us-east-1\n' \
    "$PORT" "$AK" "$SK" > "$D/env"
  echo "S3 ready: http://127.0.0.1:$PORT (source $D/env)"
}

status() {
  if [ -f "$D/env" ] && ready; then echo "S3 running: $(cat "$D/env")"; else echo "S3 not running"; return 1; fi
}

case "${1:-}" in start) ci_lock "s3-ceph.sh start"; start ;; stop) ci_lock "s3-ceph.sh stop"; stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;; esac
