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

use std::sync::Once;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::TypedStage;
use vsum_engine::stage::{
    Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, Lane, ParamError, StageError,
};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use super::audio::SAMPLE_RATE;
use super::audio::{AudioSource, Wav, find_audio, samples, secs};
use super::chunks::{self, Packing, Span, Window};
use super::transcript::{Note, Segment, Transcript, Word, drop_repeats, snap_to_speech};
use super::vad::VadFile;
use vsum_models::catalog::FORMAT_WHISPER;
use vsum_models::{ModelsDir, Resolved, ggml, resolve};

/// Whisper's decoder window; shorter chunks are padded with silence to this minimum
/// (whisper.cpp skips input under one second).
const MIN_CHUNK_SECS: f64 = 1.5;
/// Chunks quieter than this (dBFS) are digital silence: not decoded.
const SILENCE_DB: f32 = -60.0;
/// Without VAD, a chunk is cut at the quietest moment of its last seconds.
const CUT_SEARCH_SECS: f64 = 5.0;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Installed model (`vsum models list`) or a ggml Whisper file relative to the
    /// manifest.
    pub model: String,
    /// Spoken language (en, de, ...); auto detects it (English-only models: en).
    pub language: String,
    /// Decoder threads; 0 = the lane's share (a non-zero value joins the cache key).
    pub threads: u32,
    /// Beam search width; 0 or 1 = greedy decoding.
    pub beam_size: u32,
    /// Sampling temperature of the first attempt.
    pub temperature: f32,
    /// Temperature fallback step when a decode looks wrong; 0 disables fallback.
    pub temperature_inc: f32,
    /// Text that primes the decoder (names, spelling, style).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_prompt: Option<String>,
    /// Add words with start/end/probability to transcript.json.
    pub word_timestamps: bool,
    /// Seconds: the longest window decoded at once; Whisper sees 30 s, and longer
    /// windows let it drift into loops.
    pub chunk_seconds: f64,
    /// Seconds: with audio.vad, pauses up to this long stay whole inside a window;
    /// longer ones shrink to 0.8 s.
    pub max_gap_seconds: f64,
    /// Prompt each window with the text before it (reset after a window needed a
    /// fallback).
    pub condition_on_previous_text: bool,
    /// A window whose text compresses better than this (a loop) is decoded again at the
    /// next temperature.
    pub compression_ratio_threshold: f32,
    /// A window whose average token log-probability is below this is decoded again at
    /// the next temperature.
    pub logprob_threshold: f32,
    /// No-speech probability above this, with a log-probability below
    /// logprob_threshold, means silence.
    pub no_speech_threshold: f32,
    /// On the CPU, decode the track as this many contiguous parts at once, each with
    /// its own decoder state, one thread each and its own chain of earlier text; 0 =
    /// one part per thread (whisper.cpp's threads spin while they wait for each other,
    /// so parts keep their speed when other programs take cores); 1 = one window after
    /// another. On a GPU the track is always one part.
    pub parts: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            model: "whisper-tiny.en".into(),
            language: "auto".into(),
            threads: 0,
            beam_size: 0,
            temperature: 0.0,
            temperature_inc: 0.2,
            initial_prompt: None,
            word_timestamps: false,
            chunk_seconds: 30.0,
            max_gap_seconds: 1.0,
            condition_on_previous_text: true,
            compression_ratio_threshold: 2.4,
            logprob_threshold: -1.0,
            no_speech_threshold: 0.6,
            parts: 0,
        }
    }
}

/// A loaded model, kept in the GPU lane's resource cache.
struct Loaded {
    ctx: WhisperContext,
    /// One decoder state, reused by every window and job (whisper.cpp resets it per
    /// call; keeping it saves its buffers' allocation).
    state: WhisperState,
    /// More states, one per extra part of a track decoded at once on the CPU.
    extra: Vec<WhisperState>,
    name: String,
    multilingual: bool,
    gpu: bool,
}

/// The transcription stage kind; loads its model from `models`.
#[derive(Debug, Clone)]
pub struct WhisperStage {
    models: ModelsDir,
}

impl WhisperStage {
    pub fn with_models_dir(models: ModelsDir) -> Self {
        WhisperStage { models }
    }
}

