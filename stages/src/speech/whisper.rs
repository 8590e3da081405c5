//! `whisper.transcribe`: speech to text with whisper.cpp (whisper-rs), on the GPU lane.
//!
//! The model is loaded ONCE per run, on the GPU-lane thread, into the engine's
//! resource cache (keyed by the model's blake3) and reused for every video; each job
//! makes a fresh decoding state. The job reads the upstream `audio.wav`; when an
//! upstream folder has `vad.json` (from `audio.vad`), only its speech regions are
//! decoded, so silence and music never reach Whisper. Audio is read and decoded in
//! bounded chunks (see `chunks`), so memory is flat for any length. Outputs
//! `transcript.json` (language, segments with times, average log-probability and
//! no-speech probability, words when asked), `transcript.srt`, `.vtt` and `.txt`, with
//! absolute, monotonic times. A video without audio gets an empty transcript that says
//! why. Built with the `cuda` feature whisper.cpp uses the GPU; a GPU failure is
//! retried once on the CPU and recorded.

use std::sync::{Arc, Once};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vsum_engine::stage::{
    CheckEnv, JobCtx, KeyEnv, KeyExtras, Lane, ParamDoc, ParamError, StageError, StageKind,
    typed_params,
};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use super::audio::{AudioSource, Wav, find_audio, find_upstream_file, samples, secs};
use super::chunks::{self, Span};
use super::transcript::{Segment, Transcript, Word};
use super::vad::read_vad;
use crate::models::catalog::FORMAT_WHISPER;
use crate::models::{ModelsDir, Resolved, ggml, resolve};

/// Whisper's decoder window; shorter chunks are padded with silence to this minimum
/// (whisper.cpp skips input under one second).
const MIN_CHUNK_SECS: f64 = 1.5;
/// Chunks quieter than this (dBFS) are digital silence: not decoded.
const SILENCE_DB: f32 = -60.0;
/// Without VAD, a chunk is cut at the quietest moment of its last seconds.
const CUT_SEARCH_SECS: f64 = 5.0;
/// OpenAI's rule for "nothing was said": high no-speech probability and low confidence.
const NO_SPEECH_PROB: f32 = 0.6;
const LOGPROB_FLOOR: f32 = -1.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_model")]
    model: String,
    #[serde(default = "default_language")]
    language: String,
    #[serde(default)]
    threads: u32,
    #[serde(default)]
    beam_size: u32,
    #[serde(default)]
    temperature: f32,
    #[serde(default = "default_temperature_inc")]
    temperature_inc: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initial_prompt: Option<String>,
    #[serde(default)]
    word_timestamps: bool,
    #[serde(default = "default_chunk")]
    chunk_seconds: f64,
    #[serde(default = "default_gap")]
    max_gap_seconds: f64,
}

fn default_model() -> String {
    "whisper-tiny.en".into()
}
fn default_language() -> String {
    "auto".into()
}
fn default_temperature_inc() -> f32 {
    0.2
}
fn default_chunk() -> f64 {
    120.0
}
fn default_gap() -> f64 {
    1.5
}

/// A loaded model, kept in the GPU lane's resource cache.
struct Loaded {
    ctx: WhisperContext,
    name: String,
    multilingual: bool,
    gpu: bool,
}

#[derive(Debug, Default)]
pub struct WhisperStage;

/// Routes whisper.cpp's logs into `tracing` and says once where Whisper runs.
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        whisper_rs::install_logging_hooks();
        if cfg!(feature = "cuda") {
            tracing::info!("whisper.transcribe: CUDA build, whisper.cpp uses the GPU when one is present");
        } else {
            tracing::info!(
                "whisper.transcribe: no GPU support in this build (cargo feature `cuda`); Whisper runs on the CPU"
            );
        }
    });
}

