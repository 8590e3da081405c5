#!/usr/bin/env python3
"""Bench: peak memory (RSS) of a whole `vsum run` of a manifest as the batch grows.

Generates small narrated clips once (espeak-ng speech over a moving test picture, a few
seconds each, cached under the target folder), then runs the manifest (default
pipelines/summarize.yaml, every stage: FFmpeg, Silero VAD, Whisper, YOLO, OCR, the
sentence encoder, the index) cold on 10 and on 100 of them, each in a fresh project, and
prints wall time, CPU time and peak RSS of each run and the 100/10 ratios. The batch's
memory should stay flat: jobs hold one video's data at a time and models load once.

    benches/memory.py --vsum target/release/vsum [--counts 10,100] [--manifest M]

Peak RSS is the largest of vsum and the processes it waited for (getrusage of the
children), which is vsum itself here. Nothing is asserted: the numbers are printed.
Needs ffmpeg, espeak-ng and the models `scripts/setup.sh` installs.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINES = [
    "We deploy the service every Tuesday after the tests pass.",
    "The database backup runs each night and is copied to a second region.",
    "Bake the bread in a hot oven until the crust is brown.",
    "Our sales grew in the third quarter thanks to the new partners.",
    "Rolling back a release takes one command and about two minutes.",
]


def clips(folder, n):
    """The first `n` narrated clips, made once and kept."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for i in range(n):
        path = os.path.join(folder, f"clip{i:03}.mp4")
        if not os.path.exists(path):
            wav = path + ".wav"
            text = f"Clip {i}. " + " ".join(LINES[(i + k) % len(LINES)] for k in range(2))
            subprocess.run(["espeak-ng", "-s", "150", "-w", wav, text], check=True)
            tmp = path + ".tmp.mp4"
            subprocess.run(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                 "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25,hue=h={i * 37 % 360}",
                 "-i", wav, "-shortest", "-c:v", "libx264", "-preset", "veryfast",
                 "-pix_fmt", "yuv420p", "-c:a", "aac", tmp],
                check=True,
            )
            os.rename(tmp, path)
            os.remove(wav)
        out.append(path)
    return out


def run_once(vsum, manifest, videos, jobs):
    """A cold run of `manifest` on `videos` in a fresh project: (wall s, CPU s, peak RSS MiB)."""
    work = tempfile.mkdtemp(prefix="vsum-memory-")
    try:
        inputs = os.path.join(work, "input")
        os.makedirs(inputs)
        for v in videos:
            os.symlink(v, os.path.join(inputs, os.path.basename(v)))
        # A copy of the manifest in the project, its output: in the project too.
        lines = open(manifest).read().splitlines()
        lines = ["output: output/" if l.startswith("output:") else l for l in lines]
        m = os.path.join(work, "pipeline.yaml")
        with open(m, "w") as f:
            f.write("\n".join(lines) + "\n")
        args = [vsum, "run", m, "--inputs", inputs, "--progress", "none"]
        if jobs:
            args += ["--jobs", str(jobs)]
        # The low-disk pause is off: a bench must not sit waiting on this machine's disk.
        with open(os.path.join(work, "alerts.yaml"), "w") as f:
            f.write("disk_free_gb: {warning: null, critical: null}\n")
        env = dict(os.environ, VSUM_ALERTS=os.path.join(work, "alerts.yaml"))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        proc = subprocess.run(args, cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"vsum exited {proc.returncode}: {proc.stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        # ru_maxrss of the children is a high-water mark over all of them so far, so
        # each size runs in its own bench process (see main).
        return wall, cpu, after.ru_maxrss / 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vsum", required=True)
    ap.add_argument("--manifest", default=os.path.join(ROOT, "pipelines", "summarize.yaml"))
    ap.add_argument("--counts", default="10,100")
    ap.add_argument("--jobs", type=int, default=0, help="--jobs for vsum (0: its default)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    media = os.path.join(target, "bench-memory")
    if a.one is not None:
        # One size in this process alone, so that the children's peak is this run's.
        wall, cpu, rss = run_once(os.path.abspath(a.vsum), a.manifest,
                                  clips(media, a.one), a.jobs)
        print(f"{wall:.3f} {cpu:.3f} {rss:.1f}")
        return 0
    counts = [int(c) for c in a.counts.split(",")]
    clips(media, max(counts))
    rows = []
    for n in counts:
        print(f"memory: {n} videos ...", file=sys.stderr)
        out = subprocess.run(
            [sys.executable, __file__, "--vsum", a.vsum, "--manifest", a.manifest,
             "--jobs", str(a.jobs), "--one", str(n)],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        wall, cpu, rss = (float(x) for x in out.stdout.split())
        rows.append((n, wall, cpu, rss))
    print(f"cold `vsum run {os.path.relpath(a.manifest, ROOT)}` on short narrated clips, "
          "each size in a fresh project")
    print(f"{'videos':>7} {'wall s':>8} {'CPU s':>8} {'CPU s/video':>12} {'peak RSS MiB':>13}")
    for n, wall, cpu, rss in rows:
        print(f"{n:>7} {wall:>8.1f} {cpu:>8.1f} {cpu / n:>12.2f} {rss:>13.0f}")
    if len(rows) > 1:
        (n0, _, c0, r0), (n1, _, c1, r1) = rows[0], rows[-1]
        print(f"{n1} vs {n0} videos: peak RSS x{r1 / r0:.2f}, CPU per video x{(c1 / n1) / (c0 / n0):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
