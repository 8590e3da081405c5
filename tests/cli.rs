//! The day-to-day command line: finding the manifest and the cache from where the user
//! stands, refusing mistyped paths, safe `cache gc`, shell completions, and `--json`
//! output that parses on every command that has it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// DEMO with its batch file published at the top of the output folder.
fn published_demo() -> String {
    format!("{DEMO}    publish: [all.txt]\n")
}

/// `vsum` in `dir` with a clean environment plus `env`.
fn vsum_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("VSUM_CONFIG")
        .env_remove("VSUM_CACHE_DIR")
        .env_remove("VSUM_MANIFEST")
        .env_remove("VSUM_CPU_THREADS")
        .env_remove("VSUM_ALERTS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run vsum")
}

fn json_of(out: &Output, what: &str) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            stdout(out),
            stderr(out)
        )
    })
}

fn entry_count(p: &Project) -> u64 {
    let out = p.vsum(&["cache", "stats", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    json_of(&out, "cache stats")["entries"].as_u64().unwrap()
}

#[test]
fn the_manifest_is_found_in_the_current_folder_and_said_on_stderr() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let out = p.vsum(&["run", "--progress", "none", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("using manifest pipeline.yaml"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json_of(&out, "run")["counts"]["ran"], 3);
    // Every command takes the manifest the same ways: found, positional, or -m.
    for args in [
        &["plan"][..],
        &["plan", "pipeline.yaml"],
        &["plan", "-m", "pipeline.yaml"],
        &["plan", "--manifest", "pipeline.yaml"],
        &["validate"],
        &["validate", "-m", "pipeline.yaml"],
        &["dag"],
        &["dag", "--manifest", "pipeline.yaml"],
        &["cache", "ls"],
        &["cache", "ls", "pipeline.yaml"],
        &["cache", "-m", "pipeline.yaml", "ls"],
        &["cache", "stats", "--manifest", "pipeline.yaml"],
        &["runs", "ls"],
        &["runs", "ls", "pipeline.yaml"],
        &["runs", "-m", "pipeline.yaml", "ls"],
    ] {
        let out = p.vsum(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    // A manifest named in the environment wins over the search.
    let out = vsum_in(
        p.path(),
        &["validate"],
        &[("VSUM_MANIFEST", "pipeline.yaml")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("using manifest"), "{}", stderr(&out));
}

#[test]
fn the_manifest_is_found_in_pipelines_and_from_a_subfolder() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    // The project layout of this repository: the manifest in pipelines/, inputs beside it.
    std::fs::create_dir_all(p.path().join("pipelines")).unwrap();
    let text = std::fs::read_to_string(p.manifest())
        .unwrap()
        .replace("inputs: [input/]", "inputs: [../input/]")
        .replace("output: output/", "output: ../output/");
    std::fs::write(p.path().join("pipelines/demo.yaml"), text).unwrap();
    std::fs::remove_file(p.manifest()).unwrap();
    // Not manifests: no top-level `stages:`, or a hidden file (a CI config).
    std::fs::write(p.path().join("pipelines/notes.yaml"), "title: x\n").unwrap();
    std::fs::write(p.path().join(".gitlab-ci.yml"), "stages: [build]\n").unwrap();

    let out = p.vsum(&["run", "--progress", "none"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("using manifest pipelines/demo.yaml"),
        "{}",
        stderr(&out)
    );
    assert!(p.path().join("pipelines/.vsum/CACHEDIR.TAG").is_file());
    // Inside pipelines/ (which holds .vsum and the only manifest), `cache ls` just works.
    let out = vsum_in(&p.path().join("pipelines"), &["cache", "ls", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out, "cache ls").as_array().unwrap().len(), 3);
    // From a subfolder, the parent's pipelines/ is found.
    let sub = p.path().join("input");
    let out = vsum_in(&sub, &["runs", "ls", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out, "runs ls").as_array().unwrap().len(), 1);

    // Two manifests in one place: vsum names both and picks neither.
    std::fs::copy(
        p.path().join("pipelines/demo.yaml"),
        p.path().join("pipelines/other.yaml"),
    )
    .unwrap();
    let out = p.vsum(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("demo.yaml") && err.contains("other.yaml"),
        "{err}"
    );
}

#[test]
fn no_manifest_anywhere_is_a_usage_error_and_a_typo_gets_a_suggestion() {
    let empty = tempfile::tempdir().unwrap();
    let out = vsum_in(empty.path(), &["plan"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("which manifest?"), "{}", stderr(&out));
    // doctor still checks the machine, and says that it checked no pipeline.
    let out = vsum_in(empty.path(), &["doctor"], &[]);
    assert!(
        stdout(&out).contains("manifest: none given or found"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("1 warning"), "{}", stdout(&out));

    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    std::fs::create_dir_all(p.path().join("pipelines")).unwrap();
    std::fs::rename(p.manifest(), p.path().join("pipelines/summarize.yaml")).unwrap();
    for cmd in ["run", "plan", "validate", "dag", "doctor"] {
        let out = p.vsum(&[cmd, "summarise.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(
            stderr(&out).contains("did you mean pipelines/summarize.yaml?"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn vsum_cache_dir_names_the_cache_with_or_without_a_manifest() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let cache = p.path().join("elsewhere");
    let c = cache.to_str().unwrap();
    let out = vsum_in(
        p.path(),
        &["run", "--progress", "none"],
        &[("VSUM_CACHE_DIR", c)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(cache.join("CACHEDIR.TAG").is_file());
    assert!(!p.path().join(".vsum").exists());
    // Away from any manifest, the variable alone names the cache.
    let away = tempfile::tempdir().unwrap();
    let out = vsum_in(
        away.path(),
        &["cache", "stats", "--json"],
        &[("VSUM_CACHE_DIR", c)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out, "cache stats")["entries"], 3);
    let out = vsum_in(away.path(), &["runs", "last"], &[("VSUM_CACHE_DIR", c)]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Relative to where the user stands, like --cache-dir.
    let out = vsum_in(
        p.path(),
        &["cache", "stats", "--json"],
        &[("VSUM_CACHE_DIR", "elsewhere")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out, "cache stats")["entries"], 3);
}

#[test]
fn a_mistyped_cache_dir_is_refused_and_never_created() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    assert_eq!(p.run(&[]).0, 0);
    for args in [
        &["cache", "--cache-dir", ".vsumm", "ls"][..],
        &["cache", "stats", "--cache-dir", ".vsumm"],
        &["cache", "show", "abc", "--cache-dir", ".vsumm"],
        &["cache", "--cache-dir", ".vsumm", "why", "a.mp4", "size"],
        &["cache", "--cache-dir", ".vsumm", "gc", "--max-size", "1G"],
        &["runs", "--cache-dir", ".vsumm", "ls"],
        &["runs", "--cache-dir", ".vsumm", "show", "last"],
    ] {
        let out = p.vsum(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("no vsum cache at"), "{args:?}: {err}");
        assert!(err.contains("did you mean"), "{args:?}: {err}");
        assert!(!p.path().join(".vsumm").exists(), "{args:?} created it");
    }
    // The environment is checked the same way.
    let out = vsum_in(p.path(), &["cache", "ls"], &[("VSUM_CACHE_DIR", "nope")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!p.path().join("nope").exists());
    // A project that never ran has no cache to read yet; reading does not make one.
    let fresh = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let out = fresh.vsum(&["cache", "ls"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no cache yet"), "{}", stderr(&out));
    assert!(!fresh.path().join(".vsum").exists());
}

#[test]
fn gc_needs_a_unit_and_a_dry_run_removes_nothing() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa"), ("b.mp4", b"bbbbbb")]);
    assert_eq!(p.run(&[]).0, 0);
    assert_eq!(entry_count(&p), 5);

    let out = p.vsum(&["cache", "gc", "--max-size", "50"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("has no unit"), "{}", stderr(&out));
    assert!(stderr(&out).contains("50G"), "{}", stderr(&out));
    assert_eq!(entry_count(&p), 5, "a refused gc removes nothing");

    let out = p.vsum(&["cache", "gc", "--max-size", "0", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("would remove ").count(),
        6,
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("nothing removed"), "{}", stdout(&out));
    assert_eq!(entry_count(&p), 5, "a dry run removes nothing");
    let out = p.vsum(&["cache", "gc", "--max-size", "0", "--dry-run", "--json"]);
    let plan = json_of(&out, "gc --dry-run --json");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["remove"].as_array().unwrap().len(), 5);
    assert_eq!(entry_count(&p), 5);

    // More than half of the cache, and nobody at a terminal to ask: refused.
    let out = p.vsum(&["cache", "gc", "--max-size", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(entry_count(&p), 5);
    // A small trim goes ahead without asking.
    let out = p.vsum(&["cache", "gc", "--older-than", "30d", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out, "gc --json")["entries_removed"], 0);
    let out = p.vsum(&["cache", "gc", "--max-size", "0", "--yes", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out, "gc --yes --json")["entries_removed"], 5);
    assert_eq!(entry_count(&p), 0);
}

#[test]
fn completions_are_generated_for_each_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vsum_in(tmp.path(), &["completions", "bash"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    assert!(script.contains("_vsum()"), "{script}");
    assert!(script.contains("complete -F _vsum"), "{script}");
    for sub in ["run", "plan", "cache", "runs", "completions"] {
        assert!(script.contains(sub), "{sub} missing");
    }
    for shell in ["zsh", "fish"] {
        let out = vsum_in(tmp.path(), &["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("vsum"), "{shell}");
    }
    let out = vsum_in(tmp.path(), &["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_json_output_parses() {
    let p = Project::new(&published_demo(), &[("a.mp4", b"aaaa")]);
    assert_eq!(p.run(&[]).0, 0);
    let key = json_of(&p.vsum(&["cache", "ls", "--json"]), "cache ls")[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let run_id = json_of(&p.vsum(&["runs", "ls", "--json"]), "runs ls")[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    for args in [
        &["validate", "--json"][..],
        &["dag", "--json"],
        &["dag", "--format", "json"],
        &["plan", "--json"],
        &["stages", "--json"],
        &["doctor", "--json"],
        &["cache", "ls", "--json"],
        &["cache", "ls", "--sort", "size", "--json"],
        &["cache", "show", &key[..12], "--json"],
        &["cache", "stats", "--json"],
        &["cache", "why", "a.mp4", "double", "--json"],
        &["cache", "verify", "--json"],
        &["cache", "gc", "--dry-run", "--json"],
        &["cache", "gc", "--older-than", "30d", "--json"],
        &["runs", "ls", "--json"],
        &["runs", "show", &run_id, "--json"],
        &["runs", "show", "last", "--json"],
        &["runs", "last", "--json"],
        &["run", "--dry-run", "--json", "--progress", "none"],
        &["run", "--json", "--progress", "none"],
        &["models", "list", "--json"],
    ] {
        let out = p.vsum(args);
        // doctor may fail a check on this machine; its JSON must parse all the same.
        if args[0] != "doctor" {
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        }
        json_of(&out, &format!("{args:?}"));
    }
    let v = json_of(&p.vsum(&["validate", "--json"]), "validate");
    assert_eq!(v["ok"], true);
    assert_eq!(v["stages"][2]["publish"][0], "all.txt");
    let why = json_of(
        &p.vsum(&["cache", "why", "a.mp4", "double", "--json"]),
        "why",
    );
    assert_eq!(why[0]["cached"], true);
    // Times are RFC 3339 (UTC) in JSON, whatever the command.
    let rfc3339 = |v: &Value, what: &str| {
        let t = v
            .as_str()
            .unwrap_or_else(|| panic!("{what}: not a string: {v}"));
        let b = t.as_bytes();
        assert!(
            t.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[13] == b':' && t.ends_with('Z'),
            "{what}: {t}"
        );
    };
    let ls = json_of(&p.vsum(&["cache", "ls", "--json"]), "cache ls");
    rfc3339(&ls[0]["created"], "cache ls created");
    rfc3339(&ls[0]["last_used"], "cache ls last_used");
    let show = json_of(&p.vsum(&["cache", "show", &key[..12], "--json"]), "show");
    rfc3339(&show["created"], "cache show created");
    let runs = json_of(&p.vsum(&["runs", "ls", "--json"]), "runs ls");
    rfc3339(&runs[0]["started"], "runs ls started");
    rfc3339(
        &json_of(&p.vsum(&["plan", "--json"]), "plan")["started"],
        "plan started",
    );
    rfc3339(&p.run(&[]).1["started"], "run started");
    // Tables show human times.
    let table = stdout(&p.vsum(&["cache", "ls"]));
    assert!(table.contains("s ago"), "{table}");
    // `runs last` is `runs show last`: the run just made.
    let (_, newest) = p.run(&[]);
    let last = json_of(&p.vsum(&["runs", "last", "--json"]), "runs last");
    assert_eq!(last["run_id"], newest["run_id"]);
    assert_ne!(last["run_id"], run_id.as_str());
}

#[test]
fn the_completion_screen_points_at_what_the_manifest_publishes() {
    let p = Project::new(&published_demo(), &[("a.mp4", b"aaaa")]);
    let out = p.vsum(&["run", "--progress", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(p.path().join("output/all.txt").is_file());
    let shows = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("index:") && l.ends_with("output/all.txt"))
    };
    assert!(shows(&stderr(&out)), "{}", stderr(&out));
    let out = p.vsum(&["runs", "last"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(shows(&stdout(&out)), "{}", stdout(&out));
    // Without `publish:`, no file is pointed at: vsum knows no stage's file names.
    let plain = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    let out = plain.vsum(&["run", "--progress", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("index:"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2_and_stages_shows_no_rust_type_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vsum_in(
        tmp.path(),
        &["models", "install", "whisper-small"],
        &[("VSUM_MODELS_DIR", tmp.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be installed"),
        "{}",
        stderr(&out)
    );
    let out = vsum_in(
        tmp.path(),
        &["models", "install", "no-such-model", "--json"],
        &[("VSUM_MODELS_DIR", tmp.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let rows = json_of(&out, "models install --json");
    assert_eq!(rows[0]["ok"], false);
    assert!(rows[0]["error"].as_str().unwrap().contains("unknown model"));
    let out = vsum_in(tmp.path(), &["stages"], &[]);
    assert!(out.status.success());
    for word in stdout(&out).split_whitespace() {
        assert!(
            !matches!(
                word,
                "u8" | "u16"
                    | "u32"
                    | "u64"
                    | "usize"
                    | "i32"
                    | "i64"
                    | "f32"
                    | "f64"
                    | "bool"
                    | "String"
            ),
            "a Rust type name reached the user: {word}"
        );
    }
}

/// On a terminal, a gc that removes more than half of the cache asks first: "n" keeps
/// everything, "y" goes ahead. `script` gives vsum a terminal.
#[test]
fn a_big_gc_asks_on_a_terminal() {
    if !tool("script") && !required("a_big_gc_asks_on_a_terminal", "script (util-linux)") {
        return;
    }
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    assert_eq!(p.run(&[]).0, 0);
    let on_terminal = |answer: &str| {
        let mut child = Command::new("script")
            .args(["-qec", &format!("{BIN} cache gc --max-size 0"), "/dev/null"])
            .current_dir(p.path())
            .env_remove("VSUM_CACHE_DIR")
            .env_remove("VSUM_MANIFEST")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stdout(&out));
        stdout(&out)
    };
    let screen = on_terminal("n\n");
    assert!(screen.contains("Go ahead? [y/N]"), "{screen}");
    assert!(screen.contains("nothing removed"), "{screen}");
    assert_eq!(entry_count(&p), 3);
    let screen = on_terminal("y\n");
    assert!(screen.contains("removed 3 entries"), "{screen}");
    assert_eq!(entry_count(&p), 0);
}

#[test]
fn validate_refuses_a_missing_input_folder_naming_manifest_path_and_fix() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    assert!(p.vsum(&["validate"]).status.success());
    p.write_manifest(&DEMO.replace("inputs: [input/]", "inputs: [input/, talks/, 'more/*.mp4']"));
    for args in [
        &["validate"][..],
        &["plan"],
        &["run", "--progress", "plain"],
    ] {
        let out = p.vsum(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("pipeline.yaml: input 'talks/' does not exist"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&p.path().join("talks").display().to_string()),
            "{err}"
        );
        assert!(
            err.contains("input 'more/*.mp4'"),
            "a glob's folder is checked: {err}"
        );
        assert!(err.contains("--inputs DIR"), "{err}");
    }
    assert!(!p.path().join("output").exists(), "nothing ran");
    assert!(p.executions().is_empty());
}

#[test]
fn inputs_replaces_the_manifests_inputs() {
    let p = Project::new(&published_demo(), &[("a.mp4", b"aaaa")]);
    let mine = p.path().join("mine");
    std::fs::create_dir_all(mine.join("sub")).unwrap();
    std::fs::write(mine.join("x.mp4"), b"xx").unwrap();
    std::fs::write(mine.join("sub/y.mp4"), b"yyy").unwrap();
    let out = p.vsum(&["run", "--inputs", "mine", "--json", "--progress", "none"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = json_of(&out, "run --inputs");
    assert_eq!(s["videos"], 2, "only the given folder: {s}");
    // The index holds each video's size twice: x has 2 bytes, y 3.
    assert_eq!(p.read("output/all.txt"), "3\n3\n2\n2\n");
    assert!(
        !p.executions().iter().any(|l| l.contains(" a")),
        "{:?}",
        p.executions()
    );
    // Several, files or folders; a missing one is a usage error naming it.
    let out = p.vsum(&["plan", "--inputs", "mine/x.mp4", "input", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_of(&out, "plan --inputs")["videos"], 2);
    let out = p.vsum(&["run", "--inputs", "nope", "--progress", "none"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "--inputs: no such folder or file: {}",
            p.path().join("nope").display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_videos_subset_run_keeps_every_cached_video_in_the_index() {
    let p = Project::new(&published_demo(), &[("a.mp4", b"aa"), ("b.mp4", b"bbb")]);
    assert_eq!(p.run(&[]).0, 0);
    // The index holds each video's size twice.
    assert_eq!(p.read("output/all.txt"), "2\n2\n3\n3\n");
    std::fs::write(p.path().join("input/a.mp4"), b"AAAA").unwrap();
    std::fs::write(p.path().join("input/c.mp4"), b"c").unwrap();
    let (code, s) = p.run(&["--videos", "a.mp4"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        s["videos"], 1,
        "the summary is about the selected video: {s}"
    );
    let videos: Vec<String> = jobs(&s).into_iter().map(|(_, v, _)| v).collect();
    assert!(
        videos.iter().all(|v| v == "input/a.mp4" || v == "[batch]"),
        "{videos:?}"
    );
    // a is new, b comes from the cache, c never ran so it is not in the index yet.
    assert_eq!(p.read("output/all.txt"), "4\n4\n3\n3\n");
    assert!(
        !p.executions().iter().any(|l| l.ends_with(" c")),
        "{:?}",
        p.executions()
    );
}

#[test]
fn quiet_verbose_and_colour() {
    let p = Project::new(DEMO, &[("a.mp4", b"aaaa")]);
    // -q: no note, no progress, no completion screen; the result still comes.
    let out = p.vsum(&["-q", "run", "--progress", "plain"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "quiet");
    // -vv: the engine's debug records on stderr; VSUM_LOG sets the filter.
    std::fs::write(p.path().join("input/b.mp4"), b"b").unwrap();
    let out = p.vsum(&["run", "-vv", "--progress", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("job started"), "{}", stderr(&out));
    std::fs::write(p.path().join("input/c.mp4"), b"c").unwrap();
    let out = vsum_in(
        p.path(),
        &["run", "-vv", "--progress", "plain"],
        &[("VSUM_LOG", "off")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("job started"), "{}", stderr(&out));
    assert!(stderr(&out).contains("ran"), "plain progress still shows");
    // Colour only when asked (stderr is not a terminal here), and NO_COLOR is honoured.
    let esc = |o: &Output| stderr(o).contains('\x1b');
    assert!(!esc(&p.vsum(&["run", "nope.yaml"])));
    let out = p.vsum(&["run", "nope.yaml", "--color", "always"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\x1b[1;31merror:\x1b[0m"),
        "{}",
        stderr(&out)
    );
    let out = vsum_in(
        p.path(),
        &["--color", "auto", "run", "nope.yaml"],
        &[("NO_COLOR", "1")],
    );
    assert!(!esc(&out));
    let out = p.vsum(&[
        "run",
        "--color",
        "never",
        "--progress",
        "plain",
        "--force",
        "size",
    ]);
    assert!(!esc(&out), "{}", stderr(&out));
    // clap's own help and usage errors follow --color too.
    let help = p.vsum(&["--color", "always", "run", "--help"]);
    assert!(stdout(&help).contains('\x1b'), "{}", stdout(&help));
    let help = p.vsum(&["run", "--help", "--color=never"]);
    assert!(!stdout(&help).contains('\x1b'), "{}", stdout(&help));
    let usage = p.vsum(&["--color", "always", "run", "--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(esc(&usage), "{}", stderr(&usage));
    // -q and -v together is a usage error.
    assert_eq!(p.vsum(&["-q", "-v", "stages"]).status.code(), Some(2));
}

#[test]
fn man_pages_are_roff_for_vsum_and_each_command() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vsum_in(tmp.path(), &["man"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH vsum 1"),
        "{page}"
    );
    assert!(page.contains(".TH vsum 1"), "{page}");
    assert!(page.contains("completions"), "lists the commands");
    assert!(page.contains("\\-\\-color"), "global flags: {page}");
    let run = stdout(&vsum_in(tmp.path(), &["man", "run"], &[]));
    assert!(
        run.contains(".TH vsum\\-run 1") || run.contains(".TH vsum-run 1"),
        "{run}"
    );
    assert!(run.contains("inputs"), "{run}");
    let out = vsum_in(tmp.path(), &["man", "rnu"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("commands are:"), "{}", stderr(&out));
}

/// A pipeline whose one job sleeps `secs`, on the GPU lane after a quick CPU job.
fn slow_project(secs: u32) -> Project {
    let manifest = format!(
        r#"
inputs: [input/]
output: output/
stages:
  quick:
    run: ["sh", "-c", "wc -c < \"$1\"", "x", "{{video}}"]
    stdout: n.txt
  slow:
    needs: [quick]
    lane: gpu
    run: ["sh", "-c", "touch '$DIR/started'; sleep {secs}; cat \"$1\"", "x", "{{quick}}/n.txt"]
    stdout: n.txt
"#
    );
    Project::new(&manifest, &[("a.mp4", b"aaaa"), ("b.mp4", b"bb")])
}

#[test]
fn plain_progress_stamps_every_line_with_the_wall_clock() {
    let p = slow_project(0);
    let out = p.vsum(&["run", "--progress", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.contains("] ran") || l.starts_with("20") || l.contains("vsum: 2 video(s), 4 job(s)")
        })
        .collect();
    assert!(lines.len() >= 5, "{err}");
    for l in &lines {
        let b = l.as_bytes();
        assert!(
            b.len() > 21 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z' && b[20] == b' ',
            "no timestamp: {l}"
        );
    }
    assert!(err.contains("4 job(s): 0 cached, 4 to run"), "{err}");
    assert!(
        err.contains("log:     "),
        "the run log is pointed at: {err}"
    );
}

/// A private tmux server, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux")
    }

    fn screen(&self) -> String {
        stdout(&self.cmd(&["capture-pane", "-p", "-t", "vsum"]))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// "[00:00:03]" at the start of the bar line.
fn clock_of(screen: &str) -> Option<String> {
    screen
        .lines()
        .find(|l| l.starts_with("[00:") && l.contains("to run"))
        .map(|l| l[..10].to_string())
}

#[test]
fn the_live_screen_ticks_while_no_job_finishes() {
    if !tool("tmux") && !required("the_live_screen_ticks_while_no_job_finishes", "tmux") {
        return;
    }
    let p = slow_project(6);
    let tmux = Tmux(format!("vsum-test-{}", std::process::id()));
    let script = format!(
        "cd '{}' && VSUM_NO_GPU=1 '{BIN}' run --yes --progress bar; echo EXIT=$?; sleep 60",
        p.path().display()
    );
    let started = tmux.cmd(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "vsum",
        "-x",
        "160",
        "-y",
        "30",
        &script,
    ]);
    assert!(started.status.success(), "{}", stderr(&started));
    // Wait until the slow job runs (the quick ones are done by then).
    let t0 = std::time::Instant::now();
    while !p.path().join("started").exists() {
        assert!(
            t0.elapsed().as_secs() < 20,
            "the slow job never started:\n{}",
            tmux.screen()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let first = tmux.screen();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let second = tmux.screen();
    let (a, b) = (clock_of(&first), clock_of(&second));
    assert!(
        a.is_some() && b.is_some(),
        "no clock:\n{first}\n---\n{second}"
    );
    assert_ne!(a, b, "the clock froze:\n{first}\n---\n{second}");
    // Nothing finished in between: the same count of to-run jobs done.
    let done = |s: &str| {
        s.lines().find(|l| l.contains("to run")).and_then(|l| {
            l.split_whitespace()
                .find(|w| w.contains('/'))
                .map(str::to_string)
        })
    };
    assert_eq!(done(&first), done(&second), "{first}\n---\n{second}");
    for screen in [&first, &second] {
        assert!(screen.contains("none cached"), "{screen}");
        assert!(screen.contains("videos done 0/2"), "{screen}");
        assert!(
            screen.contains("gpu lane (CPU mode): 1 running"),
            "{screen}"
        );
        assert!(screen.contains("slow [input/"), "{screen}");
        assert!(screen.contains("eta "), "{screen}");
        assert!(
            screen.contains("host: ") && screen.contains("CPU "),
            "{screen}"
        );
    }
    // The job's own elapsed time moves too.
    let job = |s: &str| {
        s.lines()
            .find(|l| l.contains("slow [input/"))
            .map(|l| l.trim().to_string())
    };
    assert_ne!(job(&first), job(&second), "{first}\n---\n{second}");
    // Ctrl-C says at once what it stops.
    tmux.cmd(&["send-keys", "-t", "vsum", "C-c"]);
    let t0 = std::time::Instant::now();
    let mut last = String::new();
    while t0.elapsed().as_secs() < 20 {
        last = tmux.screen();
        if last.contains("EXIT=") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(last.contains("stopping: 1 job in flight"), "{last}");
    assert!(last.contains("EXIT=130"), "{last}");
    assert!(last.contains("log:     "), "{last}");
}

#[test]
fn watch_runs_a_video_copied_in_while_it_runs_once_the_copy_is_done() {
    let p = Project::new(&published_demo(), &[("a.mp4", b"aaaa")]);
    let err_path = p.path().join("watch.err");
    let child = Command::new(BIN)
        .args(["run", "--watch", "--progress", "plain", "--yes"])
        .current_dir(p.path())
        .env_remove("VSUM_MANIFEST")
        .env_remove("VSUM_CACHE_DIR")
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !ok() {
            if t0.elapsed().as_secs() > 30 {
                let _ = Command::new("kill").arg(child.id().to_string()).status();
                panic!(
                    "{what} never happened; stderr:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let err = || std::fs::read_to_string(&err_path).unwrap_or_default();
    wait_for("watching", &|| err().contains("watching "));
    assert_eq!(p.read("output/all.txt"), "4\n4\n");
    // A slow copy: 600 bytes in six writes, 300 ms apart.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(p.path().join("input/c.mp4")).unwrap();
        for _ in 0..6 {
            f.write_all(&[b'c'; 100]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
    wait_for("the index with c", &|| {
        std::fs::read_to_string(p.path().join("output/all.txt")).unwrap_or_default()
            == "4\n4\n600\n600\n"
    });
    let sizes: Vec<String> = p
        .executions()
        .into_iter()
        .filter(|l| l.starts_with("size c"))
        .collect();
    assert_eq!(
        sizes.len(),
        1,
        "a half-copied file was read: {:?}",
        p.executions()
    );
    assert_eq!(
        p.executions().iter().filter(|l| *l == "size a").count(),
        1,
        "a is restored from the cache: {:?}",
        p.executions()
    );
    wait_for("watching again", &|| err().contains("watching for more"));
    let rc = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", err());
    assert!(err().contains("watch: stopped"), "{}", err());
    assert!(
        err().contains("watch: 1 video(s) new, changed or gone: c.mp4"),
        "{}",
        err()
    );
}

/// A default build has no distributed executor: asking for one says how to get it.
#[cfg(not(feature = "distributed"))]
#[test]
fn a_nats_executor_without_the_distributed_feature_says_how_to_build_it() {
    let p = Project::new(
        "inputs: [input/]\nstages:\n  a:\n    run: [\"true\"]\n",
        &[("v.mp4", b"v")],
    );
    for args in [
        &[
            "run",
            "pipeline.yaml",
            "--executor",
            "nats://127.0.0.1:4222",
            "--cache",
            "s3://b/p",
        ][..],
        &[
            "worker",
            "--executor",
            "nats://127.0.0.1:4222",
            "--cache",
            "s3://b/p",
        ][..],
        &["cache", "gc", "--shared", "s3://b/p", "--older-than", "1d"][..],
    ] {
        let out = p.vsum(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("built without the `distributed` feature"),
            "{err}"
        );
        assert!(err.contains("--features distributed"), "{err}");
    }
    assert!(!p.path().join("output").exists());
}
