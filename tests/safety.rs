//! vsum never touches what isn't its own, and hostile input gets a clear error, not an
//! exhausted machine. Each test is a reproduction from issue 13, named after what it
//! protects: user files beside the output, folders behind symlinks, a folder passed as
//! the cache, a batch with one bad video, a closed pipe, YAML alias bombs, gappy audio,
//! long names, and the processes a command leaves behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn vsum_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("VSUM_CONFIG")
        .env_remove("VSUM_CACHE_DIR")
        .env_remove("VSUM_ALERTS")
        .env("VSUM_RETRY_BACKOFF_MS", "10")
        .output()
        .expect("run vsum")
}

/// A one-second video with picture and sound.
fn make_video(path: &Path, freq: u32) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=96x64:rate=10:duration=1",
        "-f",
        "lavfi",
        "-i",
        &format!("sine=f={freq}:d=1"),
        "-c:v",
        "mpeg4",
        "-c:a",
        "aac",
        "-shortest",
        path.to_str().unwrap(),
    ]);
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn job<'a>(s: &'a Value, stage: &str, video: &str) -> &'a Value {
    s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["stage"] == stage && j["video"].as_str().unwrap_or("[batch]") == video)
        .unwrap_or_else(|| panic!("no job {stage} [{video}] in {s}"))
}

// ---------------------------------------------------------------- output folder safety

/// `output: .` with a batch stage named `input` used to delete the user's videos.
#[test]
fn output_that_is_the_manifest_folder_is_refused_and_videos_survive() {
    let manifest = r#"
inputs: [input/]
output: .
stages:
  input:
    scope: batch
    run: ["sh", "-c", "echo index > \"$1/index.txt\"", "x", "{out}"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"aaaa"), ("b.mp4", b"bbbb")]);
    for cmd in [
        &["run", "pipeline.yaml", "--progress", "none"][..],
        &["validate", "pipeline.yaml"],
    ] {
        let out = p.vsum(cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("unsafe `output:`"), "{err}");
        assert!(err.contains("manifest's folder"), "{err}");
        assert!(
            err.contains("pipeline.yaml:3:"),
            "points at the line: {err}"
        );
    }
    assert_eq!(p.read("input/a.mp4"), "aaaa");
    assert_eq!(p.read("input/b.mp4"), "bbbb");
}

#[test]
fn output_that_is_an_input_root_home_or_the_cache_is_refused() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let home = p.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cases = [
        ("output: input/", "the input 'input/'"),
        ("output: ..", "above the manifest's folder"),
        ("output: /", "root of the filesystem"),
        ("output: home", "home folder"),
    ];
    for (line, why) in cases {
        p.write_manifest(&DEMO.replace("output: output/", line));
        let out = Command::new(BIN)
            .args(["validate", "pipeline.yaml"])
            .current_dir(p.path())
            .env("HOME", &home)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{line}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{line}: {}", stderr(&out));
    }
    // The cache is known once the config is: `--cache-dir output` is refused at run.
    p.write_manifest(DEMO);
    let out = p.vsum(&[
        "run",
        "pipeline.yaml",
        "--progress",
        "none",
        "--cache-dir",
        "output",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("the cache"), "{}", stderr(&out));
    assert_eq!(p.read("input/a.mp4"), "aaaa");
}

/// `output/<video>/<stage>` replaced by a symlink used to delete the link target's files.
#[test]
fn cleanup_never_follows_a_symlink_out_of_the_output_folder() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let (code, _) = p.run(&[]);
    assert_eq!(code, 0);
    let elsewhere = p.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("precious.txt"), b"keep me").unwrap();
    let stage_dir = p.path().join("output/a/size");
    std::fs::remove_dir_all(&stage_dir).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &stage_dir).unwrap();

    // Restoring from the cache, and running after a change: neither goes through it.
    for _ in 0..2 {
        let (code, s) = p.run(&[]);
        assert_eq!(code, 1, "{s}");
        let j = job(&s, "size", "input/a.mp4");
        assert_eq!(j["outcome"], "failed", "{s}");
        assert!(j["error"].as_str().unwrap().contains("symlink"), "{j}");
        assert_eq!(files_under(&elsewhere), vec!["precious.txt"]);
        assert_eq!(p.read("elsewhere/precious.txt"), "keep me");
        p.write_manifest(&DEMO.replace("wc -c <", "wc -c <  "));
    }
    // Removing the link (as the message says) heals it.
    std::fs::remove_file(&stage_dir).unwrap();
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(p.read("output/a/size/size.txt"), "4\n");
}

