//! `audio.vad`: where people speak, from Silero VAD (ONNX) run through ONNX Runtime.
//!
//! Reads the upstream `audio.wav` (16 kHz mono) in pieces, asks Silero for a speech
//! probability per 32 ms window (512 samples plus 64 samples of context, with its
//! recurrent state carried across windows), and turns the probabilities into speech
//! segments the way Silero's own `get_speech_timestamps` does (hysteresis threshold,
//! minimum speech and silence, padding). Writes `vad.json`: segments (start, end,
//! mean probability), the speech ratio, and the settings used. `whisper.transcribe`
//! decodes only these segments when this stage is in its `needs`.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, ParamError, StageError};

use super::audio::{AudioSource, SAMPLE_RATE, Wav, find_audio, secs};
use vsum_models::catalog::FORMAT_ONNX;
use vsum_models::{ModelsDir, onnxruntime, resolve};

/// Samples per Silero window at 16 kHz, and the context prepended to each.
const WINDOW: usize = 512;
const CONTEXT: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Installed model (`vsum models install silero-vad`) or an ONNX file relative to
    /// the manifest.
    pub model: String,
    /// Speech probability (0 to 1) that starts a segment (it ends below threshold - 0.15).
    pub threshold: f32,
    /// Milliseconds: shorter speech is dropped.
    pub min_speech_ms: u32,
    /// Milliseconds of silence that must pass before a segment ends.
    pub min_silence_ms: u32,
    /// Milliseconds of padding added on each side of a segment.
    pub pad_ms: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            model: "silero-vad".into(),
            threshold: 0.5,
            min_speech_ms: 250,
            min_silence_ms: 100,
            pad_ms: 30,
        }
    }
}

/// One speech segment in `vad.json` (seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VadSegment {
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// The content of `vad.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VadFile {
    pub model: String,
    pub has_audio: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub sample_rate: u32,
    pub duration: f64,
    pub frame_ms: u32,
    pub threshold: f32,
    pub min_speech_ms: u32,
    pub min_silence_ms: u32,
    pub pad_ms: u32,
    pub segments: Vec<VadSegment>,
    /// Seconds of speech / seconds of audio.
    pub speech_ratio: f64,
}

/// The voice activity stage kind; loads its model from `models`.
#[derive(Debug, Clone)]
pub struct VadStage {
    models: ModelsDir,
}

impl VadStage {
    pub fn with_models_dir(models: ModelsDir) -> Self {
        VadStage { models }
    }
}

/// Speech spans `(start, end, mean probability)` in samples from per-window
/// probabilities, following Silero's `get_speech_timestamps` (no maximum length).
pub fn speech_spans(
    probs: &[f32],
    total: u64,
    threshold: f32,
    min_speech_ms: u32,
    min_silence_ms: u32,
    pad_ms: u32,
) -> Vec<(u64, u64, f32)> {
    let ms = |v: u32| SAMPLE_RATE as u64 * v as u64 / 1000;
    let (min_speech, min_silence, pad) = (ms(min_speech_ms), ms(min_silence_ms), ms(pad_ms));
    let w = WINDOW as u64;
    let neg = (threshold - 0.15).max(0.01);
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut start: Option<u64> = None;
    let mut temp_end = 0u64;
    for (i, &p) in probs.iter().enumerate() {
        let at = i as u64 * w;
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
        }
        if p >= threshold && start.is_none() {
            start = Some(at);
            continue;
        }
        if let Some(s) = start
            && p < neg
        {
            if temp_end == 0 {
                temp_end = at;
            }
            if at - temp_end < min_silence {
                continue;
            }
            if temp_end - s > min_speech {
                spans.push((s, temp_end));
            }
            start = None;
            temp_end = 0;
        }
    }
    if let Some(s) = start
        && total.saturating_sub(s) > min_speech
    {
        spans.push((s, total));
    }
    // Padding: split short silences between neighbours, else pad both sides.
    let n = spans.len();
    for i in 0..n {
        if i == 0 {
            spans[0].0 = spans[0].0.saturating_sub(pad);
        }
        if i + 1 < n {
            let gap = spans[i + 1].0.saturating_sub(spans[i].1);
            if gap < 2 * pad {
                spans[i].1 += gap / 2;
                spans[i + 1].0 = spans[i + 1].0.saturating_sub(gap / 2);
            } else {
                spans[i].1 = (spans[i].1 + pad).min(total);
                spans[i + 1].0 = spans[i + 1].0.saturating_sub(pad);
            }
        } else {
            spans[i].1 = (spans[i].1 + pad).min(total);
        }
    }
    spans
        .into_iter()
        .map(|(s, e)| {
            let (a, b) = ((s / w) as usize, e.div_ceil(w) as usize);
            let window = &probs[a.min(probs.len())..b.min(probs.len())];
            let mean = if window.is_empty() {
                0.0
            } else {
                window.iter().sum::<f32>() / window.len() as f32
            };
            (s, e, mean)
        })
        .collect()
}

