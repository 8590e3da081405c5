//! `media.probe`: what a source is (container, duration, size, bitrate, and each stream's
//! codec, size, frame rates, rotation, pixel format, sample rate, channels, language),
//! written as `probe.json` so later stages and people can look before decoding.
//!
//! Beyond the container header it reads every packet once (cheap: no decoding) so the
//! durations and packet counts are real and a damaged file shows up as `decode_errors`;
//! `decode: true` also decodes every frame to count decoder errors.

use std::collections::BTreeMap;
use std::path::Path;

use ffmpeg::format::context::Input;
use ffmpeg::media::Type as MediaType;
use ffmpeg::{codec, frame};
use ffmpeg_next as ffmpeg;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{Check, JobCtx, KeyEnv, KeyExtras, StageError};

use super::{
    check_cancel, ffmpeg_key_extras, job_video, known_ts, open_input, rational, stream_rotation,
    ts_secs, video_stream_index, warn_damaged,
};

const KIND: &str = "media.probe";

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Also decode every audio and video frame and count decoder errors (slow: a full
    /// decode). Off, only the demuxer's errors are counted.
    pub decode: bool,
}

/// The `media.probe` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProbeStage;

/// `probe.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeOut {
    /// File name only: outputs never hold absolute paths.
    pub file: String,
    pub size: u64,
    pub container: String,
    pub container_long: String,
    /// Seconds; the container's, else the longest stream's.
    pub duration: Option<f64>,
    pub start_time: Option<f64>,
    /// Bits per second.
    pub bit_rate: Option<i64>,
    pub video_stream: Option<usize>,
    pub audio_stream: Option<usize>,
    pub streams: Vec<StreamOut>,
    pub tags: BTreeMap<String, String>,
    /// `packets`: every packet was read; `decode`: every frame was also decoded.
    pub scan: String,
    /// Errors met while reading (and with `decode`, decoding): damaged parts of the file.
    pub decode_errors: u64,
}

/// One stream of [`ProbeOut`].
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamOut {
    pub index: usize,
    pub kind: String,
    pub codec: String,
    pub codec_long: Option<String>,
    pub profile: Option<String>,
    /// Seconds: from the header, else from the last packet.
    pub duration: Option<f64>,
    pub start_time: Option<f64>,
    pub bit_rate: Option<i64>,
    /// Frame count from the header (0 when the container does not say).
    pub frames_header: i64,
    pub packets: u64,
    pub keyframes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Average frame rate (frames / duration).
    pub fps_avg: Option<f64>,
    /// The lowest rate that represents all timestamps ("r_frame_rate").
    pub fps_real: Option<f64>,
    /// True when the average and real rates disagree: variable frame rate.
    pub vfr: Option<bool>,
    /// Degrees counterclockwise a player turns the picture (0, 90, 180, 270): ffprobe's
    /// `rotation` modulo 360 (a phone's portrait video is 270).
    pub rotation: Option<i32>,
    pub pixel_format: Option<String>,
    pub sample_aspect_ratio: Option<String>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u16>,
    pub sample_format: Option<String>,
    pub language: Option<String>,
    pub title: Option<String>,
    pub default: bool,
    pub attached_pic: bool,
    pub decode_errors: u64,
}

#[derive(Default, Clone)]
struct Scan {
    packets: u64,
    keyframes: u64,
    first: Option<i64>,
    end: Option<i64>,
    errors: u64,
}

impl Output for ProbeOut {
    const FILE: &'static str = "probe.json";
}

impl TypedStage for ProbeStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Describes a media file: container, duration, streams (codec, size, fps, rotation, audio format) -> probe.json";

    fn key_extras(&self, _p: &Params, _env: &KeyEnv) -> Result<KeyExtras, StageError> {
        Ok(ffmpeg_key_extras())
    }

    fn doctor(&self, _p: &Params, _base_dir: &std::path::Path) -> Vec<Check> {
        super::doctor_ffmpeg()
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let video = job_video(ctx, KIND)?;
        let mut input = open_input(&video.path)?;
        let size = std::fs::metadata(&video.path).map(|m| m.len()).unwrap_or(0);
        let (scans, read_errors) = scan_packets(ctx, &mut input)?;
        let mut decode_errors = BTreeMap::new();
        if p.decode {
            decode_errors = decode_all(ctx, &video.path)?;
        }
        let out = describe(
            &input,
            &video.path,
            size,
            &scans,
            read_errors,
            &decode_errors,
            p.decode,
        );
        warn_damaged(ctx, &video.path, out.decode_errors, "");
        ctx.write_output(&out)
    }
}

