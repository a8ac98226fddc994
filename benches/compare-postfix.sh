#!/usr/bin/env bash
# Postfix as a durable relay against postrider's examples/relay.rs, on the same machine, with the
# same messages, the same client and the same sink:
#
#   (a) smtp-source -> a private Postfix instance's smtpd on 127.0.0.1:PORT -> relayhost
#       [127.0.0.1]:SINK (smtp-sink)
#   (b) smtp-source -> examples/relay (release build, durable FsSpool) -> smart host
#       [127.0.0.1]:SINK (the same smtp-sink)
#
# Each is timed from the start of smtp-source until smtp-sink has counted every message. Both
# queues are durable: Postfix fsyncs each queue file before its 250 (its default), postrider's
# FsSpool makes each message durable before `250 OK queued as`.
#
# usage: benches/compare-postfix.sh [-m MESSAGES] [-l SIZE] [-s SESSIONS] [-r RUNS]
#   defaults: -m 5000 -l 4096 -s 20 -r 1. With -r N the pair is run N times, alternating, and
#   the medians are printed too.
#
# Needs root (Postfix's master starts as root) and Debian's postfix package (postfix,
# smtp-source, smtp-sink); installs nothing. The machine's own Postfix is neither used nor
# changed: the script starts a private instance (own main.cf, master.cf, queue, data directory
# and log under the work directory; the recipe of tests/support/postfix.rs, see DESIGN-NOTES.md
# "Private Postfix instances") for each run and stops it afterwards, also on failure or Ctrl-C.
# Everything goes under $POSTRIDER_BENCH_DIR (default target/tmp: a real disk, never tmpfs)
# and is deleted at the end. Not run by CI.
set -euo pipefail

MESSAGES=5000
SIZE=4096
SESSIONS=20
RUNS=1
while getopts "m:l:s:r:h" opt; do
  case "$opt" in
    m) MESSAGES=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    s) SESSIONS=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    *) sed -n '2,24p' "$0"; exit 64 ;;
  esac
done

die() { echo "compare-postfix: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (a Postfix master starts as root)"
for tool in /usr/sbin/postfix /usr/sbin/postconf /usr/sbin/smtp-source /usr/sbin/smtp-sink; do
  [ -x "$tool" ] || die "$tool is missing: install the Debian package postfix"
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
echo "building examples/relay (release)..." >&2
cargo build --release --example relay --quiet
RELAY_BIN=$REPO/target/release/examples/relay
[ -x "$RELAY_BIN" ] || die "$RELAY_BIN was not built"

BASE=${POSTRIDER_BENCH_DIR:-$REPO/target/tmp}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/compare-postfix.XXXXXX")
case "$(stat -f -c %T "$WORK")" in
  tmpfs|ramfs) die "$WORK is on $(stat -f -c %T "$WORK"), where fsync is free: set POSTRIDER_BENCH_DIR to a directory on a disk" ;;
esac

# Postfix's daemons reach the instance's data directory by absolute path after dropping to
# the postfix user: the work directory must be searchable.
chmod 755 "$WORK"
PF=$WORK/postfix
PF_ETC=$PF/etc
PF_STARTED=no
SINK_PID=""
RELAY_PID=""

