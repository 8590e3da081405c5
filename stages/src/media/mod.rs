//! FFmpeg-backed media stage kinds (`media.probe`, `media.audio`, `video.scenes`,
//! `video.keyframes`) and the helpers they share.
//!
//! Real files are messy, so everything that touches a source goes through here: opening
//! with an error that names the file and the cause (empty, truncated, not media, no video
//! stream), decoding with FFmpeg's threads while counting mid-file decode errors instead
//! of failing on them, reading rotation metadata, and the FFmpeg library versions that
//! join every media stage's cache key so an FFmpeg upgrade reruns them.

mod audio;
pub mod helper;
pub mod hwaccel;
mod keyframes;
mod pictures;
mod probe;
mod scenes;
mod slides;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Once;

use ffmpeg::codec::threading;
use ffmpeg::format::Pixel;
use ffmpeg::format::context::Input;
use ffmpeg::media::Type as MediaType;
use ffmpeg::{Rational, codec, decoder, frame};
use ffmpeg_next as ffmpeg;
use vsum_engine::events::Event;
use vsum_engine::stage::{JobCtx, KeyExtras, Registry, StageError, Video};

pub use audio::{AudioOut, AudioStage};
pub use keyframes::{KeyframeOut, KeyframesOut, KeyframesStage};
pub use probe::{ProbeOut, ProbeStage, StreamOut};
pub use scenes::{ContentDetector, Detector, Downscale, Scene, SceneStage, ScenesOut, bgr_to_hsv};
pub use slides::{AutoChoice, SlideDetector, SlideScore, SlideSettings};

/// Sees each media kind by its type (see [`media_kinds`]).
pub(crate) trait KindVisitor {
    fn kind<K: vsum_engine::contract::TypedStage>(&mut self, kind: K);
}

/// The one list of media kinds, for both ways of registering them: in this process
/// ([`register_media`]) and run by the helper ([`helper::register_remote`]).
pub(crate) fn media_kinds(v: &mut impl KindVisitor) {
    v.kind(ProbeStage);
    v.kind(AudioStage);
    v.kind(SceneStage);
    v.kind(KeyframesStage);
}

/// Registers every media stage kind, run in this process.
pub fn register_media(reg: &mut Registry) {
    struct InProcess<'a>(&'a mut Registry);
    impl KindVisitor for InProcess<'_> {
        fn kind<K: vsum_engine::contract::TypedStage>(&mut self, kind: K) {
            self.0.register(kind);
        }
    }
    media_kinds(&mut InProcess(reg));
}

/// Initialises FFmpeg once and silences its own logging: the engine never prints, and
/// the stages count and report decode errors themselves.
pub(crate) fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // `init` only registers devices/formats on very old FFmpeg; it cannot fail here.
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    });
}

fn lib_version(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// `vsum doctor` line: the FFmpeg libraries this binary runs with.
pub(crate) fn doctor_ffmpeg() -> Vec<vsum_engine::stage::Check> {
    vec![doctor_line(&ffmpeg_versions())]
}

/// `vsum doctor` line for these FFmpeg library versions.
fn doctor_line(versions: &BTreeMap<String, String>) -> vsum_engine::stage::Check {
    let line = versions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    vsum_engine::stage::Check::ok("ffmpeg libraries", line)
}

/// The FFmpeg libraries this binary runs with, by name. They join every media stage's
/// key: a different FFmpeg can decode or resample differently.
pub fn ffmpeg_versions() -> BTreeMap<String, String> {
    init();
    BTreeMap::from([
        (
            "libavcodec".to_string(),
            lib_version(ffmpeg::codec::version()),
        ),
        (
            "libavformat".to_string(),
            lib_version(ffmpeg::format::version()),
        ),
        (
            "libavutil".to_string(),
            lib_version(ffmpeg::util::version()),
        ),
        (
            "libswresample".to_string(),
            lib_version(ffmpeg::software::resampling::version()),
        ),
        (
            "libswscale".to_string(),
            lib_version(ffmpeg::software::scaling::version()),
        ),
    ])
}

/// Key extras of a media stage: the FFmpeg library versions.
pub(crate) fn ffmpeg_key_extras() -> KeyExtras {
    KeyExtras {
        tools: ffmpeg_versions(),
        ..KeyExtras::default()
    }
}

/// The job's video, or an error when a media stage was put in batch scope.
pub(crate) fn job_video<'a>(ctx: &JobCtx<'a>, kind: &str) -> Result<&'a Video, StageError> {
    ctx.video.ok_or_else(|| {
        StageError::fatal(format!(
            "{kind} runs once per video, but this job has no video"
        ))
        .hint("remove `scope: batch` from this stage")
    })
}

