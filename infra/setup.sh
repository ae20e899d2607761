#!/usr/bin/env bash
# Sets up everything Safewatch needs on a Debian machine, idempotently:
#   infra/setup.sh            Python venv (.venv, installed from uv.lock) + Kafka broker jars
#                             + Spark Kafka connector jars + Debian's Alertmanager and Chromium
#   infra/setup.sh --test     the above, plus Debian's PostgreSQL, Prometheus and poppler-utils
#                             for the tests (system services are kept stopped and disabled:
#                             Safewatch starts its own instances on its own ports)
#   infra/setup.sh --lock     re-resolve uv.lock after a change to pyproject.toml's dependencies
#                             (add --upgrade to move every pin to the newest allowed version)
# Re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WITH_TEST=0
LOCK=0
UPGRADE=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    --lock) LOCK=1 ;;
    --upgrade) UPGRADE=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done
if [ "$UPGRADE" = 1 ] && [ "$LOCK" = 0 ]; then
  echo "setup: --upgrade goes with --lock" >&2; exit 2
fi
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
else
  say() { printf '[setup] %s\n' "$*"; }
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "setup: Python 3.11 is required (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

PYEXE=$("$PY" -c 'import sys; print(sys.executable)')

# Python packages are installed by uv, at this exact version, from uv.lock. uv runs from a
# cached copy of the binary of its PyPI wheel; it never downloads a Python of its own.
UV_VERSION=0.13.9
export UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT="$ROOT/.venv"
ensure_uv() {
  local tools
  if [ -n "${HOME:-}" ]; then tools=${XDG_CACHE_HOME:-$HOME/.cache}/safewatch; else tools=$ROOT/var/tools; fi
  UV=$tools/uv-$UV_VERSION
  [ -x "$UV" ] && return
  say "installing uv $UV_VERSION from PyPI into $tools"
  mkdir -p "$tools"
  local tmp
  tmp=$(mktemp -d "$tools/.uv-$UV_VERSION.XXXXXX")
  if ! { "$PY" -m venv "$tmp/venv" \
         && "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"; }; then
    rm -rf "$tmp"
    echo "setup: could not install uv $UV_VERSION from PyPI (see above)" >&2; exit 1
  fi
  # Renamed into place, so a concurrent set-up of another checkout sees the whole file or none.
  mv -f "$tmp/venv/bin/uv" "$UV"
  rm -rf "$tmp"
}

if [ "$LOCK" = 1 ]; then
  ensure_uv
  if [ "$UPGRADE" = 1 ]; then
    say "resolving uv.lock again, every package at the newest version pyproject.toml allows"
    "$UV" lock --python "$PYEXE" --upgrade
  else
    say "resolving uv.lock from pyproject.toml (unchanged pins are kept)"
    "$UV" lock --python "$PYEXE"
  fi
  say "uv.lock written; commit it with the change to pyproject.toml"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

need_apt=()
daemons=()  # Debian packages among need_apt that ship a system service
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
# Debian installs /usr/bin/prometheus-alertmanager and /usr/bin/amtool (upstream: alertmanager),
# and /usr/bin/prometheus and /usr/bin/promtool. The demo sends its alerts to Alertmanager.
if ! { command -v prometheus-alertmanager || command -v alertmanager; } >/dev/null 2>&1 \
   || ! command -v amtool >/dev/null 2>&1; then
  need_apt+=(prometheus-alertmanager); daemons+=(prometheus-alertmanager)
