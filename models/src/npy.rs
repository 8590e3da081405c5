//! Just enough of NumPy's `.npy`/`.npz` formats to read Whisper's mel filter bank.
//!
//! `mel_filters.npz` (openai-whisper sdist) is a zip of `.npy` files; each is a magic,
//! a version, a header length, a Python-dict header (`descr`, `fortran_order`, `shape`)
//! and the raw array. Only little-endian f32 in C order is accepted.

use std::io::{Cursor, Read};

use super::ModelError;

/// A 2-D-or-more f32 array.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads array `name` (`mel_80`) from the bytes of an `.npz`.
pub fn read_npz_f32(npz: &[u8], name: &str) -> Result<Array, ModelError> {
    let mut z = zip::ZipArchive::new(Cursor::new(npz))
        .map_err(|e| ModelError::new(format!("not an .npz (zip) file: {e}")))?;
    let member = format!("{name}.npy");
    let mut f = z
        .by_name(&member)
        .map_err(|_| ModelError::new(format!("the .npz has no array '{name}'")))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| ModelError::new(format!("reading '{member}': {e}")))?;
    read_npy_f32(&bytes).map_err(|e| e.context(&member))
}

/// Parses the bytes of one `.npy` holding little-endian f32 in C order.
pub fn read_npy_f32(b: &[u8]) -> Result<Array, ModelError> {
    let bad = |m: &str| ModelError::new(format!("not a supported .npy: {m}"));
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad("no NUMPY magic"));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(bad(&format!("version {v}"))),
    };
    let header = b
        .get(start..start + hlen)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| bad("no descr"))?;
    if descr.trim_matches(|c| c == '\'' || c == '"') != "<f4" {
        return Err(bad(&format!("dtype {descr}, want <f4")));
    }
    if dict_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("Fortran order"));
    }
    let shape_s = dict_value(header, "shape").ok_or_else(|| bad("no shape"))?;
    let inner = shape_s
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("bad shape"))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &b[start + hlen..];
    if body.len() != n * 4 {
        return Err(bad(&format!(
            "{} data bytes for shape {shape:?}",
            body.len()
        )));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Array { shape, data })
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    Some(rest.trim())
}

#[cfg(test)]
pub(crate) fn write_npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_an_npz_array() {
        let npy = write_npy_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let mut buf = Vec::new();
        {
            let mut z = zip::ZipWriter::new(Cursor::new(&mut buf));
            z.start_file("mel_80.npy", zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(&npy).unwrap();
            z.finish().unwrap();
        }
        let a = read_npz_f32(&buf, "mel_80").unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], 6.5);
        assert!(read_npz_f32(&buf, "mel_128").is_err());
    }

    #[test]
    fn rejects_other_dtypes_and_short_data() {
        let mut npy = write_npy_f32(&[2], &[1.0, 2.0]);
        npy.truncate(npy.len() - 1);
        assert!(
            read_npy_f32(&npy)
                .unwrap_err()
                .message
                .contains("data bytes")
        );
        let mut b = write_npy_f32(&[1], &[1.0]);
        let at = b.windows(3).position(|w| w == b"<f4").unwrap();
        b[at + 2] = b'8';
        assert!(read_npy_f32(&b).is_err());
    }
}
