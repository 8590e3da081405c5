"""Driver of benches/transcribe-vs-faster-whisper.sh (run that script, not this file).

Makes (or takes) the audio, runs vsum and faster-whisper on it as child processes with
the same thread count, measures wall time and CPU time (user + sys, from wait4) of each,
and prints WER (lower-case, no punctuation, numbers as spoken words), wall, CPU and the
real-time factor side by side, then the ratios vsum / faster-whisper.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave

# A talk of 17 paragraphs; each is spoken by the voice beside it.
TALK = [
    ("en-us", "Good morning everyone, and welcome to this short talk about community gardens. "
     "Over the next few minutes I want to explain why small shared gardens matter, how they "
     "are organized, and what we learned from running one for seven seasons in the middle "
     "of a busy neighborhood."),
    ("en-gb", "The first garden started on an empty lot behind the old train station. The "
     "ground was hard and full of broken glass, so the volunteers built raised beds from "
     "wooden boards and filled them with soil donated by a local farm. Within two months the "
     "first tomatoes and beans were growing."),
    ("en+f3", "People joined for many different reasons. Some wanted fresh vegetables that "
     "they could not afford at the market. Others simply wanted a quiet place to sit after "
     "work. Parents brought their children to show them where food comes from, and retired "
     "neighbors shared what they knew about planting."),
    ("en-gb-x-rp", "Water was the biggest problem in the early days. There was no tap on "
     "the lot, so every drop had to be carried in buckets from a house across the street. "
     "Later the city agreed to install a meter, and the gardeners collected rain from the "
     "roof of a small tool shed."),
    ("en-us+m3", "Money came from three sources. Each member paid twenty dollars a year for a "
     "bed, a bakery nearby sponsored the tools, and twice a year the group held a plant sale "
     "on the sidewalk. That was enough to buy seeds, repair the fence and pay for the water."),
    ("en-us", "Rules were kept short and simple. Every member works two hours a month on the "
     "shared paths and the compost. Nobody uses chemical sprays. Beds that are left empty for "
     "more than six weeks go to the next family on the waiting list, which at one point had "
     "forty names."),
    ("en-gb", "The compost heap turned out to be the heart of the project. Kitchen scraps from "
     "nearby apartments were mixed with dry leaves and straw, turned every week, and after "
     "three months became dark rich soil. It reduced the waste of the whole block and saved "
     "the garden a lot of money."),
    ("en+f3", "Insects were a constant lesson in patience. In the second summer small green "
     "worms ate half of the cabbage. Instead of spraying, the members planted flowers along "
     "the edges to attract birds and wasps that hunt those worms. By the next year the "
     "damage was much smaller."),
    ("en-gb-x-rp", "Schools soon asked to take part. A teacher brought her class every "
     "Thursday afternoon, and each child looked after one square of soil. They measured how "
     "fast the plants grew, drew pictures of the roots, and cooked a soup with the carrots "
     "they had pulled themselves."),
    ("en-us+m3", "Not everything went well. One winter a storm knocked down the fence and "
     "flooded the lowest beds. Some members lost interest and stopped coming. The group "
     "learned that a garden needs a few people who keep the records, answer the phone and "
     "remind everyone of the work days."),
    ("en-us", "The garden also changed the street around it. Neighbors who had lived next to "
     "each other for years without speaking now met every weekend. Small repairs were done "
     "together, tools were shared, and the empty lot that people once avoided at night became "
     "a place where they felt safe."),
    ("en-gb", "Research from several cities points in the same direction. Shared gardens "
     "improve diets, give older people a reason to go outside, and help new arrivals make "
     "friends. They are cheap compared with parks, and they can be started on land that "
     "would otherwise stay empty for many years."),
    ("en+f3", "If you want to start one, begin small. Find five people who are willing to "
     "meet once a week, ask the owner of an unused lot for permission, and test the soil "
     "before planting anything. Write down who is responsible for water, tools and money "
     "from the very first day."),
    ("en-gb", "Seeds are another quiet success. At the end of each season the members keep "
     "seeds from the strongest plants, dry them on paper in the shed, and label them by hand. "
     "After a few years the beans and squash were better suited to the local weather than "
     "anything sold in the shops."),
    ("en-us+m3", "Winter is the time for planning. The group meets in the library once a "
     "month, looks at the notes from the summer, and decides which crops to move to which "
     "beds. Rotating the crops keeps the soil healthy and makes it harder for pests to "
     "return in the same place."),
    ("en-us", "Finally, a word about sharing the harvest. Every week in August the members "
     "leave a box of extra vegetables at the corner shelter for anyone who needs them. Nobody "
     "keeps count, and nobody asks questions. For many gardeners this is the part of the "
     "project they are most proud of."),
    ("en-gb-x-rp", "To sum up, a community garden is much more than a place to grow "
     "food. It is a school, a meeting room and a small piece of nature in the city. Thank "
     "you for listening, and I hope to see some of you at our next plant sale in the "
     "spring."),
]

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spoken(n):
    """An integer below a million in words."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + spoken(n % 100))
    return spoken(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + spoken(n % 1000))