/// Stops a job that the user interrupted.
pub(crate) fn check_cancel(ctx: &JobCtx) -> Result<(), StageError> {
    if ctx.cancelled() {
        Err(StageError::cancelled())
    } else {
        Ok(())
    }
}

pub(crate) fn io_error(path: &Path, what: &str, e: std::io::Error) -> StageError {
    StageError::retryable(format!("cannot {what} {}: {e}", path.display()))
        .hint("check free disk space and permissions of the output folder")
}

/// Warns that `path` had `errors` decode errors (`what`: "audio", "video" or ""), if any.
pub(crate) fn warn_damaged(ctx: &JobCtx, path: &Path, errors: u64, what: &str) {
    if errors > 0 {
        let what = if what.is_empty() {
            String::new()
        } else {
            format!("{what} ")
        };
        warn(
            ctx,
            format!(
                "{}: {errors} {what}decode errors (the file is damaged in places)",
                path.display()
            ),
        );
    }
}

/// Emits a run warning (shown by reporters, never fatal).
pub(crate) fn warn(ctx: &JobCtx, message: String) {
    tracing::warn!("{message}");
    ctx.events.emit(Event::Warning { message });
}

/// Seconds of a timestamp in `tb`.
pub(crate) fn ts_secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator().max(1))
}

/// A rational as f64, or `None` when it is 0/x or x/0 (FFmpeg's "unknown").
pub(crate) fn rational(r: Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0)
        .then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
}

/// `Some(ts)` unless it is FFmpeg's "no timestamp".
pub(crate) fn known_ts(ts: i64) -> Option<i64> {
    (ts != ffmpeg::ffi::AV_NOPTS_VALUE).then_some(ts)
}

/// Opens a source for demuxing, or explains why it cannot be read.
pub(crate) fn open_input(path: &Path) -> Result<Input, StageError> {
    init();
    let shown = path.display();
    let meta = fs::metadata(path).map_err(|e| {
        StageError::bad_input(format!("cannot read {shown}: {e}"))
            .hint("check that the file exists and is readable")
    })?;
    if !meta.is_file() {
        return Err(
            StageError::bad_input(format!("cannot read {shown}: not a regular file"))
                .hint("point the input at video files, not folders or devices"),
        );
    }
    if meta.len() == 0 {
        return Err(StageError::bad_input(format!(
            "cannot read {shown}: the file is empty (0 bytes)"
        ))
        .hint("the copy or download did not finish: re-copy it from the source"));
    }
    let Some(utf8) = path.to_str() else {
        return Err(StageError::bad_input(format!(
            "cannot open {shown}: its path is not valid UTF-8, which FFmpeg cannot take"
        ))
        .hint("rename the file or its folder"));
    };
    // `file:` stops FFmpeg from reading a colon in a name as a protocol (`a:b.mp4`).
    let url = if path.is_absolute() {
        format!("file:{utf8}")
    } else {
        format!("file:./{utf8}")
    };
    ffmpeg::format::input(&url).map_err(|e| open_error(path, meta.len(), e))
}

/// Turns FFmpeg's open failure into the cause a user can act on.
fn open_error(path: &Path, size: u64, err: ffmpeg::Error) -> StageError {
    let shown = path.display();
    let mut head = Vec::with_capacity(512);
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(512).read_to_end(&mut head);
    }
    let looks_text = !head.is_empty()
        && std::str::from_utf8(&head).is_ok_and(|s| {
            s.chars()
                .all(|c| !c.is_control() || c.is_ascii_whitespace())
        });
    let iso_bmff = head.len() >= 8 && &head[4..8] == b"ftyp";
    let cause = err.to_string();
    match err {
        ffmpeg::Error::InvalidData | ffmpeg::Error::Eof if looks_text => StageError::bad_input(format!(
            "cannot open {shown}: it is a text file, not media ({size} bytes of text)"
        ))
        .hint("the file was probably saved from an error page or is mislabelled: replace it with the real video"),
        ffmpeg::Error::InvalidData | ffmpeg::Error::Eof if iso_bmff => StageError::bad_input(format!(
            "cannot open {shown}: the MP4/MOV container has no readable index (moov atom); the file is truncated or damaged ({size} bytes; FFmpeg: {cause})"
        ))
        .hint("the recording, download or copy was cut short: re-copy it from the source (or repair it with a tool such as untrunc)"),
        ffmpeg::Error::InvalidData | ffmpeg::Error::Eof => StageError::bad_input(format!(
            "cannot open {shown}: FFmpeg does not recognise it as media, or it is truncated or damaged ({size} bytes; FFmpeg: {cause})"
        ))
        .hint("check that it plays in a media player; re-copy it from the source if it was cut short"),
        e => StageError::bad_input(format!("cannot open {shown}: {e}"))
            .hint("check that the file is a readable video"),
    }
}

