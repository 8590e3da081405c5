#!/usr/bin/env python3
"""Bench: the whole pipeline on one 10-minute slide talk, against real time.

Generates once (cached under the target folder) a 1280x720, 25 fps talk of about ten
minutes: twenty slides on one template, each with its topic as the title, and a
paragraph about it read by four espeak-ng voices in turn with pauses between. Then
runs the manifest (default pipelines/summarize.yaml: FFmpeg, Silero VAD, Whisper, YOLO,
OCR, the sentence encoder, the knowledge file and the index) cold on it in a fresh
project and prints wall time, CPU time and peak RSS, and wall and CPU as fractions of
the talk's length (the issue's goal: wall at most 1/10 of real time on 2 cores with the
tiny models).

    benches/talk.py --vsum target/release/vsum [--manifest M] [--jobs N]

Nothing is asserted. Needs ffmpeg (with drawtext), espeak-ng, the DejaVu fonts and the
models `scripts/setup.sh` installs.
"""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import ROOT, run_once  # noqa: E402

TOPICS = [
    ("Welcome and goals", "today we review how the team builds and ships software"),
    ("Planning the work", "every change starts with a short document about the problem"),
    ("Code review", "another engineer reads each change before it is merged"),
    ("Automated testing", "the tests run on every change against a real database"),
    ("Release trains", "a release leaves every Tuesday when the tests are green"),
    ("Feature flags", "new features ship dark and are turned on for a few customers first"),
    ("Monitoring", "dashboards show latency, errors and saturation for each service"),
    ("On call", "two engineers carry the pager each week and hand over on Monday"),
    ("Incident review", "after an outage we write down what happened without blame"),
    ("Database backups", "the backup runs each night and a restore drill runs each month"),
    ("Cold storage", "old snapshots move to cold storage after ninety days"),
    ("Security patches", "critical patches are applied within two days of release"),
    ("Hiring", "we hired six engineers this year and two more join in spring"),
    ("Onboarding", "a new engineer ships a small change in the first week"),
    ("Documentation", "each service has a short guide that a new person can follow"),
    ("Cost control", "the cloud bill fell by a fifth after we resized the clusters"),
    ("Customer support", "support tickets that need an engineer get an answer in a day"),
    ("Office move", "the team moves to the new building at the end of March"),
    ("Next quarter", "next quarter we focus on search and on the mobile app"),
    ("Questions", "thank you for listening, and now we take your questions"),
]
VOICES = ["en-us", "en+m3", "en+f3", "en-gb"]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
PAUSE = 1.2


def paragraph(title, gist):
    """About thirty seconds of speech on one topic."""
    return (
        f"Let us talk about {title.lower()}. In short, {gist}. "
        f"We started doing this two years ago, and it changed how we work. "
        f"The main reason is simple: {gist}, and that saves time for everyone. "
        f"Some people worried about it at first, but the numbers look good now. "
        f"If you want the details on {title.lower()}, the team page has a longer write-up."
    )


def wav_seconds(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
        capture_output=True, text=True, check=True,
    )
    return float(out.stdout.strip())


def make_talk(folder):
    """The talk, made once: (path, seconds)."""
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    video = os.path.join(folder, "talk-10min-v2.mp4")
    if os.path.exists(video):
        return video, wav_seconds(video)
    with tempfile.TemporaryDirectory(dir=folder) as work:
        parts, starts, t = [], [], 0.0
        for i, (title, gist) in enumerate(TOPICS):
            wav = os.path.join(work, f"p{i:02}.wav")
            subprocess.run(["espeak-ng", "-v", VOICES[i % len(VOICES)], "-s", "140", "-w", wav,
                            paragraph(title, gist)], check=True)
            # The pause after the paragraph is real silence in the file.
            padded = os.path.join(work, f"p{i:02}-pad.wav")
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", wav, "-af",
                            f"apad=pad_dur={PAUSE}", "-ar", "22050", "-ac", "1", padded],
                           check=True)
            starts.append(t)
            t += wav_seconds(padded)
            parts.append(padded)
        total = t + 1.0
        listing = os.path.join(work, "list.txt")
        with open(listing, "w") as f:
            for p in parts:
                f.write(f"file '{p}'\n")
        audio = os.path.join(work, "talk.wav")
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0",
                        "-i", listing, "-af", f"apad=whole_dur={total:.3f}", audio], check=True)
        vf = []
        for i, (title, _) in enumerate(TOPICS):
            end = starts[i + 1] if i + 1 < len(starts) else total + 1
            enable = f"enable='between(t,{starts[i]:.3f},{end:.3f})'"
            vf.append(f"drawtext=fontfile={FONT}:text='{title}':fontsize=64:fontcolor=white:"
                      f"x=80:y=80:{enable}")
            vf.append(f"drawtext=fontfile={FONT}:text='{i + 1} / {len(TOPICS)}':fontsize=28:"
                      f"fontcolor=0xdddddd:x=w-160:y=h-60:{enable}")
        vf.append("drawbox=x=80:y=180:w=1120:h=6:color=white@1:t=fill")
        tmp = os.path.join(work, "talk.mp4")
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"color=c=0x203060:s=1280x720:r=25:d={total:.3f}", "-i", audio,
                        "-vf", ",".join(vf), "-c:v", "libx264", "-preset", "veryfast",
                        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-shortest", tmp],
                       check=True)
        os.rename(tmp, video)
    return video, wav_seconds(video)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vsum", required=True)
    ap.add_argument("--manifest", default=os.path.join(ROOT, "pipelines", "summarize.yaml"))
    ap.add_argument("--jobs", type=int, default=0, help="--jobs for vsum (0: its default)")
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    video, secs = make_talk(os.path.join(target, "bench-talk"))
    wall, cpu, rss = run_once(os.path.abspath(a.vsum), a.manifest, [video], a.jobs)
    print(f"cold `vsum run {os.path.relpath(a.manifest, ROOT)}` on one {secs / 60:.1f}-minute "
          f"1280x720 slide talk ({len(TOPICS)} slides, {len(VOICES)} voices), "
          f"{os.cpu_count()} cores")
    print(f"wall {wall:.1f} s ({wall / secs:.3f} of real time), CPU {cpu:.1f} s "
          f"({cpu / secs:.3f} of real time), peak RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