def normalize(text):
    """Lower-case words, no punctuation, numbers as spoken words."""
    t = text.lower().replace("%", " percent")
    t = re.sub(r"(?<=\d),(?=\d{3})", "", t)
    t = re.sub(r"\$(\d+)", r"\1 dollars", t)
    t = re.sub(r"[-–—/]", " ", t)
    out = []
    for w in t.split():
        w = re.sub(r"[^a-z0-9']", "", w).strip("'")
        if not w:
            continue
        m = re.fullmatch(r"(\d+)(st|nd|rd|th|s)?", w)
        if m and int(m.group(1)) < 1_000_000:
            out.extend(spoken(int(m.group(1))).split())
            if m.group(2) == "s":
                out[-1] += "s"
        else:
            out.append(w)
    return out


def wer(ref, hyp):
    r, h = normalize(ref), normalize(hyp)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r):
        cur = [i + 1] + [0] * len(h)
        for j, hw in enumerate(h):
            cur[j + 1] = min(prev[j] + (rw != hw), prev[j + 1] + 1, cur[j] + 1)
        prev = cur
    return prev[len(h)] / max(1, len(r))


def run(cmd, env=None, cwd=None, stdout=None):
    """Runs cmd; returns (wall seconds, cpu seconds user+sys, stdout bytes)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE if stdout is None else stdout)
    out = p.stdout.read() if stdout is None else b""
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(map(str, cmd))} exited {p.returncode}")
    return wall, ru.ru_utime + ru.ru_stime, out


def make_talk(dir):
    """Speaks TALK into dir/talk.wav (16 kHz mono) with 1.2 s pauses; returns (path, text)."""
    parts = []
    for i, (voice, text) in enumerate(TALK):
        p = os.path.join(dir, f"p{i:02}.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", p, text], check=True)
        parts.append(p)
    frames = bytearray()
    gap = b"\0\0" * int(22050 * 1.2)
    for p in parts:
        with wave.open(p) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2, p
            rate = w.getframerate()
            frames += gap[: int(rate * 1.2) * 2] + w.readframes(w.getnframes())
    raw = os.path.join(dir, "talk-raw.wav")
    with wave.open(raw, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames) + gap[: rate * 2 * 2])
    out = os.path.join(dir, "talk.wav")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", raw, "-ar", "16000", "-ac", "1",
                    "-c:a", "pcm_s16le", out], check=True)
    return out, " ".join(t for _, t in TALK)


def duration(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip())


FW_SCRIPT = r"""
import json, sys
from faster_whisper import WhisperModel
model_dir, audio, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
segments, info = m.transcribe(audio, beam_size=1, vad_filter=True, language="en")
segs = [{"start": s.start, "end": s.end, "text": s.text} for s in segments]
json.dump({"segments": segs}, sys.stdout)
"""


def vsum_run(args, vsum, model, audio, work):
    """One vsum run with a fresh cache; returns (wall, cpu, text, transcript job seconds)."""
    proj = os.path.join(work, "vsum-" + model)
    extra = "".join(f", {kv}" for kv in args.with_)
    shutil.rmtree(proj, ignore_errors=True)
    os.makedirs(os.path.join(proj, "input"))
    ext = os.path.splitext(audio)[1].lstrip(".") or "wav"
    dst = os.path.join(proj, "input", "talk." + ext)
    shutil.copyfile(audio, dst)
    with open(os.path.join(proj, "bench.yaml"), "w") as f:
        f.write(f"""name: bench