/// Index of the best video stream (attached pictures such as cover art excluded).
pub(crate) fn video_stream_index(input: &Input) -> Option<usize> {
    let best = input.streams().best(MediaType::Video)?;
    if !is_attached_pic(&best) {
        return Some(best.index());
    }
    input
        .streams()
        .find(|s| s.parameters().medium() == MediaType::Video && !is_attached_pic(s))
        .map(|s| s.index())
}

fn is_attached_pic(s: &ffmpeg::Stream) -> bool {
    s.disposition()
        .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC)
}

/// Like [`video_stream_index`], but a missing video stream is the job's error.
pub(crate) fn require_video_stream(
    input: &Input,
    path: &Path,
    kind: &str,
) -> Result<usize, StageError> {
    video_stream_index(input).ok_or_else(|| {
        let kinds: Vec<String> = input
            .streams()
            .map(|s| format!("{:?}", s.parameters().medium()).to_lowercase())
            .collect();
        let has = if kinds.is_empty() {
            "no streams at all".to_string()
        } else {
            format!("only {}", kinds.join(", "))
        };
        StageError::bad_input(format!(
            "{kind}: {} has no video stream ({has})",
            path.display()
        ))
        .hint(
            "this stage needs pictures; run it on videos only (audio files work with media.audio)",
        )
    })
}

/// How far the picture is turned for display, in degrees counterclockwise (0, 90, 180
/// or 270): ffprobe's `rotation` modulo 360, from the display matrix, else from the
/// legacy `rotate` tag (which counted clockwise). A phone's portrait video is 270.
pub(crate) fn stream_rotation(stream: &ffmpeg::Stream) -> i32 {
    for sd in stream.side_data() {
        if sd.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix
            && let Some(r) = display_matrix_rotation(sd.data())
        {
            return r;
        }
    }
    stream
        .metadata()
        .get("rotate")
        .and_then(|r| r.trim().parse::<f64>().ok())
        .map(|cw| normalize_rotation(-cw))
        .unwrap_or(0)
}

/// Counterclockwise rotation from a 3x3 16.16 fixed-point display matrix, as FFmpeg's
/// `av_display_rotation_get` (which the `ffmpeg` tool's autorotation follows).
fn display_matrix_rotation(data: &[u8]) -> Option<i32> {
    if data.len() < 36 {
        return None;
    }
    let m = |i: usize| {
        let b = [
            data[4 * i],
            data[4 * i + 1],
            data[4 * i + 2],
            data[4 * i + 3],
        ];
        f64::from(i32::from_ne_bytes(b)) / 65536.0
    };
    let (s0, s1) = (m(0).hypot(m(3)), m(1).hypot(m(4)));
    if s0 == 0.0 || s1 == 0.0 {
        return None;
    }
    Some(normalize_rotation(
        -(m(1) / s1).atan2(m(0) / s0).to_degrees(),
    ))
}

/// Snaps an angle to 0/90/180/270.
fn normalize_rotation(deg: f64) -> i32 {
    let r = ((deg / 90.0).round() as i64 * 90).rem_euclid(360);
    r as i32
}

/// How a video decoder may trade exactness for speed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeOpts {
    /// The frames whose in-loop deblocking filter (H.264, HEVC, VP8/9...) is skipped:
    /// none (`Discard::Default`, FFmpeg's own default), the frames no other frame is
    /// predicted from (`NonReference`), or all (`All`).
    pub skip_loop_filter: ffmpeg::Discard,
    /// The caller only needs pictures at least this large: codecs that can (MJPEG,
    /// MPEG-1/2/4 part 2) then decode at 1/2, 1/4 or 1/8 size ("lowres").
    pub min_size: Option<(u32, u32)>,
}

