#!/usr/bin/env bash
# The device check for hardware video decoding (issue 15): on a machine with an NVIDIA
# GPU (or a VAAPI device), runs `video.scenes` + `video.keyframes` on a generated 60 s
# 720p H.264 talk-like video twice, with VSUM_HWACCEL=auto and =none, and prints what
# decoded it, the wall and CPU seconds of each, and whether the cut lists agree.
# Asserts only that both runs succeed and that the decoder is recorded.
#
#   scripts/gpu-check.sh [--vsum BIN]     (default: builds the release binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
vsum=target/release/vsum
if [ "${1:-}" = "--vsum" ]; then
  vsum=$2
else
  cargo build --release --locked -q --bins
fi
case $vsum in /*) ;; *) vsum=$(pwd)/$vsum ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/in"
ffmpeg -loglevel error -y \
  -f lavfi -i "testsrc2=size=1280x720:rate=25:duration=20" \
  -f lavfi -i "smptehdbars=size=1280x720:rate=25:duration=20" \
  -f lavfi -i "rgbtestsrc=size=1280x720:rate=25:duration=20" \
  -filter_complex "[0][1][2]concat=n=3:v=1,format=yuv420p" \
  -c:v libx264 -preset veryfast -g 250 "$work/in/talk.mp4"
cat > "$work/p.yaml" <<'EOF'
inputs: [in/]
output: out/
stages:
  scenes:
    uses: video.scenes
  keys:
    uses: video.keyframes
    needs: [scenes]
EOF
for mode in auto none; do
  rm -rf "$work/out" "$work/.vsum"
  ( cd "$work" && VSUM_HWACCEL=$mode /usr/bin/time -f "$mode: %e s wall, %U+%S s CPU" \
      "$vsum" run p.yaml --progress none >/dev/null )
  python3 - "$work/out/talk/scenes/scenes.json" "$mode" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
d = s["decoder"]
assert "hardware" in d, d
print(f"{sys.argv[2]}: decoder {d['hardware'] or 'software'} {d['notes']}; "
      f"{len(s['scenes'])} scenes, cuts at {[x['start_frame'] for x in s['scenes']]}")
EOF
done
