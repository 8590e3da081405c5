//! Operations: the batch looks after itself. Disk guards (on real, small tmpfs
//! volumes), error-rate stop, retry of failures, run history, and `vsum doctor`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A tmpfs of `mib` MiB mounted at `dir`, unmounted on drop. Needs root; outside CI a
/// machine without it skips loudly, in CI it fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u32, extra: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m{extra}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(dir.to_path_buf()));
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (run as root)"
        );
        eprintln!("SKIP: cannot mount a tmpfs here (not root?); the disk-full tests did not run");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const WRITER: &str = r#"
inputs: [input/]
output: vol/output/
config: {cache_dir: vol/.vsum, retries: 0}
stages:
  copy:
    run: ["cp", "{video}", "{out}/copy.bin"]
"#;

fn fill(path: &Path, mib: usize) {
    std::fs::write(path, vec![7u8; mib << 20]).unwrap();
}

#[test]
fn a_full_disk_pauses_new_jobs_until_space_is_freed() {
    let p = Project::new(WRITER, &[("a.mp4", b"aaaa"), ("b.mp4", b"bbbb")]);
    let Some(_vol) = Tmpfs::mount(&p.path().join("vol"), 32, "") else {
        return;
    };
    // Critical below 16 MB free; the volume is 32 MiB and a filler takes 24 MiB.
    p.write_alerts("disk_free_gb: {warning: 0.024, critical: 0.016}\nsample_interval_ms: 100\npause_timeout_minutes: 5\n");
    let filler = p.path().join("vol/filler");
    fill(&filler, 24);
    let child = Command::new(BIN)
        .args(["run", "pipeline.yaml", "--progress", "plain"])
        .current_dir(p.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !p.path().join("vol/output/a/copy/copy.bin").exists(),
        "no job starts on a full disk"
    );
    std::fs::remove_file(&filler).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("disk almost full"), "{err}");
    assert!(
        err.contains("no new job starts until space is freed"),
        "{err}"
    );
    assert!(err.contains("resumed"), "{err}");
    assert_eq!(p.read("vol/output/b/copy/copy.bin"), "bbbb");
}

#[test]
fn a_disk_that_stays_full_stops_the_run_cleanly_and_a_rerun_resumes() {
    let p = Project::new(WRITER, &[("a.mp4", b"aaaa"), ("b.mp4", b"bbbb")]);
    let Some(_vol) = Tmpfs::mount(&p.path().join("vol"), 32, "") else {
        return;
    };
    p.write_alerts("disk_free_gb: {warning: null, critical: 0.016}\nsample_interval_ms: 100\npause_timeout_minutes: 0.01\n");
    let filler = p.path().join("vol/filler");
    fill(&filler, 24);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1);
    let stopped = s["stopped"].as_str().unwrap();
    assert!(
        stopped.contains("disk almost full") && stopped.contains("rerun"),
        "{stopped}"
    );
    assert_eq!(counts(&s).0, 0);
    assert!(
        s["monitor"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["level"] == "critical")
    );
    std::fs::remove_file(&filler).unwrap();
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(counts(&s).0, 2);
}

#[test]
fn running_out_of_space_mid_job_fails_that_job_and_loses_nothing() {
    let manifest = r#"
inputs: [input/]
output: vol/output/
config: {cache_dir: vol/.vsum, retries: 0}
stages:
  big:
    run: ["sh", "-c", "head -c $(cat \"$1\") /dev/zero > \"$2/big.bin\"", "x", "{video}", "{out}"]
"#;
    // small.mp4 asks for 1 KiB, huge.mp4 for 64 MiB on an 8 MiB volume.
    let p = Project::new(
        manifest,
        &[("small.mp4", b"1024"), ("zhuge.mp4", b"67108864")],
    );
    let Some(_vol) = Tmpfs::mount(&p.path().join("vol"), 8, "") else {
        return;
    };
    let (code, s) = p.run(&["--jobs", "1"]);
    assert_eq!(code, 1);
    let huge = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["video"] == "input/zhuge.mp4")
        .unwrap();
    assert_eq!(huge["outcome"], "failed");
    assert!(
        huge["error"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{huge}"
    );
    assert_eq!(
        std::fs::metadata(p.path().join("vol/output/small/big/big.bin"))
            .unwrap()
            .len(),
        1024
    );
    let leftovers: Vec<_> = std::fs::read_dir(p.path().join("vol/.vsum/tmp"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "the failed job's partial output is removed: {leftovers:?}"
    );
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let (_, s) = p.run(&["--videos", "small.mp4"]);
    assert_eq!(counts(&s), (0, 1, 0, 0), "finished work survives");
}

#[test]
fn an_unwritable_output_folder_is_a_clear_error_and_the_cache_keeps_the_work() {
    let manifest = r#"
inputs: [input/]
output: ro/
config: {retries: 0}
stages:
  copy:
    run: ["cp", "{video}", "{out}/copy.bin"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"aaaa")]);
    let Some(_vol) = Tmpfs::mount(&p.path().join("ro"), 1, ",ro") else {
        return;
    };
    let out = p.vsum(&["run", "pipeline.yaml", "--progress", "plain"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot write outputs into"), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(
        err.contains("the result is cached, so a rerun only restores it"),
        "{err}"
    );
}

