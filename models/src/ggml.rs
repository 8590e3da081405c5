//! The ggml Whisper file that whisper.cpp loads: its header, and a structural check.
//!
//! Layout (little-endian i32s): magic `0x67676d6c`; hparams n_vocab, n_audio_ctx,
//! n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head,
//! n_text_layer, n_mels, ftype; the mel filter bank (rows, cols, f32 data); the
//! vocabulary (count, then length + bytes each); then tensors (n_dims, name length,
//! type, dims innermost first, name, data). [`inspect`] walks all of it without reading
//! tensor data, so a truncated, corrupt or foreign file is refused with a clear message
//! before whisper.cpp sees it (whisper.cpp itself may abort on some bad files).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use serde::Serialize;

use super::ModelError;

pub const MAGIC: u32 = 0x6767_6d6c;

/// Whisper hyper-parameters, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hparams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    pub ftype: i32,
}

impl Hparams {
    /// Multilingual models have 51865 or more tokens; English-only ones 51864.
    pub fn multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }

    /// Tensors a complete model holds.
    pub fn expected_tensors(&self) -> usize {
        11 + 15 * self.n_audio_layer.max(0) as usize + 24 * self.n_text_layer.max(0) as usize
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&MAGIC.to_le_bytes())?;
        for v in self.as_array() {
            out.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }

    fn as_array(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    fn from_array(a: [i32; 11]) -> Self {
        Hparams {
            n_vocab: a[0],
            n_audio_ctx: a[1],
            n_audio_state: a[2],
            n_audio_head: a[3],
            n_audio_layer: a[4],
            n_text_ctx: a[5],
            n_text_state: a[6],
            n_text_head: a[7],
            n_text_layer: a[8],
            n_mels: a[9],
            ftype: a[10],
        }
    }
}

/// What [`inspect`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub hparams: Hparams,
    pub n_tokens: usize,
    pub n_tensors: usize,
    /// False when a tensor type this check does not know stopped the walk early.
    pub fully_checked: bool,
}

/// (elements per block, bytes per block) of ggml tensor types.
fn type_block(t: i32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),     // f32
        1 => (1, 2),     // f16
        2 => (32, 18),   // q4_0
        3 => (32, 20),   // q4_1
        6 => (32, 22),   // q5_0
        7 => (32, 24),   // q5_1
        8 => (32, 34),   // q8_0
        10 => (256, 84), // q2_k
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210), // q6_k
        _ => return None,
    })
}

/// A buffered reader that knows its position and the file's length.
struct Walker {
    r: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Walker {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.r.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn read_i32(&mut self) -> io::Result<i32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(i32::from_le_bytes(b))
    }

    /// Skips `n` bytes, failing if that passes the end of the file.
    fn skip(&mut self, n: u64) -> io::Result<()> {
        if self.pos.saturating_add(n) > self.len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"));
        }
        self.r.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
    }

    fn at_end(&self) -> bool {
        self.pos >= self.len
    }
}

/// Checks that `path` is a complete ggml Whisper model; returns its header.
pub fn inspect(path: &Path) -> Result<Info, ModelError> {
    let f = File::open(path)
        .map_err(|e| ModelError::new(format!("cannot open model {}: {e}", path.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = Walker {
        r: BufReader::new(f),
        pos: 0,
        len,
    };
    let corrupt = |what: String| {
        ModelError::new(format!(
            "{} is not a complete ggml Whisper model: {what}",
            path.display()
        ))
    };
    let eof = |e: io::Error| corrupt(format!("truncated ({e})"));
    let magic = r.read_i32().map_err(eof)? as u32;
    if magic != MAGIC {
        let mut hint =
            "give a ggml Whisper model (ggml-*.bin), e.g. an installed one: `vsum models list`"
                .to_string();
        if magic == 6 {
            hint = "this looks like a CTranslate2 model.bin; `vsum models install` converts those (whisper-tiny.en, whisper-base)".into();
        }
        return Err(corrupt(format!("wrong magic 0x{magic:08x}, want 0x{MAGIC:08x}")).hint(hint));
    }
    let mut a = [0i32; 11];
    for v in &mut a {
        *v = r.read_i32().map_err(eof)?;
    }
    let h = Hparams::from_array(a);
    let sane = |v: i32, max: i32| (1..=max).contains(&v);
    if !(sane(h.n_vocab, 1 << 20)
        && sane(h.n_audio_ctx, 1 << 16)
        && sane(h.n_audio_state, 1 << 16)
        && sane(h.n_audio_head, 1024)
        && sane(h.n_audio_layer, 1024)
        && sane(h.n_text_ctx, 1 << 16)
        && sane(h.n_text_state, 1 << 16)
        && sane(h.n_text_head, 1024)
        && sane(h.n_text_layer, 1024)
        && sane(h.n_mels, 1024))
    {
        return Err(corrupt(format!("implausible hyper-parameters {h:?}")));
    }
    let rows = r.read_i32().map_err(eof)?;
    let cols = r.read_i32().map_err(eof)?;
    if rows != h.n_mels || !(1..=4096).contains(&cols) {
        return Err(corrupt(format!(
            "mel filters {rows}x{cols} for {} mels",
            h.n_mels
        )));
    }
    r.skip(rows as u64 * cols as u64 * 4).map_err(eof)?;
    let n_tokens = r.read_i32().map_err(eof)?;
    if !(0..=h.n_vocab).contains(&n_tokens) {
        return Err(corrupt(format!(
            "{n_tokens} tokens for n_vocab {}",
            h.n_vocab
        )));
    }
    for _ in 0..n_tokens {
        let l = r.read_i32().map_err(eof)?;
        if !(0..=1024).contains(&l) {
            return Err(corrupt(format!("a token of length {l}")));
        }
        r.skip(l as u64).map_err(eof)?;
    }
    let mut n_tensors = 0;
    let mut fully_checked = true;
    loop {
        if r.at_end() {
            break;
        }
        let n_dims = r.read_i32().map_err(eof)?;
        let name_len = r.read_i32().map_err(eof)?;
        let ttype = r.read_i32().map_err(eof)?;
        if !(1..=4).contains(&n_dims) || !(1..=512).contains(&name_len) {
            return Err(corrupt(format!(
                "tensor {n_tensors} has {n_dims} dims and a {name_len}-byte name"
            )));
        }
        let mut n = 1u64;
        for _ in 0..n_dims {
            let d = r.read_i32().map_err(eof)?;
            if d < 1 {
                return Err(corrupt(format!("tensor {n_tensors} has dimension {d}")));
            }
            n = n.saturating_mul(d as u64);
        }
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name).map_err(eof)?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let Some((per, bytes)) = type_block(ttype) else {
            fully_checked = false;
            n_tensors += 1;
            break;
        };
        let size = n.div_ceil(per).saturating_mul(bytes);
        r.skip(size).map_err(|_| {
            corrupt(format!(
                "tensor '{name}' needs {size} bytes past the end of the file"
            ))
        })?;
        n_tensors += 1;
    }
    if fully_checked && n_tensors != h.expected_tensors() {
        return Err(corrupt(format!(
            "{n_tensors} tensors, a model of this shape has {}",
            h.expected_tensors()
        )));
    }
    Ok(Info {
        hparams: h,
        n_tokens: n_tokens as usize,
        n_tensors,
        fully_checked,
    })
}
