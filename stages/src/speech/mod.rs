//! Speech stages: voice activity (`audio.vad`) and transcription (`whisper.transcribe`),
//! with the pieces they share: reading the upstream speech track in bounded spans,
//! cutting it into chunks, and writing transcripts as JSON, SRT, WebVTT and text.

pub mod audio;
pub mod blas;
pub mod chunks;
pub mod transcript;
pub mod vad;
pub mod whisper;
