//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers, 384 dimensions) through
//! candle: the sentence-transformers recipe, mean pooling over the tokens then L2
//! normalisation, so a dot product is the cosine similarity.
//!
//! The installed model is the package's own zip (`config.json`, `tokenizer.json`,
//! `model.safetensors`), read into memory once and kept on the GPU lane.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};
use vsum_engine::stage::StageError;

/// Tokens per text: all-MiniLM-L6-v2 was trained on 256 (longer input is cut).
const MAX_TOKENS: usize = 256;
/// Texts per forward pass.
const BATCH: usize = 32;

/// A loaded sentence encoder.
pub struct Encoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pub dims: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoder({} dims)", self.dims)
    }
}

fn member(zip: &Path, name: &str) -> Result<Vec<u8>, StageError> {
    vsum_models::archive::read_zip_member(zip, name).map_err(|e| {
        StageError::fatal(format!(
            "{} is not a sentence-transformers model zip: {e}",
            zip.display()
        ))
        .hint("reinstall it: `vsum models install all-minilm-l6-v2 --force`")
    })
}

fn candle(what: &str) -> impl Fn(candle_core::Error) -> StageError + '_ {
    move |e| StageError::fatal(format!("sentence encoder: {what}: {e}"))
}

impl Encoder {
    /// Loads the model zip at `zip` on the CPU.
    pub fn load(zip: &Path) -> Result<Encoder, StageError> {
        let config: Config = serde_json::from_slice(&member(zip, "config.json")?)
            .map_err(|e| StageError::fatal(format!("{}: config.json: {e}", zip.display())))?;
        let dims = config.hidden_size;
        let mut tokenizer = Tokenizer::from_bytes(member(zip, "tokenizer.json")?)
            .map_err(|e| StageError::fatal(format!("{}: tokenizer.json: {e}", zip.display())))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| StageError::fatal(format!("tokenizer: {e}")))?;
        let device = Device::Cpu;
        let weights = member(zip, "model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(candle("weights"))?;
        let model = BertModel::load(vb, &config).map_err(candle("model"))?;
        Ok(Encoder {
            model,
            tokenizer,
            device,
            dims,
        })
    }

    /// One unit vector per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StageError> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| StageError::fatal(format!("tokenizer: {e}")))?;
        let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<Vec<u32>> = enc
            .iter()
            .map(|e| e.get_attention_mask().to_vec())
            .collect();
        let ids = Tensor::new(ids, &self.device).map_err(candle("input"))?;
        let mask = Tensor::new(mask, &self.device).map_err(candle("input"))?;
        let types = ids.zeros_like().map_err(candle("input"))?;
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(candle("forward"))?;
        // Mean over the real tokens, then unit length.
        let pooled = (|| {
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let sum = hidden.broadcast_mul(&m)?.sum(1)?;
            let mean = sum.broadcast_div(&m.sum(1)?.clamp(1e-9, f64::MAX)?)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            mean.broadcast_div(&norm)?.to_vec2::<f32>()
        })()
        .map_err(candle("pooling"))?;
        Ok(pooled)
    }
}

/// The dot product of two unit vectors: their cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Vectors as little-endian f32, one after another.
pub fn to_bytes(vectors: &[Vec<f32>]) -> Vec<u8> {
    vectors
        .iter()
        .flat_map(|v| v.iter().flat_map(|x| x.to_le_bytes()))
        .collect()
}

/// Reads what [`to_bytes`] wrote: `dims` floats a vector.
pub fn from_bytes(bytes: &[u8], dims: usize) -> Option<Vec<Vec<f32>>> {
    if dims == 0 || !bytes.len().is_multiple_of(4 * dims) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4 * dims)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_sizes_are_checked() {
        let v = vec![vec![1.0, -0.5], vec![0.25, 2.0]];
        let b = to_bytes(&v);
        assert_eq!(b.len(), 16);
        assert_eq!(from_bytes(&b, 2), Some(v));
        assert_eq!(from_bytes(&b[..12], 2), None);
        assert_eq!(from_bytes(&b, 0), None);
    }
}
