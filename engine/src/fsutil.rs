//! Small filesystem helpers that make every write atomic.
//!
//! Nothing half-written may ever be trusted: files are written to a unique temporary
//! name in the destination folder, fsynced, renamed into place, and the folder fsynced
//! ([`write_atomic`]); records that are verified when read skip the fsyncs
//! ([`replace_atomic`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other writer (thread or process) will pick at the same time.
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:x}", std::process::id())
}

/// A temporary path beside `dest` (same folder, so rename is atomic).
pub fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp-{}", unique_suffix()))
}

/// Is this one of [`temp_beside`]'s names (a write in progress, maybe another process's)?
pub fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.contains(".tmp-"))
}

/// Reads a small file that is only ever replaced whole (temp, then rename), opened by
/// the caller (who may ask it something first, such as its mtime), and parses it, in as
/// few system calls as possible: one read, then close, when the file fits in one read
/// and `parse` accepts what came. A short read of a regular file is its end on local
/// filesystems, and `parse` is the proof: a record cut short never parses (entries carry
/// a checksum; refs are JSON). Otherwise it reads to the end and parses that.
pub fn read_parsed<T, E>(
    mut f: File,
    parse: impl Fn(&[u8]) -> Result<T, E>,
) -> io::Result<Result<T, E>> {
    use std::io::Read;
    const FIRST: usize = 16 * 1024;
    let mut buf = [0u8; FIRST];
    let n = loop {
        match f.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    if n < FIRST
        && let Ok(v) = parse(&buf[..n])
    {
        return Ok(Ok(v));
    }
    let mut all = buf[..n].to_vec();
    f.read_to_end(&mut all)?;
    Ok(parse(&all))
}

/// Writes `bytes` to `dest` atomically and durably.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = temp_beside(dest);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dest)?;
        sync_dir(dest.parent().unwrap_or(Path::new(".")));
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `dest` with `bytes` atomically, without waiting for the disk: a crash of
/// the process leaves the old file or the new one, never a mix; a power cut may lose
/// the new file (or, on some filesystems, leave it torn). For records that are checked
/// when read (checksummed entries) or that only say what vsum did (refs), where losing
/// the newest version costs a rerun of the job at most, never a wrong result.
pub fn replace_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = temp_beside(dest);
    let result = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, dest));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes `dest` (new) a copy of `src` that shares nothing with it afterwards: a reflink
/// where the filesystem has them (instant, no space), else a byte copy into the same new
/// file (no file is made and removed on the way: on ext4 without a journal every freed
/// inode slows the next file creations for minutes). Never a hard link, so neither file
/// can change the other. The copy gets the default mode; callers set the one they want.
pub fn clone_or_copy(src: &Path, dest: &Path) -> io::Result<()> {
    let mut from = File::open(src)?;
    let mut to = File::options().write(true).create_new(true).open(dest)?;
    let made = if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        Ok(())
    } else {
        // `io::copy` between files is `copy_file_range(2)`: in the kernel, no user buffer.
        io::copy(&mut from, &mut to).map(|_| ())
    };
    if made.is_err() {
        drop(to);
        let _ = fs::remove_file(dest);
    }
    made
}

/// Best-effort fsync of a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes `.` and `..` components lexically (`/a/b/../c` -> `/a/c`), without touching
/// the filesystem, so paths shown to users and stored in records read cleanly.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !matches!(
                    out.components().next_back(),
                    None | Some(Component::ParentDir)
                ) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The path from folder `from` to `to`, lexically (both absolute): `/a/b`, `/a/c/d`
/// gives `../c/d`. Used for links between output files.
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to) = (normalize(from), normalize(to));
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    out
}

/// Size of everything below `dir` (0 if it does not exist).
pub fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Human-readable byte count (1.5 MiB).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses sizes like `500M`, `10GiB`, `2g`, `1024`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

/// Parses ages like `30d`, `12h`, `45m`, `90s`, `2w` into seconds.
pub fn parse_age(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_parsed_reads_past_the_first_read_when_the_parse_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let parse = |b: &[u8]| serde_json::from_slice::<Vec<String>>(b);
        // Larger than one read: the first 16 KiB do not parse, the whole file does.
        let big: Vec<String> = (0..3000).map(|i| format!("item {i}")).collect();
        let path = dir.path().join("big.json");
        fs::write(&path, serde_json::to_vec(&big).unwrap()).unwrap();
        assert!(fs::metadata(&path).unwrap().len() > 16 * 1024);
        let read = |p: &Path| read_parsed(File::open(p)?, parse);
        assert_eq!(read(&path).unwrap().unwrap(), big);
        // Small and whole, small and cut short, missing.
        fs::write(&path, br#"["a","b"]"#).unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), ["a", "b"]);
        fs::write(&path, br#"["a","#).unwrap();
        assert!(read(&path).unwrap().is_err());
        let missing = read(&dir.path().join("none")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn relative_paths_climb_and_descend() {
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/c/d")),
            PathBuf::from("../c/d")
        );
        assert_eq!(
            relative(Path::new("/a/b/x/.."), Path::new("/a/b/f")),
            PathBuf::from("f")
        );
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(
            normalize(Path::new("../x/../../y")),
            PathBuf::from("../../y")
        );
    }

    #[test]
    fn sizes_and_ages_parse() {
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("2k"), Some(2048));
        assert_eq!(parse_size("1.5GiB"), Some(1_610_612_736));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_age("2d"), Some(172_800));
        assert_eq!(parse_age("3w"), Some(1_814_400));
        assert_eq!(parse_age("1y"), None);
    }

    #[test]
    fn atomic_write_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