/// Routes whisper.cpp's logs into `tracing` and says once where Whisper runs.
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        route_whisper_logs();
        if cfg!(feature = "cuda") {
            tracing::info!("whisper.transcribe: CUDA build, whisper.cpp uses the GPU when one is present");
        } else {
            tracing::info!(
                "whisper.transcribe: no GPU support in this build (cargo feature `cuda`); Whisper runs on the CPU"
            );
        }
    });
}

/// whisper.cpp's message when it honours [`first_pass_only`]: expected, so not an error.
const ONE_PASS_STOP: &str = "encoder_begin_callback returned false";

/// Sends whisper.cpp's and ggml's log lines to `tracing` at their own levels (as
/// whisper-rs's hooks do), except the expected stop after one encoder pass, which is
/// logged at debug level instead of as an error.
#[allow(unsafe_code)]
fn route_whisper_logs() {
    use whisper_rs::whisper_rs_sys as sys;
    unsafe extern "C" fn on_log(
        level: sys::ggml_log_level,
        text: *const std::ffi::c_char,
        _user_data: *mut std::ffi::c_void,
    ) {
        if text.is_null() {
            return;
        }
        // SAFETY: whisper.cpp and ggml pass a NUL-terminated string valid for the call.
        let text = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match level {
            sys::ggml_log_level_GGML_LOG_LEVEL_ERROR if !text.contains(ONE_PASS_STOP) => {
                tracing::error!(target: "whisper_cpp", "{text}")
            }
            sys::ggml_log_level_GGML_LOG_LEVEL_WARN => {
                tracing::warn!(target: "whisper_cpp", "{text}")
            }
            sys::ggml_log_level_GGML_LOG_LEVEL_INFO => {
                tracing::info!(target: "whisper_cpp", "{text}")
            }
            _ => tracing::debug!(target: "whisper_cpp", "{text}"),
        }
    }
    // SAFETY: the callback is a plain function that stays valid for the whole process and
    // reads only the string it is given; whisper_log_set installs it for ggml as well.
    unsafe { sys::whisper_log_set(Some(on_log), std::ptr::null_mut()) };
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
    let state = ctx
        .create_state()
        .map_err(|e| StageError::fatal(format!("cannot create a Whisper decoder state: {e:?}")))?;
    Ok(Loaded {
        ctx,
        state,
        extra: Vec::new(),
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

/// Decoding settings shared by every window of a job.
struct Decode<'a> {
    p: &'a Params,
    language: &'a str,
    threads: i32,
}

impl Decode<'_> {
    /// whisper.cpp's parameters for one attempt at `temperature`. whisper.cpp's own
    /// fallback is off (`temperature_inc` 0): [`decode_window`] runs the reference
    /// rules itself, on the whole window, with a real compression ratio. The prompt
    /// (earlier text) is always given explicitly, so a failed attempt never leaks
    /// into the context of the next one.
    fn params<'p>(&self, temperature: f32, prompt: &'p [std::ffi::c_int]) -> FullParams<'_, 'p> {
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
        fp.set_temperature(temperature);
        fp.set_temperature_inc(0.0);
        fp.set_logprob_thold(self.p.logprob_threshold);
        fp.set_no_speech_thold(self.p.no_speech_threshold);
        fp.set_token_timestamps(self.p.word_timestamps);
        fp.set_no_context(true);
        if !prompt.is_empty() {
            fp.set_tokens(prompt);
        }
        fp
    }

    /// The temperatures of the fallback ladder: the first, then up by the step to 1.0.
    fn temperatures(&self) -> Vec<f32> {
        let mut t = vec![self.p.temperature];
        if self.p.temperature_inc > 0.0 {
            let mut next = self.p.temperature + self.p.temperature_inc;
            while next <= 1.0 + 1e-6 {
                t.push((next * 100.0).round() / 100.0);
                next += self.p.temperature_inc;
            }
        }
        t
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

/// How well text compresses: long for a decoder stuck in a loop. openai-whisper's
/// measure (zlib at its default level), so its 2.4 threshold means the same here.
pub fn compression_ratio(text: &str) -> f32 {
    use std::io::Write;
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(text.as_bytes()).expect("writing to memory");
    let packed = z.finish().expect("writing to memory");
    text.len() as f32 / packed.len().max(1) as f32
}

/// A segment as decoded, times in centiseconds from the window's start.
struct RawSeg {
    t0: i64,
    t1: i64,
    text: String,
    avg_logprob: f32,
    no_speech_prob: f32,
    words: Vec<(Vec<u8>, i64, i64, f32, u32)>,
}

/// One attempt at a window.
struct Attempt {
    temperature: f32,
    segs: Vec<RawSeg>,
    /// The text and timestamp tokens, for the next window's prompt.
    tokens: Vec<std::ffi::c_int>,
    avg_logprob: f32,
    compression_ratio: f32,
    lang: Option<String>,
    /// Where in the window (centiseconds) Whisper stopped, when it was asked for one
    /// pass only and would have gone on: the rest of the window is still to decode.
    stopped_at: Option<i64>,
}

impl Attempt {
    /// The reference rule: too repetitive, or too unsure, unless it is silence.
    fn failed(&self, p: &Params) -> Vec<String> {
        let mut why = Vec::new();
        if self.compression_ratio > p.compression_ratio_threshold {
            why.push(format!(
                "compression ratio {:.2} > {}",
                self.compression_ratio, p.compression_ratio_threshold
            ));
        }
        if self.avg_logprob < p.logprob_threshold {
            let silence = self
                .segs
                .first()
                .is_some_and(|s| s.no_speech_prob > p.no_speech_threshold);
            if !silence {
                why.push(format!(
                    "average log-probability {:.2} < {}",
                    self.avg_logprob, p.logprob_threshold
                ));
            }
        }
        why
    }
}

/// Decodes `audio` (a window, at most 30 s) at `temperature`. With `one_pass`, Whisper
/// runs its encoder once: where its last segment ends before the window does, it would
/// encode the rest of the window again as a new 30-second input (the reference seek),
/// which costs as much as a whole window for a few seconds of speech. It stops instead,
/// and [`Attempt::stopped_at`] says where, so the caller packs that rest into the next
/// window.
fn attempt(
    state: &mut WhisperState,
    ctx: &WhisperContext,
    d: &Decode,
    audio: &[f32],
    prompt: &[std::ffi::c_int],
    temperature: f32,
    one_pass: bool,
) -> Result<Attempt, whisper_rs::WhisperError> {
    let passes = std::sync::atomic::AtomicU32::new(0);
    let mut fp = d.params(temperature, prompt);
    if one_pass {
        first_pass_only(&mut fp, &passes);
    }
    state.full(fp, audio)?;
    let stopped = passes.load(std::sync::atomic::Ordering::Relaxed) > 1;
    let eot = ctx.token_eot();
    let lang = whisper_rs::get_lang_str(state.full_lang_id_from_state()).map(str::to_string);
    let (mut sum_lp, mut n_tok) = (0f32, 0usize);
    let mut tokens = Vec::new();
    let mut text_all = String::new();
    let mut segs = Vec::new();
    for seg in state.as_iter() {
        let text = seg
            .to_str_lossy()
            .map(|s| s.into_owned())
            .unwrap_or_default();
        let (mut lp, mut n) = (0f32, 0usize);
        let mut words: Vec<(Vec<u8>, i64, i64, f32, u32)> = Vec::new();
        for i in 0..seg.n_tokens() {
            let Some(tok) = seg.get_token(i) else {
                continue;
            };
            let id = tok.token_id();
            let data = tok.token_data();
            if id == eot || (id > eot && id < ctx.token_beg()) {
                continue; // end of text, and special tokens other than timestamps
            }
            sum_lp += data.plog;
            n_tok += 1;
            // The prompt keeps timestamps, as openai-whisper's does: without them the
            // model drifts into untimed text and whole windows become one segment.
            tokens.push(id);
            if id > eot {
                continue; // a timestamp
            }
            lp += data.plog;
            n += 1;
            if d.p.word_timestamps {
                let bytes = tok.to_bytes().unwrap_or_default();
                let starts_word = bytes.first() == Some(&b' ') || words.is_empty();
                if starts_word {
                    words.push((bytes.to_vec(), data.t0, data.t1, data.p, 1));
                } else if let Some(w) = words.last_mut() {
                    w.0.extend_from_slice(bytes);
                    w.2 = data.t1.max(w.2);
                    w.3 += data.p;
                    w.4 += 1;
                }
            }
        }
        text_all.push_str(&text);
        segs.push(RawSeg {
            t0: seg.start_timestamp(),
            t1: seg.end_timestamp(),
            text,
            avg_logprob: if n > 0 { lp / n as f32 } else { 0.0 },
            no_speech_prob: seg.no_speech_probability(),
            words,
        });
    }
    let stopped_at = if stopped {
        Some(segs.last().map_or(0, |s| s.t1))
    } else {
        None
    };
    Ok(Attempt {
        temperature,
        segs,
        tokens,
        avg_logprob: sum_lp / (n_tok + 1) as f32,
        compression_ratio: compression_ratio(text_all.trim()),
        lang,
        stopped_at,
    })
}

/// Lets whisper.cpp start its encoder once per `full` call: a second start (the seek to
/// decode the rest of the window) is refused, and whisper.cpp then returns what the first
/// pass decoded. `passes` counts the starts.
#[allow(unsafe_code)]
fn first_pass_only(fp: &mut FullParams<'_, '_>, passes: &std::sync::atomic::AtomicU32) {
    unsafe extern "C" fn on_encoder_begin(
        _ctx: *mut whisper_rs::whisper_rs_sys::whisper_context,
        _state: *mut whisper_rs::whisper_rs_sys::whisper_state,
        passes: *mut std::ffi::c_void,
    ) -> bool {
        // SAFETY: `passes` is the AtomicU32 that first_pass_only's caller keeps alive
        // until its `full` call has returned (see there).
        let passes = unsafe { &*(passes as *const std::sync::atomic::AtomicU32) };
        passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0
    }
    // SAFETY: the callback only counts, on memory of its own; whisper.cpp calls it from
    // the thread running `full`. The caller (`attempt`) owns `passes` and keeps it alive
    // across `state.full(fp, ..)`, which consumes these params before it returns.
    unsafe {
        fp.set_start_encoder_callback(Some(on_encoder_begin));
        fp.set_start_encoder_callback_user_data(
            passes as *const std::sync::atomic::AtomicU32 as *mut std::ffi::c_void,
        );
    }
}

/// Decodes one window with the reference fallback: at the first temperature, then,
/// while the result is too repetitive or too unsure, again at each higher one. When
/// every attempt fails, the most confident one that is not a loop wins (as in
/// faster-whisper). Returns the chosen attempt and why earlier ones were refused.
fn decode_window(
    state: &mut WhisperState,
    ctx: &WhisperContext,
    d: &Decode,
    audio: &[f32],
    prompt: &[std::ffi::c_int],
    one_pass: bool,
) -> Result<(Attempt, Vec<String>), whisper_rs::WhisperError> {
    let mut tried: Vec<Attempt> = Vec::new();
    let mut refused = Vec::new();
    for t in d.temperatures() {
        // A sampled retry (t > 0.5) is not steered by earlier text, as openai-whisper.
        let prompt = if t > 0.5 { &[][..] } else { prompt };
        let a = attempt(state, ctx, d, audio, prompt, t, one_pass)?;
        let why = a.failed(d.p);
        if why.is_empty() {
            return Ok((a, refused));
        }
        refused.push(format!("t={:.1}: {}", a.temperature, why.join(", ")));
        tried.push(a);
    }
    let not_loops: Vec<usize> = (0..tried.len())
        .filter(|&i| tried[i].compression_ratio <= d.p.compression_ratio_threshold)
        .collect();
    let pool: Vec<usize> = if not_loops.is_empty() {
        (0..tried.len()).collect()
    } else {
        not_loops
    };
    let best = pool
        .into_iter()
        .max_by(|&a, &b| tried[a].avg_logprob.total_cmp(&tried[b].avg_logprob))
        .expect("at least one temperature");
    Ok((tried.swap_remove(best), refused))
}

/// Samples in a Whisper time (centiseconds; negative counts as 0).
fn cs_samples(cs: i64) -> u64 {
    (cs.max(0) as u64) * (SAMPLE_RATE as u64 / 100)
}

/// Seconds on the track of a time (centiseconds) inside a window.
fn track_secs(w: &Window, cs: i64, end: bool) -> f64 {
    let at = cs_samples(cs);
    secs(if end {
        w.to_track_end(at)
    } else {
        w.to_track_start(at)
    })
}

/// Turns a window's chosen attempt into transcript segments on the track's clock.
fn place(w: &Window, a: Attempt, word_timestamps: bool, out: &mut Vec<Segment>) {
    for s in a.segs {
        if non_speech(&s.text) {
            continue;
        }
        let start = track_secs(w, s.t0, false);
        let end = track_secs(w, s.t1, true).max(start);
        let words = word_timestamps.then(|| {
            s.words
                .into_iter()
                .map(|(bytes, t0, t1, p, n)| Word {
                    start: track_secs(w, t0, false),
                    end: track_secs(w, t1, true),
                    text: String::from_utf8_lossy(&bytes).trim().to_string(),
                    probability: ((p / n.max(1) as f32) * 1000.0).round() / 1000.0,
                })
                .filter(|w| !w.text.is_empty())
                .collect()
        });
        out.push(Segment {
            start,
            end,
            text: s.text,
            avg_logprob: (s.avg_logprob * 1000.0).round() / 1000.0,
            no_speech_prob: (s.no_speech_prob * 1000.0).round() / 1000.0,
            words,
        });
    }
}

/// What decoding a track gives: segments, the detected language, notes.
type Decoded = (Vec<Segment>, Option<String>, Vec<Note>);

/// Whisper's context window for earlier text: half the text context, less one.
const MAX_PROMPT_TOKENS: usize = 223;

/// The speech regions of a track and how they pack into windows: what the rest of a part
/// is packed again from, once Whisper stopped inside a window.
struct Speech<'a> {
    /// Speech regions on the track, in order (the whole track without VAD).
    regions: &'a [Span],
    pk: Packing,
}

impl Speech<'_> {
    /// Windows for the speech between `from` and `to`; a region longer than a window is
    /// cut at its quietest moment.
    fn pack(&self, wav: &mut Wav, from: u64, to: u64) -> Result<Vec<Window>, StageError> {
        let mut read_err = None;
        let w = chunks::pack_between(
            self.regions,
            from,
            to,
            &self.pk,
            &mut |head: Span| match wav.read(head.start, head.len()) {
                Ok(a) => {
                    head.start + chunks::quiet_cut(&a, samples(CUT_SEARCH_SECS) as usize) as u64
                }
                Err(e) => {
                    read_err = Some(e);
                    head.end
                }
            },
        );
        match read_err {
            Some(e) => Err(e),
            None => Ok(w),
        }
    }
}

