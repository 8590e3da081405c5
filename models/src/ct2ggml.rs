//! Converts a CTranslate2 (faster-whisper) Whisper `model.bin` into the ggml file
//! whisper.cpp loads, so Whisper weights from the package registries can be used.
//!
//! The mapping follows `shared/WHISPER-CONVERSION.md`: CTranslate2 variable names map to
//! OpenAI's; fused q/k/v (self attention) and k/v (cross attention) projections are
//! split in equal row blocks and the all-zero key biases dropped; 1-D tensors, the conv
//! biases (as [n, 1]) and both positional embeddings are written as f32, the rest as
//! f16. The mel filter bank and the vocabulary are not in `model.bin`: they come from
//! the openai-whisper sdist (`mel_filters.npz`, `*.tiktoken`).

use std::collections::BTreeSet;
use std::io::{self, Write};

use half::{bf16, f16};

use super::ModelError;
use super::ct2::{Ct2Model, DType, Variable};
use super::ggml::Hparams;
use super::npy::Array;

/// Output element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    F32,
    F16,
}

/// The hyper-parameters a CTranslate2 Whisper model implies.
pub fn hparams(m: &Ct2Model) -> Result<Hparams, ModelError> {
    if m.spec != "WhisperSpec" {
        return Err(ModelError::new(format!(
            "the CTranslate2 model is a '{}', not a Whisper model (WhisperSpec)",
            m.spec
        )));
    }
    let dim = |name: &str, i: usize| -> Result<i32, ModelError> {
        let v = m.var(name)?;
        v.dims.get(i).map(|&d| d as i32).ok_or_else(|| {
            ModelError::new(format!("'{name}' has dims {:?}, expected more", v.dims))
        })
    };
    Ok(Hparams {
        n_vocab: dim("decoder/embeddings/weight", 0)?,
        n_audio_ctx: dim("encoder/position_encodings/encodings", 0)?,
        n_audio_state: dim("encoder/position_encodings/encodings", 1)?,
        n_audio_head: m.scalar("encoder/num_heads")? as i32,
        n_audio_layer: layers(m, "encoder")? as i32,
        n_text_ctx: dim("decoder/position_encodings/encodings", 0)?,
        n_text_state: dim("decoder/embeddings/weight", 1)?,
        n_text_head: m.scalar("decoder/num_heads")? as i32,
        n_text_layer: layers(m, "decoder")? as i32,
        n_mels: dim("encoder/conv1/weight", 1)?,
        ftype: 1,
    })
}

/// Counts `side/layer_N/` prefixes; they must run 0..N.
fn layers(m: &Ct2Model, side: &str) -> Result<usize, ModelError> {
    let prefix = format!("{side}/layer_");
    let ids: BTreeSet<usize> = m
        .names()
        .filter_map(|n| n.strip_prefix(&prefix))
        .filter_map(|rest| rest.split('/').next())
        .filter_map(|i| i.parse().ok())
        .collect();
    if ids.iter().copied().ne(0..ids.len()) {
        return Err(ModelError::new(format!(
            "{side} layers are not numbered 0..n: {ids:?}"
        )));
    }
    if ids.is_empty() {
        return Err(ModelError::new(format!("the model has no {side} layers")));
    }
    Ok(ids.len())
}

struct Writer<'a, W: Write> {
    m: &'a Ct2Model,
    out: &'a mut W,
    n_tensors: usize,
}

