//! `media.audio`: the soundtrack as `audio.wav` (16 kHz mono signed 16-bit by default,
//! what Whisper and voice-activity models want), resampled with swresample and streamed
//! to disk so a two-hour file never sits in memory.
//!
//! A video without an audio stream is not a failure: the job writes only `audio.json`
//! with `"has_audio": false` and a reason, and no `audio.wav`, so speech stages
//! downstream can produce an empty result that says why. With audio, `audio.json`
//! describes the WAV (samples, duration, source stream, decode errors).

use std::path::Path;

use ffmpeg::format::Sample;
use ffmpeg::format::sample::Type as SampleType;
use ffmpeg::media::Type as MediaType;
use ffmpeg::software::resampling;
use ffmpeg::{ChannelLayout, codec, frame};
use ffmpeg_next as ffmpeg;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, ParamError, StageError};

use super::{
    WavWriter, check_cancel, codec_name, ffmpeg_key_extras, job_video, known_ts, open_input,
    ts_secs, warn, warn_damaged,
};

const KIND: &str = "media.audio";

/// A hole in the audio timestamps longer than this is filled with silence, so the WAV
/// stays aligned with the video's clock.
const GAP_FILL_SECS: f64 = 0.1;
/// Filled silence is bounded, so a tiny file with a hostile timestamp cannot become a
/// huge WAV: in all at most as long as the audio decoded so far (plus this slack) ...
const FILL_SLACK_SECS: f64 = 60.0;
/// ... and never more than this. A hole past the bounds is left out and listed in
/// `audio.json` (`unfilled_gaps`): the WAV's clock runs behind the video's after it.
const FILL_MAX_SECS: f64 = 3600.0;
/// Unfilled holes listed in `audio.json` (the total counts all).
const UNFILLED_LISTED: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Sample rate of audio.wav in Hz (8000 to 192000; 16000 is what speech models want).
    pub sample_rate: u32,
    /// Channels of audio.wav (1 = mono downmix, 2 = stereo, up to 8).
    pub channels: u16,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            sample_rate: 16_000,
            channels: 1,
        }
    }
}

/// The `media.audio` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct AudioStage;

/// `audio.json`: what the WAV is, or why there is none. Fields a hand-written file
/// (from a command stage) leaves out default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AudioOut {
    pub has_audio: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: u64,
    /// Seconds of the WAV.
    pub duration: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceOut>,
    /// Seconds of silence written where the source's timestamps had holes.
    pub gaps_filled: f64,
    /// Holes too long to fill (see `FILL_MAX_SECS`): from here on the WAV runs behind
    /// the video's clock by the hole. Absent when every hole was filled.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unfilled_gaps: Vec<Gap>,
    #[serde(skip_serializing_if = "is_zero")]
    pub unfilled_gap_seconds: f64,
    pub decode_errors: u64,
}

/// A hole in the source's audio timestamps that was not filled with silence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gap {
    /// Where the hole starts, seconds on the source's clock.
    pub at: f64,
    pub seconds: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The source stream of [`AudioOut`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceOut {
    pub stream: usize,
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub language: Option<String>,
    /// Where the audio starts on the container's clock (the WAV starts there).
    pub start_time: Option<f64>,
}

impl Output for AudioOut {
    const FILE: &'static str = "audio.json";
}

impl TypedStage for AudioStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    // 2: filled silence is bounded (holes past the bound are listed, not filled).
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Extracts the soundtrack as audio.wav (16 kHz mono s16 by default) + audio.json; no audio stream is recorded, not failed";

    fn validate(&self, p: Params, _env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        if !(8_000..=192_000).contains(&p.sample_rate) {
            errs.push(
                ParamError::new(
                    &["sample_rate"],
                    format!("sample_rate {} is out of range", p.sample_rate),
                )
                .hint("use 8000..=192000 (16000 for speech models)"),
            );
        }
        if !(1..=8).contains(&p.channels) {
            errs.push(
                ParamError::new(
                    &["channels"],
                    format!("channels {} is out of range", p.channels),
                )
                .hint("use 1 (mono) to 8"),
            );
        }
        if errs.is_empty() { Ok(p) } else { Err(errs) }
    }

    fn key_extras(&self, _p: &Params, _env: &KeyEnv) -> Result<KeyExtras, StageError> {
        Ok(ffmpeg_key_extras())
    }

    fn doctor(&self, _p: &Params, _base_dir: &std::path::Path) -> Vec<Check> {
        super::doctor_ffmpeg()
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let video = job_video(ctx, KIND)?;
        let out = extract(ctx, &video.path, p)?;
        warn_damaged(ctx, &video.path, out.decode_errors, "audio");
        if out.unfilled_gap_seconds > 0.0 {
            warn(
                ctx,
                format!(
                    "{}: {:.0} s of holes in the audio timestamps were not filled with silence (more than the {:.1} s of audio it has, or over {FILL_MAX_SECS:.0} s); audio.json lists them, and the WAV runs behind the video's clock after each",
                    video.path.display(),
                    out.unfilled_gap_seconds,
                    (out.samples as f64 / f64::from(out.sample_rate)) - out.gaps_filled,
                ),
            );
        }
        ctx.write_output(&out)
    }
}

