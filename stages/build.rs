//! Hashes the sources that the `vsum` binary and the media helper share (this crate,
//! the engine, the lock file) into `VSUM_SOURCES_ID`: `vsum` refuses a helper built
//! from other sources, which would run old code under new cache keys.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let roots = ["src", "../engine/src", "../Cargo.lock", "build.rs"];
    let mut all = Vec::new();
    for r in roots {
        println!("cargo:rerun-if-changed={r}");
        let p = Path::new(r);
        if p.is_dir() {
            files(p, &mut all);
        } else {
            all.push(p.to_path_buf());
        }
    }
    all.sort();
    // SipHash with fixed keys: the same sources give the same id on every build.
    let mut h = std::hash::DefaultHasher::new();
    for p in &all {
        h.write(p.to_string_lossy().as_bytes());
        h.write(&std::fs::read(p).unwrap_or_default());
    }
    println!("cargo:rustc-env=VSUM_SOURCES_ID={:016x}", h.finish());
}
