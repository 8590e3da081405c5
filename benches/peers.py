#!/usr/bin/env python3
"""Engine overhead against a peer: the same 600-job DAG for vsum and Snakemake.

Driven by benches/peers.sh (which installs Snakemake and finds the vsum binary).
100 videos x 6 trivial command stages per video (a -> b, a -> c, b + c -> d -> e -> f),
each job `bash -c 'cat IN... > OUT'`, written once as a vsum manifest and once as a
Snakefile. Each tool gets its own copy of the inputs and runs with 2 jobs at a time.
Timed (whole process, wall clock): the cold run, a no-change rerun (best of N), and a
dry run with nothing to do (best of N). Prints a table and the ratios; asserts nothing
about time. Exit status: non-zero only when vsum fails; a Snakemake failure is reported
and its column left empty.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

STAGES = [
    # (name, needs, files read from upstream)
    ("a", [], []),
    ("b", ["a"], ["a"]),
    ("c", ["a"], ["a"]),
    ("d", ["b", "c"], ["b", "c"]),
    ("e", ["d"], ["d"]),
    ("f", ["e"], ["e"]),
]


def cat_script(n):
    """bash -c script: cat its first n arguments into the last one."""
    args = " ".join(f'"${i}"' for i in range(1, n + 1))
    return f'cat {args} > "${n + 1}"'


def write_inputs(root, videos):
    os.makedirs(os.path.join(root, "in"))
    for i in range(videos):
        with open(os.path.join(root, "in", f"v{i:03d}.mp4"), "w") as f:
            f.write(f"video {i}\n")


def vsum_project(root, videos):
    write_inputs(root, videos)
    lines = ["name: peers", "inputs: [in/]", "output: out/", "stages:"]
    for name, needs, reads in STAGES:
        srcs = ['"{video}"'] if not reads else [f'"{{{r}}}/{r}.txt"' for r in reads]
        n = len(srcs)
        argv = ["bash", "-c", f"'{cat_script(n)}'", "x", *srcs, f'"{{out}}/{name}.txt"']
        lines.append(f"  {name}:")
        if needs:
            lines.append(f"    needs: [{', '.join(needs)}]")
        lines.append(f"    run: [{', '.join(argv)}]")
        lines.append(f"    outputs: [{name}.txt]")
    # The bench measures the engine, not this machine's disk: a low-space pause (20 GB
    # by default) would hold the run on a full build machine.
    with open(os.path.join(root, "alerts.yaml"), "w") as f:
        f.write("disk_free_gb: {warning: null, critical: null}\n")
    path = os.path.join(root, "peers.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def snakemake_project(root, videos):
    write_inputs(root, videos)
    out = [
        f'VIDEOS = ["v%03d" % i for i in range({videos})]',
        "",
        "rule all:",
        '    input: expand("out/{v}/f.txt", v=VIDEOS)',
    ]
    for name, _needs, reads in STAGES:
        ins = ['"in/{v}.mp4"'] if not reads else [f'"out/{{v}}/{r}.txt"' for r in reads]
        out += [
            "",
            f"rule {name}:",
            f"    input: {', '.join(ins)}",
            f'    output: "out/{{v}}/{name}.txt"',
            '    shell: "cat {input} > {output}"',
        ]
    path = os.path.join(root, "Snakefile")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return path


def timed(argv, cwd):
    env = dict(os.environ, VSUM_ALERTS=os.path.join(cwd, "alerts.yaml"))
    t = time.perf_counter()
    # Never hangs CI: a run that takes ten minutes has failed.
    p = subprocess.run(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600
    )
    secs = time.perf_counter() - t
    if p.returncode != 0:
        tail = p.stderr.decode(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n" + "\n".join(tail))
    return secs


def best(argv, cwd, n):
    return min(timed(argv, cwd) for _ in range(n))


def count_outputs(root):
    return sum(len(fs) for _, _, fs in os.walk(os.path.join(root, "out")))


def measure(name, run, version, cwd, jobs, repeat):
    """One engine's row: a cold run, no-change reruns, dry runs and --version, and a
    check that the cold run made every output."""
    row = {"cold": timed(run, cwd)}
    made = count_outputs(cwd)
    if made != jobs:
        raise RuntimeError(f"{name} made {made} output files, expected {jobs}")
    row["rerun"] = best(run, cwd, repeat)
    row["dry"] = best(run + ["--dry-run"], cwd, repeat)
    row["version"] = best(version, cwd, repeat)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vsum", required=True)
    ap.add_argument("--snakemake", help="the snakemake program (left out: vsum only)")
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="reruns and dry runs: best of N")
    ap.add_argument("--label", default="", help="a note on the vsum build, printed")
    a = ap.parse_args()
    jobs = a.videos * len(STAGES)
    work = tempfile.mkdtemp(prefix="vsum-peers-")
    rows = {}
    try:
        vdir = os.path.join(work, "vsum")
        os.makedirs(vdir)
        m = vsum_project(vdir, a.videos)
        run = [a.vsum, "run", m, "--jobs", str(a.jobs), "--progress", "none"]
        rows["vsum"] = measure("vsum", run, [a.vsum, "--version"], vdir, jobs, a.repeat)
        snake = None
        if a.snakemake:
            try:
                sdir = os.path.join(work, "snakemake")
                os.makedirs(sdir)
                snakemake_project(sdir, a.videos)
                run = [a.snakemake, "--cores", str(a.jobs), "--jobs", str(a.jobs), "--quiet", "all"]
                snake = measure("snakemake", run, [a.snakemake, "--version"], sdir, jobs, a.repeat)
            except Exception as e:  # a peer's failure is reported, never fatal
                print(f"peers: snakemake failed, its column is empty: {e}", file=sys.stderr)
                snake = None
    except Exception as e:
        print(f"peers: vsum failed: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"{a.videos} videos x {len(STAGES)} command stages = {jobs} jobs, "
        f"{a.jobs} at a time, whole-process wall time{' (' + a.label + ')' if a.label else ''}"
    )
    print(f"{'case':<28} {'vsum ms':>10} {'snakemake ms':>13} {'ratio':>8}")
    names = [
        ("cold", f"cold run (all {jobs} run)"),
        ("rerun", f"no-change rerun (best {a.repeat})"),
        ("dry", f"dry run (best {a.repeat})"),
        ("version", f"--version (best {a.repeat})"),
    ]
    vsum = rows["vsum"]
    for key, label in names:
        v = vsum[key] * 1000
        if snake:
            s = snake[key] * 1000
            print(f"{label:<28} {v:>10.1f} {s:>13.1f} {s / v:>7.1f}x")
        else:
            print(f"{label:<28} {v:>10.1f} {'-':>13} {'-':>8}")
    print(
        f"vsum per job, cold: {vsum['cold'] * 1e6 / jobs:.0f} us "
        f"(the command itself included); ratio = snakemake / vsum"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
