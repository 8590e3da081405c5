#!/usr/bin/env bash
# Makes a few short talking videos with real speech (espeak-ng) and real scene cuts
# (different ffmpeg test sources concatenated), for the demo pipeline and the README.
# Usage: scripts/make-samples.sh [folder]   (default: samples/)
set -euo pipefail
out=${1:-samples}
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

talk() { # name, text, sources...
  local name=$1 text=$2; shift 2
  [ -s "$out/$name.mp4" ] && return 0
  espeak-ng -s 150 -w "$tmp/$name.wav" "$text"
  local dur; dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$tmp/$name.wav")
  local n=$#; local part; part=$(awk -v d="$dur" -v n="$n" 'BEGIN{printf "%.2f", d/n}')
  local inputs=() filters="" i=0
  for src in "$@"; do
    inputs+=(-f lavfi -t "$part" -i "$src=size=640x360:rate=25")
    filters+="[$i:v]format=yuv420p,setsar=1[v$i];"; i=$((i+1))
  done
  local cat=""; for ((j=0; j<i; j++)); do cat+="[v$j]"; done
  ffmpeg -v error -y "${inputs[@]}" -i "$tmp/$name.wav" \
    -filter_complex "${filters}${cat}concat=n=$i:v=1:a=0[v]" \
    -map "[v]" -map "$i:a" -c:v libx264 -preset veryfast -c:a aac -shortest "$out/$name.mp4"
}

talk "weekly-sync" "Good morning everyone. This is the weekly sync. The release is ready for testing. Please review the open issues before Friday." testsrc smptebars mandelbrot
talk "onboarding" "Welcome to the team. Today we cover the build system, the test suite, and how to file a bug report." rgbtestsrc testsrc2
talk "quick-note" "Remember to back up the database tonight." smptehdbars
echo "samples in $out/: $(ls "$out" | tr '\n' ' ')"