impl Default for DecodeOpts {
    fn default() -> Self {
        DecodeOpts {
            skip_loop_filter: ffmpeg::Discard::Default,
            min_size: None,
        }
    }
}

/// A swscale conversion of whole frames to a small packed picture (`to`, `aw` x `ah`),
/// made again when the input's format or size changes: the path for the frames the
/// detectors' direct planar-YUV paths do not take.
#[derive(Default)]
pub(crate) struct SwsPicture {
    key: Option<(Pixel, u32, u32, u32, u32)>,
    scaler: Option<ffmpeg::software::scaling::Context>,
    small: Option<frame::Video>,
}

impl SwsPicture {
    /// Converts `f` and copies its rows, `bytes_per_px` each pixel, into `out`.
    pub fn run(
        &mut self,
        f: &frame::Video,
        (to, aw, ah): (Pixel, u32, u32),
        flags: ffmpeg::software::scaling::Flags,
        bytes_per_px: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ffmpeg::Error> {
        let key = (f.format(), f.width(), f.height(), aw, ah);
        if self.key != Some(key) {
            self.scaler = Some(ffmpeg::software::scaling::Context::get(
                f.format(),
                f.width(),
                f.height(),
                to,
                aw,
                ah,
                flags,
            )?);
            self.small = Some(frame::Video::empty());
            self.key = Some(key);
        }
        let s = self.scaler.as_mut().expect("made for this format");
        let small = self.small.as_mut().expect("made with the scaler");
        s.run(f, small)?;
        let (row, stride) = (aw as usize * bytes_per_px, small.stride(0));
        let data = small.data(0);
        out.resize(row * ah as usize, 0);
        for y in 0..ah as usize {
            out[y * row..(y + 1) * row].copy_from_slice(&data[y * stride..y * stride + row]);
        }
        Ok(())
    }
}

/// Width and height the stream's decoder will report (before any lowres).
pub(crate) fn stream_dims(input: &Input, index: usize) -> Option<(u32, u32)> {
    let stream = input.stream(index)?;
    let v = codec::Context::from_parameters(stream.parameters())
        .ok()?
        .decoder()
        .video()
        .ok()?;
    (v.width() > 0 && v.height() > 0).then(|| (v.width(), v.height()))
}

/// A video decoder on one stream, with FFmpeg's frame threads.
pub(crate) fn open_video_decoder(
    input: &Input,
    index: usize,
    threads: usize,
    opts: DecodeOpts,
    path: &Path,
) -> Result<(decoder::Video, Decoding), StageError> {
    let stream = input.stream(index).expect("stream index from this input");
    let mut cctx = codec::Context::from_parameters(stream.parameters()).map_err(|e| {
        StageError::bad_input(format!("cannot set up decoding of {}: {e}", path.display()))
    })?;
    let id = stream.parameters().id();
    let codec_name = codec_name(id);
    let fail = |e: ffmpeg::Error| {
        StageError::bad_input(format!(
            "cannot decode the {codec_name} video of {}: {e}",
            path.display()
        ))
        .hint("this FFmpeg build lacks a decoder for it: convert the file (e.g. to H.264) or install a fuller FFmpeg")
    };
    let codec = codec::decoder::find(id).ok_or_else(|| fail(ffmpeg::Error::DecoderNotFound))?;
    // A hardware decoder where there is one (`VSUM_HWACCEL`); it decodes whole frames on
    // its own, so neither frame threads nor reduced-size decoding apply then.
    let (hw_pix, info) = hwaccel::attach(&mut cctx, &codec);
    // Like FFmpeg's automatic choice, one frame thread more than the cores we may use:
    // frame threads wait on each other's reference pictures.
    cctx.set_threading(threading::Config {
        kind: threading::Type::Frame,
        count: if threads > 1 && hw_pix.is_none() {
            threads + 1
        } else {
            1
        },
        ..Default::default()
    });
    let mut dec = cctx.decoder();
    dec.set_packet_time_base(stream.time_base());
    dec.skip_loop_filter(opts.skip_loop_filter);
    let mut options = ffmpeg::Dictionary::new();
    if let (Some((need_w, need_h)), Some((w, h)), None) =
        (opts.min_size, stream_dims(input, index), hw_pix)
    {
        let ceil_shift = |x: u32, l: i32| (x + (1 << l) - 1) >> l;
        let level = (1..=codec.max_lowres().clamp(0, 3))
            .rev()
            .find(|&l| ceil_shift(w, l) >= need_w && ceil_shift(h, l) >= need_h);
        if let Some(l) = level {
            options.set("lowres", &l.to_string());
        }
    }
    let dec = dec
        .open_as_with(codec, options)
        .and_then(|o| o.video())
        .map_err(fail)?;
    Ok((dec, Decoding { hw_pix, info }))
}

/// How [`open_video_decoder`] set up decoding: the hardware frame format to download
/// from (for [`FrameReader`]), and what to record.
pub(crate) struct Decoding {
    hw_pix: Option<ffmpeg::ffi::AVPixelFormat>,
    pub info: hwaccel::DecodeInfo,
}

pub(crate) fn codec_name(id: codec::Id) -> String {
    id.name().to_string()
}

/// Reads the frames of one video stream in presentation order, counting the errors
/// FFmpeg reports in the middle of a file instead of failing on them.
pub(crate) struct FrameReader<'a> {
    input: &'a mut Input,
    index: usize,
    pub decoder: decoder::Video,
    frame: frame::Video,
    /// The hardware format frames come in when a device decodes, and the frame each is
    /// downloaded into.
    hw_pix: Option<ffmpeg::ffi::AVPixelFormat>,
    downloaded: frame::Video,
    /// Packets the demuxer or decoder rejected, plus frames flagged corrupt.
    pub errors: u64,
    sent_eof: bool,
    done: bool,
    pub time_base: Rational,
    /// Timestamps are reported relative to this (the stream's start), in `time_base`.
    pub origin: i64,
}

