//! Quantized ggml Whisper weights (q8_0, q5_1), written by vsum itself at install time,
//! because no package ships a quantized ggml Whisper and whisper.cpp runs them faster.
//!
//! This is whisper.cpp's own `quantize` tool, rewritten: the header, mel filters and
//! vocabulary are copied, the header's `ftype` becomes `GGML_QNT_VERSION * 1000 +
//! GGML_FTYPE_MOSTLY_*`, and every 2-D tensor except the conv biases and the two
//! positional embeddings is quantized block by block (32 values a block, the reference
//! rounding of `ggml-quants.c`); all other tensors (1-D norms and biases, 3-D conv
//! weights) are copied as they are. whisper.cpp then creates its weight matrices with
//! the quantized type and reads the blocks directly.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use half::f16;

use super::{ModelError, ggml};

/// Values per block in both formats.
pub const QK: usize = 32;
/// `GGML_QNT_VERSION` of the whisper.cpp we link; written into the header's ftype.
const QNT_VERSION: i32 = 2;
const QNT_VERSION_FACTOR: i32 = 1000;

/// Tensors whisper.cpp keeps in f32 although they are 2-D (its quantize example's
/// `to_skip` list): the conv biases ([n, 1]) and the positional embeddings.
pub const NOT_QUANTIZED: [&str; 4] = [
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
];

/// A quantization format whisper.cpp reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    /// 32 int8 values and one f16 scale: 34 bytes a block (8.5 bits a weight).
    Q8_0,
    /// 32 5-bit values, an f16 scale and an f16 minimum: 24 bytes a block (6 bits).
    Q5_1,
}

impl QType {
    pub fn name(self) -> &'static str {
        match self {
            QType::Q8_0 => "q8_0",
            QType::Q5_1 => "q5_1",
        }
    }

    /// `ggml_type` of a tensor.
    pub fn ggml_type(self) -> i32 {
        match self {
            QType::Q8_0 => 8,
            QType::Q5_1 => 7,
        }
    }

    /// `ggml_ftype` of a whole model (`GGML_FTYPE_MOSTLY_*`).
    pub fn ftype(self) -> i32 {
        match self {
            QType::Q8_0 => 7,
            QType::Q5_1 => 9,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            QType::Q8_0 => 34,
            QType::Q5_1 => 24,
        }
    }

    /// Quantizes `x` (a multiple of [`QK`] values) and appends the blocks to `out`.
    pub fn quantize(self, x: &[f32], out: &mut Vec<u8>) {
        match self {
            QType::Q8_0 => quantize_q8_0(x, out),
            QType::Q5_1 => quantize_q5_1(x, out),
        }
    }

    /// The values the blocks in `q` stand for (what whisper.cpp computes with).
    pub fn dequantize(self, q: &[u8]) -> Vec<f32> {
        match self {
            QType::Q8_0 => dequantize_q8_0(q),
            QType::Q5_1 => dequantize_q5_1(q),
        }
    }
}

/// `quantize_row_q8_0_ref`: scale = max |x| / 127, values rounded half away from zero.
pub fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    assert_eq!(x.len() % QK, 0, "q8_0 needs whole blocks of {QK}");
    out.reserve(x.len() / QK * 34);
    for b in x.chunks_exact(QK) {
        let amax = b
            .iter()
            .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
    }
}

pub fn dequantize_q8_0(q: &[u8]) -> Vec<f32> {
    let mut y = Vec::with_capacity(q.len() / 34 * QK);
    for b in q.chunks_exact(34) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        y.extend(b[2..].iter().map(|&v| v as i8 as f32 * d));
    }
    y
}