#[test]
fn a_critical_error_rate_stops_the_batch() {
    let manifest = r#"
inputs: [input/]
config: {retries: 0, cpu_threads: 1, breaker_threshold: 100}
stages:
  check:
    run: ["sh", "-c", "grep -q ok \"$1\"", "x", "{video}"]
"#;
    let videos: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| {
            (
                format!("v{i}.mp4"),
                if i < 2 {
                    b"bad".to_vec()
                } else {
                    format!("ok {i}").into_bytes()
                },
            )
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = videos
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let p = Project::new(manifest, &refs);
    p.write_alerts("disk_free_gb: {warning: null, critical: null}\nmin_videos_for_error_rate: 4\nerror_rate_percent: {warning: 10, critical: 25}\n");
    let (code, s) = p.run(&[]);
    assert_eq!(code, 1);
    let stopped = s["stopped"].as_str().unwrap();
    assert!(stopped.contains("of videos failed"), "{s}");
    assert!(
        stopped.contains("stage 'check' (command)"),
        "the stop names the failing stage: {stopped}"
    );
    let cancelled = s["counts"]["cancelled"].as_u64().unwrap();
    assert!(cancelled >= 4, "the rest of the batch did not start: {s}");
}

#[test]
fn retry_failed_runs_only_the_videos_that_failed() {
    let manifest = r#"
inputs: [input/]
config: {retries: 0}
stages:
  check:
    run: ["sh", "-c", "grep -q ok \"$1\" && cp \"$1\" \"$2/v\"", "x", "{video}", "{out}"]
  after:
    needs: [check]
    run: ["cp", "{check}/v", "{out}/w"]
"#;
    let p = Project::new(
        manifest,
        &[("a.mp4", b"ok a"), ("b.mp4", b"bad"), ("c.mp4", b"ok c")],
    );
    let (code, _) = p.run(&[]);
    assert_eq!(code, 1);
    std::fs::write(p.path().join("input/b.mp4"), b"ok b").unwrap();
    let (code, s) = p.run(&["--retry-failed"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["videos"], 1, "only the failed video is considered: {s}");
    assert_eq!(counts(&s), (2, 0, 0, 0));
    let out = p.vsum(&["run", "pipeline.yaml", "--retry-failed"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("nothing to retry"));
}

#[test]
fn runs_are_listed_and_shown_and_old_ones_rotate_out() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    p.write_manifest(&format!("{DEMO}config: {{keep_runs: 3}}\n"));
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, s) = p.run(&[]);
        ids.push(s["run_id"].as_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = p.vsum(&["runs", "-m", "pipeline.yaml", "ls", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ids[2..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read_dir(p.path().join(".vsum/logs"))
            .unwrap()
            .count(),
        3,
        "logs rotate too"
    );
    let out = p.vsum(&["runs", "-m", "pipeline.yaml", "show", "last"]);
    assert!(stdout(&out).contains("0 ran, 3 cached"), "{}", stdout(&out));
}

#[test]
fn monitoring_is_recorded_in_the_summary() {
    let manifest = r#"
inputs: [input/]
stages:
  slow:
    run: ["sh", "-c", "sleep 0.5; echo x > \"$1/x\"", "x", "{out}"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    let (_, s) = p.run(&[]);
    let m = &s["monitor"];
    assert!(m["timeline"].as_array().unwrap().len() >= 3, "{m}");
    assert!(m["peaks"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(!m["peaks"]["min_disk_free"].as_object().unwrap().is_empty());
    assert!(m["gpu"]["mode"] == "cpu" || m["gpu"]["mode"] == "gpu");
}

#[test]
fn doctor_reports_cpu_mode_and_names_the_fix_for_what_is_missing() {
    let manifest = r#"
inputs: [input/]
stages:
  ocr:
    run: ["vsum-test-missing-ocr-tool", "{video}"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    let out = Command::new(BIN)
        .args(["doctor", "pipeline.yaml"])
        .current_dir(p.path())
        .env("VSUM_NO_GPU", "1")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ok   gpu: CPU mode"), "{text}");
    assert!(
        text.contains("FAIL program vsum-test-missing-ocr-tool: not found"),
        "{text}"
    );
    assert!(
        text.contains("fix: install 'vsum-test-missing-ocr-tool'"),
        "{text}"
    );
    assert!(text.contains("ok   cache folder"), "{text}");

    p.write_manifest("inputs: [input/]\nstages:\n  a:\n    run: [\"true\"]\n");
    let out = Command::new(BIN)
        .args(["doctor", "pipeline.yaml", "--json"])
        .current_dir(p.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] != "fail")
    );
}

#[test]
fn doctor_names_the_install_command_for_a_missing_model() {
    let manifest = r#"
inputs: [input/]
stages:
  audio: {uses: media.audio}
  transcript: {uses: whisper.transcribe, needs: [audio]}
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["doctor", "pipeline.yaml"])
        .current_dir(p.path())
        .env("VSUM_MODELS_DIR", empty.path())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL model whisper-tiny.en"), "{text}");
    assert!(
        text.contains("vsum models install whisper-tiny.en"),
        "{text}"
    );
    assert!(text.contains("ok   ffmpeg libraries: libavcodec"), "{text}");
}