/// Windows a stream runs before its own share of the track, from a zero state, so that
/// its recurrent state has settled when its share begins (about 2 s; Silero's state
/// forgets within a second or so).
const WARMUP: usize = 64;
/// A stream gets at least this many windows of its own (about 33 s)...
const MIN_STREAM: usize = 1024;
/// ...and a track is cut into at most this many.
const MAX_STREAMS: usize = 8;
/// Windows read from the track at once, per stream.
const READ_WINDOWS: usize = 256;

/// One stream's place in the track and the samples read ahead for it.
struct Stream {
    /// Windows from `first` (warm-up included) to `end`; its own share starts at `own`.
    first: usize,
    own: usize,
    end: usize,
    buf: Vec<f32>,
    /// The window `buf` starts at.
    buf_at: usize,
}

/// Runs Silero over the whole track; one probability per 512-sample window.
///
/// A long track is cut into up to [`MAX_STREAMS`] contiguous shares that run as one
/// batch, each row with its own context and recurrent state: one ONNX Runtime call per
/// step instead of one per window, which is where the time went (1.9 s for a 321 s
/// talk, about 190 µs a call). Each share after the first starts [`WARMUP`] windows
/// early, from a zero state, and those warm-up probabilities are dropped.
fn probabilities(
    session: &mut ort::session::Session,
    wav: &mut Wav,
    ctx: &JobCtx,
) -> Result<Vec<f32>, StageError> {
    use ort::value::TensorRef;
    let total = wav.frames();
    let n = total.div_ceil(WINDOW as u64) as usize;
    let b = (n / MIN_STREAM).clamp(1, MAX_STREAMS);
    let mut streams: Vec<Stream> = (0..b)
        .map(|i| {
            let own = i * n / b;
            Stream {
                first: if i == 0 {
                    0
                } else {
                    own.saturating_sub(WARMUP)
                },
                own,
                end: (i + 1) * n / b,
                buf: Vec::new(),
                buf_at: 0,
            }
        })
        .collect();
    let steps = streams.iter().map(|s| s.end - s.first).max().unwrap_or(0);
    let mut probs = vec![0f32; n];
    let mut state = ndarray::Array3::<f32>::zeros((2, b, 128));
    let row = CONTEXT + WINDOW;
    let mut input = vec![0f32; b * row];
    let sr = [SAMPLE_RATE as i64];
    let onnx = |e: ort::Error| StageError::fatal(format!("Silero VAD failed: {e}"));
    for t in 0..steps {
        if t % 1024 == 0 && ctx.cancelled() {
            return Err(StageError::cancelled());
        }
        for (s, input) in streams.iter_mut().zip(input.chunks_mut(row)) {
            // The context is the tail of the row's last window.
            input.copy_within(WINDOW.., 0);
            let w = s.first + t;
            if w >= s.end {
                input[CONTEXT..].fill(0.0);
                continue;
            }
            if w >= s.buf_at + s.buf.len() / WINDOW {
                let windows = READ_WINDOWS.min(s.end - w);
                s.buf = wav.read((w * WINDOW) as u64, (windows * WINDOW) as u64)?;
                s.buf.resize(windows * WINDOW, 0.0);
                s.buf_at = w;
            }
            let k = (w - s.buf_at) * WINDOW;
            input[CONTEXT..].copy_from_slice(&s.buf[k..k + WINDOW]);
        }
        let outputs = session
            .run(ort::inputs![
                "input" => TensorRef::from_array_view(([b, row], &input[..])).map_err(onnx)?,
                "state" => TensorRef::from_array_view(&state).map_err(onnx)?,
                "sr" => TensorRef::from_array_view(((), &sr[..])).map_err(onnx)?,
            ])
            .map_err(onnx)?;
        let (_, p) = outputs["output"]
            .try_extract_tensor::<f32>()
            .map_err(onnx)?;
        for (i, s) in streams.iter().enumerate() {
            let w = s.first + t;
            if w >= s.own && w < s.end {
                probs[w] = p.get(i).copied().unwrap_or(0.0);
            }
        }
        let (_, st) = outputs["stateN"]
            .try_extract_tensor::<f32>()
            .map_err(onnx)?;
        if st.len() != state.len() {
            return Err(StageError::fatal(format!(
                "Silero VAD returned a state of {} values, expected {}: is `model:` a Silero v5/v6 ONNX file?",
                st.len(),
                state.len()
            )));
        }
        state
            .as_slice_mut()
            .expect("standard layout")
            .copy_from_slice(st);
    }
    Ok(probs)
}

impl Output for VadFile {
    const FILE: &'static str = "vad.json";
}

impl TypedStage for VadStage {
    type Params = Params;
    const NAME: &'static str = "audio.vad";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str =
        "Voice activity (Silero VAD via ONNX Runtime) on the upstream audio.wav -> vad.json";