/// Checks a language param: `auto` or a code (or name) whisper.cpp knows.
fn language_code(lang: &str) -> Option<String> {
    if lang == "auto" {
        return Some(lang.to_string());
    }
    if lang.is_empty() || !lang.chars().all(|c| c.is_ascii_alphabetic() || c == ' ') {
        return None;
    }
    init_logging();
    let id = whisper_rs::get_lang_id(&lang.to_ascii_lowercase())?;
    whisper_rs::get_lang_str(id).map(str::to_string)
}

fn models_dir() -> ModelsDir {
    ModelsDir::from_env()
}

/// Loads a model (checked against its recorded hash, then structurally) into whisper.cpp,
/// on the GPU when `gpu` and this is a GPU build (falling back to the CPU).
fn load(model: &Resolved, gpu: bool) -> Result<Loaded, StageError> {
    init_logging();
    model.verify()?;
    let info = ggml::inspect(&model.path)?;
    let open = |gpu: bool| {
        let mut cp = WhisperContextParameters::default();
        cp.use_gpu(gpu);
        WhisperContext::new_with_params(&model.path, cp)
    };
    let want_gpu = gpu && cfg!(feature = "cuda");
    let (ctx, gpu) = match open(want_gpu) {
        Ok(c) => (c, want_gpu),
        Err(e) if want_gpu => {
            tracing::warn!(model = %model.display(), "loading on the GPU failed ({e:?}); using the CPU");
            (open(false).map_err(|e| load_error(model, e))?, false)
        }
        Err(e) => return Err(load_error(model, e)),
    };
    Ok(Loaded {
        ctx,
        name: model
            .name
            .clone()
            .or_else(|| {
                model
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default(),
        multilingual: info.hparams.multilingual(),
        gpu,
    })
}

fn load_error(model: &Resolved, e: whisper_rs::WhisperError) -> StageError {
    StageError::fatal(format!(
        "whisper.cpp could not load model {} ({}): {e:?}",
        model.display(),
        model.path.display()
    ))
    .hint("reinstall it (`vsum models install NAME --force`) or give a ggml Whisper file")
}

/// Decoding settings shared by every chunk of a job.
struct Decode<'a> {
    p: &'a Params,
    language: &'a str,
    threads: i32,
}

impl Decode<'_> {
    fn params(&self) -> FullParams<'_, '_> {
        let strategy = if self.p.beam_size >= 2 {
            SamplingStrategy::BeamSearch {
                beam_size: self.p.beam_size as i32,
                patience: -1.0,
            }
        } else {
            SamplingStrategy::Greedy { best_of: 5 }
        };
        let mut fp = FullParams::new(strategy);
        fp.set_n_threads(self.threads);
        fp.set_language(Some(self.language));
        fp.set_translate(false);
        fp.set_print_special(false);
        fp.set_print_progress(false);
        fp.set_print_realtime(false);
        fp.set_print_timestamps(false);
        fp.set_suppress_blank(true);
        fp.set_suppress_nst(true);
        fp.set_temperature(self.p.temperature);
        fp.set_temperature_inc(self.p.temperature_inc);
        fp.set_no_speech_thold(NO_SPEECH_PROB);
        fp.set_token_timestamps(self.p.word_timestamps);
        if let Some(prompt) = &self.p.initial_prompt {
            fp.set_initial_prompt(prompt);
        }
        fp
    }
}

/// Is a segment text a non-speech annotation (`[BLANK_AUDIO]`, `(music)`, `♪`)?
fn non_speech(text: &str) -> bool {
    let t = text.trim();
    t.is_empty()
        || (t.starts_with('[') && t.ends_with(']'))
        || (t.starts_with('(') && t.ends_with(')'))
        || t.chars().all(|c| !c.is_alphanumeric())
}

