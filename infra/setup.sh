#!/usr/bin/env bash
# Sets up everything Safewatch needs on a Debian machine, idempotently:
#   infra/setup.sh            Python venv (.venv) + Kafka broker jars + Spark Kafka connector jars
#   infra/setup.sh --test     the above, plus Debian's PostgreSQL for the integration tests
# Re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "setup: Python 3.11 is required (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ "$WITH_TEST" = 1 ] && [ ! -x /usr/lib/postgresql/15/bin/initdb ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
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
