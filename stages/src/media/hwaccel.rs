//! Hardware video decoding where the machine has it (NVDEC through CUDA, then VAAPI),
//! software decoding everywhere else. The one place vsum calls FFmpeg's C API itself:
//! ffmpeg-next does not wrap FFmpeg's hardware device contexts. Only `vsum-media` runs
//! it, so a driver that crashes takes one helper process down, not the batch.
//!
//! `VSUM_HWACCEL` chooses: `auto` (the default: CUDA, then VAAPI, then software),
//! `none` (software only), `cuda` or `vaapi` (that one, else software). The choice is
//! not part of any cache key (like the thread count, it changes how, not what, is
//! decoded); each stage's output records what decoded the video and, for software,
//! why no hardware was used.
#![allow(unsafe_code)]

use std::ptr;

use ffmpeg::ffi;
use ffmpeg::frame;
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

/// What decoded a video, as the video stages record it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecodeInfo {
    /// `cuda` or `vaapi` when a hardware decoder did the work; `null`: software.
    pub hardware: Option<String>,
    /// Why each hardware decoder tried was not used (empty with hardware, or when
    /// `VSUM_HWACCEL=none`).
    pub notes: Vec<String>,
}

/// The hardware decoders `VSUM_HWACCEL` allows, in the order they are tried.
fn wanted() -> Vec<(ffi::AVHWDeviceType, &'static str)> {
    use ffi::AVHWDeviceType::{AV_HWDEVICE_TYPE_CUDA as CUDA, AV_HWDEVICE_TYPE_VAAPI as VAAPI};
    let choice = std::env::var("VSUM_HWACCEL").unwrap_or_default();
    match choice.trim().to_ascii_lowercase().as_str() {
        "none" | "off" | "software" | "0" => Vec::new(),
        "cuda" | "nvdec" => vec![(CUDA, "cuda")],
        "vaapi" => vec![(VAAPI, "vaapi")],
        _ => vec![(CUDA, "cuda"), (VAAPI, "vaapi")],
    }
}

/// The hardware pixel format `codec` decodes to on a device of `kind`, if it can.
fn hw_format(codec: &ffmpeg::Codec, kind: ffi::AVHWDeviceType) -> Option<ffi::AVPixelFormat> {
    let method = ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as i32;
    for i in 0.. {
        // SAFETY: `codec` is a valid AVCodec; FFmpeg returns null past the last config,
        // and a non-null pointer to a static, immutable config otherwise.
        let cfg = unsafe { ffi::avcodec_get_hw_config(codec.as_ptr(), i) };
        if cfg.is_null() {
            return None;
        }
        // SAFETY: checked non-null just above; the struct is plain data.
        let cfg = unsafe { *cfg };
        if cfg.methods & method != 0 && cfg.device_type == kind {
            return Some(cfg.pix_fmt);
        }
    }
    None
}

/// Gives the decoder (not yet opened) a hardware device when `VSUM_HWACCEL` allows one,
/// the codec has a hardware decoder for it and the device opens. FFmpeg's default
/// format negotiation then decodes on the device whenever it can take the stream (and
/// in software when it cannot: a profile or size the hardware lacks). Returns the
/// hardware pixel format frames then come in (to download with [`download`]), and
/// what was tried.
pub(crate) fn attach(
    dec: &mut ffmpeg::codec::Context,
    codec: &ffmpeg::Codec,
) -> (Option<ffi::AVPixelFormat>, DecodeInfo) {
    let mut info = DecodeInfo::default();
    for (kind, name) in wanted() {
        let Some(pix) = hw_format(codec, kind) else {
            info.notes.push(format!(
                "FFmpeg's {} decoder has no {name} support",
                codec.name()
            ));
            continue;
        };
        let mut device: *mut ffi::AVBufferRef = ptr::null_mut();
        // SAFETY: `device` is a valid out-pointer; null device name and options ask
        // for the default device. On failure nothing is allocated.
        let rc = unsafe {
            ffi::av_hwdevice_ctx_create(&mut device, kind, ptr::null(), ptr::null_mut(), 0)
        };
        if rc < 0 || device.is_null() {
            info.notes
                .push(format!("no {name} device ({})", ffmpeg::Error::from(rc)));
            continue;
        }
        // SAFETY: the context is allocated and not yet opened, which is when FFmpeg
        // reads `hw_device_ctx`; the context takes over our reference to the device
        // (freed with the context), so nothing is leaked or freed twice.
        unsafe {
            (*dec.as_mut_ptr()).hw_device_ctx = device;
        }
        info.hardware = Some(name.to_string());
        info.notes.clear();
        return (Some(pix), info);
    }
    (None, info)
}

/// Is `f` a frame in the hardware format `pix` (still on the device)?
pub(crate) fn on_device(f: &frame::Video, pix: ffi::AVPixelFormat) -> bool {
    // SAFETY: `f` wraps a valid AVFrame; `format` is a plain field.
    unsafe { (*f.as_ptr()).format == pix as i32 }
}

/// Copies a frame decoded on the device into `sw` (NV12 or P010 in system memory), with
/// its timestamps and flags, for the detectors that read pixels.
pub(crate) fn download(hw: &frame::Video, sw: &mut frame::Video) -> Result<(), ffmpeg::Error> {
    // SAFETY: both wrap valid AVFrames; `sw` is unreferenced first, as
    // av_hwframe_transfer_data requires an empty destination to allocate it.
    unsafe {
        ffi::av_frame_unref(sw.as_mut_ptr());
        let rc = ffi::av_hwframe_transfer_data(sw.as_mut_ptr(), hw.as_ptr(), 0);
        if rc < 0 {
            return Err(ffmpeg::Error::from(rc));
        }
        let rc = ffi::av_frame_copy_props(sw.as_mut_ptr(), hw.as_ptr());
        if rc < 0 {
            return Err(ffmpeg::Error::from(rc));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_device_decoding_stays_in_software_and_says_why() {
        ffmpeg::init().unwrap();
        let codec = ffmpeg::codec::decoder::find(ffmpeg::codec::Id::H264).unwrap();
        let mut dec = ffmpeg::codec::Context::new_with_codec(codec);
        let (pix, info) = attach(&mut dec, &codec);
        if info.hardware.is_some() {
            // A machine with a GPU: the device opened, and H.264 decodes to its format.
            assert!(pix.is_some());
            return;
        }
        assert!(pix.is_none());
        // CUDA, then VAAPI, each with its reason (unless VSUM_HWACCEL narrowed it).
        if std::env::var_os("VSUM_HWACCEL").is_none() {
            assert_eq!(info.notes.len(), 2, "{:?}", info.notes);
            assert!(info.notes[0].contains("cuda"), "{:?}", info.notes);
            assert!(info.notes[1].contains("vaapi"), "{:?}", info.notes);
        }
    }
}
