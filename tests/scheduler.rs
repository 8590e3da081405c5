//! The scheduler contract: one GPU lane, parallel CPU lane, failures stay with their
//! video, retries, the circuit breaker, hostile file names, and a clean Ctrl-C.

mod common;

use common::*;
use serde_json::Value;

fn intervals(s: &Value, stage: &str) -> Vec<(u64, u64)> {
    s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["stage"] == stage)
        .map(|j| {
            (
                j["start_ms"].as_u64().unwrap(),
                j["end_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[test]
fn gpu_lane_jobs_never_overlap_while_cpu_jobs_run_in_parallel() {
    let manifest = r#"
inputs: [input/]
stages:
  cpu:
    run: ["sh", "-c", "sleep 0.3; echo c > \"$1/c.txt\"", "x", "{out}"]
  gpu:
    lane: gpu
    run: ["sh", "-c", "sleep 0.15; echo g > \"$1/g.txt\"", "x", "{out}"]
  gpu2:
    lane: gpu
    needs: [cpu]
    run: ["sh", "-c", "sleep 0.1; echo h > \"$1/h.txt\"", "x", "{out}"]
"#;
    let videos: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("v{i}.mp4"), vec![b'a' + i as u8]))
        .collect();
    let refs: Vec<(&str, &[u8])> = videos
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let p = Project::new(manifest, &refs);
    let (code, s) = p.run(&["--jobs", "2"]);
    assert_eq!(code, 0, "{s}");
    let mut gpu = intervals(&s, "gpu");
    gpu.extend(intervals(&s, "gpu2"));
    assert_eq!(gpu.len(), 8);
    for (i, a) in gpu.iter().enumerate() {
        for b in &gpu[i + 1..] {
            assert!(!overlaps(*a, *b), "GPU jobs overlap: {a:?} {b:?}");
        }
    }
    let cpu = intervals(&s, "cpu");
    let parallel = cpu
        .iter()
        .enumerate()
        .any(|(i, a)| cpu[i + 1..].iter().any(|b| overlaps(*a, *b)));
    assert!(parallel, "CPU jobs never ran in parallel: {cpu:?}");
}

#[test]
fn a_failure_skips_that_videos_dependents_and_the_batch_goes_on() {
    let manifest = r#"
inputs: [input/]
config: {retries: 0}
stages:
  check:
    run: ["sh", "-c", "if grep -q bad \"$1\"; then echo 'decoder exploded' >&2; exit 3; fi; echo ok > \"$2/ok.txt\"", "x", "{video}", "{out}"]
  after:
    needs: [check]
    run: ["cp", "{check}/ok.txt", "{out}/ok2.txt"]
  index:
    scope: batch
    needs: [after]
    run: ["sh", "-c", "for d; do echo \"$d\"; done", "x", "{videos}"]
    stdout: list.txt
"#;
    let p = Project::new(
        manifest,
        &[
            ("good1.mp4", b"fine"),
            ("bad.mp4", b"bad"),
            ("good2.mp4", b"fine too"),
        ],
    );
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1, "a failed video makes exit code 1");
    let j = jobs(&s);
    assert!(j.contains(&("check".into(), "input/bad.mp4".into(), "failed".into())));
    assert!(j.contains(&("after".into(), "input/bad.mp4".into(), "skipped".into())));
    assert!(j.contains(&("after".into(), "input/good2.mp4".into(), "ran".into())));
    assert!(
        j.contains(&("index".into(), "[batch]".into(), "ran".into())),
        "batch runs over the good videos"
    );
    let failed = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["outcome"] == "failed")
        .unwrap();
    let err = failed["error"].as_str().unwrap();
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(
        err.contains("decoder exploded"),
        "stderr tail is shown: {err}"
    );
    assert_eq!(p.read("output/index/list.txt").lines().count(), 2);

    // Fix the video: only it reruns; the good ones stay cached.
    std::fs::write(p.path().join("input/bad.mp4"), b"repaired").unwrap();
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        counts(&s).0,
        3,
        "check+after for the fixed video, and the index"
    );
}

