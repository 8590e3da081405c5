//! The cache contract: reruns skip finished work, changes rerun exactly what they
//! affect, outputs are restored, corruption is detected, kills lose only in-flight work.

mod common;

use common::*;

fn three_videos() -> Project {
    Project::new(
        DEMO,
        &[
            ("a.mp4", b"aaaa"),
            ("b.mp4", b"bbbbbb"),
            ("sub/c.mkv", b"cc"),
        ],
    )
}

#[test]
fn second_run_of_an_unchanged_batch_executes_zero_jobs() {
    let p = three_videos();
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(counts(&s), (7, 0, 0, 0));
    assert_eq!(p.read("output/a/size/size.txt").trim(), "4");
    assert_eq!(p.read("output/a/double/double.txt"), "4\n4\n");
    assert_eq!(p.read("output/index/all.txt"), "4\n4\n6\n6\n2\n2\n");
    let before = p.executions().len();

    let (code, s) = p.run(&[]);
    assert_eq!(code, 0);
    assert_eq!(counts(&s), (0, 7, 0, 0));
    assert_eq!(
        p.executions().len(),
        before,
        "nothing executed on a cached rerun"
    );
}

#[test]
fn changing_one_videos_bytes_reruns_only_that_video() {
    let p = three_videos();
    p.run(&[]);
    std::fs::write(p.path().join("input/b.mp4"), b"bbbbbbbbbb").unwrap();
    let (_, s) = p.run(&[]);
    assert_eq!(
        ran(&s),
        vec![
            ("double".into(), "input/b.mp4".into()),
            ("index".into(), "[batch]".into()),
            ("size".into(), "input/b.mp4".into()),
        ]
    );
    assert_eq!(p.read("output/b/size/size.txt").trim(), "10");
}

#[test]
fn same_size_same_mtime_edit_is_still_seen() {
    // The stat cache keys on inode and ctime too, so an in-place edit is re-hashed.
    let p = three_videos();
    p.run(&[]);
    let f = p.path().join("input/a.mp4");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::write(&f, b"zzzz").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (_, s) = p.run(&[]);
    assert!(
        ran(&s).contains(&("size".into(), "input/a.mp4".into())),
        "{s}"
    );
}

#[test]
fn changing_a_stage_reruns_it_and_its_dependents_only() {
    let p = three_videos();
    p.run(&[]);
    // New argv for `double` (its output changes): double x3 and the index rerun.
    p.write_manifest(&DEMO.replace(
        "cat \\\"$1\\\" \\\"$1\\\" >",
        "cat \\\"$1\\\" \\\"$1\\\" \\\"$1\\\" >",
    ));
    let (_, s) = p.run(&[]);
    let stages: Vec<String> = ran(&s).into_iter().map(|(s, _)| s).collect();
    assert_eq!(stages, vec!["double", "double", "double", "index"], "{s}");
    assert_eq!(p.read("output/a/double/double.txt"), "4\n4\n4\n");

    // A change upstream whose output is identical stops there (early cutoff).
    p.write_manifest(
        &DEMO
            .replace(
                "cat \\\"$1\\\" \\\"$1\\\" >",
                "cat \\\"$1\\\" \\\"$1\\\" \\\"$1\\\" >",
            )
            .replace("wc -c <", "wc -c  <"),
    );
    let (_, s) = p.run(&[]);
    let stages: Vec<String> = ran(&s).into_iter().map(|(s, _)| s).collect();
    assert_eq!(stages, vec!["size", "size", "size"], "{s}");
}

#[test]
fn deleted_outputs_are_restored_without_rerunning() {
    let p = three_videos();
    p.run(&[]);
    let before = p.executions().len();
    std::fs::remove_file(p.path().join("output/a/size/size.txt")).unwrap();
    std::fs::remove_dir_all(p.path().join("output/index")).unwrap();
    let (_, s) = p.run(&[]);
    assert_eq!(counts(&s), (0, 7, 0, 0));
    assert_eq!(p.executions().len(), before);
    assert_eq!(p.read("output/a/size/size.txt").trim(), "4");
    assert_eq!(p.read("output/index/all.txt"), "4\n4\n6\n6\n2\n2\n");
}

#[test]
fn corrupted_object_is_found_by_verify_and_recomputed() {
    let p = three_videos();
    p.run(&[]);
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("clean"));

    // Flip the content of a.mp4's size object in place (same length).
    let obj = std::fs::canonicalize(p.path().join("output/a/size/size.txt")).unwrap();
    let objects = walk(&p.path().join(".vsum/objects"));
    let target = objects
        .iter()
        .find(|o| std::fs::read(o).unwrap() == std::fs::read(&obj).unwrap())
        .unwrap()
        .clone();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&target, b"9\n").unwrap();

    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("corrupt"), "{}", stdout(&out));

    let (code, s) = p.run(&[]);
    assert_eq!(code, 0);
    assert!(
        ran(&s).contains(&("size".into(), "input/a.mp4".into())),
        "{s}"
    );
    assert_eq!(p.read("output/a/size/size.txt").trim(), "4");
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            v.extend(walk(&e.path()));
        } else {
            v.push(e.path());
        }
    }
    v
}

