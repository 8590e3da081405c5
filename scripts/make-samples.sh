#!/usr/bin/env bash
# Makes a small sample library that looks like what vsum is for: a slide talk (slides
# drawn by ffmpeg, each with its title, narrated by espeak-ng), a team meeting with two
# voices taking turns over one still shot (no cut: chapters come from the words), and a
# short clip of photos with objects YOLO knows (a person, a cat, a cup, a motorcycle:
# scikit-image's sample pictures, from its wheel on PyPI, as the vision tests use).
# Each file is made once; about half a minute in all on two cores.
# Usage: scripts/make-samples.sh [folder]   (default: samples/)
set -euo pipefail
out=${1:-samples}
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
bold=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf
[ -f "$bold" ] || bold=$font

secs() { ffprobe -v error -show_entries format=duration -of csv=p=0 "$1"; }
# Speech as 16 kHz mono WAV: voice, text, file.
say() { espeak-ng -v "$1" -s 150 -w "$tmp/raw.wav" "$2" \
  && ffmpeg -v error -y -i "$tmp/raw.wav" -ar 16000 -ac 1 "$3"; }
# Text for drawtext (its own escaping: backslash, colon, quote, percent).
esc() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" -e 's/:/\\:/g' -e 's/%/\\%/g'; }

# 1. A slide talk: each slide is its title and two lines, shown while it is narrated.
slide_talk() {
  local name=$1; shift
  [ -s "$out/$name.mp4" ] && return 0
  local i=0 list="$tmp/$name.txt"; : >"$list"
  while [ $# -ge 4 ]; do
    local title=$1 l1=$2 l2=$3 text=$4; shift 4
    say en-us "$text" "$tmp/s$i.wav"
    local d; d=$(awk -v d="$(secs "$tmp/s$i.wav")" 'BEGIN{printf "%.2f", d + 0.8}')
    ffmpeg -v error -y -f lavfi -i "color=c=0xf4f1ea:size=1280x720:rate=25:duration=$d" \
      -i "$tmp/s$i.wav" -filter_complex "[0:v]drawbox=x=0:y=0:w=iw:h=120:color=0x1d3557:t=fill,\
drawtext=fontfile=$bold:text='$(esc "$title")':fontsize=56:fontcolor=white:x=60:y=32,\
drawtext=fontfile=$font:text='• $(esc "$l1")':fontsize=40:fontcolor=0x222222:x=80:y=220,\
drawtext=fontfile=$font:text='• $(esc "$l2")':fontsize=40:fontcolor=0x222222:x=80:y=300,\
drawtext=fontfile=$font:text='$((i + 1))':fontsize=28:fontcolor=0x888888:x=w-80:y=h-60[v]" \
      -map "[v]" -map 1:a -af apad -t "$d" -c:v libx264 -preset veryfast -pix_fmt yuv420p \
      -c:a aac -ar 16000 "$tmp/$name-$i.mp4"
    echo "file '$tmp/$name-$i.mp4'" >>"$list"; i=$((i + 1))
  done
  ffmpeg -v error -y -f concat -safe 0 -i "$list" -c copy -metadata title="$name" "$out/$name.mp4"
}

# 2. A meeting: two voices taking turns, one still shot with a name card.
meeting() {
  local name=$1; shift
  [ -s "$out/$name.mp4" ] && return 0
  local i=0 list="$tmp/$name-audio.txt"; : >"$list"
  ffmpeg -v error -y -f lavfi -i anullsrc=r=16000:cl=mono -t 0.6 "$tmp/pause.wav"
  while [ $# -ge 2 ]; do
    say "$1" "$2" "$tmp/m$i.wav"; shift 2
    printf "file '%s'\nfile '%s'\n" "$tmp/m$i.wav" "$tmp/pause.wav" >>"$list"; i=$((i + 1))
  done
  ffmpeg -v error -y -f concat -safe 0 -i "$list" "$tmp/$name.wav"
  ffmpeg -v error -y -f lavfi -i "gradients=size=1280x720:rate=25:c0=0x264653:c1=0x2a9d8f:speed=0.002" \
    -i "$tmp/$name.wav" -filter_complex "[0:v]drawtext=fontfile=$bold:text='Weekly team meeting':fontsize=52:fontcolor=white:x=60:y=h-140,\
drawtext=fontfile=$font:text='Ana and Ben':fontsize=34:fontcolor=white:x=60:y=h-75[v]" \
    -map "[v]" -map 1:a -shortest -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac \
    "$out/$name.mp4"
}

# 3. Objects: four photos, two seconds each, with a few words about them.
objects_clip() {
  local name=$1
  [ -s "$out/$name.mp4" ] && return 0
  local photos="$tmp/photos" pics=(astronaut chelsea coffee motorcycle_left)
  mkdir -p "$photos"
  if ! python3 -m pip download --no-deps --disable-pip-version-check -q --only-binary=:all: \
      --platform manylinux_2_17_x86_64 --python-version 3.11 -d "$tmp/wheel" scikit-image==0.25.2 \
      || ! python3 - "$tmp/wheel" "$photos" "${pics[@]}" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name in sys.argv[3:]:
        open(f"{sys.argv[2]}/{name}.png", "wb").write(z.read(f"skimage/data/{name}.png"))
PY
  then
    echo "make-samples: no sample photos (pip could not fetch scikit-image); skipping $name" >&2
    return 0
  fi
  say en-us "An astronaut in her suit. A cat on a chair. A cup of coffee. And a red motorcycle." "$tmp/o.wav"
  local inputs=() filters="" i=0
  for p in "${pics[@]}"; do
    inputs+=(-loop 1 -t 2.5 -i "$photos/$p.png")
    filters+="[$i:v]scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=25,format=yuv420p[v$i];"
    i=$((i + 1))
  done
  ffmpeg -v error -y "${inputs[@]}" -i "$tmp/o.wav" \
    -filter_complex "${filters}[v0][v1][v2][v3]concat=n=4:v=1:a=0[v]" \
    -map "[v]" -map "$i:a" -af apad -t 10 -c:v libx264 -preset veryfast -c:a aac "$out/$name.mp4"
}

slide_talk "release-process-talk" \
  "Shipping every Tuesday" "Release candidate on Monday" "Internal users first" \
  "Welcome. This short talk explains how we ship the mobile app every Tuesday. On Monday we cut a release candidate, and internal users try it first." \
  "Rolling out in steps" "Five percent, then everyone" "One button pauses it" \
  "On Tuesday the release goes out in steps, first to five percent of users, then to everyone. Every engineer can pause the rollout with one button." \
  "Rolling back" "Old version back in minutes" "Investigate later" \
  "If the error rate climbs, we roll back first and investigate later. The previous version is back in place within minutes, and customers are safe."
meeting "team-meeting" \
  en-us "Good morning everyone. First item: the database backup failed twice last week because the disk was full." \
  en-gb+f3 "I moved the old snapshots to cold storage, so the nightly backup has room again. The restore drill is planned for Friday." \
  en-us "Thanks. Second item: the office move. The movers come on Saturday, so please pack your desk by Friday evening." \
  en-gb+f3 "The new building has bicycle parking in the garage, and reception hands out the new keys on Monday."
objects_clip "photo-tour"
echo "samples in $out/: $(ls "$out" | tr '\n' ' ')"