#[test]
fn missing_command_nonzero_exit_and_missing_output_are_clear_errors() {
    let manifest = r#"
inputs: [input/]
config: {retries: 0}
stages:
  nocmd:
    run: ["definitely-not-a-command-vsum", "{video}"]
  noout:
    run: ["sh", "-c", "echo hi > \"$1/other.txt\"", "x", "{out}"]
    outputs: [wanted.json]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    let out = p.vsum(&["run", "pipeline.yaml", "--progress", "plain"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("command 'definitely-not-a-command-vsum' not found"),
        "{err}"
    );
    assert!(err.contains("hint: install it or fix `run:`"), "{err}");
    assert!(
        err.contains("did not create declared output(s) 'wanted.json'; it created: other.txt"),
        "{err}"
    );
    assert!(err.contains("input/a.mp4"), "errors name the video: {err}");
}

#[test]
fn retries_transient_failures_with_backoff() {
    let manifest = r#"
inputs: [input/]
stages:
  flaky:
    retries: 2
    run: ["sh", "-c", "n=$(cat '$DIR/count' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '$DIR/count'; [ $n -ge 3 ] || exit 1; echo done > \"$1/r.txt\"", "x", "{out}"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["jobs"][0]["attempts"], 3);
}

#[test]
fn circuit_breaker_stops_a_failing_kind_after_n_in_a_row() {
    let manifest = r#"
inputs: [input/]
config: {retries: 0, breaker_threshold: 2, cpu_threads: 1}
stages:
  broken:
    run: ["false"]
"#;
    let videos: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("v{i}.mp4"), vec![b'a' + i as u8]))
        .collect();
    let refs: Vec<(&str, &[u8])> = videos
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let p = Project::new(manifest, &refs);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1);
    let (_, _, failed, skipped) = counts(&s);
    assert_eq!(failed, 2, "{s}");
    assert_eq!(skipped, 3);
    let skipped_err = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["outcome"] == "skipped")
        .unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        skipped_err.contains("circuit breaker open"),
        "{skipped_err}"
    );
}

#[test]
fn hostile_file_names_are_data_never_code_and_never_escape_output() {
    let manifest = r#"
inputs: [input/]
stages:
  echo:
    run: ["sh", "-c", "printf '%s' \"$1\" > \"$2/name.txt\"", "x", "{stem}", "{out}"]
"#;
    let names: Vec<&str> = vec![
        "with space.mp4",
        "quote'\"s.mp4",
        "$(touch PWNED).mp4",
        "`touch PWNED2`.mp4",
        "...mp4",
        "ünïcødé.mp4",
    ];
    let videos: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, b"x" as &[u8])).collect();
    let p = Project::new(manifest, &videos);
    // A name that is not valid UTF-8.
    use std::os::unix::ffi::OsStrExt;
    let raw = std::ffi::OsStr::from_bytes(b"bad\xff\xfename.mp4");
    std::fs::write(p.path().join("input").join(raw), b"y").unwrap();

    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(counts(&s).0, 7);
    assert!(!p.path().join("PWNED").exists() && !p.path().join("input/PWNED").exists());
    assert!(!p.path().join("PWNED2").exists());
    assert_eq!(
        p.read("output/$(touch PWNED)/echo/name.txt"),
        "$(touch PWNED)"
    );
    assert_eq!(p.read("output/quote'\"s/echo/name.txt"), "quote'\"s");
    // "...mp4" has the stem "..": its folder must stay inside output/.
    assert_eq!(p.read("output/_../echo/name.txt"), "..");
    let raw_out = p
        .path()
        .join("output")
        .join(std::ffi::OsStr::from_bytes(b"bad\xff\xfename"))
        .join("echo/name.txt");
    assert_eq!(std::fs::read(raw_out).unwrap(), b"bad\xff\xfename");
    // Nothing was written beside output/.
    let mut top: Vec<String> = std::fs::read_dir(p.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        vec![".vsum", "config", "input", "output", "pipeline.yaml"]
    );
}