/// Cleanup removes what an earlier version of a stage placed, and nothing else.
#[test]
fn cleanup_removes_only_files_vsum_placed() {
    let manifest = r#"
inputs: [input/]
output: output/
stages:
  make:
    run: ["sh", "-c", "echo 1 > \"$1/old.txt\"; mkdir -p \"$1/sub\"; echo 2 > \"$1/sub/deep.txt\"", "x", "{out}"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"aaaa")]);
    assert_eq!(p.run(&[]).0, 0);
    std::fs::write(p.path().join("output/a/make/notes.txt"), b"mine").unwrap();
    std::fs::create_dir_all(p.path().join("output/a/make/mydir")).unwrap();
    std::fs::write(p.path().join("output/a/make/mydir/x"), b"mine too").unwrap();
    p.write_manifest(&manifest.replace(
        r#"echo 1 > \"$1/old.txt\"; mkdir -p \"$1/sub\"; echo 2 > \"$1/sub/deep.txt\""#,
        r#"echo 3 > \"$1/new.txt\""#,
    ));
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        files_under(&p.path().join("output/a/make")),
        vec!["mydir/x", "new.txt", "notes.txt"],
        "vsum's old files went, the user's stayed"
    );
}

/// `publish: [INDEX.md]` used to overwrite the user's own INDEX.md.
#[test]
fn publish_never_overwrites_a_file_vsum_did_not_write() {
    let manifest = format!("{DEMO}    publish: [all.txt]\n");
    let p = Project::new(&manifest, &[("a.mp4", b"aaaa")]);
    std::fs::create_dir_all(p.path().join("output")).unwrap();
    std::fs::write(p.path().join("output/all.txt"), b"my own notes").unwrap();
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1, "{s}");
    let j = job(&s, "index", "[batch]");
    assert!(
        j["error"].as_str().unwrap().contains("vsum did not write"),
        "{j}"
    );
    assert_eq!(p.read("output/all.txt"), "my own notes");

    // Moved away: vsum publishes, and later replaces its own file.
    std::fs::remove_file(p.path().join("output/all.txt")).unwrap();
    assert_eq!(p.run(&[]).0, 0);
    assert_eq!(p.read("output/all.txt"), "4\n4\n");
    std::fs::write(p.path().join("input/a.mp4"), b"aaaaaa").unwrap();
    assert_eq!(p.run(&[]).0, 0);
    assert_eq!(p.read("output/all.txt"), "6\n6\n");
    // The published file is a copy: editing it never reaches the cache.
    std::fs::write(p.path().join("output/all.txt"), b"edited").unwrap();
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

// ---------------------------------------------------------------- cache folder marker

/// `--cache-dir` pointed at an existing folder used to delete files in it.
#[test]
fn a_folder_that_is_not_a_vsum_cache_is_refused_untouched() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let dir = p.path().join("mystuff");
    for f in [
        "runs/r.json",
        "logs/today.log",
        "objects/ab/photo.jpg",
        "taxes.pdf",
    ] {
        let path = dir.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, f.as_bytes()).unwrap();
    }
    let before = files_under(&dir);
    let d = dir.to_str().unwrap();
    for args in [
        &[
            "run",
            "pipeline.yaml",
            "--progress",
            "none",
            "--cache-dir",
            d,
        ][..],
        &["cache", "--cache-dir", d, "gc"],
        &["cache", "--cache-dir", d, "verify"],
        &["cache", "--cache-dir", d, "ls"],
        &["runs", "--cache-dir", d, "ls"],
    ] {
        let out = p.vsum(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is not a vsum cache"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("CACHEDIR.TAG"), "{}", stderr(&out));
    }
    assert_eq!(files_under(&dir), before, "nothing added, nothing removed");
    for f in &before {
        assert_eq!(p.read(&format!("mystuff/{f}")), *f);
    }
}

