//! The speech track the speech stages read: finding it upstream and reading it in
//! bounded pieces.
//!
//! An upstream stage (`media.audio`, or a command running ffmpeg) writes `audio.wav`
//! (16 kHz mono s16), or, for a video without sound, `audio.json`
//! `{"has_audio": false, "reason": ...}` and no wav. Speech stages never hold a whole
//! track in memory: [`Wav`] reads any span on demand (seek + read), so a 3-hour file
//! costs the same memory as a 3-minute one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use vsum_engine::contract::{Output, find_upstream_file, find_upstream_with_stage, read_output};
use vsum_engine::stage::StageError;

use crate::media::AudioOut;

/// Whisper and Silero work at 16 kHz.
pub const SAMPLE_RATE: u32 = 16_000;

/// What upstream gave.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioSource {
    Wav(PathBuf),
    /// The video has no audio track; `reason` says why (from `audio.json`).
    NoAudio {
        reason: String,
    },
}

/// Finds `audio.wav` (or `audio.json` saying there is none) in the upstream folders.
/// The WAV may come from `media.audio` or from a command stage that wrote one.
pub fn find_audio(upstream: &BTreeMap<String, PathBuf>) -> Result<AudioSource, StageError> {
    if let Some(wav) = find_upstream_file(upstream, "audio.wav") {
        return Ok(AudioSource::Wav(wav));
    }
    if let Some((stage, json)) = find_upstream_with_stage(upstream, AudioOut::FILE) {
        let a: AudioOut = read_output(&json, stage)?;
        if !a.has_audio {
            let reason = a
                .reason
                .unwrap_or_else(|| "the video has no audio track".to_string());
            return Ok(AudioSource::NoAudio { reason });
        }
    }
    let names: Vec<&str> = upstream.keys().map(String::as_str).collect();
    Err(StageError::fatal(format!(
        "no stage in `needs` gave audio.wav (looked in: {})",
        if names.is_empty() { "nothing, `needs` is empty".to_string() } else { names.join(", ") }
    ))
    .hint("add the stage that extracts the speech track (media.audio, or a command running `ffmpeg -i {video} -ac 1 -ar 16000 {out}/audio.wav`) to `needs`"))
}

/// A 16 kHz WAV opened for reading spans as mono f32 in [-1, 1].
pub struct Wav {
    path: PathBuf,
    reader: hound::WavReader<BufReader<File>>,
    channels: u16,
    float: bool,
    frames: u64,
}