/// Decodes one chunk that starts at sample `offset`; appends its segments.
fn decode_chunk(
    state: &mut WhisperState,
    ctx: &WhisperContext,
    d: &Decode,
    mut audio: Vec<f32>,
    offset: u64,
    out: &mut Vec<Segment>,
) -> Result<Option<String>, whisper_rs::WhisperError> {
    let real_end = secs(offset + audio.len() as u64);
    let min = samples(MIN_CHUNK_SECS) as usize;
    if audio.len() < min {
        audio.resize(min, 0.0);
    }
    state.full(d.params(), &audio)?;
    let base = secs(offset);
    let eot = ctx.token_eot();
    let lang = whisper_rs::get_lang_str(state.full_lang_id_from_state()).map(str::to_string);
    for seg in state.as_iter() {
        let text = seg
            .to_str_lossy()
            .map(|s| s.into_owned())
            .unwrap_or_default();
        let mut logprob = 0f32;
        let mut n = 0;
        let mut words: Vec<Word> = Vec::new();
        let mut cur: Option<(Vec<u8>, f64, f64, f32, u32)> = None;
        for i in 0..seg.n_tokens() {
            let Some(tok) = seg.get_token(i) else {
                continue;
            };
            if tok.token_id() >= eot {
                continue;
            }
            let data = tok.token_data();
            logprob += data.plog;
            n += 1;
            if d.p.word_timestamps {
                let bytes = tok.to_bytes().unwrap_or_default();
                let (t0, t1) = (base + data.t0 as f64 / 100.0, base + data.t1 as f64 / 100.0);
                let starts_word = bytes.first() == Some(&b' ') || cur.is_none();
                if starts_word {
                    if let Some(w) = cur.take() {
                        words.push(finish_word(w));
                    }
                    cur = Some((bytes.to_vec(), t0, t1, data.p, 1));
                } else if let Some(w) = cur.as_mut() {
                    w.0.extend_from_slice(bytes);
                    w.2 = t1.max(w.2);
                    w.3 += data.p;
                    w.4 += 1;
                }
            }
        }
        if let Some(w) = cur.take() {
            words.push(finish_word(w));
        }
        let avg_logprob = if n > 0 { logprob / n as f32 } else { 0.0 };
        let no_speech_prob = seg.no_speech_probability();
        if non_speech(&text) || (no_speech_prob > NO_SPEECH_PROB && avg_logprob < LOGPROB_FLOOR) {
            continue;
        }
        let start = base + seg.start_timestamp() as f64 / 100.0;
        let end = (base + seg.end_timestamp() as f64 / 100.0).min(real_end);
        out.push(Segment {
            start,
            end: end.max(start),
            text,
            avg_logprob: (avg_logprob * 1000.0).round() / 1000.0,
            no_speech_prob: (no_speech_prob * 1000.0).round() / 1000.0,
            words: d.p.word_timestamps.then_some(words),
        });
    }
    Ok(lang)
}

fn finish_word((bytes, start, end, p, n): (Vec<u8>, f64, f64, f32, u32)) -> Word {
    Word {
        start,
        end,
        text: String::from_utf8_lossy(&bytes).trim().to_string(),
        probability: ((p / n.max(1) as f32) * 1000.0).round() / 1000.0,
    }
}

fn write_outputs(ctx: &JobCtx, t: &mut Transcript) -> Result<(), StageError> {
    t.normalize();
    let w = |name: &str, bytes: &[u8]| {
        std::fs::write(ctx.out_dir.join(name), bytes)
            .map_err(|e| StageError::retryable(format!("cannot write {name}: {e}")))
    };
    let mut json = serde_json::to_vec_pretty(t).expect("transcript serializes");
    json.push(b'\n');
    w("transcript.json", &json)?;
    w("transcript.srt", t.srt().as_bytes())?;
    w("transcript.vtt", t.vtt().as_bytes())?;
    let mut txt = t.txt();
    if t.segments.is_empty()
        && let Some(r) = &t.reason
    {
        txt = format!("[no speech: {r}]\n");
    }
    w("transcript.txt", txt.as_bytes())
}