#[test]
fn a_new_cache_is_marked_and_an_older_unmarked_cache_is_adopted() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    assert_eq!(p.run(&[]).0, 0);
    let tag = p.read(".vsum/CACHEDIR.TAG");
    assert!(
        tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"),
        "{tag}"
    );
    assert!(tag.contains("vsum-cache-format: 1"), "{tag}");
    // A cache made before the marker existed: same layout, no tag, and none of the files
    // later versions keep at the top (only a marked cache gets those). Kept, and marked.
    for later in ["CACHEDIR.TAG", "durations.json", "stats.json"] {
        let _ = std::fs::remove_file(p.path().join(".vsum").join(later));
    }
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(counts(&s), (0, 3, 0, 0), "every entry is still used: {s}");
    assert!(p.path().join(".vsum/CACHEDIR.TAG").is_file());
    // An empty folder is fine too.
    let empty = p.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = p.vsum(&[
        "run",
        "pipeline.yaml",
        "--progress",
        "none",
        "--cache-dir",
        empty.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(empty.join("CACHEDIR.TAG").is_file());
    // A marker from a newer vsum is not guessed at.
    std::fs::write(
        p.path().join(".vsum/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# vsum-cache-format: 99\n",
    )
    .unwrap();
    let out = p.vsum(&["run", "pipeline.yaml", "--progress", "none"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("format 99"), "{}", stderr(&out));
}

/// A folder in place of an object or an entry made every run fail, and `verify` said
/// "evicted" but removed nothing.
#[test]
fn a_folder_in_place_of_an_object_or_entry_is_healed() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    assert_eq!(p.run(&[]).0, 0);
    let cache = p.path().join(".vsum");
    let object = walk(&cache.join("objects"))[0].clone();
    let entry = walk(&cache.join("entries"))[0].clone();
    for f in [&object, &entry] {
        std::fs::remove_file(f).unwrap();
        std::fs::create_dir_all(f.join("junk")).unwrap();
    }
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("not a regular file"),
        "{}",
        stdout(&out)
    );
    assert!(
        !object.exists(),
        "verify removed the folder in the object's place"
    );
    // Without verify, the run itself heals both: a lookup clears the entry's place, a
    // commit the object's.
    for f in [&object, &entry] {
        std::fs::create_dir_all(f.join("junk")).unwrap();
    }
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert!(counts(&s).0 >= 1, "the damaged results ran again: {s}");
    let (code, s) = p.run(&[]);
    assert_eq!((code, counts(&s)), (0, (0, 3, 0, 0)), "{s}");
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

// ---------------------------------------------------------------- immutable objects

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Outputs were hard links to the objects: an edit of `output/<v>/<stage>/file` edited
/// the cache, and identical outputs shared one object.
#[test]
fn outputs_are_copies_so_an_edit_never_reaches_the_cache() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    assert_eq!(p.run(&[]).0, 0);
    for object in walk(&p.path().join(".vsum/objects")) {
        assert_eq!(mode(&object), 0o444, "objects are read-only");
    }
    let out = p.path().join("output/a/size/size.txt");
    assert_eq!(mode(&out), 0o644, "outputs are the user's to edit");
    std::fs::write(&out, b"edited\n").unwrap();
    let verify = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    // The rerun restores the edited output from the cache and runs nothing.
    let (code, s) = p.run(&[]);
    assert_eq!((code, counts(&s)), (0, (0, 3, 0, 0)), "{s}");
    assert_eq!(p.read("output/a/size/size.txt"), "4\n");
    // Hard links only when asked for.
    p.write_manifest(&DEMO.replace(
        "output: output/",
        "output: output/\nconfig: {link: hardlink}",
    ));
    assert_eq!(p.run(&[]).0, 0);
    use std::os::unix::fs::MetadataExt;
    let nlink = std::fs::metadata(p.path().join("output/a/size/size.txt"))
        .unwrap()
        .nlink();
    assert!(nlink >= 2, "link: hardlink links to the object");
}

/// A background child holding the job's output file open wrote into the object after
/// commit (and into every output that shared it).
#[test]
fn a_process_still_holding_an_output_cannot_change_the_cache() {
    let manifest = r#"
inputs: [input/]
output: output/
stages:
  make:
    run: ["sh", "-c", "echo a > \"$1/f.txt\"; exec 3>>\"$1/f.txt\"; setsid sh -c 'sleep 1; echo tampered >&3' >/dev/null 2>&1 & echo $! > '$DIR/bg.pid'", "x", "{out}"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    assert_eq!(p.run(&[]).0, 0);
    // setsid left the job's process group: it outlives the job and writes late.
    let pid = p.read("bg.pid").trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let verify = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    assert_eq!(p.read("output/a/make/f.txt"), "a\n");
}

/// Two runs sharing a cache redid each other's jobs (39 executions for 24 jobs).
#[test]
fn a_job_reads_its_upstream_from_the_cache_not_the_shared_output_folder() {
    // `down` starts by doing what a second run writing into the same `output:` could do
    // mid-job: it overwrites `up`'s file there. It must still read (and cache) what
    // `up` produced, from its private staged copy of the cache entry.
    let manifest = r#"
inputs: [input/]
stages:
  up:
    run: ["sh", "-c", "echo good > \"$1/up.txt\"", "x", "{out}"]
  down:
    needs: [up]
    run: ["sh", "-c", "echo poison > \"$1\"; cat \"$2/up.txt\" > \"$3/down.txt\"", "x", "$DIR/output/v1/up/up.txt", "{up}", "{out}"]
"#;
    let p = Project::new(manifest, &[("v1.mp4", b"one")]);
    let (code, s) = p.run(&["--only", "up"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(p.read("output/v1/up/up.txt"), "good\n");
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        p.read("output/v1/down/down.txt"),
        "good\n",
        "down read the shared output folder"
    );
    // The overwritten file is not the cache's: the next run puts `up`'s output back,
    // and `down` stays cached (its result was right).
    assert_eq!(p.read("output/v1/up/up.txt"), "poison\n");
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(p.read("output/v1/up/up.txt"), "good\n");
    assert_eq!(counts(&s).1, 2, "{s}");
    // Nothing staged is left behind in the cache.
    let tmp = p.path().join(".vsum/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in tmp/: {left:?}");
}

#[test]
fn concurrent_runs_sharing_a_cache_compute_each_job_once() {
    let manifest = r#"
inputs: [input/]
output: output/
stages:
  slow:
    run: ["sh", "-c", "echo {stem} >> '$DIR/runs.log'; sleep 0.3; cat \"$1\" > \"$2/o.txt\"", "x", "{video}", "{out}"]
"#;
    let videos: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("v{i}.mp4"), vec![b'a' + i as u8]))
        .collect();
    let refs: Vec<(&str, &[u8])> = videos
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let p = Project::new(manifest, &refs);
    // Two manifests beside each other: one cache (.vsum), two output folders.
    let text = std::fs::read_to_string(p.manifest()).unwrap();
    std::fs::write(
        p.path().join("other.yaml"),
        text.replace("output: output/", "output: other/"),
    )
    .unwrap();
    let start = |m: &str| {
        Command::new(BIN)
            .args(["run", m, "--progress", "none", "--jobs", "2"])
            .current_dir(p.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (start("pipeline.yaml"), start("other.yaml"));
    assert_eq!(wait_exit(&mut a, Duration::from_secs(60)), 0);
    assert_eq!(wait_exit(&mut b, Duration::from_secs(60)), 0);
    let mut ran = p.executions();
    ran.sort();
    assert_eq!(
        ran,
        vec!["v0", "v1", "v2", "v3", "v4", "v5"],
        "each job ran once"
    );
    for out in ["output", "other"] {
        for i in 0..6 {
            let f = format!("{out}/v{i}/slow/o.txt");
            assert_eq!(p.read(&f).as_bytes(), [b'a' + i as u8], "{f}");
        }
    }
}

/// Another run writing into the same `output:` could overwrite an upstream mid-job.
#[test]
fn one_run_at_a_time_writes_into_an_output_folder() {
    let manifest = r#"
inputs: [input/]
output: output/
stages:
  slow:
    run: ["sh", "-c", "echo started > '$DIR/started'; sleep 2; echo x > \"$1/o.txt\"", "x", "{out}"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    let mut first = p.spawn_run();
    wait_for_file(&p.path().join("started"), &mut first);
    let out = p.vsum(&["run", "pipeline.yaml", "--progress", "none"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another vsum run is writing into"),
        "{}",
        stderr(&out)
    );
    // Planning reads only: it is not held up.
    assert!(p.vsum(&["plan", "pipeline.yaml"]).status.success());
    assert_eq!(wait_exit(&mut first, Duration::from_secs(60)), 0);
    assert_eq!(p.run(&[]).0, 0, "free again once the first run ended");
}

// ---------------------------------------------------------------- failure policy

/// One empty file among good videos used to stop the batch ("30% of jobs failed").
#[test]
fn one_empty_video_fails_alone_and_the_good_videos_finish() {
    let manifest = r#"
inputs: [input/]
output: output/
stages:
  probe:
    uses: media.probe
  audio:
    uses: media.audio
  scenes:
    uses: video.scenes
  count:
    scope: batch
    needs: [probe]
    run: ["sh", "-c", "echo $# > \"$1/count.txt\"", "x", "{out}", "{videos}"]
"#;
    let p = Project::new(manifest, &[("empty.mp4", b"")]);
    for (i, f) in [300, 400, 500, 600].iter().enumerate() {
        make_video(&p.path().join(format!("input/good{i}.mp4")), *f);
    }
    // Default thresholds (disk alerts off only, as everywhere in the tests).
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1, "{s}");
    assert!(s["stopped"].is_null(), "the batch was not stopped: {s}");
    for i in 0..4 {
        for stage in ["probe", "audio", "scenes"] {
            let j = job(&s, stage, &format!("input/good{i}.mp4"));
            assert_eq!(j["outcome"], "ran", "{j}");
        }
    }
    for stage in ["probe", "audio", "scenes"] {
        let j = job(&s, stage, "input/empty.mp4");
        assert_eq!(j["outcome"], "failed", "{j}");
        assert_eq!(j["bad_input"], true, "{j}");
        assert!(j["error"].as_str().unwrap().contains("empty"), "{j}");
        assert_eq!(j["attempts"], 1, "a bad input is not retried: {j}");
    }
    assert_eq!(job(&s, "count", "[batch]")["outcome"], "ran");
    // "x" + {out} + four good videos.
    assert!(p.read("output/count/count.txt").starts_with('5'));
    // The rerun has nothing left but the bad file.
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        counts(&s),
        (0, 13, 3, 0),
        "the good videos are cached, only the empty file's jobs fail again: {s}"
    );
}

/// The error rate counts videos, after a minimum sample, and says what failed.
#[test]
fn the_error_rate_counts_videos_after_a_minimum_sample() {
    let manifest = r#"
inputs: [input/]
config: {retries: 0, cpu_threads: 1, breaker_threshold: 100}
stages:
  a:
    run: ["sh", "-c", "grep -q ok \"$1\"", "x", "{video}"]
"#;
    let project = |n: usize, bad: usize| {
        let videos: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| {
                let body = if i < bad {
                    "bad".to_string()
                } else {
                    format!("ok {i}")
                };
                (format!("v{i:02}.mp4"), body.into_bytes())
            })
            .collect();
        let refs: Vec<(&str, &[u8])> = videos
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        Project::new(manifest, &refs)
    };
    // 4 of 12 videos fail (33%): too few videos to judge a rate, so all 12 run.
    let p = project(12, 4);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1);
    assert!(
        s["stopped"].is_null(),
        "12 videos are under the minimum of 20: {s}"
    );
    assert_eq!(counts(&s).0, 8, "every good video ran: {s}");
    // 8 of 24 fail, first: past 20 videos the rate (40%) stops the batch, and says why.
    let p = project(24, 8);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1);
    let stopped = s["stopped"].as_str().expect("stopped");
    assert!(stopped.contains("of videos failed"), "{stopped}");
    assert!(stopped.contains("stage 'a' (command)"), "{stopped}");
    assert!(
        stopped.contains("exited with status 1"),
        "the last cause: {stopped}"
    );
}