/// Reads every packet once, per stream counting packets and keyframes and finding the
/// first and last timestamps.
fn scan_packets(ctx: &JobCtx, input: &mut Input) -> Result<(Vec<Scan>, u64), StageError> {
    let mut scans = vec![Scan::default(); input.nb_streams() as usize];
    let mut errors = 0u64;
    let mut packet = ffmpeg::Packet::empty();
    let mut n = 0u64;
    loop {
        n += 1;
        if n.is_multiple_of(4096) {
            check_cancel(ctx)?;
        }
        match packet.read(input) {
            Ok(()) => {
                let Some(s) = scans.get_mut(packet.stream()) else {
                    continue;
                };
                s.packets += 1;
                if packet.is_key() {
                    s.keyframes += 1;
                }
                if packet.is_corrupt() {
                    s.errors += 1;
                }
                if let Some(pts) = packet.pts().or(packet.dts()) {
                    s.first = Some(s.first.map_or(pts, |f| f.min(pts)));
                    let end = pts + packet.duration().max(0);
                    s.end = Some(s.end.map_or(end, |e| e.max(end)));
                }
            }
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::InvalidData) if errors < 10_000 => errors += 1,
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    Ok((scans, errors))
}

/// Decodes every audio and video stream, returning decoder errors per stream.
fn decode_all(ctx: &JobCtx, path: &Path) -> Result<BTreeMap<usize, u64>, StageError> {
    let mut input = open_input(path)?;
    let mut decoders: BTreeMap<usize, (ffmpeg::decoder::Opened, u64)> = BTreeMap::new();
    for s in input.streams() {
        let medium = s.parameters().medium();
        if medium != MediaType::Video && medium != MediaType::Audio {
            continue;
        }
        let Ok(mut c) = codec::Context::from_parameters(s.parameters()) else {
            continue;
        };
        if medium == MediaType::Video {
            c.set_threading(codec::threading::Config {
                kind: codec::threading::Type::Frame,
                count: ctx.threads.max(1),
                ..Default::default()
            });
        }
        let Some(dc) = codec::decoder::find(s.parameters().id()) else {
            continue;
        };
        if let Ok(d) = c.decoder().open_as(dc) {
            decoders.insert(s.index(), (d, 0));
        }
    }
    let mut vframe = frame::Video::empty();
    let mut aframe = frame::Audio::empty();
    let drain = |d: &mut ffmpeg::decoder::Opened,
                 errs: &mut u64,
                 vf: &mut frame::Video,
                 af: &mut frame::Audio| {
        loop {
            let r = if d.medium() == MediaType::Video {
                let r = d.receive_frame(vf);
                if r.is_ok() && (vf.is_corrupt() || vf.has_decode_errors()) {
                    *errs += 1;
                }
                r
            } else {
                d.receive_frame(af)
            };
            match r {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => break,
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => break,
                Err(_) => *errs += 1,
            }
        }
    };
    let mut packet = ffmpeg::Packet::empty();
    let mut n = 0u64;
    loop {
        n += 1;
        if n.is_multiple_of(1024) {
            check_cancel(ctx)?;
        }
        match packet.read(&mut input) {
            Ok(()) => {
                if let Some((d, errs)) = decoders.get_mut(&packet.stream()) {
                    if d.send_packet(&packet).is_err() {
                        *errs += 1;
                    }
                    drain(d, errs, &mut vframe, &mut aframe);
                }
            }
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::InvalidData) => {}
            Err(_) => break,
        }
    }
    for (d, errs) in decoders.values_mut() {
        let _ = d.send_eof();
        drain(d, errs, &mut vframe, &mut aframe);
    }
    Ok(decoders.into_iter().map(|(i, (_, e))| (i, e)).collect())
}