fn no_audio(p: &Params, reason: &str) -> AudioOut {
    AudioOut {
        has_audio: false,
        reason: Some(reason.to_string()),
        file: None,
        sample_rate: p.sample_rate,
        channels: p.channels,
        samples: 0,
        duration: 0.0,
        source: None,
        gaps_filled: 0.0,
        unfilled_gaps: Vec::new(),
        unfilled_gap_seconds: 0.0,
        decode_errors: 0,
    }
}

/// The resampler and its reusable output frame.
struct Converter {
    swr: resampling::Context,
    out: frame::Audio,
    capacity: usize,
    in_channels: u16,
}

fn out_format() -> Sample {
    Sample::I16(SampleType::Packed)
}

/// A frame's channel layout, or the default one for its channel count when the decoder
/// left it unspecified (raw PCM often does).
fn layout_of(f: &frame::Audio) -> ChannelLayout {
    let l = f.channel_layout();
    if l.channels() == i32::from(f.channels()) && l.channels() > 0 {
        l
    } else {
        ChannelLayout::default(i32::from(f.channels()))
    }
}

impl Converter {
    fn new(f: &frame::Audio, p: &Params) -> Result<Self, ffmpeg::Error> {
        let swr = resampling::Context::get(
            f.format(),
            layout_of(f),
            f.rate(),
            out_format(),
            ChannelLayout::default(i32::from(p.channels)),
            p.sample_rate,
        )?;
        Ok(Converter {
            swr,
            out: frame::Audio::empty(),
            capacity: 0,
            in_channels: f.channels(),
        })
    }

    fn matches(&self, f: &frame::Audio) -> bool {
        let i = self.swr.input();
        i.format == f.format() && i.rate == f.rate() && self.in_channels == f.channels()
    }

    /// Makes room for `in_samples` more input and returns the output frame to fill.
    fn ready(&mut self, in_samples: usize, in_rate: u32) -> &mut frame::Audio {
        let out_rate = self.swr.output().rate;
        let need =
            (in_samples as u64 * u64::from(out_rate) / u64::from(in_rate.max(1))) as usize + 4096;
        if need > self.capacity {
            self.capacity = need.max(16_384);
            let o = self.swr.output();
            self.out = frame::Audio::new(o.format, self.capacity, o.channel_layout);
        }
        self.out.set_samples(self.capacity);
        &mut self.out
    }

    fn convert(
        &mut self,
        f: &mut frame::Audio,
        wav: &mut WavWriter,
        channels: u16,
    ) -> Result<u64, StageError> {
        // The resampler compares the frame's own layout: give unspecified ones the default.
        f.set_channel_layout(layout_of(f));
        let (n, rate) = (f.samples(), f.rate());
        self.ready(n, rate);
        self.swr
            .run(f, &mut self.out)
            .map_err(|e| StageError::fatal(format!("resampling failed: {e}")))?;
        write_samples(&self.out, wav, channels)
    }

    /// Drains what the resampler still holds (the end of the stream or of a format).
    fn drain(&mut self, wav: &mut WavWriter, channels: u16) -> Result<u64, StageError> {
        let mut total = 0;
        loop {
            self.ready(0, 1);
            if self.swr.flush(&mut self.out).is_err() {
                break;
            }
            let n = write_samples(&self.out, wav, channels)?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }
}

fn write_samples(f: &frame::Audio, wav: &mut WavWriter, channels: u16) -> Result<u64, StageError> {
    let n = f.samples();
    if n == 0 {
        return Ok(0);
    }
    let bytes = n * usize::from(channels) * 2;
    let data = &f.data(0)[..bytes];
    if cfg!(target_endian = "big") {
        let swapped: Vec<u8> = data.chunks_exact(2).flat_map(|c| [c[1], c[0]]).collect();
        wav.write(&swapped)?;
    } else {
        wav.write(data)?;
    }
    Ok(n as u64)
}

fn write_silence(wav: &mut WavWriter, samples: u64, channels: u16) -> Result<(), StageError> {
    let zeros = vec![0u8; 8192];
    let mut left = samples * u64::from(channels) * 2;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        wav.write(&zeros[..k])?;
        left -= k as u64;
    }
    Ok(())
}