#[test]
fn two_videos_with_the_same_stem_do_not_collide() {
    let manifest = r#"
inputs: [input/]
stages:
  copy:
    run: ["cp", "{video}", "{out}/v.bin"]
"#;
    let p = Project::new(manifest, &[("a/talk.mp4", b"one"), ("b/talk.mp4", b"two")]);
    let (code, _) = p.run(&[]);
    assert_eq!(code, 0);
    let mut contents: Vec<String> = std::fs::read_dir(p.path().join("output"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path().join("copy/v.bin")).unwrap())
        .collect();
    contents.sort();
    assert_eq!(contents, vec!["one", "two"]);
}

#[test]
fn a_missing_input_folder_stops_the_run_before_anything_runs() {
    let manifest = r#"
inputs: [input/, no-such-folder/]
stages:
  copy:
    run: ["cp", "{video}", "{out}/v.bin"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"one")]);
    let out = p.vsum(&["run", "pipeline.yaml", "--progress", "plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("input 'no-such-folder/' does not exist"),
        "{err}"
    );
    assert!(err.contains("pipeline.yaml"), "names the manifest: {err}");
    assert!(err.contains("--inputs"), "says what to do: {err}");
    assert!(!p.path().join("output").exists(), "nothing ran");
}

#[test]
fn unreadable_input_folder_is_reported() {
    if unsafe_is_root() {
        // Root reads any folder, so permissions cannot make one unreadable here; the
        // same code path as an unreadable video.
        eprintln!(
            "SKIP unreadable_input_folder_is_reported: running as root, chmod 000 does not stop root"
        );
        return;
    }
    let manifest = "inputs: [input/]\nstages:\n  c:\n    run: [cp, '{video}', '{out}/v']\n";
    let p = Project::new(manifest, &[("locked/a.mp4", b"one"), ("b.mp4", b"two")]);
    use std::os::unix::fs::PermissionsExt;
    let locked = p.path().join("input/locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = p.vsum(&["run", "pipeline.yaml", "--progress", "plain"]);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

fn unsafe_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

#[test]
fn ctrl_c_stops_cleanly_and_a_rerun_completes() {
    let manifest = r#"
inputs: [input/]
stages:
  slow:
    run: ["sh", "-c", "sleep 0.5; echo x > \"$1/o.txt\"", "x", "{out}"]
"#;
    let videos: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("v{i}.mp4"), vec![b'a' + i as u8]))
        .collect();
    let refs: Vec<(&str, &[u8])> = videos
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let p = Project::new(manifest, &refs);
    let child = std::process::Command::new(BIN)
        .args(["run", "pipeline.yaml", "--jobs", "1", "--progress", "none"])
        .current_dir(p.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let rc = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    // Said at once, with what is being stopped: one job at a time computes here, and
    // the one before it may still be storing its outputs (a few milliseconds).
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        ["0 jobs", "1 job", "2 jobs"]
            .iter()
            .any(|n| err.contains(&format!("stopping: {n} in flight"))),
        "{err}"
    );
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert!(
        counts(&s).1 >= 1,
        "work finished before Ctrl-C is kept: {s}"
    );
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(out.status.success());
    let leftovers: Vec<_> = p.path().join(".vsum/tmp").read_dir().unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "abandoned work folders are cleaned up: {leftovers:?}"
    );
}

#[test]
fn each_run_leaves_a_json_log_and_a_summary_under_the_cache() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let (_, s) = p.run(&[]);
    let id = s["run_id"].as_str().unwrap();
    let summary: Value = serde_json::from_str(&p.read(&format!(".vsum/runs/{id}.json"))).unwrap();
    assert_eq!(summary["counts"]["ran"], 3);
    let log = p.read(&format!(".vsum/logs/{id}.jsonl"));
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "job_finished")
            .count(),
        3
    );
    assert_eq!(events.last().unwrap()["event"], "run_finished");
}