fn describe(
    input: &Input,
    path: &Path,
    size: u64,
    scans: &[Scan],
    read_errors: u64,
    decode_errors: &BTreeMap<usize, u64>,
    decoded: bool,
) -> ProbeOut {
    let fmt = input.format();
    let mut streams = Vec::new();
    for s in input.streams() {
        let par = s.parameters();
        let tb = s.time_base();
        let scan = scans.get(s.index()).cloned().unwrap_or_default();
        let medium = par.medium();
        let header_dur = known_ts(s.duration())
            .filter(|d| *d > 0)
            .map(|d| ts_secs(d, tb));
        let scanned_dur = match (scan.first, scan.end) {
            (Some(f), Some(e)) if e > f => Some(ts_secs(e - f, tb)),
            _ => None,
        };
        let cctx = codec::Context::from_parameters(par.clone()).ok();
        let id = par.id();
        let desc = codec::decoder::find(id);
        let tag = |k: &str| s.metadata().get(k).map(str::to_string);
        let mut out = StreamOut {
            index: s.index(),
            kind: format!("{medium:?}").to_lowercase(),
            codec: id.name().to_string(),
            codec_long: desc.map(|c| c.description().to_string()),
            profile: None,
            duration: header_dur.or(scanned_dur),
            start_time: known_ts(s.start_time()).map(|t| ts_secs(t, tb)),
            bit_rate: None,
            frames_header: s.frames(),
            packets: scan.packets,
            keyframes: scan.keyframes,
            width: None,
            height: None,
            fps_avg: None,
            fps_real: None,
            vfr: None,
            rotation: None,
            pixel_format: None,
            sample_aspect_ratio: None,
            sample_rate: None,
            channels: None,
            sample_format: None,
            language: tag("language").filter(|l| l != "und"),
            title: tag("title"),
            default: s
                .disposition()
                .contains(ffmpeg::format::stream::Disposition::DEFAULT),
            attached_pic: s
                .disposition()
                .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC),
            decode_errors: scan.errors + decode_errors.get(&s.index()).copied().unwrap_or(0),
        };
        let br = par.bit_rate();
        out.bit_rate = (br > 0).then_some(br);
        let opened = cctx
            .zip(desc)
            .and_then(|(c, dc)| c.decoder().open_as(dc).ok());
        if let Some(o) = opened {
            out.profile = profile_name(o.profile());
            match medium {
                MediaType::Video => {
                    if let Ok(v) = o.video() {
                        out.width = Some(v.width());
                        out.height = Some(v.height());
                        out.pixel_format = pixel_name(v.format());
                        let sar = v.aspect_ratio();
                        out.sample_aspect_ratio = (sar.numerator() > 0)
                            .then(|| format!("{}:{}", sar.numerator(), sar.denominator()));
                    }
                }
                MediaType::Audio => {
                    if let Ok(a) = o.audio() {
                        out.sample_rate = Some(a.rate());
                        out.channels = Some(a.channels());
                        out.sample_format = Some(a.format().name().to_string());
                    }
                }
                _ => {}
            }
        }
        if medium == MediaType::Video {
            let avg = rational(s.avg_frame_rate());
            let real = rational(s.rate());
            out.fps_avg = avg.map(round3);
            out.fps_real = real.map(round3);
            out.vfr = match (avg, real) {
                (Some(a), Some(r)) => Some((a - r).abs() / r > 0.01),
                _ => None,
            };
            out.rotation = Some(stream_rotation(&s));
        }
        streams.push(out);
    }
    let tb_us = ffmpeg::Rational::new(1, 1_000_000);
    let container_dur = known_ts(input.duration())
        .filter(|d| *d > 0)
        .map(|d| ts_secs(d, tb_us));
    let longest = streams
        .iter()
        .filter_map(|s| s.duration)
        .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))));
    let br = input.bit_rate();
    let tags = input
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let total_errors = read_errors + streams.iter().map(|s| s.decode_errors).sum::<u64>();
    ProbeOut {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size,
        container: fmt.name().to_string(),
        container_long: fmt.description().to_string(),
        duration: container_dur.or(longest).map(round6),
        start_time: streams
            .iter()
            .filter_map(|s| s.start_time)
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.min(t)))),
        bit_rate: (br > 0).then_some(br),
        video_stream: video_stream_index(input),
        audio_stream: input.streams().best(MediaType::Audio).map(|s| s.index()),
        streams,
        tags,
        scan: if decoded { "decode" } else { "packets" }.to_string(),
        decode_errors: total_errors,
    }
}

/// `Profile::H264(High)` -> `High`; `None` for "unknown"/"reserved".
fn profile_name(p: codec::Profile) -> Option<String> {
    let dbg = format!("{p:?}");
    let inner = dbg
        .split_once('(')
        .map(|(_, rest)| rest.trim_end_matches(')').to_string())
        .unwrap_or(dbg);
    (!matches!(inner.as_str(), "Unknown" | "Reserved")).then_some(inner)
}

fn pixel_name(p: ffmpeg::format::Pixel) -> Option<String> {
    p.descriptor().map(|d| d.name().to_string())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