# Every process of the private instance carries MAIL_CONFIG=$PF_ETC (set by the postfix
# command, handed down by master), so none is missed even if "postfix stop" fails.
instance_pids() {
  local env pid
  for env in /proc/[0-9]*/environ; do
    pid=${env#/proc/}
    pid=${pid%/environ}
    # A process may end while we look; its file is then gone.
    { tr '\0' '\n' <"$env"; } 2>/dev/null | grep -qxF "MAIL_CONFIG=$PF_ETC" && echo "$pid"
  done
  return 0
}

stop_postfix() {
  local left=""
  if [ "$PF_STARTED" = yes ]; then
    /usr/sbin/postfix -c "$PF_ETC" stop >/dev/null 2>&1 || true
    PF_STARTED=no
  fi
  for _ in $(seq 1 50); do
    left=$(instance_pids)
    [ -z "$left" ] && return 0
    # shellcheck disable=SC2086 # one pid a word
    kill -9 $left 2>/dev/null || true
    sleep 0.1
  done
  echo "compare-postfix: processes of the private Postfix still running: $left" >&2
}

cleanup() {
  set +e
  stop_postfix
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on 127.0.0.1 that nothing listens on.
listening() { # PORT
  local hex
  hex=$(printf '0100007F:%04X' "$1")
  awk -v a="$hex" '$2 == a && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp
}
free_port() {
  local p
  for p in $(seq 20000 20999 | shuf); do
    listening "$p" || { echo "$p"; return; }
  done
  die "no free port in 20000-20999"
}
wait_listening() { # PORT PID WHAT
  for _ in $(seq 1 500); do
    listening "$1" && return 0
    kill -0 "$2" 2>/dev/null || die "$3 exited before listening (see $WORK)"
    sleep 0.02
  done
  die "$3 is not listening on 127.0.0.1:$1"
}

SINK_PORT=$(free_port)
/usr/sbin/smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK_PID=$!
wait_listening "$SINK_PORT" "$SINK_PID" smtp-sink

# smtp-sink -c rewrites "sess=N quit=N mesg=N" after a carriage return at every event.
sink_count() {
  tr '\r' '\n' <"$WORK/sink.out" | awk -F'mesg=' 'NF > 1 { n = $2 + 0 } END { print n + 0 }'
}

now() { date +%s.%N; }

# CPU use of the whole machine between two /proc/stat samples: "user% system% iowait% idle%".
cpu_sample() { awk '/^cpu / { print $2 + $3, $4 + $7 + $8, $6, $5 }' /proc/stat; }
cpu_share() { # BEFORE AFTER
  echo "$1 $2" | awk '{ u = $5 - $1; s = $6 - $2; w = $7 - $3; i = $8 - $4; t = u + s + w + i;
    if (t == 0) t = 1; printf "user %d%% sys %d%% iowait %d%% idle %d%%", 100*u/t, 100*s/t, 100*w/t, 100*i/t }'
}

# Runs smtp-source against PORT and waits for the sink; sets RATE (msg/s), logs details.
RATE=0
measure() { # NAME PORT
  local name=$1 port=$2 before target start end cpu0 cpu1 load got deadline
  before=$(sink_count)
  target=$((before + MESSAGES))
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  cpu0=$(cpu_sample)
  start=$(now)
  /usr/sbin/smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" \
    -f bench@example.test -t rcpt@example.test "127.0.0.1:$port" \
    || die "smtp-source against $name failed"
  deadline=$(( $(date +%s) + 600 ))
  while :; do
    got=$(sink_count)
    [ "$got" -ge "$target" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || die "$name: the sink counted $((got - before)) of $MESSAGES messages in 10 minutes"
    sleep 0.01
  done
  end=$(now)
  cpu1=$(cpu_sample)
  RATE=$(awk -v n="$MESSAGES" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')
  echo "$name: $MESSAGES msgs in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s; load before $load; machine CPU $(cpu_share "$cpu0" "$cpu1")" >&2
}

# A private instance relaying everything to the sink: smtpd on its own port, daemons
# unchrooted; nothing is read from /etc/postfix but the file lists the package ships there.
start_postfix() { # PORT
  local port=$1 errors hex
  rm -rf "$PF"
  mkdir -p "$PF_ETC" "$PF/queue"
  chmod 755 "$PF" "$PF_ETC" "$PF/queue"
  cat >"$PF_ETC/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
myhostname = postfix.bench.localhost
mydestination = \$myhostname, localhost
mynetworks = 127.0.0.0/8
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$SINK_PORT
smtpd_tls_security_level = none
smtp_tls_security_level = none
EOF
  cat >"$PF_ETC/master.cf" <<EOF
127.0.0.1:$port inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
local      unix  - n n -     - local
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
  # Postfix's commands wait until main.cf is over a second old.
  touch -d '-10 seconds' "$PF_ETC/main.cf" "$PF_ETC/master.cf"
  # The postfix command reports configuration errors only to syslog (absent here); postconf
  # reports them on stderr.
  errors=$(/usr/sbin/postconf -c "$PF_ETC" -n 2>&1 >/dev/null)
  [ -z "$errors" ] || die "the private Postfix's main.cf: $errors"
  PF_STARTED=yes
  /usr/sbin/postfix -c "$PF_ETC" start >/dev/null 2>&1 \
    || die "the private Postfix did not start; its log: $(cat "$PF/maillog" 2>/dev/null)"
  # Postfix's master sets SO_REUSEPORT, so a second listener on the port would not have made
  # the start fail: make sure this one is alone.
  hex=$(printf '0100007F:%04X' "$port")
  [ "$(awk -v a="$hex" '$2 == a && $4 == "0A"' /proc/net/tcp | wc -l)" = 1 ] \
    || die "something else also listens on 127.0.0.1:$port"
}

postfix_run() {
  local port
  port=$(free_port)
  start_postfix "$port"
  measure postfix "$port"
  stop_postfix
}

postrider_run() {
  local port config
  port=$(free_port)
  config=$WORK/relay.toml
  rm -rf "$WORK/spool"
  cat >"$config" <<EOF
hostname = "relay.bench.test"
spool = "$WORK/spool"
smart_host = "[127.0.0.1]:$SINK_PORT"
EOF
  "$RELAY_BIN" -C "$config" --listen "127.0.0.1:$port" 2>>"$WORK/relay.log" &
  RELAY_PID=$!
  wait_listening "$port" "$RELAY_PID" "examples/relay"
  measure postrider "$port"
  kill "$RELAY_PID"
  wait "$RELAY_PID" || die "examples/relay exited with an error (see $WORK/relay.log)"
  RELAY_PID=""
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "$(nproc) CPUs; $MESSAGES messages of $SIZE octets, $SESSIONS smtp-source sessions; spool on $(stat -f -c %T "$WORK") ($WORK)" >&2
POSTFIX_RATES=()
POSTRIDER_RATES=()
for run in $(seq 1 "$RUNS"); do
  postfix_run
  p=$RATE
  postrider_run
  r=$RATE
  POSTFIX_RATES+=("$p")
  POSTRIDER_RATES+=("$r")
  printf 'run %d: postfix %s msg/s, postrider %s msg/s, ratio %s\n' "$run" "$p" "$r" \
    "$(awk -v a="$r" -v b="$p" 'BEGIN { printf "%.2f", a / b }')"
done
if [ "$RUNS" -gt 1 ]; then
  p=$(printf '%s\n' "${POSTFIX_RATES[@]}" | median)
  r=$(printf '%s\n' "${POSTRIDER_RATES[@]}" | median)
  printf 'median of %d: postfix %s msg/s, postrider %s msg/s, ratio %s\n' "$RUNS" "$p" "$r" \
    "$(awk -v a="$r" -v b="$p" 'BEGIN { printf "%.2f", a / b }')"
fi