/// Decodes every window in order, carrying earlier text as the prompt until a window
/// needs a fallback (then the context starts afresh). Whisper decodes each window but
/// the last in one encoder pass; where it stops before the window's end, the rest of the
/// part is packed again from there, so the rest of that window starts the next one (as
/// the reference implementations slide their window to the last timestamp). Returns
/// segments, the detected language, and notes.
fn transcribe(
    state: &mut WhisperState,
    ctx: &WhisperContext,
    d: &Decode,
    wav: &mut Wav,
    speech: &Speech,
    windows: &[Window],
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Decoded, String> {
    let mut segs = Vec::new();
    let mut notes = Vec::new();
    let mut detected = None;
    let mut prompt: Vec<std::ffi::c_int> = match &d.p.initial_prompt {
        Some(text) => ctx
            .tokenize(text, 1024)
            .map_err(|e| format!("cannot tokenize initial_prompt: {e:?}"))?,
        None => Vec::new(),
    };
    let min = samples(MIN_CHUNK_SECS) as usize;
    let to = windows.last().map_or(0, Window::end);
    let mut queue: std::collections::VecDeque<Window> = windows.iter().cloned().collect();
    while let Some(w) = queue.pop_front() {
        let w = &w;
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        let mut audio = Vec::with_capacity(w.len() as usize);
        for p in &w.pieces {
            audio.extend(wav.read(p.start, p.len()).map_err(|e| e.message)?);
        }
        if chunks::rms_db(&audio) < SILENCE_DB {
            continue;
        }
        if audio.len() < min {
            audio.resize(min, 0.0);
        }
        let began = std::time::Instant::now();
        let failed = |e| format!("Whisper decoding failed at {:.1} s: {e:?}", secs(w.start()));
        // The last window decodes to its end; another stops after one encoder pass.
        let one_pass = !queue.is_empty();
        let (mut a, mut refused) =
            decode_window(state, ctx, d, &audio, &prompt, one_pass).map_err(failed)?;
        if a.stopped_at
            .is_some_and(|cs| cs_samples(cs) < samples(MIN_CHUNK_SECS))
        {
            // Stopped at the very start: no progress to carry; decode it whole.
            (a, refused) = decode_window(state, ctx, d, &audio, &prompt, false).map_err(failed)?;
        }
        tracing::debug!(
            start = secs(w.start()),
            seconds = secs(w.len()),
            attempts = refused.len() + 1,
            tokens = a.tokens.len(),
            prompt = prompt.len(),
            stopped_at = a.stopped_at,
            ms = began.elapsed().as_millis() as u64,
            "whisper window decoded"
        );
        if let Some(cs) = a.stopped_at {
            // The rest of this window, and the windows after it, packed again.
            let from = w.to_track_start(cs_samples(cs));
            queue = speech.pack(wav, from, to).map_err(|e| e.message)?.into();
        }
        if detected.is_none() {
            detected = a.lang.clone();
        }
        if !refused.is_empty() {
            notes.push(Note {
                kind: "fallback".into(),
                at: (secs(w.start()) * 1000.0).round() / 1000.0,
                detail: format!(
                    "window {:.1}-{:.1} s decoded at temperature {:.1} after refusing {}",
                    secs(w.start()),
                    secs(w.end()),
                    a.temperature,
                    refused.join("; ")
                ),
            });
        }
        if !d.p.condition_on_previous_text || a.temperature > d.p.temperature {
            prompt.clear();
        } else {
            prompt.extend_from_slice(&a.tokens);
            let over = prompt.len().saturating_sub(MAX_PROMPT_TOKENS);
            prompt.drain(..over);
        }
        place(w, a, d.p.word_timestamps, &mut segs);
    }
    Ok((segs, detected, notes))
}

/// Cuts `windows` into at most `k` contiguous parts of about equal audio.
fn split(windows: &[Window], k: usize) -> Vec<&[Window]> {
    let k = k.clamp(1, windows.len().max(1));
    let total: u64 = windows.iter().map(Window::len).sum();
    let mut parts = Vec::with_capacity(k);
    let (mut from, mut acc) = (0, 0u64);
    for (i, w) in windows.iter().enumerate() {
        acc += w.len();
        let made = parts.len() + 1;
        // Close a part once it holds its share, leaving a window for each part left.
        if made < k && acc * k as u64 >= total * made as u64 && windows.len() - i > k - made {
            parts.push(&windows[from..=i]);
            from = i + 1;
        }
    }
    parts.push(&windows[from..]);
    parts.retain(|p| !p.is_empty());
    parts
}

/// Decodes the track's parts at once, each on its own state and thread, and joins
/// them in order; then drops decoder loops that survived.
fn transcribe_parts(
    states: &mut [&mut WhisperState],
    ctx: &WhisperContext,
    d: &Decode,
    wav_path: &std::path::Path,
    speech: &Speech,
    parts: &[&[Window]],
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Decoded, String> {
    let results: Vec<Result<Decoded, String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = states
            .iter_mut()
            .zip(parts)
            .map(|(state, part)| {
                sc.spawn(move || {
                    let mut wav = Wav::open(wav_path).map_err(|e| e.message)?;
                    transcribe(state, ctx, d, &mut wav, speech, part, cancel)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a decoding thread panicked".into()))
            })
            .collect()
    });
    let (mut segs, mut detected, mut notes) = (Vec::new(), None, Vec::new());
    for r in results {
        let (s, lang, n) = r?;
        segs.extend(s);
        detected = detected.or(lang);
        notes.extend(n);
    }
    notes.extend(drop_repeats(&mut segs));
    Ok((segs, detected, notes))
}

fn write_outputs(ctx: &JobCtx, t: &mut Transcript) -> Result<(), StageError> {
    t.normalize();
    let w = |name: &str, bytes: &[u8]| {
        std::fs::write(ctx.out_dir.join(name), bytes)
            .map_err(|e| StageError::retryable(format!("cannot write {name}: {e}")))
    };
    ctx.write_output(&*t)?;
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

impl TypedStage for WhisperStage {
    type Params = Params;
    const NAME: &'static str = "whisper.transcribe";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "Speech to text with Whisper (whisper.cpp) on the upstream audio.wav, speech regions only when audio.vad is needed -> transcript.json/.srt/.vtt/.txt";

    fn default_lane(&self) -> Lane {
        Lane::Gpu
    }

    fn validate(&self, p: Params, _env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
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
        if errs.is_empty() { Ok(p) } else { Err(errs) }
    }

    fn key_extras(&self, p: &Params, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let model = resolve(&self.models, &p.model, env.base_dir, FORMAT_WHISPER)?;
        let mut x = KeyExtras::default();
        x.tools
            .insert("whisper_model".into(), model.blake3(Some(env.hasher))?);
        x.tools.insert(
            "whisper.cpp".into(),
            whisper_rs::WHISPER_CPP_VERSION.to_string(),
        );
        Ok(x)
    }

    fn resource_group(&self, p: &Params) -> Option<String> {
        Some(format!("whisper:{}", p.model))
    }

    fn doctor(&self, p: &Params, base_dir: &std::path::Path) -> Vec<Check> {
        vec![vsum_models::doctor_model(
            &self.models,
            &p.model,
            base_dir,
            FORMAT_WHISPER,
        )]
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let mut t = Transcript {
            language: None,
            model: p.model.clone(),
            duration: 0.0,
            has_audio: true,
            reason: None,
            vad: false,
            segments: Vec::new(),
            notes: Vec::new(),
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
        let mut pk = Packing::seconds(p.chunk_seconds);
        pk.keep_gap = samples(p.max_gap_seconds);
        let mut speech_secs: Vec<(f64, f64)> = Vec::new();
        let mut regions = vec![Span {
            start: 0,
            end: total,
        }];
        let windows: Vec<Window> = match ctx.upstream::<VadFile>()? {
            Some(v) => {
                t.vad = true;
                speech_secs = v.segments.iter().map(|s| (s.start, s.end)).collect();
                speech_secs.sort_by(|a, b| a.0.total_cmp(&b.0));
                regions = speech_secs
                    .iter()
                    .map(|&(start, end)| Span {
                        start: samples(start),
                        end: samples(end),
                    })
                    .collect();
                Speech {
                    regions: &regions,
                    pk,
                }
                .pack(&mut wav, 0, total)?
            }
            None => {
                // The whole track, cut every window length at a quiet moment.
                let mut cuts = Vec::new();
                let mut pos = 0u64;
                while pos < total {
                    let audio = wav.read(pos, pk.max_len)?;
                    if audio.is_empty() {
                        break;
                    }
                    let mut n = audio.len() as u64;
                    if pos + n < total {
                        n = chunks::quiet_cut(&audio, samples(CUT_SEARCH_SECS) as usize).max(1)
                            as u64;
                    }
                    cuts.push(Span {
                        start: pos,
                        end: pos + n,
                    });
                    pos += n;
                }
                chunks::contiguous(&cuts)
            }
        };
        if windows.is_empty() || total == 0 {
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

        // The model and its decoder state: loaded once per run on the GPU lane and
        // reused for every window and every video; per job elsewhere.
        let model = resolve(&self.models, &p.model, ctx.base_dir, FORMAT_WHISPER)?;
        let blake3 = model.blake3(None)?;
        // The engine decides the device: the GPU unless this job runs on the CPU (a
        // `lane: cpu` stage, or the retry after a GPU out-of-memory error).
        let want_gpu = !ctx.force_cpu;
        let key = format!("whisper:{blake3}:{}", if want_gpu { "gpu" } else { "cpu" });
        if want_gpu && let Some(e) = crate::injected_gpu_oom("whisper.transcribe") {
            return Err(e);
        }
        let (cores, held_cores, on_lane) = (ctx.cores, ctx.held_cores, ctx.resources.is_some());
        let mut own: Option<Loaded> = None;
        let loaded: &mut Loaded = match ctx.resources.as_deref_mut() {
            Some(r) => r.get_or_load(&key, || load(&model, want_gpu))?,
            None => {
                if want_gpu {
                    tracing::warn!(
                        "whisper.transcribe runs outside the GPU lane: its model is loaded for every job (use `lane: gpu`)"
                    );
                }
                own.insert(load(&model, want_gpu)?)
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
        // On the CPU a track is decoded as several parts at once, one thread each.
        let k = match (loaded.gpu, p.parts) {
            (true, _) => 1,
            (false, 0) => threads,
            (false, n) => n as usize,
        };
        let parts = split(&windows, k.min(threads).max(1));
        let d = Decode {
            p,
            language: &language,
            threads: (threads / parts.len()).clamp(1, 64) as i32,
        };
        while loaded.extra.len() + 1 < parts.len() {
            let st = loaded.ctx.create_state().map_err(|e| {
                StageError::fatal(format!("cannot create a Whisper decoder state: {e:?}"))
            })?;
            loaded.extra.push(st);
        }

        // On the CPU, whisper.cpp's threads spin while they wait: hold that many cores,
        // so no CPU-lane job competes with them (the GPU lane tops up its one core).
        let _cores = match (cores, on_lane, loaded.gpu) {
            (Some(c), true, false) => c.top_up(threads, held_cores),
            _ => None,
        };
        drop(wav);
        let mut states: Vec<&mut WhisperState> = std::iter::once(&mut loaded.state)
            .chain(loaded.extra.iter_mut())
            .take(parts.len())
            .collect();
        let speech = Speech {
            regions: &regions,
            pk,
        };
        let result = transcribe_parts(
            &mut states,
            &loaded.ctx,
            &d,
            &wav_path,
            &speech,
            &parts,
            ctx.cancel,
        );
        let gpu = loaded.gpu;
        let (segments, detected, notes) = match result {
            Err(e) if e == "cancelled" => return Err(StageError::cancelled()),
            Err(e) if gpu => {
                // A GPU failure (often out of memory): the model goes, and the engine
                // runs the job once more on the CPU and notes it in the run summary.
                if let Some(r) = ctx.resources.as_deref_mut() {
                    r.drop_resource(&key);
                }
                return Err(StageError::gpu_out_of_memory(format!(
                    "whisper.cpp failed on the GPU: {e}"
                )));
            }
            Ok(r) => r,
            Err(e) if e == "cancelled" => return Err(StageError::cancelled()),
            Err(e) => return Err(StageError::retryable(e)),
        };
        t.segments = segments;
        let snapped = snap_to_speech(&mut t.segments, &speech_secs);
        tracing::debug!(snapped, "segment bounds moved out of pauses onto speech");
        t.notes.extend(notes);
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

    fn windows(lens: &[u64]) -> Vec<Window> {
        let mut at = 0;
        lens.iter()
            .map(|&n| {
                let span = Span {
                    start: at,
                    end: at + n,
                };
                at += n;
                Window {
                    pieces: vec![span],
                    speech: vec![span],
                }
            })
            .collect()
    }

    #[test]
    fn a_track_splits_into_contiguous_parts_of_about_equal_audio() {
        let w = windows(&[25, 24, 26, 20, 25, 23, 27, 24, 22, 25, 26, 21]);
        for k in 1..=4 {
            let parts = split(&w, k);
            assert_eq!(parts.len(), k);
            // In order, every window once.
            let flat: Vec<u64> = parts
                .iter()
                .flat_map(|p| p.iter())
                .map(|w| w.start())
                .collect();
            assert_eq!(flat, w.iter().map(|w| w.start()).collect::<Vec<_>>());
            let sizes: Vec<u64> = parts
                .iter()
                .map(|p| p.iter().map(Window::len).sum())
                .collect();
            let total: u64 = sizes.iter().sum();
            for s in &sizes {
                assert!(
                    (*s as f64 - total as f64 / k as f64).abs() <= 27.0,
                    "k={k}: {sizes:?}"
                );
            }
        }
        // Never more parts than windows, and never an empty part.
        let few = windows(&[30, 5]);
        assert_eq!(split(&few, 4).len(), 2);
        let lopsided = windows(&[100, 1, 1]);
        let parts = split(&lopsided, 3);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| !p.is_empty()));
        assert_eq!(split(&[], 2).len(), 0);
    }

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
