#!/usr/bin/env bash
# Sets up everything Safewatch needs on a Debian machine, idempotently:
#   infra/setup.sh            Python venv (.venv) + Kafka broker jars + Spark Kafka connector jars
#                             + Debian's Alertmanager
#   infra/setup.sh --test     the above, plus Debian's PostgreSQL and Prometheus
#                             for the tests (system services are kept stopped and disabled:
#                             Safewatch starts its own instances on its own ports)
# Re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "setup: Python 3.11 is required (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

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
if [ "$WITH_TEST" = 1 ]; then
  if [ ! -x /usr/lib/postgresql/15/bin/initdb ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need_apt+=(postgresql)
  fi
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    need_apt+=(prometheus); daemons+=(prometheus)
  fi
  # The weekly report is tested as a person sees it: rendered by headless Chromium.
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
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

stamp=.venv/.safewatch-installed
if [ ! -x .venv/bin/python ]; then
  say "creating Python virtual environment in .venv"
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing Python dependencies (pyspark is ~450 MB on the first run; this takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
else
  say "Python dependencies up to date"
fi

fetch_jars() {  # $1 = pom dir, $2 = output dir
  local pom=$1 out=$2
  if [ -f "$out/.complete" ] && [ ! "$pom/pom.xml" -nt "$out/.complete" ]; then
    say "jars in $out up to date"; return
  fi
  say "resolving jars of $pom/pom.xml from Maven Central into $out"
  rm -rf "$out"; mkdir -p "$out"
  mvn -q -B -f "$pom/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$ROOT/$out"
  touch "$out/.complete"
}
fetch_jars infra/kafka var/jars/kafka
fetch_jars infra/spark var/jars/spark
say "ready: run .venv/bin/safewatch --help"