fn extract(ctx: &JobCtx, path: &Path, p: &Params) -> Result<AudioOut, StageError> {
    let mut input = open_input(path)?;
    let Some(stream) = input.streams().best(MediaType::Audio) else {
        return Ok(no_audio(p, "no audio stream"));
    };
    let index = stream.index();
    let tb = stream.time_base();
    let start = known_ts(stream.start_time());
    let language = stream
        .metadata()
        .get("language")
        .filter(|l| *l != "und")
        .map(str::to_string);
    let par = stream.parameters();
    let codec = codec_name(par.id());
    let mut dec = codec::Context::from_parameters(par)
        .map_err(|e| {
            StageError::bad_input(format!("cannot set up decoding of {}: {e}", path.display()))
        })?
        .decoder();
    dec.set_packet_time_base(tb);
    let mut dec = dec.audio().map_err(|e| {
        StageError::bad_input(format!(
            "cannot decode the {codec} audio of {}: {e}",
            path.display()
        ))
        .hint(
            "this FFmpeg build lacks a decoder for it: convert the file or install a fuller FFmpeg",
        )
    })?;
    let source = SourceOut {
        stream: index,
        codec,
        sample_rate: dec.rate(),
        channels: dec.channels(),
        language,
        start_time: start.map(|s| ts_secs(s, tb)),
    };
    let wav_path = ctx.out_dir.join("audio.wav");
    let mut wav = WavWriter::create(&wav_path, p.sample_rate, p.channels)?;
    let mut conv: Option<Converter> = None;
    let mut samples = 0u64;
    let mut errors = 0u64;
    let mut gaps = 0u64;
    let mut unfilled: Vec<Gap> = Vec::new();
    let mut unfilled_secs = 0.0f64;
    // Where the next frame should start, in seconds of the source's clock.
    let mut expected: Option<f64> = None;
    let mut frame = frame::Audio::empty();
    let mut packet = ffmpeg::Packet::empty();
    let mut n = 0u64;
    let mut eof = false;
    let mut stalls = 0u32;
    loop {
        n += 1;
        if n.is_multiple_of(1024) {
            check_cancel(ctx)?;
        }
        if !eof {
            match packet.read(&mut input) {
                Ok(()) => {
                    if packet.stream() != index {
                        continue;
                    }
                    if packet.is_corrupt() {
                        errors += 1;
                    }
                    if dec.send_packet(&packet).is_err() {
                        errors += 1;
                    }
                }
                Err(ffmpeg::Error::Eof) => {
                    eof = true;
                    let _ = dec.send_eof();
                }
                Err(ffmpeg::Error::InvalidData) => {
                    errors += 1;
                    continue;
                }
                Err(_) => {
                    errors += 1;
                    eof = true;
                    let _ = dec.send_eof();
                }
            }
        }
        loop {
            match dec.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => break,
                Err(ffmpeg::Error::Eof) => break,
                Err(_) => {
                    errors += 1;
                    stalls += 1;
                    if eof && stalls < 10_000 {
                        continue;
                    }
                    break;
                }
            }
            if frame.samples() == 0 || frame.rate() == 0 || frame.channels() == 0 {
                continue;
            }
            // Holes in the timestamps become silence.
            let t = frame
                .timestamp()
                .or(frame.pts())
                .map(|ts| ts_secs(ts - start.unwrap_or(0), tb));
            if let (Some(t), Some(e)) = (t, expected) {
                let hole = t - e;
                let rate = f64::from(p.sample_rate);
                let decoded = (samples - gaps) as f64 / rate;
                let filled = gaps as f64 / rate;
                let allowed = (decoded + FILL_SLACK_SECS).min(FILL_MAX_SECS) - filled;
                if hole > GAP_FILL_SECS && hole <= allowed {
                    if let Some(c) = conv.as_mut() {
                        samples += c.drain(&mut wav, p.channels)?;
                    }
                    let fill = (hole * rate).round() as u64;
                    write_silence(&mut wav, fill, p.channels)?;
                    samples += fill;
                    gaps += fill;
                } else if hole > GAP_FILL_SECS {
                    unfilled_secs += hole;
                    if unfilled.len() < UNFILLED_LISTED {
                        unfilled.push(Gap {
                            at: e,
                            seconds: hole,
                        });
                    }
                }
            }
            let dur = frame.samples() as f64 / f64::from(frame.rate());
            expected = Some(
                t.map_or_else(|| expected.unwrap_or(0.0), |t| t.max(expected.unwrap_or(t))) + dur,
            );
            if conv.as_ref().is_some_and(|c| !c.matches(&frame))
                && let Some(mut c) = conv.take()
            {
                samples += c.drain(&mut wav, p.channels)?;
            }
            if conv.is_none() {
                conv = Some(Converter::new(&frame, p).map_err(|e| {
                    StageError::fatal(format!(
                        "cannot resample the audio of {} ({} Hz, {} channels) to {} Hz: {e}",
                        path.display(),
                        frame.rate(),
                        frame.channels(),
                        p.sample_rate
                    ))
                })?);
            }
            let c = conv.as_mut().expect("set above");
            samples += c.convert(&mut frame, &mut wav, p.channels)?;
        }
        if eof {
            break;
        }
    }
    if let Some(c) = conv.as_mut() {
        samples += c.drain(&mut wav, p.channels)?;
    }
    wav.finish()?;
    Ok(AudioOut {
        has_audio: true,
        reason: None,
        file: Some("audio.wav".to_string()),
        sample_rate: p.sample_rate,
        channels: p.channels,
        samples,
        duration: samples as f64 / f64::from(p.sample_rate),
        source: Some(source),
        gaps_filled: gaps as f64 / f64::from(p.sample_rate),
        unfilled_gaps: unfilled,
        unfilled_gap_seconds: unfilled_secs,
        decode_errors: errors,
    })
}