#[test]
fn environment_and_flags_override_the_config() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let elsewhere = p.path().join("cache-elsewhere");
    let out = std::process::Command::new(BIN)
        .args(["run", "pipeline.yaml", "--progress", "none"])
        .current_dir(p.path())
        .env("VSUM_CACHE_DIR", &elsewhere)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(elsewhere.join("entries").is_dir());
    assert!(!p.path().join(".vsum").exists());
    // A flag beats the environment.
    let flag = p.path().join("cache-flag");
    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "pipeline.yaml",
            "--progress",
            "none",
            "--cache-dir",
            flag.to_str().unwrap(),
        ])
        .current_dir(p.path())
        .env("VSUM_CACHE_DIR", &elsewhere)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(flag.join("entries").is_dir());
    // A bad value in the environment is a usage error naming it.
    let out = std::process::Command::new(BIN)
        .args(["run", "pipeline.yaml"])
        .current_dir(p.path())
        .env("VSUM_RETRIES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("<environment>"), "{}", stderr(&out));
}

#[test]
fn batch_stages_can_publish_files_at_the_top_of_output() {
    let manifest = format!("{DEMO}    publish: [all.txt]\n");
    let p = Project::new(&manifest, &[("a.mp4", b"aaaa")]);
    let (code, _) = p.run(&[]);
    assert_eq!(code, 0);
    assert_eq!(p.read("output/all.txt"), "4\n4\n");
    std::fs::remove_file(p.path().join("output/all.txt")).unwrap();
    let (_, s) = p.run(&[]);
    assert_eq!(counts(&s).0, 0);
    assert_eq!(
        p.read("output/all.txt"),
        "4\n4\n",
        "restored from the cache"
    );
    p.write_manifest(&DEMO.replace("  size:\n", "  size:\n    publish: [x]\n"));
    let out = p.vsum(&["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`publish:` is for batch stages"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn launch_and_completion_screens_tell_what_will_happen_and_what_did() {
    let manifest = r#"
inputs: [input/]
config: {retries: 0}
stages:
  check:
    run: ["sh", "-c", "grep -q ok \"$1\" || {{ echo 'not a video' >&2; exit 2; }}", "x", "{video}"]
"#;
    let p = Project::new(manifest, &[("good.mp4", b"ok"), ("bad.mp4", b"nope")]);
    let out = p.vsum(&["run", "pipeline.yaml", "--progress", "plain"]);
    let err = stderr(&out);
    // Launch: found, cached, to run, where.
    assert!(err.contains("vsum: 2 video(s), 6 B on disk"), "{err}");
    assert!(err.contains("jobs: 2 in all, 0 cached, 2 to run"), "{err}");
    assert!(err.contains("output: "), "{err}");
    // Completion: counts, rate, each failure with its cause, the retry command.
    assert!(
        err.contains("1 ran, 0 cached, 1 failed, 0 skipped — 50% succeeded"),
        "{err}"
    );
    assert!(
        err.contains("check [input/bad.mp4]: command 'sh' exited with status 2: not a video"),
        "{err}"
    );
    assert!(
        err.contains("vsum run pipeline.yaml --retry-failed"),
        "{err}"
    );
    // The second launch knows what is cached and estimates the rest from the first run.
    let out = p.vsum(&["run", "pipeline.yaml", "--progress", "plain"]);
    let err = stderr(&out);
    assert!(err.contains("jobs: 2 in all, 1 cached, 1 to run"), "{err}");
    assert!(err.contains("estimate: about"), "{err}");
    // The means come from `.vsum/durations.json`, kept as runs end; without it (a cache
    // from an older vsum) they are rebuilt from the kept run summaries.
    let means = p.dir.path().join(".vsum/durations.json");
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&means).unwrap()).unwrap();
    assert_eq!(kept["stages"]["check"]["n"], 1, "{kept}");
    // A torn file is rebuilt the same way, and the run that rebuilt it is counted once.
    std::fs::write(&means, b"{\"version\":1,\"sta").unwrap();
    let out = p.vsum(&[
        "run",
        "pipeline.yaml",
        "--progress",
        "plain",
        "--force",
        "check",
    ]);
    assert!(stderr(&out).contains("estimate: about"), "{}", stderr(&out));
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&means).unwrap()).unwrap();
    assert_eq!(kept["stages"]["check"]["n"], 2, "{kept}");
}