// ---------------------------------------------------------------- broken pipe

#[test]
fn a_closed_pipe_on_stdout_ends_quietly() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    assert_eq!(p.run(&[]).0, 0);
    for args in [
        &["stages"][..],
        &["stages", "--json"],
        &["plan", "pipeline.yaml"],
        &["cache", "-m", "pipeline.yaml", "ls"],
        &["runs", "-m", "pipeline.yaml", "ls"],
    ] {
        // A reader that is already gone: the first write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .current_dir(p.path())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

// ---------------------------------------------------------------- bounded parsing

/// A 489-byte manifest whose aliases expand to 9^9 nodes used to take over 23 GB.
#[test]
fn yaml_alias_bombs_are_refused_with_a_clear_error() {
    let mut bomb =
        String::from("inputs: [input/]\nstages: {}\nx0: &x0 [a, a, a, a, a, a, a, a, a]\n");
    for i in 1..10 {
        let prev = format!("*x{}", i - 1);
        bomb.push_str(&format!(
            "x{i}: &x{i} [{}]\n",
            [prev.as_str(); 9].join(", ")
        ));
    }
    assert!(bomb.len() < 600, "{}", bomb.len());
    let p = Project::new(&bomb, &[]);
    let out = p.vsum(&["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("aliases"), "{}", stderr(&out));
    // The config file and the alerts file go through the same parser.
    p.write_manifest(DEMO);
    std::fs::write(p.path().join("config/default.yaml"), &bomb).unwrap();
    let out = p.vsum(&["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("aliases"), "{}", stderr(&out));
}

/// A seeded generator (xorshift): the same manifests on every run and machine.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn scalar(&mut self) -> String {
        let s = self.pick(&[
            "echo",
            "{video}",
            "{out}/x.txt",
            "{stem}",
            "{videos}",
            "{nope}",
            "{",
            "}}",
            "1",
            "-3.5",
            "true",
            "null",
            "~",
            "'quoted'",
            "\"dq\"",
            "media.probe",
            "command",
            "batch",
            "gpu",
            "cpu",
            "input/",
            "output/",
            "../x",
            "/",
            "a: b",
            "[x]",
            "é",
            "",
        ]);
        s.to_string()
    }

    /// A YAML value in flow style, nested up to `depth`.
    fn value(&mut self, depth: usize, anchors: &mut Vec<String>) -> String {
        let roll = self.below(10);
        if depth == 0 || roll < 4 {
            return self.scalar();
        }
        if roll == 4 && !anchors.is_empty() {
            return format!("*{}", anchors[self.below(anchors.len())]);
        }
        let n = self.below(4);
        let items: Vec<String> = (0..n).map(|_| self.value(depth - 1, anchors)).collect();
        let body = if roll < 7 {
            format!("[{}]", items.join(", "))
        } else {
            let keys = [
                "run", "uses", "with", "needs", "scope", "lane", "retries", "k", "x",
            ];
            let pairs: Vec<String> = items
                .iter()
                .map(|v| format!("{}: {v}", self.pick(&keys)))
                .collect();
            format!("{{{}}}", pairs.join(", "))
        };
        if self.below(4) == 0 {
            let name = format!("a{}", anchors.len());
            anchors.push(name.clone());
            format!("&{name} {body}")
        } else {
            body
        }
    }

    fn manifest(&mut self) -> String {
        let mut anchors = Vec::new();
        let mut out = String::new();
        match self.below(12) {
            // Alias bombs: a chain of anchors, each repeating the one before.
            0 => {
                let fan = 2 + self.below(9);
                let levels = 2 + self.below(12);
                out.push_str(&format!("x0: &x0 [{}]\n", vec!["lol"; fan].join(", ")));
                for i in 1..levels {
                    let prev = format!("*x{}", i - 1);
                    out.push_str(&format!(
                        "x{i}: &x{i} [{}]\n",
                        vec![prev.as_str(); fan].join(", ")
                    ));
                }
                out.push_str(&format!(
                    "inputs: [input/]\nstages:\n  s:\n    run: *x{}\n",
                    levels - 1
                ));
            }
            // Deep nesting, flow or block.
            1 => {
                let depth = self.below(300);
                let open = if self.below(2) == 0 { "[" } else { "{k: " };
                let close = if open == "[" { "]" } else { "}" };
                out.push_str(&format!(
                    "inputs: [input/]\nstages:\n  s:\n    run: {}x{}\n",
                    open.repeat(depth),
                    close.repeat(depth)
                ));
            }
            2 if self.below(2) == 0 => {
                let depth = self.below(20_000);
                out.push_str(&format!(
                    "inputs: [input/]\nstages:\n  s:\n    run:\n      {}echo\n",
                    "- ".repeat(depth)
                ));
            }
            2 => {
                let depth = self.below(120);
                out.push_str("inputs: [input/]\nstages:\n");
                for d in 0..depth {
                    out.push_str(&format!("{}k{d}:\n", "  ".repeat(d + 1)));
                }
                out.push_str(&format!("{}run: [echo]\n", "  ".repeat(depth + 1)));
            }
            // Manifest-shaped documents: mostly valid stages, some random values,
            // anchors and aliases.
            _ => {
                for key in ["name", "output", "extensions", "config", "version"] {
                    if self.below(10) == 0 {
                        out.push_str(&format!("{key}: {}\n", self.value(4, &mut anchors)));
                    }
                }
                if self.below(5) == 0 {
                    out.push_str(&format!("inputs: {}\n", self.value(3, &mut anchors)));
                } else {
                    out.push_str("inputs: &in [input/]\n");
                    anchors.push("in".into());
                }
                out.push_str("stages:\n");
                for s in 0..1 + self.below(4) {
                    out.push_str(&format!("  s{s}:\n"));
                    match self.below(4) {
                        0 => out.push_str(&format!(
                            "    uses: {}\n",
                            self.pick(&[
                                "media.probe",
                                "media.audio",
                                "video.scenes",
                                "knowledge.index",
                                "nope"
                            ])
                        )),
                        _ => {
                            let args: Vec<String> = (0..self.below(4))
                                .map(|_| {
                                    let a = self.scalar();
                                    if self.below(5) == 0 {
                                        a
                                    } else {
                                        format!("{a:?}")
                                    }
                                })
                                .collect();
                            out.push_str(&format!("    run: [echo, {}]\n", args.join(", ")));
                        }
                    }
                    if s > 0 && self.below(2) == 0 {
                        out.push_str(&format!("    needs: [s{}]\n", self.below(s)));
                    }
                    for key in [
                        "with", "scope", "publish", "stdout", "outputs", "retries", "lane", "env",
                        "timeout", "deps",
                    ] {
                        if self.below(16) == 0 {
                            out.push_str(&format!("    {key}: {}\n", self.value(3, &mut anchors)));
                        }
                    }
                }
            }
        }
        // Some are damaged: a character dropped, duplicated or replaced.
        if self.below(4) == 0 && !out.is_empty() {
            let mut bytes = out.into_bytes();
            for _ in 0..1 + self.below(3) {
                let at = self.below(bytes.len());
                match self.below(3) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, bytes[at]),
                    _ => bytes[at] = b"[]{}:&*-'\"\n #|>"[self.below(15)],
                }
                if bytes.is_empty() {
                    break;
                }
            }
            out = String::from_utf8_lossy(&bytes).into_owned();
        }
        out
    }
}

fn peak_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 10,000 generated manifests (alias chains, deep nesting, damaged text, random values):
/// each is accepted or refused, none panics, and memory stays bounded.
#[test]
fn generated_manifests_are_accepted_or_refused_without_panic_in_bounded_memory() {
    let registry = vsum_stages::registry(&vsum_models::ModelsDir::from_config(None));
    let base = std::env::temp_dir();
    let mut rng = Gen(0x5eed_1234_abcd_0013);
    let (mut accepted, mut refused, mut bombs_refused) = (0, 0, 0);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..10_000 {
        let src = rng.manifest();
        let t = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            vsum_engine::manifest::parse(&src, Path::new("gen.yaml"), &base, &registry)
        }));
        slowest = slowest.max(t.elapsed());
        match result {
            Err(_) => panic!("manifest #{i} panicked the parser:\n{src}"),
            Ok(Ok(m)) => {
                accepted += 1;
                for st in &m.stages {
                    let size = serde_json::to_string(&st.params).unwrap().len();
                    assert!(size <= 32 << 20, "manifest #{i}: params of {size} bytes");
                }
            }
            Ok(Err(e)) => {
                refused += 1;

                if e.to_string().contains("aliases") {
                    bombs_refused += 1;
                }
            }
        }
    }
    let peak = peak_memory_kib();
    println!(
        "10000 manifests: {accepted} accepted, {refused} refused ({bombs_refused} alias bombs), {:?} in all, slowest {slowest:?}, peak memory {} MiB",
        started.elapsed(),
        peak / 1024
    );
    assert!(accepted > 0 && refused > 0, "{accepted} / {refused}");
    assert!(
        bombs_refused > 100,
        "alias bombs were generated and refused: {bombs_refused}"
    );
    assert!(peak < 1 << 20, "peak memory {peak} KiB (over 1 GiB)");
}