    fn validate(&self, p: Params, _env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        if !(p.threshold > 0.0 && p.threshold < 1.0) {
            errs.push(
                ParamError::new(
                    &["threshold"],
                    "`threshold` must be between 0 and 1 (exclusive)",
                )
                .hint("0.5 is Silero's default"),
            );
        }
        if p.model.trim().is_empty() {
            errs.push(ParamError::new(&["model"], "`model` is empty").hint("use silero-vad"));
        }
        if errs.is_empty() { Ok(p) } else { Err(errs) }
    }

    fn key_extras(&self, p: &Params, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let dir = self.models.clone();
        let model = resolve(&dir, &p.model, env.base_dir, FORMAT_ONNX)?;
        let (_, ort_version) = onnxruntime::library(&dir)?;
        let mut x = KeyExtras::default();
        x.tools
            .insert("vad_model".into(), model.blake3(Some(env.hasher))?);
        x.tools.insert("onnxruntime".into(), ort_version);
        Ok(x)
    }

    fn doctor(&self, p: &Params, base_dir: &std::path::Path) -> Vec<Check> {
        vec![
            vsum_models::doctor_onnxruntime(&self.models),
            vsum_models::doctor_model(&self.models, &p.model, base_dir, FORMAT_ONNX),
        ]
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let mut out = VadFile {
            model: p.model.clone(),
            has_audio: true,
            reason: None,
            sample_rate: SAMPLE_RATE,
            duration: 0.0,
            frame_ms: (WINDOW as u32 * 1000) / SAMPLE_RATE,
            threshold: p.threshold,
            min_speech_ms: p.min_speech_ms,
            min_silence_ms: p.min_silence_ms,
            pad_ms: p.pad_ms,
            segments: Vec::new(),
            speech_ratio: 0.0,
        };
        let wav_path: PathBuf = match find_audio(ctx.upstream)? {
            AudioSource::NoAudio { reason } => {
                out.has_audio = false;
                out.reason = Some(reason);
                return ctx.write_output(&out);
            }
            AudioSource::Wav(p) => p,
        };
        let mut wav = Wav::open(&wav_path)?;
        out.duration = wav.seconds();
        let dir = self.models.clone();
        let model = resolve(&dir, &p.model, ctx.base_dir, FORMAT_ONNX)?;
        let key = model.blake3(None)?;
        let mut session = onnxruntime::session(&dir, &model.path, &key)?;
        let probs = probabilities(session.get(), &mut wav, ctx)?;
        let spans = speech_spans(
            &probs,
            wav.frames(),
            p.threshold,
            p.min_speech_ms,
            p.min_silence_ms,
            p.pad_ms,
        );
        let speech: u64 = spans.iter().map(|(s, e, _)| e - s).sum();
        out.speech_ratio = if wav.frames() == 0 {
            0.0
        } else {
            (speech as f64 / wav.frames() as f64 * 1e4).round() / 1e4
        };
        out.segments = spans
            .into_iter()
            .map(|(s, e, prob)| VadSegment {
                start: (secs(s) * 1000.0).round() / 1000.0,
                end: (secs(e) * 1000.0).round() / 1000.0,
                probability: (prob * 1000.0).round() / 1000.0,
            })
            .collect();
        ctx.write_output(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_silero_rules() {
        // 32 ms windows: 20 windows speech, 2 quiet (64 ms < 100 ms min silence), 20 speech,
        // 10 quiet, 3 speech (96 ms < 250 ms min speech), 20 quiet.
        let mut p = Vec::new();
        p.extend([0.9; 20]);
        p.extend([0.1; 2]);
        p.extend([0.9; 20]);
        p.extend([0.1; 10]);
        p.extend([0.9; 3]);
        p.extend([0.1; 20]);
        let total = p.len() as u64 * 512;
        let s = speech_spans(&p, total, 0.5, 250, 100, 30);
        assert_eq!(s.len(), 1, "{s:?}");
        let (a, b, prob) = s[0];
        assert_eq!(a, 0);
        assert_eq!(b, 42 * 512 + 480);
        assert!(prob > 0.8);
        // Hysteresis: 0.4 is between neg (0.35) and threshold: speech continues.
        let q: Vec<f32> = [vec![0.9; 10], vec![0.4; 30], vec![0.0; 10]].concat();
        let s = speech_spans(&q, q.len() as u64 * 512, 0.5, 250, 100, 0);
        assert_eq!(s[0].1, 40 * 512);
        assert!(speech_spans(&[0.1; 100], 51_200, 0.5, 250, 100, 30).is_empty());
        // Speech to the end of the track.
        let s = speech_spans(&[0.9; 30], 30 * 512, 0.5, 250, 100, 30);
        assert_eq!((s.len(), s[0].0, s[0].1), (1, 0, 30 * 512));
        assert!((s[0].2 - 0.9).abs() < 1e-4);
    }
}
