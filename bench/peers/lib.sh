# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Shared by bench/peers/*/start and bench/baseline/start; sourced, not run.
#
# Every start script has the same interface:
#   start [--install-only] [--dir DIR] PORT
# It installs the peer when missing, starts it on 127.0.0.1:PORT with one
# worker process, waits until it answers, and prints its PID (and nothing
# else) on stdout. The process runs detached; stop it with bench/peers/stop PID.
# Its config, logs and pid files live in DIR (default: a new temporary
# directory, named on stderr); the caller removes DIR.

PEERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$PEERS_DIR/../.." && pwd)

die() { echo "$(basename "$(dirname "$0")")/$(basename "$0"): $*" >&2; exit 2; }

# parse_start_args "$@": sets INSTALL_ONLY, DIR, PORT.
parse_start_args() {
  INSTALL_ONLY=0 DIR="" PORT=""
  while [ $# -gt 0 ]; do
    case $1 in
      --install-only) INSTALL_ONLY=1 ;;
      --dir) [ $# -ge 2 ] || die "--dir needs a directory"; DIR=$2; shift ;;
      -h|--help) usage; exit 0 ;;
      -*) die "unknown option $1 (try --help)" ;;
      *) [ -z "$PORT" ] || die "one PORT only"; PORT=$1 ;;
    esac
    shift
  done
  if [ "$INSTALL_ONLY" = 1 ]; then return; fi
  if ! [[ "$PORT" =~ ^[0-9]{1,5}$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
    die "PORT must be a number from 1 to 65535 (try --help)"
  fi
  if [ -z "$DIR" ]; then
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/pushgate-peer.XXXXXX")
    echo "$(basename "$(dirname "$0")"): files in $DIR" >&2
  fi
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
}

APT_UPDATED=0
# apt_install PACKAGE...: installs Debian packages (apt-get update once first).
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  echo "installing $* (apt)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# need_node: Node.js and npm from Debian when missing.
need_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
}

# npm_ci DIR: installs DIR's locked dependencies when node_modules is missing or stale.
npm_ci() {
  need_node
  if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    (cd "$1" && npm ci --no-audit --no-fund --silent) >&2
  fi
}

# launch LOG CMD...: starts CMD detached (own session, stdin closed, output
# to LOG, working directory DIR) and sets PID.
launch() {
  local log=$1
  shift
  cd "$DIR" || exit 1
  setsid "$@" </dev/null >"$log" 2>&1 &
  PID=$!
}

# await_http PID URL LOG: waits up to 20 s for URL to answer; on failure shows
# LOG, stops PID and exits 1.
await_http() {
  local pid=$1 url=$2 log=$3
  for _ in $(seq 200); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$(basename "$(dirname "$0")"): exited while starting; its log:" >&2
      tail -n 30 "$log" >&2
      exit 1
    fi
    # -k: a TLS peer (nchan+tls) serves a self-signed test certificate.
    if curl -s -k -o /dev/null --max-time 1 "$url"; then
      return 0
    fi
    sleep 0.1
  done
  echo "$(basename "$(dirname "$0")"): no answer from $url within 20 s; its log:" >&2
  tail -n 30 "$log" >&2
  "$PEERS_DIR/stop" "$pid" >&2 || true
  exit 1
}