// ---------------------------------------------------------------- gappy audio

/// An 89 KB file with a timestamp jump used to become a WAV of hundreds of MB.
#[test]
fn a_timestamp_gap_does_not_become_a_huge_wav() {
    let manifest = r#"
inputs: [input/]
output: output/
stages:
  audio:
    uses: media.audio
"#;
    let p = Project::new(manifest, &[]);
    // One second of sound, with a jump of three hours after half a second.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:d=1",
        "-af",
        "asetpts='if(gte(T,0.5),PTS+10800/TB,PTS)'",
        "-c:a",
        "pcm_s16le",
        p.path().join("input/gap.mkv").to_str().unwrap(),
    ]);
    let size = std::fs::metadata(p.path().join("input/gap.mkv"))
        .unwrap()
        .len();
    assert!(size < 200_000, "{size}");
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    let wav = std::fs::metadata(p.path().join("output/gap/audio/audio.wav"))
        .unwrap()
        .len();
    // One second at 16 kHz mono s16 is 32 KB; a filled gap would be 345 MB.
    assert!(wav < 200_000, "audio.wav is {wav} bytes");
    let info: Value = serde_json::from_str(&p.read("output/gap/audio/audio.json")).unwrap();
    let gap = info["unfilled_gap_seconds"].as_f64().unwrap();
    assert!((gap - 10800.0).abs() < 2.0, "{info}");
    let listed = &info["unfilled_gaps"][0];
    assert!((listed["at"].as_f64().unwrap() - 0.5).abs() < 0.1, "{info}");
}