impl StageKind for WhisperStage {
    fn name(&self) -> &'static str {
        "whisper.transcribe"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Speech to text with Whisper (whisper.cpp) on the upstream audio.wav, speech regions only when audio.vad is needed -> transcript.json/.srt/.vtt/.txt"
    }

    fn default_lane(&self) -> Lane {
        Lane::Gpu
    }

    fn params_doc(&self) -> Vec<ParamDoc> {
        vec![
            ParamDoc {
                name: "model",
                ty: "name or path",
                default: Some("whisper-tiny.en"),
                doc: "installed model (`vsum models list`) or a ggml Whisper file relative to the manifest",
            },
            ParamDoc {
                name: "language",
                ty: "auto or code",
                default: Some("auto"),
                doc: "spoken language (en, de, ...); auto detects it (English-only models: en)",
            },
            ParamDoc {
                name: "threads",
                ty: "integer",
                default: Some("0"),
                doc: "decoder threads; 0 = the lane's share (note: a non-zero value joins the cache key)",
            },
            ParamDoc {
                name: "beam_size",
                ty: "integer",
                default: Some("0"),
                doc: "beam search width; 0 or 1 = greedy decoding",
            },
            ParamDoc {
                name: "temperature",
                ty: "number",
                default: Some("0.0"),
                doc: "sampling temperature of the first attempt",
            },
            ParamDoc {
                name: "temperature_inc",
                ty: "number",
                default: Some("0.2"),
                doc: "temperature fallback step when a decode looks wrong; 0 disables fallback",
            },
            ParamDoc {
                name: "initial_prompt",
                ty: "string",
                default: None,
                doc: "text that primes the decoder (names, spelling, style)",
            },
            ParamDoc {
                name: "word_timestamps",
                ty: "bool",
                default: Some("false"),
                doc: "add words with start/end/probability to transcript.json",
            },
            ParamDoc {
                name: "chunk_seconds",
                ty: "seconds",
                default: Some("120"),
                doc: "longest piece of audio decoded at once (memory stays flat)",
            },
            ParamDoc {
                name: "max_gap_seconds",
                ty: "seconds",
                default: Some("1.5"),
                doc: "with audio.vad: pauses up to this long stay inside one chunk",
            },
        ]
    }

    fn check(&self, params: &Value, _env: &CheckEnv) -> Result<Value, Vec<ParamError>> {
        let p: Params = typed_params(params)?;
        let mut errs = Vec::new();
        if language_code(&p.language).is_none() {
            errs.push(
                ParamError::new(
                    &["language"],
                    format!("unsupported language '{}'", p.language),
                )
                .hint("use `auto` or a Whisper language code such as en, de, fr, es, ja, zh"),
            );
        }
        if p.model.trim().is_empty() {
            errs.push(ParamError::new(&["model"], "`model` is empty").hint("e.g. whisper-tiny.en"));
        }
        if !(p.chunk_seconds >= 5.0 && p.chunk_seconds <= 3600.0) {
            errs.push(ParamError::new(
                &["chunk_seconds"],
                "`chunk_seconds` must be between 5 and 3600",
            ));
        }
        if !(p.max_gap_seconds >= 0.0 && p.max_gap_seconds <= 60.0) {
            errs.push(ParamError::new(
                &["max_gap_seconds"],
                "`max_gap_seconds` must be between 0 and 60",
            ));
        }
        if !(0.0..=2.0).contains(&p.temperature) || !(0.0..=1.0).contains(&p.temperature_inc) {
            errs.push(ParamError::new(
                &["temperature"],
                "`temperature` must be in 0..2 and `temperature_inc` in 0..1",
            ));
        }
        if p.beam_size > 16 {
            errs.push(
                ParamError::new(&["beam_size"], "`beam_size` above 16 is not supported")
                    .hint("5 is whisper.cpp's usual beam"),
            );
        }
        if p.initial_prompt
            .as_deref()
            .is_some_and(|s| s.contains('\0'))
        {
            errs.push(ParamError::new(
                &["initial_prompt"],
                "`initial_prompt` contains a NUL character",
            ));
        }
        if errs.is_empty() {
            Ok(serde_json::to_value(&p).expect("params serialize"))
        } else {
            Err(errs)
        }
    }

    fn key_extras(&self, params: &Value, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let p: Params =
            serde_json::from_value(params.clone()).map_err(|e| StageError::fatal(e.to_string()))?;
        let model = resolve(&models_dir(), &p.model, env.base_dir, FORMAT_WHISPER)?;
        let mut x = KeyExtras::default();
        x.tools
            .insert("whisper_model".into(), model.blake3(Some(env.hasher))?);
        x.tools.insert(
            "whisper.cpp".into(),
            whisper_rs::WHISPER_CPP_VERSION.to_string(),
        );
        Ok(x)
    }

    fn resource_group(&self, params: &Value) -> Option<String> {
        params
            .get("model")
            .and_then(Value::as_str)
            .map(|m| format!("whisper:{m}"))
    }

    fn doctor(&self, params: &Value, base_dir: &std::path::Path) -> Vec<vsum_engine::stage::Check> {
        let model = params["model"].as_str().unwrap_or("whisper-tiny.en");
        vec![crate::models::doctor_model(model, base_dir, FORMAT_WHISPER)]
    }

    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError> {
        let p: Params = serde_json::from_value(ctx.params.clone())
            .map_err(|e| StageError::fatal(e.to_string()))?;
        let mut t = Transcript {
            language: None,
            model: p.model.clone(),
            duration: 0.0,
            has_audio: true,
            reason: None,
            vad: false,
            segments: Vec::new(),
        };
        let wav_path = match find_audio(ctx.upstream)? {
            AudioSource::NoAudio { reason } => {
                t.has_audio = false;
                t.reason = Some(reason);
                return write_outputs(ctx, &mut t);
            }
            AudioSource::Wav(p) => p,
        };
        let mut wav = Wav::open(&wav_path)?;
        t.duration = wav.seconds();
        let total = wav.frames();
        let max_len = samples(p.chunk_seconds);
        let vad_chunks: Option<Vec<Span>> = match find_upstream_file(ctx.upstream, "vad.json") {
            None => None,
            Some(path) => {
                let v = read_vad(&path)?;
                let speech: Vec<Span> = v
                    .segments
                    .iter()
                    .map(|s| Span {
                        start: samples(s.start),
                        end: samples(s.end),
                    })
                    .collect();
                Some(chunks::from_speech(
                    &speech,
                    total,
                    max_len,
                    samples(p.max_gap_seconds),
                ))
            }
        };
        t.vad = vad_chunks.is_some();
        if vad_chunks.as_ref().is_some_and(Vec::is_empty) || total == 0 {
            t.reason = Some(
                if total == 0 {
                    "the audio track is empty"
                } else {
                    "audio.vad found no speech"
                }
                .into(),
            );
            return write_outputs(ctx, &mut t);
        }

        // The model: once per run on the GPU lane; per job elsewhere.
        let model = resolve(&models_dir(), &p.model, ctx.base_dir, FORMAT_WHISPER)?;
        let blake3 = model.blake3(None)?;
        let key = format!("whisper:{blake3}");
        let loaded: Arc<Loaded> = match ctx.resources.as_deref_mut() {
            Some(r) => r
                .get_or_load(&key, || load(&model, true).map(Arc::new))?
                .clone(),
            None => {
                tracing::warn!(
                    "whisper.transcribe runs outside the GPU lane: its model is loaded for every job (use `lane: gpu`)"
                );
                Arc::new(load(&model, true)?)
            }
        };
        t.model = loaded.name.clone();
        let language = if loaded.multilingual {
            language_code(&p.language).unwrap_or_else(|| "auto".into())
        } else {
            match language_code(&p.language).as_deref() {
                Some("auto") | Some("en") => "en".to_string(),
                Some(other) => {
                    return Err(StageError::fatal(format!(
                        "model '{}' is English-only; language '{other}' needs a multilingual model",
                        loaded.name
                    ))
                    .hint("use `model: whisper-base` (`vsum models install whisper-base`) or `language: en`"));
                }
                None => {
                    return Err(StageError::fatal(format!(
                        "unsupported language '{}'",
                        p.language
                    )));
                }
            }
        };
        let threads = if p.threads > 0 {
            p.threads as usize
        } else {
            ctx.threads.max(1)
        };
        let d = Decode {
            p: &p,
            language: &language,
            threads: threads.min(64) as i32,
        };

        let cancel = ctx.cancel;
        let run_on = |loaded: &Loaded,
                      wav: &mut Wav|
         -> Result<(Vec<Segment>, Option<String>), String> {
            let mut state = loaded
                .ctx
                .create_state()
                .map_err(|e| format!("cannot create a decoder state: {e:?}"))?;
            let mut segs = Vec::new();
            let mut detected = None;
            let mut decode =
                |audio: Vec<f32>, offset: u64, segs: &mut Vec<Segment>| -> Result<(), String> {
                    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err("cancelled".into());
                    }
                    if chunks::rms_db(&audio) < SILENCE_DB {
                        return Ok(());
                    }
                    let lang = decode_chunk(&mut state, &loaded.ctx, &d, audio, offset, segs)
                        .map_err(|e| {
                            format!("Whisper decoding failed at {:.1} s: {e:?}", secs(offset))
                        })?;
                    if detected.is_none() {
                        detected = lang;
                    }
                    Ok(())
                };
            match &vad_chunks {
                Some(cs) => {
                    for c in cs {
                        let audio = wav.read(c.start, c.len()).map_err(|e| e.message)?;
                        decode(audio, c.start, &mut segs)?;
                    }
                }
                None => {
                    let mut pos = 0u64;
                    while pos < total {
                        let mut audio = wav.read(pos, max_len).map_err(|e| e.message)?;
                        if audio.is_empty() {
                            break;
                        }
                        if pos + (audio.len() as u64) < total {
                            let cut = chunks::quiet_cut(&audio, samples(CUT_SEARCH_SECS) as usize);
                            audio.truncate(cut.max(1));
                        }
                        let n = audio.len() as u64;
                        decode(audio, pos, &mut segs)?;
                        pos += n;
                    }
                }
            }
            Ok((segs, detected))
        };

        let result = match run_on(&loaded, &mut wav) {
            Err(e) if e == "cancelled" => return Err(StageError::cancelled()),
            Err(e) if loaded.gpu => {
                // A GPU failure (often out of memory): once more on the CPU, recorded.
                tracing::warn!("whisper.transcribe: {e}; retrying this job on the CPU");
                if let Some(r) = ctx.resources.as_deref_mut() {
                    r.drop_resource(&key);
                }
                let cpu = load(&model, false)?;
                t.reason = Some(format!("decoded on the CPU after a GPU failure: {e}"));
                run_on(&cpu, &mut wav)
            }
            other => other,
        };
        let (segments, detected) = match result {
            Ok(r) => r,
            Err(e) if e == "cancelled" => return Err(StageError::cancelled()),
            Err(e) => return Err(StageError::retryable(e)),
        };
        t.segments = segments;
        t.language = if language == "auto" {
            detected
        } else {
            Some(language.clone())
        };
        if t.segments.is_empty() && t.reason.is_none() {
            t.reason = Some("no speech was recognised".into());
        }
        write_outputs(ctx, &mut t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_checked() {
        assert_eq!(language_code("auto").as_deref(), Some("auto"));
        assert_eq!(language_code("de").as_deref(), Some("de"));
        assert_eq!(language_code("EN").as_deref(), Some("en"));
        assert_eq!(language_code("german").as_deref(), Some("de"));
        assert_eq!(language_code("xx"), None);
        assert_eq!(language_code("e\0n"), None);
        assert_eq!(language_code(""), None);
    }

    #[test]
    fn non_speech_annotations_are_recognised() {
        for t in ["[BLANK_AUDIO]", " (music) ", "♪ ♪", "...", ""] {
            assert!(non_speech(t), "{t}");
        }
        assert!(!non_speech(" Hello world."));
    }
}