impl<W: Write> Writer<'_, W> {
    /// Writes one tensor: `dims` in OpenAI (row-major, outermost first) order.
    fn tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        src: DType,
        data: &[u8],
        out: Out,
    ) -> Result<(), ModelError> {
        let io = |e: io::Error| ModelError::new(format!("writing tensor '{name}': {e}"));
        let n: usize = dims.iter().product();
        if data.len() != n * src.size() {
            return Err(ModelError::new(format!(
                "tensor '{name}': {} bytes for dims {dims:?}",
                data.len()
            )));
        }
        let w = &mut *self.out;
        w.write_all(&(dims.len() as i32).to_le_bytes())
            .map_err(io)?;
        w.write_all(&(name.len() as i32).to_le_bytes())
            .map_err(io)?;
        let code: i32 = if out == Out::F16 { 1 } else { 0 };
        w.write_all(&code.to_le_bytes()).map_err(io)?;
        for d in dims.iter().rev() {
            w.write_all(&(*d as i32).to_le_bytes()).map_err(io)?;
        }
        w.write_all(name.as_bytes()).map_err(io)?;
        let bad_src = || {
            ModelError::new(format!(
                "tensor '{name}' is {src:?}: quantized CTranslate2 models are not supported"
            ))
            .hint("use a float16 or float32 CTranslate2 model")
        };
        match (src, out) {
            (DType::F16, Out::F16) | (DType::F32, Out::F32) => w.write_all(data).map_err(io)?,
            (DType::F16 | DType::BF16 | DType::F32, _) => {
                let mut buf = Vec::with_capacity(n * if out == Out::F16 { 2 } else { 4 });
                for c in data.chunks_exact(src.size()) {
                    let v = match src {
                        DType::F16 => f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32(),
                        DType::BF16 => bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32(),
                        _ => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    };
                    match out {
                        Out::F16 => buf.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
                        Out::F32 => buf.extend_from_slice(&v.to_le_bytes()),
                    }
                }
                w.write_all(&buf).map_err(io)?;
            }
            _ => return Err(bad_src()),
        }
        self.n_tensors += 1;
        Ok(())
    }

    /// A variable copied whole; f32 when 1-D or forced, else f16.
    fn copy(&mut self, to: &str, from: &str, force_f32: bool) -> Result<(), ModelError> {
        let v = self.m.var(from)?;
        let out = if force_f32 || v.dims.len() < 2 {
            Out::F32
        } else {
            Out::F16
        };
        let data = self.m.data(v);
        self.tensor(to, &v.dims.clone(), v.dtype, data, out)
    }

    /// A linear layer (weight + bias) or a layer norm (gamma/beta -> weight/bias).
    fn linear(&mut self, to: &str, from: &str) -> Result<(), ModelError> {
        self.copy(&format!("{to}.weight"), &format!("{from}/weight"), false)?;
        self.copy(&format!("{to}.bias"), &format!("{from}/bias"), false)
    }

    fn norm(&mut self, to: &str, from: &str) -> Result<(), ModelError> {
        self.copy(&format!("{to}.weight"), &format!("{from}/gamma"), true)?;
        self.copy(&format!("{to}.bias"), &format!("{from}/beta"), true)
    }

    /// Splits a fused projection into `names.len()` equal row blocks. Names ending in
    /// `!` are key projections: their weight is kept, their (zero) bias dropped.
    fn split(&mut self, from: &str, names: &[&str], n_state: usize) -> Result<(), ModelError> {
        let w = self.m.var(&format!("{from}/weight"))?.clone();
        let b = self.m.var(&format!("{from}/bias"))?.clone();
        let k = names.len();
        if w.dims.len() != 2 || w.dims[0] != k * n_state || b.dims != [k * n_state] {
            return Err(ModelError::new(format!(
                "'{from}' is {:?} + bias {:?}, expected a fused [{} x {n_state}] projection",
                w.dims,
                b.dims,
                k * n_state
            )));
        }
        for (i, name) in names.iter().enumerate() {
            let (is_key, name) = match name.strip_suffix('!') {
                Some(n) => (true, n),
                None => (false, *name),
            };
            let (dims, data) = rows(self.m, &w, i * n_state, n_state);
            self.tensor(&format!("{name}.weight"), &dims, w.dtype, data, Out::F16)?;
            if !is_key {
                let (dims, data) = rows(self.m, &b, i * n_state, n_state);
                self.tensor(&format!("{name}.bias"), &dims, b.dtype, data, Out::F32)?;
            }
        }
        Ok(())
    }

    fn block_common(&mut self, to: &str, from: &str, n_state: usize) -> Result<(), ModelError> {
        self.split(
            &format!("{from}/self_attention/linear_0"),
            &[
                &format!("{to}.attn.query"),
                &format!("{to}.attn.key!"),
                &format!("{to}.attn.value"),
            ],
            n_state,
        )?;
        self.linear(
            &format!("{to}.attn.out"),
            &format!("{from}/self_attention/linear_1"),
        )?;
        self.norm(
            &format!("{to}.attn_ln"),
            &format!("{from}/self_attention/layer_norm"),
        )?;
        self.linear(&format!("{to}.mlp.0"), &format!("{from}/ffn/linear_0"))?;
        self.linear(&format!("{to}.mlp.2"), &format!("{from}/ffn/linear_1"))?;
        self.norm(&format!("{to}.mlp_ln"), &format!("{from}/ffn/layer_norm"))
    }
}

