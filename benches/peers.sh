#!/usr/bin/env bash
# Bench: vsum's engine overhead against Snakemake on the same 600-job DAG (100 videos x
# 6 trivial command stages), both run from this one invocation. Prints cold, no-change
# rerun, dry-run and --version wall times and the ratios (benches/peers.py says how).
#
#   benches/peers.sh [--vsum BIN] [--videos N] [--jobs N] [--repeat N]
#
# Snakemake 9.27.1 is installed from PyPI into a private venv under the target folder
# (target/peers-venv, or $CARGO_TARGET_DIR/peers-venv); it is a bench tool only, never a
# vsum dependency. Without --vsum, the release binary is built and used. Exit status:
# non-zero only when vsum fails; when Snakemake cannot be installed or fails, its column
# stays empty and the bench still passes. Needs: python3 (venv, pip), bash, cat.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac

vsum=
label="release build"
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --vsum) vsum=$2; label=${PEERS_LABEL:-$2}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$vsum" ]; then
  echo "peers: building vsum (release)" >&2
  cargo build --release --locked -q --bins
  vsum=$target/release/vsum
fi
# The bench runs each tool in its own temporary folder: a relative path would not resolve.
case $vsum in /*) ;; *) vsum=$root/$vsum ;; esac
if [ ! -x "$vsum" ]; then
  echo "peers: no vsum binary at $vsum (build it, or pass --vsum BIN)" >&2
  exit 1
fi

venv=$target/peers-venv
snake=()
if [ ! -x "$venv/bin/snakemake" ] || ! "$venv/bin/snakemake" --version >/dev/null 2>&1; then
  echo "peers: installing snakemake==9.27.1 into $venv" >&2
  if ! { python3 -m venv "$venv" &&
    "$venv/bin/python" -m pip install -q --disable-pip-version-check snakemake==9.27.1; } >&2; then
    echo "peers: could not install snakemake; timing vsum alone" >&2
  fi
fi
if [ -x "$venv/bin/snakemake" ]; then
  snake=(--snakemake "$venv/bin/snakemake")
fi

exec python3 "$root/benches/peers.py" --vsum "$vsum" --label "$label" "${snake[@]}" "${args[@]}"