inputs: [input/]
extensions: [{ext}]
output: output/
stages:
  audio:
    uses: media.audio
  vad:
    uses: audio.vad
    needs: [audio]
  transcript:
    uses: whisper.transcribe
    needs: [audio, vad]
    with: {{model: {model}, threads: {args.threads}{extra}}}
""")
    wall, cpu, out = run([vsum, "run", "bench.yaml", "-y", "--json", "--progress", "none",
                          "-j", str(args.threads)], cwd=proj)
    summary = json.loads(out)
    job = {j.get("stage"): (j["end_ms"] - j["start_ms"]) / 1000 for j in summary["jobs"]}
    with open(os.path.join(proj, "output", "talk", "transcript", "transcript.json")) as f:
        t = json.load(f)
    text = " ".join(s["text"].strip() for s in t["segments"])
    return wall, cpu, text, job


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?")
    ap.add_argument("--ref", help="reference transcript (text file) of FILE")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vsum", required=True, action="append",
                    help="a vsum binary (repeat to compare builds, e.g. a native one)")
    ap.add_argument("--venv-python", required=True)
    ap.add_argument("--ct2", required=True)
    ap.add_argument("--models", default="whisper-tiny.en-q8_0")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--with", dest="with_", action="append", default=[], metavar="KEY: VALUE",
                    help="another whisper.transcribe param for vsum (repeatable)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="vsum-bench-")
    try:
        if args.file:
            audio = os.path.abspath(args.file)
            ref = open(args.ref).read() if args.ref else None
        else:
            audio, ref = make_talk(work)
        secs = duration(audio)
        nproc = os.cpu_count()
        try:
            load = open("/proc/loadavg").read().split()[0]
        except OSError:
            load = "?"
        print(f"file: {args.file or 'generated talk (' + str(len(TALK)) + ' paragraphs, 5 voices)'}, "
              f"{secs:.1f} s of audio; threads {args.threads} of {nproc} cores; load average {load}")

        fw_py = os.path.join(work, "fw.py")
        with open(fw_py, "w") as f:
            f.write(FW_SCRIPT)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        fw_wall, fw_cpu, out = run([args.venv_python, fw_py, args.ct2, audio, str(args.threads)], env=env)
        fw_text = " ".join(s["text"].strip() for s in json.loads(out)["segments"])

        rows = []
        for vsum in args.vsum:
            tag = "" if len(args.vsum) == 1 else f" ({os.path.basename(os.path.dirname(os.path.dirname(vsum))) or vsum})"
            for model in args.models.split():
                wall, cpu, text, job = vsum_run(args, vsum, model, audio, work)
                rows.append((f"vsum {model}{tag}", wall, cpu, text, job))
        rows.append(("faster-whisper int8", fw_wall, fw_cpu, fw_text, None))

        base = ref if ref is not None else fw_text
        label = "WER" if ref is not None else "diff vs faster-whisper"
        print(f"\n{'':32} {label:>8} {'wall s':>8} {'CPU s':>8} {'RTF':>7}  transcript job s")
        for name, wall, cpu, text, job in rows:
            j = f"{job.get('transcript', 0):.1f} (audio {job.get('audio', 0):.1f}, vad {job.get('vad', 0):.1f})" if job else "-"
            print(f"{name:32} {wer(base, text) * 100:7.2f}% {wall:8.1f} {cpu:8.1f} {wall / secs:7.3f}  {j}")
        print()
        for name, wall, cpu, _, _ in rows[:-1]:
            print(f"{name} / faster-whisper: wall {wall / fw_wall:.2f}x, CPU {cpu / fw_cpu:.2f}x")
        if args.keep:
            for name, _, _, text, _ in rows:
                with open(os.path.join(work, name.replace(" ", "_") + ".txt"), "w") as f:
                    f.write(text + "\n")
            print(f"work folder kept: {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