/// Writes the ggml model for `m` to `out`, with the mel filter bank `mel`
/// (`mel_<n_mels>`, shape [n_mels, 201]) and the BPE `tokens` in rank order
/// (`gpt2.tiktoken` for English-only models, `multilingual.tiktoken` otherwise).
pub fn convert(
    m: &Ct2Model,
    mel: &Array,
    tokens: &[Vec<u8>],
    out: &mut impl Write,
) -> Result<Hparams, ModelError> {
    let h = hparams(m)?;
    if mel.shape.len() != 2 || mel.shape[0] != h.n_mels as usize {
        return Err(ModelError::new(format!(
            "mel filters have shape {:?}, the model needs {} mels",
            mel.shape, h.n_mels
        )));
    }
    if tokens.len() > h.n_vocab as usize {
        return Err(ModelError::new(format!(
            "{} vocabulary tokens for a model with n_vocab {}: wrong .tiktoken file",
            tokens.len(),
            h.n_vocab
        )));
    }
    let io = |e: io::Error| ModelError::new(format!("writing the ggml header: {e}"));
    h.write(out).map_err(io)?;
    out.write_all(&(mel.shape[0] as i32).to_le_bytes())
        .map_err(io)?;
    out.write_all(&(mel.shape[1] as i32).to_le_bytes())
        .map_err(io)?;
    let mut buf = Vec::with_capacity(mel.data.len() * 4);
    for v in &mel.data {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    out.write_all(&buf).map_err(io)?;
    out.write_all(&(tokens.len() as i32).to_le_bytes())
        .map_err(io)?;
    for t in tokens {
        out.write_all(&(t.len() as i32).to_le_bytes()).map_err(io)?;
        out.write_all(t).map_err(io)?;
    }

    let mut w = Writer {
        m,
        out,
        n_tensors: 0,
    };
    let a_state = h.n_audio_state as usize;
    let t_state = h.n_text_state as usize;
    w.copy(
        "encoder.positional_embedding",
        "encoder/position_encodings/encodings",
        true,
    )?;
    w.copy("encoder.conv1.weight", "encoder/conv1/weight", false)?;
    conv_bias(&mut w, "encoder.conv1.bias", "encoder/conv1/bias")?;
    w.copy("encoder.conv2.weight", "encoder/conv2/weight", false)?;
    conv_bias(&mut w, "encoder.conv2.bias", "encoder/conv2/bias")?;
    for i in 0..h.n_audio_layer {
        w.block_common(
            &format!("encoder.blocks.{i}"),
            &format!("encoder/layer_{i}"),
            a_state,
        )?;
    }
    w.norm("encoder.ln_post", "encoder/layer_norm")?;
    w.copy(
        "decoder.positional_embedding",
        "decoder/position_encodings/encodings",
        true,
    )?;
    w.copy(
        "decoder.token_embedding.weight",
        "decoder/embeddings/weight",
        false,
    )?;
    for i in 0..h.n_text_layer {
        let (to, from) = (format!("decoder.blocks.{i}"), format!("decoder/layer_{i}"));
        w.block_common(&to, &from, t_state)?;
        w.linear(
            &format!("{to}.cross_attn.query"),
            &format!("{from}/attention/linear_0"),
        )?;
        w.split(
            &format!("{from}/attention/linear_1"),
            &[
                &format!("{to}.cross_attn.key!"),
                &format!("{to}.cross_attn.value"),
            ],
            t_state,
        )?;
        w.linear(
            &format!("{to}.cross_attn.out"),
            &format!("{from}/attention/linear_2"),
        )?;
        w.norm(
            &format!("{to}.cross_attn_ln"),
            &format!("{from}/attention/layer_norm"),
        )?;
    }
    w.norm("decoder.ln", "decoder/layer_norm")?;
    debug_assert_eq!(w.n_tensors, h.expected_tensors());
    Ok(h)
}

/// Rows `[start, start + count)` of a variable (1-D: elements).
fn rows<'m>(m: &'m Ct2Model, v: &Variable, start: usize, count: usize) -> (Vec<usize>, &'m [u8]) {
    let row: usize = v.dims[1..].iter().product::<usize>() * v.dtype.size();
    let data = &m.data(v)[start * row..(start + count) * row];
    let mut dims = v.dims.clone();
    dims[0] = count;
    (dims, data)
}