impl Wav {
    pub fn open(path: &Path) -> Result<Self, StageError> {
        let reader = hound::WavReader::open(path).map_err(|e| {
            StageError::fatal(format!("cannot read {} as WAV: {e}", path.display()))
                .hint("the upstream stage must write a 16 kHz mono WAV (`ffmpeg ... -ac 1 -ar 16000 audio.wav`)")
        })?;
        let spec = reader.spec();
        let float = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 16) => false,
            (hound::SampleFormat::Float, 32) => true,
            (f, b) => {
                return Err(StageError::fatal(format!(
                    "{} is {b}-bit {f:?} audio; 16-bit integer or 32-bit float is needed",
                    path.display()
                ))
                .hint("convert it with `ffmpeg -i IN -ac 1 -ar 16000 -c:a pcm_s16le audio.wav`"));
            }
        };
        if spec.sample_rate != SAMPLE_RATE {
            return Err(StageError::fatal(format!(
                "{} is sampled at {} Hz; speech stages need {SAMPLE_RATE} Hz",
                path.display(),
                spec.sample_rate
            ))
            .hint("resample upstream: `ffmpeg -i IN -ac 1 -ar 16000 audio.wav`"));
        }
        let frames = reader.duration() as u64;
        Ok(Wav {
            path: path.to_path_buf(),
            channels: spec.channels.max(1),
            float,
            frames,
            reader,
        })
    }

    /// Length in samples (frames).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn seconds(&self) -> f64 {
        self.frames as f64 / SAMPLE_RATE as f64
    }

    /// Reads `[start, start + len)` (clamped to the file) as mono f32.
    pub fn read(&mut self, start: u64, len: u64) -> Result<Vec<f32>, StageError> {
        let start = start.min(self.frames);
        let len = len.min(self.frames - start) as usize;
        let bad = |e: hound::Error, p: &Path| {
            StageError::fatal(format!("cannot read {}: {e}", p.display()))
        };
        self.reader
            .seek(start as u32)
            .map_err(|e| bad(e.into(), &self.path))?;
        let ch = self.channels as usize;
        let mut out = Vec::with_capacity(len);
        let mut acc = 0f32;
        let mut n = 0;
        let push = |v: f32, acc: &mut f32, n: &mut usize, out: &mut Vec<f32>| {
            *acc += v;
            *n += 1;
            if *n == ch {
                out.push(*acc / ch as f32);
                *acc = 0.0;
                *n = 0;
            }
        };
        if self.float {
            for s in self.reader.samples::<f32>().take(len * ch) {
                push(
                    s.map_err(|e| bad(e, &self.path))?,
                    &mut acc,
                    &mut n,
                    &mut out,
                );
            }
        } else {
            for s in self.reader.samples::<i16>().take(len * ch) {
                let v = s.map_err(|e| bad(e, &self.path))? as f32 / 32768.0;
                push(v, &mut acc, &mut n, &mut out);
            }
        }
        Ok(out)
    }
}

/// Seconds from a sample index.
pub fn secs(samples: u64) -> f64 {
    samples as f64 / SAMPLE_RATE as f64
}

/// Sample index from seconds.
pub fn samples(secs: f64) -> u64 {
    (secs.max(0.0) * SAMPLE_RATE as f64).round() as u64
}

#[cfg(test)]
pub(crate) fn write_wav(path: &Path, samples: &[i16], channels: u16, rate: u32) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spans_and_downmixes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let s: Vec<i16> = (0..2000).flat_map(|i| [i as i16, -(i as i16)]).collect();
        write_wav(&p, &s, 2, 16_000);
        let mut w = Wav::open(&p).unwrap();
        assert_eq!(w.frames(), 2000);
        let r = w.read(10, 5).unwrap();
        assert_eq!(r, vec![0.0; 5]);
        let mono = dir.path().join("m.wav");
        write_wav(&mono, &[0, 16384, -16384, 32767], 1, 16_000);
        let mut w = Wav::open(&mono).unwrap();
        assert_eq!(w.read(1, 100).unwrap(), vec![0.5, -0.5, 32767.0 / 32768.0]);
        assert_eq!(w.read(0, 1).unwrap(), vec![0.0]);
    }

    #[test]
    fn refuses_other_rates_and_non_wav() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        write_wav(&p, &[0; 100], 1, 44_100);
        let e = Wav::open(&p).err().unwrap();
        assert!(e.message.contains("44100 Hz"), "{e}");
        std::fs::write(&p, b"not a wav").unwrap();
        assert!(Wav::open(&p).err().unwrap().message.contains("as WAV"));
    }

    #[test]
    fn finds_audio_or_the_reason_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut up = BTreeMap::new();
        assert!(find_audio(&up).is_err());
        let a = dir.path().join("a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(
            a.join("audio.json"),
            br#"{"has_audio": false, "reason": "no audio stream"}"#,
        )
        .unwrap();
        up.insert("audio".to_string(), a.clone());
        assert_eq!(
            find_audio(&up).unwrap(),
            AudioSource::NoAudio {
                reason: "no audio stream".into()
            }
        );
        std::fs::write(a.join("audio.wav"), b"").unwrap();
        assert_eq!(
            find_audio(&up).unwrap(),
            AudioSource::Wav(a.join("audio.wav"))
        );
    }
}