impl<'a> FrameReader<'a> {
    pub fn new(
        input: &'a mut Input,
        index: usize,
        (decoder, decoding): (decoder::Video, Decoding),
    ) -> Self {
        let stream = input.stream(index).expect("stream index from this input");
        let time_base = stream.time_base();
        let origin = known_ts(stream.start_time()).unwrap_or(0);
        FrameReader {
            input,
            index,
            decoder,
            frame: frame::Video::empty(),
            hw_pix: decoding.hw_pix,
            downloaded: frame::Video::empty(),
            errors: 0,
            sent_eof: false,
            done: false,
            time_base,
            origin,
        }
    }

    /// Decodes the next frame into [`FrameReader::frame`]; false at the end of the stream.
    pub fn advance(&mut self) -> bool {
        if self.done {
            return false;
        }
        let mut stalls = 0u32;
        loop {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    if let Some(pix) = self.hw_pix
                        && hwaccel::on_device(&self.frame, pix)
                    {
                        if hwaccel::download(&self.frame, &mut self.downloaded).is_err() {
                            // A frame the device made but could not hand over.
                            self.errors += 1;
                            continue;
                        }
                        std::mem::swap(&mut self.frame, &mut self.downloaded);
                    }
                    if self.frame.is_corrupt() || self.frame.has_decode_errors() {
                        self.errors += 1;
                    }
                    return true;
                }
                Err(ffmpeg::Error::Eof) => {
                    self.done = true;
                    return false;
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    if !self.feed() {
                        self.done = true;
                        return false;
                    }
                }
                Err(_) => {
                    self.errors += 1;
                    stalls += 1;
                    if stalls > 10_000 {
                        self.done = true;
                        return false;
                    }
                }
            }
        }
    }

    /// The frame the last successful [`FrameReader::advance`] decoded.
    pub fn frame(&self) -> &frame::Video {
        &self.frame
    }

    /// Seconds of the current frame from the stream start, if it has a timestamp.
    pub fn time(&self) -> Option<f64> {
        self.frame
            .timestamp()
            .or_else(|| self.frame.pts())
            .map(|ts| ts_secs(ts - self.origin, self.time_base))
    }

    /// Sends the next packet of our stream (or EOF). False when nothing more can come.
    fn feed(&mut self) -> bool {
        if self.sent_eof {
            return false;
        }
        let mut packet = ffmpeg::Packet::empty();
        let mut bad_reads = 0u32;
        loop {
            match packet.read(self.input) {
                Ok(()) => {
                    if packet.stream() != self.index {
                        continue;
                    }
                    if packet.is_corrupt() {
                        self.errors += 1;
                    }
                    match self.decoder.send_packet(&packet) {
                        Ok(()) => {}
                        Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {}
                        Err(_) => self.errors += 1,
                    }
                    return true;
                }
                Err(ffmpeg::Error::Eof) => break,
                // The demuxer can resync past bad data; other errors latch (I/O).
                Err(ffmpeg::Error::InvalidData) if bad_reads < 1000 => {
                    self.errors += 1;
                    bad_reads += 1;
                }
                Err(_) => {
                    self.errors += 1;
                    break;
                }
            }
        }
        self.sent_eof = true;
        let _ = self.decoder.send_eof();
        true
    }

    /// Seeks to the last keyframe at or before `secs` (from the stream start) and resets
    /// the decoder. Errors are returned so the caller can fall back to reading on.
    pub fn seek(&mut self, secs: f64) -> Result<(), ffmpeg::Error> {
        let origin_us = ts_secs(self.origin, self.time_base) * 1e6;
        let target = (secs.max(0.0) * 1e6 + origin_us).floor() as i64;
        self.input.seek(target, ..target)?;
        self.decoder.flush();
        self.sent_eof = false;
        self.done = false;
        Ok(())
    }
}