/// Conv biases are stored as [n, 1] f32.
fn conv_bias<W: Write>(w: &mut Writer<'_, W>, to: &str, from: &str) -> Result<(), ModelError> {
    let v = w.m.var(from)?;
    let data = w.m.data(v);
    w.tensor(to, &[v.len(), 1], v.dtype, data, Out::F32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::ct2::encode;
    use super::super::ggml;
    use super::*;

    /// A synthetic Whisper of n_state 4, 2 heads, 1 encoder and 1 decoder layer, 3 mels,
    /// vocabulary 6, where every element encodes its position so splits can be checked.
    fn tiny_ct2(dtype: DType) -> Vec<u8> {
        tiny_ct2_sized(dtype, 4)
    }

    /// [`tiny_ct2`] with n_state `s` (32 makes every row a whole quantization block).
    pub(crate) fn tiny_ct2_sized(dtype: DType, s: usize) -> Vec<u8> {
        let mut vars: Vec<(String, Vec<usize>, DType, Vec<u8>)> = Vec::new();
        let mut add = |name: &str, dims: Vec<usize>, base: f32| {
            let n: usize = dims.iter().product();
            let vals: Vec<f32> = (0..n).map(|i| base + i as f32).collect();
            let dt = match dtype {
                DType::I8 if dims.len() < 2 => DType::F32,
                d => d,
            };
            let data: Vec<u8> = match dt {
                DType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
                DType::I8 => vals.iter().map(|v| *v as i8 as u8).collect(),
                _ => vals
                    .iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            vars.push((name.to_string(), dims, dt, data));
        };
        add("encoder/conv1/weight", vec![s, 3, 3], 0.0);
        add("encoder/conv1/bias", vec![s], 0.0);
        add("encoder/conv2/weight", vec![s, s, 3], 0.0);
        add("encoder/conv2/bias", vec![s], 0.0);
        add("encoder/position_encodings/encodings", vec![5, s], 0.0);
        add("decoder/position_encodings/encodings", vec![7, s], 0.0);
        add("decoder/embeddings/weight", vec![6, s], 0.0);
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            add(
                &format!("{l}/self_attention/linear_0/weight"),
                vec![3 * s, s],
                100.0,
            );
            add(
                &format!("{l}/self_attention/linear_0/bias"),
                vec![3 * s],
                200.0,
            );
            add(
                &format!("{l}/self_attention/linear_1/weight"),
                vec![s, s],
                0.0,
            );
            add(&format!("{l}/self_attention/linear_1/bias"), vec![s], 0.0);
            for ln in ["self_attention/layer_norm", "ffn/layer_norm"] {
                add(&format!("{l}/{ln}/gamma"), vec![s], 1.0);
                add(&format!("{l}/{ln}/beta"), vec![s], 0.0);
            }
            add(&format!("{l}/ffn/linear_0/weight"), vec![4 * s, s], 0.0);
            add(&format!("{l}/ffn/linear_0/bias"), vec![4 * s], 0.0);
            add(&format!("{l}/ffn/linear_1/weight"), vec![s, 4 * s], 0.0);
            add(&format!("{l}/ffn/linear_1/bias"), vec![s], 0.0);
            add(&format!("{side}/layer_norm/gamma"), vec![s], 1.0);
            add(&format!("{side}/layer_norm/beta"), vec![s], 0.0);
        }
        let l = "decoder/layer_0/attention";
        add(&format!("{l}/linear_0/weight"), vec![s, s], 0.0);
        add(&format!("{l}/linear_0/bias"), vec![s], 0.0);
        add(&format!("{l}/linear_1/weight"), vec![2 * s, s], 300.0);
        add(&format!("{l}/linear_1/bias"), vec![2 * s], 400.0);
        add(&format!("{l}/linear_2/weight"), vec![s, s], 0.0);
        add(&format!("{l}/linear_2/bias"), vec![s], 0.0);
        add(&format!("{l}/layer_norm/gamma"), vec![s], 1.0);
        add(&format!("{l}/layer_norm/beta"), vec![s], 0.0);
        for side in ["encoder", "decoder"] {
            vars.push((
                format!("{side}/num_heads"),
                vec![],
                DType::I16,
                2i16.to_le_bytes().to_vec(),
            ));
        }
        encode(
            "WhisperSpec",
            3,
            &vars,
            &[("decoder/projection/weight", "decoder/embeddings/weight")],
        )
    }

    pub(crate) fn assets() -> (Array, Vec<Vec<u8>>) {
        let mel = Array {
            shape: vec![3, 201],
            data: (0..603).map(|i| i as f32 / 1000.0).collect(),
        };
        let tokens = vec![b"a".to_vec(), b"bc".to_vec(), b" d".to_vec()];
        (mel, tokens)
    }

    /// Parses a ggml file into (hparams, tensors: name -> (dims innermost first, type, bytes)).
    type Tensors = std::collections::BTreeMap<String, (Vec<i32>, i32, Vec<u8>)>;
    fn read_ggml(b: &[u8]) -> (Vec<i32>, Vec<f32>, Vec<Vec<u8>>, Tensors) {
        let mut at = 0;
        let i32_ = |at: &mut usize| {
            let v = i32::from_le_bytes(b[*at..*at + 4].try_into().unwrap());
            *at += 4;
            v
        };
        let head: Vec<i32> = (0..12).map(|_| i32_(&mut at)).collect();
        let (rows, cols) = (i32_(&mut at), i32_(&mut at));
        let mel: Vec<f32> = (0..rows * cols)
            .map(|_| f32::from_bits(i32_(&mut at) as u32))
            .collect();
        let n = i32_(&mut at);
        let mut tokens = Vec::new();
        for _ in 0..n {
            let l = i32_(&mut at) as usize;
            tokens.push(b[at..at + l].to_vec());
            at += l;
        }
        let mut tensors = Tensors::new();
        while at < b.len() {
            let nd = i32_(&mut at);
            let nl = i32_(&mut at) as usize;
            let t = i32_(&mut at);
            let dims: Vec<i32> = (0..nd).map(|_| i32_(&mut at)).collect();
            let name = String::from_utf8(b[at..at + nl].to_vec()).unwrap();
            at += nl;
            let n: usize = dims.iter().product::<i32>() as usize * if t == 0 { 4 } else { 2 };
            tensors.insert(name, (dims, t, b[at..at + n].to_vec()));
            at += n;
        }
        (head, mel, tokens, tensors)
    }

    fn f16s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    }

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn converts_a_synthetic_whisper() {
        for dtype in [DType::F16, DType::F32] {
            let m = Ct2Model::parse(tiny_ct2(dtype)).unwrap();
            let (mel, tokens) = assets();
            let mut out = Vec::new();
            let h = convert(&m, &mel, &tokens, &mut out).unwrap();
            assert_eq!(
                (
                    h.n_vocab,
                    h.n_audio_ctx,
                    h.n_audio_state,
                    h.n_audio_head,
                    h.n_audio_layer
                ),
                (6, 5, 4, 2, 1)
            );
            assert_eq!(
                (
                    h.n_text_ctx,
                    h.n_text_state,
                    h.n_text_head,
                    h.n_text_layer,
                    h.n_mels
                ),
                (7, 4, 2, 1, 3)
            );
            let (head, mel_out, toks, t) = read_ggml(&out);
            assert_eq!(head, vec![0x6767_6d6c, 6, 5, 4, 2, 1, 7, 4, 2, 1, 3, 1]);
            assert_eq!(mel_out, mel.data);
            assert_eq!(toks, tokens);
            assert_eq!(t.len(), h.expected_tensors());

            // Fused self-attention q/k/v split in row blocks; the key bias dropped.
            let q = &t["encoder.blocks.0.attn.query.weight"];
            assert_eq!((q.0.clone(), q.1), (vec![4, 4], 1));
            assert_eq!(f16s(&q.2)[0], 100.0);
            assert_eq!(f16s(&t["encoder.blocks.0.attn.key.weight"].2)[0], 116.0);
            assert_eq!(f16s(&t["encoder.blocks.0.attn.value.weight"].2)[0], 132.0);
            assert!(!t.contains_key("encoder.blocks.0.attn.key.bias"));
            assert_eq!(
                f32s(&t["encoder.blocks.0.attn.query.bias"].2),
                vec![200.0, 201.0, 202.0, 203.0]
            );
            assert_eq!(
                f32s(&t["decoder.blocks.0.attn.value.bias"].2),
                vec![208.0, 209.0, 210.0, 211.0]
            );
            // Cross-attention k/v split.
            assert_eq!(
                f16s(&t["decoder.blocks.0.cross_attn.key.weight"].2)[0],
                300.0
            );
            assert_eq!(
                f16s(&t["decoder.blocks.0.cross_attn.value.weight"].2)[0],
                316.0
            );
            assert_eq!(
                f32s(&t["decoder.blocks.0.cross_attn.value.bias"].2)[0],
                404.0
            );
            assert!(!t.contains_key("decoder.blocks.0.cross_attn.key.bias"));
            // Types and shapes: conv bias [n,1] f32, positional embeddings f32, dims reversed.
            assert_eq!(
                (t["encoder.conv1.bias"].0.clone(), t["encoder.conv1.bias"].1),
                (vec![1, 4], 0)
            );
            assert_eq!(t["encoder.conv1.weight"].0, vec![3, 3, 4]);
            assert_eq!(t["encoder.positional_embedding"].1, 0);
            assert_eq!(t["decoder.positional_embedding"].0, vec![4, 7]);
            assert_eq!(t["decoder.token_embedding.weight"].0, vec![4, 6]);
            assert_eq!(t["decoder.token_embedding.weight"].1, 1);
            assert_eq!(t["encoder.ln_post.weight"].1, 0);
            assert_eq!(f32s(&t["decoder.ln.weight"].2), vec![1.0, 2.0, 3.0, 4.0]);
            assert_eq!(t["decoder.blocks.0.mlp.0.weight"].0, vec![4, 16]);

            // The structural check accepts it.
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("ggml.bin");
            std::fs::write(&p, &out).unwrap();
            let info = ggml::inspect(&p).unwrap();
            assert_eq!(info.n_tensors, h.expected_tensors());
            assert!(info.fully_checked);
        }
    }

    #[test]
    fn truncated_or_foreign_ggml_is_refused() {
        let m = Ct2Model::parse(tiny_ct2(DType::F16)).unwrap();
        let (mel, tokens) = assets();
        let mut out = Vec::new();
        convert(&m, &mel, &tokens, &mut out).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ggml.bin");
        std::fs::write(&p, &out[..out.len() - 10]).unwrap();
        let e = ggml::inspect(&p).unwrap_err();
        assert!(
            e.message.contains("not a complete ggml Whisper model"),
            "{e}"
        );
        std::fs::write(&p, tiny_ct2(DType::F16)).unwrap();
        let e = ggml::inspect(&p).unwrap_err();
        assert!(e.message.contains("wrong magic"), "{e}");
        assert!(e.hint.unwrap().contains("CTranslate2"));
        // A ggml file missing its last tensor is incomplete.
        let mut cut = out.clone();
        let (_, _, _, t) = read_ggml(&out);
        let last = &t["decoder.ln.bias"];
        cut.truncate(out.len() - last.2.len() - 4 * 4 - "decoder.ln.bias".len());
        std::fs::write(&p, &cut).unwrap();
        assert!(ggml::inspect(&p).unwrap_err().message.contains("tensors"));
    }

    #[test]
    fn refuses_other_specs_quantized_weights_and_wrong_assets() {
        let (mel, tokens) = assets();
        let other = Ct2Model::parse(encode("TransformerSpec", 1, &[], &[])).unwrap();
        assert!(
            convert(&other, &mel, &tokens, &mut Vec::new())
                .unwrap_err()
                .message
                .contains("not a Whisper")
        );
        let m = Ct2Model::parse(tiny_ct2(DType::F16)).unwrap();
        let mel128 = Array {
            shape: vec![128, 201],
            data: vec![0.0; 128 * 201],
        };
        assert!(
            convert(&m, &mel128, &tokens, &mut Vec::new())
                .unwrap_err()
                .message
                .contains("mels")
        );
        let many: Vec<Vec<u8>> = (0..7).map(|i| vec![i]).collect();
        assert!(
            convert(&m, &mel, &many, &mut Vec::new())
                .unwrap_err()
                .message
                .contains("tiktoken")
        );
        // int8 (quantized) weights
        let m8 = Ct2Model::parse(tiny_ct2(DType::I8)).unwrap();
        let e = convert(&m8, &mel, &tokens, &mut Vec::new()).unwrap_err();
        assert!(e.message.contains("quantized"), "{e}");
    }
}