// ---------------------------------------------------------------- names and arguments

/// A 300-character stage id passed validation, then failed with ENAMETOOLONG.
#[test]
fn overlong_stage_ids_are_refused_and_long_file_names_fit() {
    let long_id = "s".repeat(300);
    let p = Project::new(
        &format!("inputs: [input/]\nstages:\n  {long_id}:\n    run: [\"true\"]\n"),
        &[],
    );
    let out = p.vsum(&["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("300 characters long"),
        "{}",
        stderr(&out)
    );

    // A 250-byte file name: its output folder is cut to fit, with a hash.
    let name = format!("{}.mp4", "v".repeat(246));
    let p = Project::new(DEMO, &[(name.as_str(), b"aaaa")]);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    let folders: Vec<_> = std::fs::read_dir(p.path().join("output"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().len())
        .collect();
    assert!(folders.iter().all(|&n| n <= 209), "{folders:?}");
}

/// "Argument list too long" will not go away by retrying.
#[test]
fn an_argument_list_too_long_fails_at_once() {
    // One argument over the kernel's 128 KiB limit for a single string.
    let big = "x".repeat(200_000);
    let manifest = format!(
        "inputs: [input/]\nconfig: {{retries: 3}}\nstages:\n  s:\n    run: [\"echo\", \"{big}\"]\n"
    );
    let p = Project::new(&manifest, &[("a.mp4", b"a")]);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1);
    let j = job(&s, "s", "input/a.mp4");
    assert_eq!(j["attempts"], 1, "not retried: {j}");
    assert!(j["error"].as_str().unwrap().contains("too long"), "{j}");
}

// ---------------------------------------------------------------- processes

fn alive(pid: &str) -> bool {
    // A killed child of init may linger as a zombie until reaped: that is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn wait_for_file(path: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().to_string();
        }
        assert!(child.try_wait().unwrap().is_none(), "vsum ended early");
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vsum did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `timeout:` killed only the direct child: its background child lived on.
#[test]
fn timeout_and_job_end_kill_the_whole_process_group() {
    let manifest = r#"
inputs: [input/]
config: {retries: 0}
stages:
  hang:
    run: ["sh", "-c", "sleep 300 & echo $! > '$DIR/hang.pid'; sleep 300"]
    timeout: 1
  leave:
    run: ["sh", "-c", "sleep 300 & echo $! > '$DIR/leave.pid'; echo done"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1, "{s}");
    assert!(
        job(&s, "hang", "input/a.mp4")["error"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    assert_eq!(job(&s, "leave", "input/a.mp4")["outcome"], "ran");
    for f in ["hang.pid", "leave.pid"] {
        let pid = p.read(f).trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !alive(&pid),
            "{f}: background process {pid} outlived its job"
        );
    }
}

/// SIGTERM killed vsum at once, with no summary, and its commands kept running.
#[test]
fn sigterm_and_sighup_stop_a_run_like_ctrl_c() {
    let manifest = r#"
inputs: [input/]
stages:
  hang:
    run: ["sh", "-c", "sleep 300 & echo $! > '$DIR/bg.pid'; sleep 300"]
"#;
    for signal in ["-TERM", "-HUP"] {
        let p = Project::new(manifest, &[("a.mp4", b"a")]);
        let mut child = p.spawn_run();
        let pid = wait_for_file(&p.path().join("bg.pid"), &mut child);
        let rc = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(rc.success());
        let code = wait_exit(&mut child, Duration::from_secs(20));
        assert_eq!(code, 130, "{signal}");
        let runs: Vec<_> = std::fs::read_dir(p.path().join(".vsum/runs"))
            .unwrap()
            .collect();
        assert_eq!(runs.len(), 1, "{signal}: the run summary was written");
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !alive(&pid),
            "{signal}: the command's background process was killed"
        );
    }
}

/// A run that pauses before its first job (memory is always "critical"), once its log
/// says it paused; its stderr is piped.
fn paused_run(progress: &str) -> (Project, std::process::Child) {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    p.write_alerts(
        "disk_free_gb: {warning: null, critical: null}\nmemory_percent: {warning: null, critical: 0.001}\nsample_interval_ms: 50\n",
    );
    let child = Command::new(BIN)
        .args(["run", "pipeline.yaml", "--progress", progress])
        .current_dir(p.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = p.path().join(".vsum/logs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !walk(&logs).iter().any(|l| {
        std::fs::read_to_string(l)
            .unwrap_or_default()
            .contains("\"paused\"")
    }) {
        assert!(Instant::now() < deadline, "the run never paused");
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, child)
}

/// A run paused on an alert ignored the first Ctrl-C for over a minute.
#[test]
fn the_first_ctrl_c_ends_a_paused_run() {
    let (p, mut child) = paused_run("plain");
    let rc = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let code = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, 130);
    assert!(
        vsum_in(p.path(), &["runs", "-m", "pipeline.yaml", "ls"])
            .status
            .success(),
        "the interrupted run left a readable history"
    );
}

/// A run paused by a guard with `--progress none` sat silent: it must still say why it
/// waits, on stderr.
#[test]
fn a_paused_run_says_so_without_progress() {
    let (_p, mut child) = paused_run("none");
    let rc = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), 130);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("paused:"), "stderr: {err}");
    assert!(err.contains("memory"), "names the reading: {err}");
}