#[test]
fn kill_dash_nine_mid_run_then_rerun_finishes_without_redoing_work() {
    let manifest = r#"
inputs: [input/]
stages:
  slow:
    run: ["sh", "-c", "echo start {stem} >> '$DIR/runs.log'; sleep 0.4; echo {stem} > \"$1/out.txt\"", "x", "{out}"]
    outputs: [out.txt]
"#;
    let videos: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("v{i}.mp4"), vec![b'x'; i + 1]))
        .collect();
    let refs: Vec<(&str, &[u8])> = videos
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let p = Project::new(manifest, &refs);
    let mut child = std::process::Command::new(BIN)
        .args(["run", "pipeline.yaml", "--jobs", "1", "--progress", "none"])
        .current_dir(p.path())
        .spawn()
        .unwrap();
    // Wait until two jobs have committed, then kill -9.
    let entries = p.path().join(".vsum/entries");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while walk_count(&entries) < 2 {
        assert!(std::time::Instant::now() < deadline, "no entries appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let committed = walk_count(&entries);
    assert!(committed < 6, "the kill came too late to test anything");

    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    let (ran_n, cached_n, _, _) = counts(&s);
    assert_eq!(cached_n as usize, committed, "committed jobs are reused");
    assert_eq!(ran_n as usize, 6 - committed);
    for i in 0..6 {
        assert_eq!(
            p.read(&format!("output/v{i}/slow/out.txt")).trim(),
            format!("v{i}")
        );
    }
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // Each video ran to completion once; only a job in flight at the kill ran twice.
    let starts = p.executions().len();
    assert!(starts <= 7, "{:?}", p.executions());
}

fn walk_count(dir: &std::path::Path) -> usize {
    if dir.exists() {
        walk(dir)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .count()
    } else {
        0
    }
}

#[test]
fn two_runs_at_once_share_the_cache_safely() {
    let p = three_videos();
    // Two manifests, one cache; each run has an output folder of its own (one run at a
    // time may write into a folder).
    let text = std::fs::read_to_string(p.manifest()).unwrap();
    std::fs::write(
        p.path().join("other.yaml"),
        text.replace("output: output/", "output: other/"),
    )
    .unwrap();
    let spawn = |m: &str| {
        std::process::Command::new(BIN)
            .args(["run", m, "--progress", "plain"])
            .current_dir(p.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("pipeline.yaml"), spawn("other.yaml"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let (_, s) = p.run(&[]);
    assert_eq!(counts(&s), (0, 7, 0, 0));
}

#[test]
fn cache_why_names_what_changed_and_plan_shows_it() {
    let p = three_videos();
    p.run(&[]);
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "why", "a.mp4", "size"]);
    assert!(stdout(&out).contains("cached"), "{}", stdout(&out));

    p.write_manifest(&DEMO.replace("wc -c <", "wc -c  <"));
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "why", "input/a.mp4", "size"]);
    let text = stdout(&out);
    assert!(text.contains("will run"), "{text}");
    assert!(text.contains("params.run[2]"), "{text}");

    let out = p.vsum(&["plan", "pipeline.yaml"]);
    let text = stdout(&out);
    assert!(text.contains("run     size [input/a.mp4]"), "{text}");
    assert!(text.contains("upstream 'size' would run first"), "{text}");

    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "why", "nope.mp4", "size"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no video matches 'nope.mp4'"));
}

#[test]
fn ls_show_stats_and_gc() {
    let p = three_videos();
    p.run(&[]);
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "ls", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 7);
    let key = rows[0]["key"].as_str().unwrap();
    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "show", &key[..10]]);
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["key"], key);
    assert!(entry["fingerprint"]["params"]["run"].is_array());

    let out = p.vsum(&["cache", "-m", "pipeline.yaml", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["entries"], 7);

    let out = p.vsum(&[
        "cache",
        "-m",
        "pipeline.yaml",
        "gc",
        "--max-size",
        "0",
        "--yes",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("removed 7 entries"),
        "{}",
        stdout(&out)
    );
    let (_, s) = p.run(&[]);
    assert_eq!(counts(&s).0, 7, "everything recomputed after gc");
}

#[test]
fn only_force_and_videos_select_work() {
    let p = three_videos();
    let (_, s) = p.run(&["--only", "size"]);
    assert_eq!(counts(&s), (3, 0, 0, 0));
    let (_, s) = p.run(&["--videos", "a.mp4"]);
    assert_eq!(
        ran(&s),
        vec![
            ("double".into(), "input/a.mp4".into()),
            ("index".into(), "[batch]".into())
        ]
    );
    let (_, s) = p.run(&["--force", "size"]);
    let stages: Vec<String> = ran(&s).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        stages,
        vec!["double", "double", "index", "size", "size", "size"],
        "{s}"
    );
    let out = p.vsum(&["run", "pipeline.yaml", "--only", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown stage 'nope'"));
}

#[test]
fn dependency_files_join_the_key() {
    let manifest = r#"
inputs: [input/]
stages:
  tool:
    run: ["sh", "tools/t.sh", "{out}"]
    deps: [tools/t.sh]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"a")]);
    std::fs::create_dir_all(p.path().join("tools")).unwrap();
    std::fs::write(p.path().join("tools/t.sh"), "echo one > \"$1/r.txt\"\n").unwrap();
    let (_, s) = p.run(&[]);
    assert_eq!(counts(&s).0, 1);
    let (_, s) = p.run(&[]);
    assert_eq!(counts(&s).0, 0);
    std::fs::write(p.path().join("tools/t.sh"), "echo two > \"$1/r.txt\"\n").unwrap();
    let (_, s) = p.run(&[]);
    assert_eq!(counts(&s).0, 1);
    assert_eq!(p.read("output/a/tool/r.txt").trim(), "two");
}