/// A WAV file written as samples arrive; the header's sizes are patched at the end.
pub(crate) struct WavWriter {
    out: std::io::BufWriter<fs::File>,
    path: PathBuf,
    data_bytes: u64,
}

impl WavWriter {
    pub fn create(path: &Path, rate: u32, channels: u16) -> Result<Self, StageError> {
        let f = fs::File::create(path).map_err(|e| io_error(path, "create", e))?;
        let mut w = WavWriter {
            out: std::io::BufWriter::with_capacity(1 << 16, f),
            path: path.to_path_buf(),
            data_bytes: 0,
        };
        let block = channels * 2;
        let mut h = Vec::with_capacity(44);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes()); // PCM
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        h.extend_from_slice(&block.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&0u32.to_le_bytes());
        w.out
            .write_all(&h)
            .map_err(|e| io_error(path, "write", e))?;
        Ok(w)
    }

    /// Appends interleaved little-endian s16 bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StageError> {
        self.data_bytes += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| io_error(&self.path, "write", e))
    }

    pub fn finish(mut self) -> Result<u64, StageError> {
        use std::io::Seek;
        let path = self.path.clone();
        let err = |e| io_error(&path, "write", e);
        if self.data_bytes > u64::from(u32::MAX) - 36 {
            return Err(StageError::fatal(format!(
                "{} would exceed the 4 GiB limit of WAV",
                path.display()
            ))
            .hint("lower `sample_rate` or `channels`"));
        }
        let data = self.data_bytes as u32;
        self.out.flush().map_err(err)?;
        let mut f = self.out.into_inner().map_err(|e| err(e.into_error()))?;
        f.seek(std::io::SeekFrom::Start(4)).map_err(err)?;
        f.write_all(&(36 + data).to_le_bytes()).map_err(err)?;
        f.seek(std::io::SeekFrom::Start(40)).map_err(err)?;
        f.write_all(&data.to_le_bytes()).map_err(err)?;
        f.sync_data().map_err(err)?;
        Ok(self.data_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A display matrix as the MP4 muxer writes it into `tkhd` (a b / c d, 16.16).
    fn matrix(a: i32, b: i32, c: i32, d: i32) -> Vec<u8> {
        let v = [a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30];
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn display_matrix_angles() {
        // A phone's portrait video: turned 90 degrees clockwise = 270 counterclockwise
        // (ffprobe says -90).
        assert_eq!(display_matrix_rotation(&matrix(0, 1, -1, 0)), Some(270));
        assert_eq!(display_matrix_rotation(&matrix(-1, 0, 0, -1)), Some(180));
        assert_eq!(display_matrix_rotation(&matrix(0, -1, 1, 0)), Some(90));
        assert_eq!(display_matrix_rotation(&matrix(1, 0, 0, 1)), Some(0));
        assert_eq!(display_matrix_rotation(&[0; 8]), None);
    }

    #[test]
    fn rotation_snaps() {
        assert_eq!(normalize_rotation(-90.0), 270);
        assert_eq!(normalize_rotation(89.6), 90);
        assert_eq!(normalize_rotation(360.0), 0);
    }
}