/// `quantize_row_q5_1_ref`: scale = (max - min) / 31 and the minimum, 5-bit values
/// (low 4 bits in `qs`, value j and j + 16 sharing a byte; the fifth bits in `qh`).
pub fn quantize_q5_1(x: &[f32], out: &mut Vec<u8>) {
    assert_eq!(x.len() % QK, 0, "q5_1 needs whole blocks of {QK}");
    out.reserve(x.len() / QK * 24);
    for b in x.chunks_exact(QK) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in b {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        let mut qh = 0u32;
        let mut qs = [0u8; QK / 2];
        for j in 0..QK / 2 {
            // Truncation after +0.5, as the reference's (uint8_t) cast.
            let x0 = ((b[j] - min) * id + 0.5) as u8;
            let x1 = ((b[QK / 2 + j] - min) * id + 0.5) as u8;
            qs[j] = (x0 & 0x0f) | ((x1 & 0x0f) << 4);
            qh |= (((x0 & 0x10) >> 4) as u32) << j;
            qh |= (((x1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        out.extend_from_slice(&qh.to_le_bytes());
        out.extend_from_slice(&qs);
    }
}

pub fn dequantize_q5_1(q: &[u8]) -> Vec<f32> {
    let mut y = vec![0.0f32; q.len() / 24 * QK];
    for (b, y) in q.chunks_exact(24).zip(y.chunks_exact_mut(QK)) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..QK / 2 {
            let x0 = (b[8 + j] & 0x0f) as u32 | (((qh >> j) & 1) << 4);
            let x1 = (b[8 + j] >> 4) as u32 | (((qh >> (j + QK / 2)) & 1) << 4);
            y[j] = x0 as f32 * d + m;
            y[j + QK / 2] = x1 as f32 * d + m;
        }
    }
    y
}

/// Does whisper.cpp's quantize tool quantize this tensor?
pub fn quantizable(name: &str, n_dims: usize) -> bool {
    n_dims == 2 && !NOT_QUANTIZED.contains(&name)
}

/// What [`quantize_file`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub tensors: usize,
    pub quantized: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn read_i32(r: &mut impl Read) -> io::Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(i32::from_le_bytes(b))
}

/// Reads an i32, or `None` at a clean end of the file.
fn read_i32_or_end(r: &mut impl Read) -> io::Result<Option<i32>> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut b[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(Some(i32::from_le_bytes(b)))
}

fn copy_exact(r: &mut impl Read, w: &mut impl Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), w)?;
    if copied != n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Writes the `q` quantization of the f16/f32 ggml Whisper model at `input` to `out`.
/// The input is checked structurally first; a model that is already quantized, or
/// whose rows are not whole blocks, is refused.
pub fn quantize_file(input: &Path, out: &mut impl Write, q: QType) -> Result<Summary, ModelError> {
    let info = ggml::inspect(input)?;
    let ftype = info.hparams.ftype % QNT_VERSION_FACTOR;
    if !(0..=1).contains(&ftype) {
        return Err(ModelError::new(format!(
            "{} is already quantized (ftype {}); quantize an f16 or f32 model",
            input.display(),
            info.hparams.ftype
        )));
    }
    let f = File::open(input)
        .map_err(|e| ModelError::new(format!("cannot open {}: {e}", input.display())))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let io_err = |e: io::Error| {
        ModelError::new(format!(
            "quantizing {} to {}: {e}",
            input.display(),
            q.name()
        ))
    };
    let mut s = Summary::default();
    (|| -> Result<(), ModelError> {
        // Magic and hparams; the last one, ftype, is the quantized model's.
        for _ in 0..11 {
            let v = read_i32(&mut r).map_err(io_err)?;
            w.write_all(&v.to_le_bytes()).map_err(io_err)?;
        }
        read_i32(&mut r).map_err(io_err)?;
        let ftype = QNT_VERSION * QNT_VERSION_FACTOR + q.ftype();
        w.write_all(&ftype.to_le_bytes()).map_err(io_err)?;
        // Mel filters.
        let rows = read_i32(&mut r).map_err(io_err)?;
        let cols = read_i32(&mut r).map_err(io_err)?;
        w.write_all(&rows.to_le_bytes()).map_err(io_err)?;
        w.write_all(&cols.to_le_bytes()).map_err(io_err)?;
        copy_exact(&mut r, &mut w, rows as u64 * cols as u64 * 4).map_err(io_err)?;
        // Vocabulary.
        let n = read_i32(&mut r).map_err(io_err)?;
        w.write_all(&n.to_le_bytes()).map_err(io_err)?;
        for _ in 0..n {
            let l = read_i32(&mut r).map_err(io_err)?;
            w.write_all(&l.to_le_bytes()).map_err(io_err)?;
            copy_exact(&mut r, &mut w, l as u64).map_err(io_err)?;
        }
        // Tensors.
        let mut raw = Vec::new();
        let mut vals = Vec::new();
        let mut blocks = Vec::new();
        while let Some(n_dims) = read_i32_or_end(&mut r).map_err(io_err)? {
            let name_len = read_i32(&mut r).map_err(io_err)?;
            let ttype = read_i32(&mut r).map_err(io_err)?;
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(read_i32(&mut r).map_err(io_err)?);
            }
            let mut name = vec![0u8; name_len as usize];
            r.read_exact(&mut name).map_err(io_err)?;
            let name_s = String::from_utf8_lossy(&name).into_owned();
            let n: usize = dims.iter().map(|&d| d as usize).product();
            let elem = match ttype {
                0 => 4,
                1 => 2,
                t => {
                    return Err(ModelError::new(format!(
                        "{}: tensor '{name_s}' has ggml type {t}; only f32 and f16 models can be quantized",
                        input.display()
                    )));
                }
            };
            raw.resize(n * elem, 0);
            r.read_exact(&mut raw).map_err(io_err)?;
            s.tensors += 1;
            s.bytes_in += raw.len() as u64;
            let quantize = quantizable(&name_s, dims.len());
            if quantize && !(dims[0] as usize).is_multiple_of(QK) {
                return Err(ModelError::new(format!(
                    "{}: tensor '{name_s}' has rows of {} values, not a multiple of {QK}",
                    input.display(),
                    dims[0]
                )));
            }
            let out_type = if quantize { q.ggml_type() } else { ttype };
            for v in [n_dims, name_len, out_type] {
                w.write_all(&v.to_le_bytes()).map_err(io_err)?;
            }
            for d in &dims {
                w.write_all(&d.to_le_bytes()).map_err(io_err)?;
            }
            w.write_all(&name).map_err(io_err)?;
            if !quantize {
                w.write_all(&raw).map_err(io_err)?;
                s.bytes_out += raw.len() as u64;
                continue;
            }
            vals.clear();
            if ttype == 1 {
                vals.extend(
                    raw.chunks_exact(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
                );
            } else {
                vals.extend(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            blocks.clear();
            q.quantize(&vals, &mut blocks);
            w.write_all(&blocks).map_err(io_err)?;
            s.quantized += 1;
            s.bytes_out += blocks.len() as u64;
        }
        w.flush().map_err(io_err)
    })()?;
    if s.tensors != info.n_tensors {
        return Err(ModelError::new(format!(
            "{}: read {} tensors, the file has {}",
            input.display(),
            s.tensors,
            info.n_tensors
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values of several magnitudes, signs and a few zero blocks.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
                match (i / QK) % 5 {
                    0 => u * 0.1,
                    1 => u * 3.0 + 0.7,
                    2 => 0.0,
                    3 => u * 1e-3,
                    _ => (u * 2.0).powi(3) * 20.0,
                }
            })
            .collect()
    }

    /// The most f16 rounding can move `v`: half an ulp.
    fn f16_err(v: f32) -> f32 {
        (v.abs() / 2048.0).max(1.0 / (1u32 << 25) as f32)
    }

    #[test]
    fn q8_0_round_trip_stays_within_half_a_step() {
        let x = values(QK * 200, 1);
        let mut q = Vec::new();
        quantize_q8_0(&x, &mut q);
        assert_eq!(q.len(), 200 * 34);
        let y = dequantize_q8_0(&q);
        for (bx, by) in x.chunks(QK).zip(y.chunks(QK)) {
            let amax = bx.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let step = amax / 127.0;
            for (a, b) in bx.iter().zip(by) {
                // Half a step, plus the f16 rounding of the scale (half an f16 ulp:
                // 2^-11 relative, 2^-25 absolute for subnormals) times up to 127 steps.
                assert!(
                    (a - b).abs() <= 0.5 * step + 127.0 * f16_err(step),
                    "{a} -> {b} (step {step})"
                );
            }
            if amax == 0.0 {
                assert!(by.iter().all(|v| *v == 0.0));
            }
        }
    }

    #[test]
    fn q5_1_round_trip_stays_within_half_a_step() {
        let x = values(QK * 200, 2);
        let mut q = Vec::new();
        quantize_q5_1(&x, &mut q);
        assert_eq!(q.len(), 200 * 24);
        let y = dequantize_q5_1(&q);
        for (bx, by) in x.chunks(QK).zip(y.chunks(QK)) {
            let min = bx.iter().fold(f32::MAX, |m, v| m.min(*v));
            let max = bx.iter().fold(-f32::MAX, |m, v| m.max(*v));
            let step = (max - min) / 31.0;
            for (a, b) in bx.iter().zip(by) {
                assert!(
                    (a - b).abs() <= 0.5 * step + 31.0 * f16_err(step) + f16_err(min),
                    "{a} -> {b} (step {step}, min {min})"
                );
            }
        }
    }

    #[test]
    fn extremes_map_to_the_ends_of_the_code_range() {
        let mut x = vec![0.0f32; QK];
        x[3] = -2.0;
        x[7] = 1.0;
        let mut q = Vec::new();
        quantize_q8_0(&x, &mut q);
        assert_eq!(q[2 + 3] as i8, -127);
        assert_eq!(q[2 + 7] as i8, 64); // 1.0 / (2/127) = 63.5, rounded away from zero
        let mut q5 = Vec::new();
        quantize_q5_1(&x, &mut q5);
        let y = dequantize_q5_1(&q5);
        assert_eq!(y[3], -2.0);
        assert!((y[7] - 1.0).abs() < 0.05, "{}", y[7]);
    }

    /// Our blocks are byte for byte what ggml's own reference quantizer (linked through
    /// whisper-rs) writes for the same values.
    #[test]
    #[expect(unsafe_code, reason = "calls ggml's C quantizer to compare with it")]
    fn blocks_equal_ggmls_own_quantizer() {
        use whisper_rs::whisper_rs_sys as sys;
        let rows = 24usize;
        let per_row = QK * 12;
        let x = values(rows * per_row, 3);
        for (q, t) in [
            (QType::Q8_0, sys::ggml_type_GGML_TYPE_Q8_0),
            (QType::Q5_1, sys::ggml_type_GGML_TYPE_Q5_1),
        ] {
            let mut ours = Vec::new();
            q.quantize(&x, &mut ours);
            let mut theirs = vec![0u8; ours.len()];
            // SAFETY: `x` holds rows * per_row f32s and `theirs` the exact size of that
            // many blocks; ggml reads and writes only those.
            let n = unsafe {
                sys::ggml_quantize_chunk(
                    t,
                    x.as_ptr(),
                    theirs.as_mut_ptr().cast(),
                    0,
                    rows as i64,
                    per_row as i64,
                    std::ptr::null(),
                )
            };
            assert_eq!(n, ours.len(), "{}", q.name());
            assert!(ours == theirs, "{} blocks differ from ggml's", q.name());
        }
    }

    /// Tensors of a ggml file: name -> (n_dims, type, data).
    type Tensors = std::collections::BTreeMap<String, (usize, i32, Vec<u8>)>;

    /// The header's ftype and the tensors of a ggml file.
    fn tensors(b: &[u8]) -> (i32, Tensors) {
        let i32_at = |at: usize| i32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let ftype = i32_at(44);
        let mut at = 48;
        let (rows, cols) = (i32_at(at), i32_at(at + 4));
        at += 8 + (rows * cols * 4) as usize;
        let n = i32_at(at);
        at += 4;
        for _ in 0..n {
            at += 4 + i32_at(at) as usize;
        }
        let mut t = std::collections::BTreeMap::new();
        while at < b.len() {
            let (nd, nl, ty) = (i32_at(at), i32_at(at + 4) as usize, i32_at(at + 8));
            at += 12;
            let dims: Vec<usize> = (0..nd as usize)
                .map(|i| i32_at(at + 4 * i) as usize)
                .collect();
            at += 4 * nd as usize;
            let name = String::from_utf8(b[at..at + nl].to_vec()).unwrap();
            at += nl;
            let n: usize = dims.iter().product();
            let size = match ty {
                0 => n * 4,
                1 => n * 2,
                8 => n / QK * 34,
                7 => n / QK * 24,
                _ => panic!("type {ty}"),
            };
            t.insert(name, (dims.len(), ty, b[at..at + size].to_vec()));
            at += size;
        }
        (ftype, t)
    }

    #[test]
    fn quantizes_a_model_file_as_whisper_cpp_does() {
        use super::super::ct2::{Ct2Model, DType};
        use super::super::ct2ggml::{convert, tests as ct2t};
        let dir = tempfile::tempdir().unwrap();
        let m = Ct2Model::parse(ct2t::tiny_ct2_sized(DType::F16, 32)).unwrap();
        let (mel, tokens) = ct2t::assets();
        let mut f16_model = Vec::new();
        convert(&m, &mel, &tokens, &mut f16_model).unwrap();
        let src = dir.path().join("f16.bin");
        std::fs::write(&src, &f16_model).unwrap();
        let (_, before) = tensors(&f16_model);
        for q in [QType::Q8_0, QType::Q5_1] {
            let mut out = Vec::new();
            let s = quantize_file(&src, &mut out, q).unwrap();
            // Header, mel filters and vocabulary unchanged but for the ftype.
            let head = 48 + 8 + 3 * 201 * 4 + 4 + (4 + 1) + (4 + 2) + (4 + 2);
            assert_eq!(out[..44], f16_model[..44]);
            assert_eq!(out[48..head], f16_model[48..head]);
            let (ftype, after) = tensors(&out);
            assert_eq!(ftype, 2000 + q.ftype());
            assert_eq!(after.len(), before.len());
            assert_eq!(s.tensors, before.len());
            let mut quantized = 0;
            for (name, (nd, ty, data)) in &before {
                let (_, qty, qdata) = &after[name];
                if quantizable(name, *nd) {
                    quantized += 1;
                    assert_eq!(*ty, 1, "{name}");
                    assert_eq!(*qty, q.ggml_type(), "{name}");
                    let y = q.dequantize(qdata);
                    let x: Vec<f32> = data
                        .chunks_exact(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect();
                    assert_eq!(x.len(), y.len());
                    for (bx, by) in x.chunks(QK).zip(y.chunks(QK)) {
                        let amax = bx.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        // Within 0.6 of a step of either format.
                        let tol = 0.6 * amax / 127.0 + 0.6 * 2.0 * amax / 31.0;
                        for (a, b) in bx.iter().zip(by) {
                            assert!((a - b).abs() <= tol, "{name}: {a} -> {b}");
                        }
                    }
                } else {
                    assert_eq!((qty, qdata), (ty, data), "{name} must be copied");
                }
            }
            assert_eq!(quantized, s.quantized);
            // Weights, token embedding and cross-attention: 2 + 13 per layer here.
            assert_eq!(quantized, 1 + 6 + 10);
            assert!(after["encoder.conv1.bias"].1 == 0 && after["encoder.conv1.weight"].1 == 1);
            // The structural check reads quantized files too; a quantized file is refused.
            let p = dir.path().join(format!("{}.bin", q.name()));
            std::fs::write(&p, &out).unwrap();
            assert!(ggml::inspect(&p).unwrap().fully_checked);
            let e = quantize_file(&p, &mut Vec::new(), q).unwrap_err();
            assert!(e.message.contains("already quantized"), "{e}");
        }
        // Rows that are not whole blocks are refused, naming the tensor.
        let m4 = Ct2Model::parse(ct2t::tiny_ct2_sized(DType::F16, 4)).unwrap();
        let mut small = Vec::new();
        convert(&m4, &mel, &tokens, &mut small).unwrap();
        std::fs::write(&src, &small).unwrap();
        let e = quantize_file(&src, &mut Vec::new(), QType::Q8_0).unwrap_err();
        assert!(e.message.contains("not a multiple of 32"), "{e}");
    }

    #[test]
    fn only_2d_weights_are_quantized() {
        assert!(quantizable("encoder.blocks.0.attn.query.weight", 2));
        assert!(quantizable("decoder.token_embedding.weight", 2));
        assert!(!quantizable("encoder.blocks.0.attn.query.bias", 1));
        assert!(!quantizable("encoder.conv1.weight", 3));
        assert!(!quantizable("encoder.conv1.bias", 2));
        assert!(!quantizable("decoder.positional_embedding", 2));
    }
}