fi
# Headless Chromium renders the weekly report's screenshot (the demo's and the tests').
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ "$WITH_TEST" = 1 ]; then
  if [ ! -x /usr/lib/postgresql/15/bin/initdb ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need_apt+=(postgresql)
  fi
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    need_apt+=(prometheus); daemons+=(prometheus)
  fi
  # pdftoppm and pdftotext read back the report's PDF in its tests.
  if ! command -v pdftoppm >/dev/null 2>&1 || ! command -v pdftotext >/dev/null 2>&1; then
    need_apt+=(poppler-utils)
  fi
fi

# Keeps a Debian package's daemon stopped now and at boot. Debian's Alertmanager would listen on
# 9093 (the Kafka controller's default port) and 9094, Prometheus on 9090.
disable_system_service() {
  local svc=$1
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now --quiet "$svc.service"
  else
    # No systemd running: remove the boot links of both init systems, stop it if it started.
    $SUDO deb-systemd-helper disable "$svc.service" >/dev/null 2>&1 || true
    if [ -x "/etc/init.d/$svc" ]; then
      $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  fi
}

if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  own_policy=0
  if [ ${#daemons[@]} -gt 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    # policy-rc.d exiting 101 tells invoke-rc.d and deb-systemd-invoke not to start services.
    say "keeping the system services of ${daemons[*]} from starting (temporary /usr/sbin/policy-rc.d)"
    printf '#!/bin/sh\n# Temporary, written by Safewatch infra/setup.sh during apt-get install.\nexit 101\n' \
      | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  for svc in "${daemons[@]}"; do
    say "disabling the system service $svc (Safewatch runs its own instances on its own ports)"
    disable_system_service "$svc"
  done
fi
if [ "$WITH_TEST" = 1 ] && command -v pgrep >/dev/null 2>&1; then
  for svc in prometheus prometheus-alertmanager; do
    # Debian's services run as the `prometheus` user; Safewatch's own instances do not.
    if pgrep -u prometheus -f "^/usr/bin/$svc( |\$)" >/dev/null 2>&1; then
      say "note: the system service $svc is running (Safewatch did not start it). Safewatch uses its"
      say "  own ports (SAFEWATCH_ALERTING__*), but Debian's Alertmanager takes 9093, the default of"
      say "  SAFEWATCH_BROKER__CONTROLLER_PORT; stop it with: systemctl disable --now $svc"
    fi
  done
fi

# The stamp holds what .venv was installed from; any change to pyproject.toml or uv.lock (or to
# the pinned uv) installs again.
stamp=.venv/.safewatch-installed
if [ ! -f uv.lock ]; then
  echo "setup: uv.lock is missing; create it with: make lock" >&2; exit 1
fi
installed_from="$(cat pyproject.toml uv.lock | sha256sum | cut -d' ' -f1) uv $UV_VERSION $PYEXE"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$installed_from" ]; then
  say "Python dependencies up to date"
else
  ensure_uv
  # Offline: a lock that matches pyproject.toml is checked from its own contents.
  if ! lock_check=$("$UV" lock --check --offline --python "$PYEXE" 2>&1); then
    case "$lock_check" in
      *"needs to be updated"*|*"No solution found"*) ;;
      *) printf '%s\n' "$lock_check" >&2 ;;
    esac
    echo "setup: uv.lock does not match pyproject.toml; refresh it with: make lock (then commit uv.lock)" >&2
    exit 1
  fi
  say "installing Python dependencies from uv.lock into .venv (pyspark is ~450 MB on the first run)"
  "$UV" sync --quiet --locked --extra dev --python "$PYEXE"
  printf '%s\n' "$installed_from" > "$stamp"
fi

fetch_jars() {  # $1 = pom dir, $2 = output dir
  local pom=$1 out=$2
  if [ -f "$out/.complete" ] && [ ! "$pom/pom.xml" -nt "$out/.complete" ]; then
    say "jars in $out up to date"; return
  fi
  say "resolving jars of $pom/pom.xml from Maven Central into $out"
  rm -rf "$out"; mkdir -p "$out"
  # Plain output: no colours, and no colour resets that Debian's Maven writes when it exits.
  MAVEN_OPTS="${MAVEN_OPTS:-} -Djansi.noreset=true" \
    mvn -q -B -Dstyle.color=never -f "$pom/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$ROOT/$out"
  touch "$out/.complete"
}
fetch_jars infra/kafka var/jars/kafka
fetch_jars infra/spark var/jars/spark
say "ready: run .venv/bin/safewatch --help"
