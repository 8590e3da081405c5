//! Vision stages: what the pictures of a video show.
//!
//! `yolo.detect` finds objects in the keyframes that `video.keyframes` picked, with a
//! YOLO detector run through ONNX Runtime on the GPU lane. [`letterbox`] fits pictures
//! into the model's input and maps boxes back; [`detect`] turns the model's output into
//! boxes (per-class NMS) and names them. `ocr.text` reads the words on the same
//! keyframes with PP-OCR (detector + recognizer, [`textbox`] for the model-free parts).

pub mod detect;
pub mod letterbox;
pub mod ocr;
pub mod textbox;
pub mod yolo;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use vsum_engine::contract::{find_upstream_with_stage, read_output};
use vsum_engine::stage::StageError;

use crate::media::{KeyframeOut, KeyframesOut};

/// Finds `keyframes.json` (from `video.keyframes`, or a command that wrote one) in the
/// upstream folders, with the stage that made it.
pub(crate) fn find_keyframes(
    upstream: &BTreeMap<String, PathBuf>,
) -> Result<(String, PathBuf), StageError> {
    if let Some((stage, p)) = find_upstream_with_stage(upstream, "keyframes.json") {
        return Ok((stage.to_string(), p));
    }
    let names: Vec<&str> = upstream.keys().map(String::as_str).collect();
    Err(StageError::fatal(format!(
        "no stage in `needs` gave keyframes.json (looked in: {})",
        if names.is_empty() {
            "nothing, `needs` is empty".to_string()
        } else {
            names.join(", ")
        }
    ))
    .hint("add a `video.keyframes` stage (which needs `video.scenes`) to this stage's `needs`"))
}

/// Reads `keyframes.json`: each picture with its path. A file name that is not a plain
/// name inside the folder is refused.
pub(crate) fn read_keyframes(
    path: &Path,
    stage: &str,
) -> Result<Vec<(KeyframeOut, PathBuf)>, StageError> {
    let k: KeyframesOut = read_output(path, stage)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    k.keyframes
        .into_iter()
        .map(|kf| {
            let rel = Path::new(&kf.file);
            if kf.file.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(StageError::fatal(format!(
                    "{}: keyframe file '{}' is not a plain name inside its folder",
                    path.display(),
                    kf.file
                )));
            }
            let p = dir.join(rel);
            Ok((kf, p))
        })
        .collect()
}

/// The upstream keyframes, each with its picture's path.
pub(crate) fn upstream_keyframes(
    upstream: &BTreeMap<String, PathBuf>,
) -> Result<Vec<(KeyframeOut, PathBuf)>, StageError> {
    let (stage, path) = find_keyframes(upstream)?;
    read_keyframes(&path, &stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_files_must_stay_in_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("keyframes.json");
        std::fs::write(&k, br#"{"keyframes": [{"scene": 0, "time": 1.0, "file": "../x.jpg", "width": 1, "height": 1}]}"#).unwrap();
        let e = read_keyframes(&k, "kf").unwrap_err();
        assert!(e.message.contains("not a plain name"), "{e}");
        std::fs::write(&k, br#"{"keyframes": [{"scene": 3, "time": 1.5, "file": "scene_0003.jpg"}], "rotation": 0}"#).unwrap();
        let r = read_keyframes(&k, "kf").unwrap();
        assert_eq!(
            (r[0].0.scene, r[0].1.clone()),
            (3, dir.path().join("scene_0003.jpg"))
        );
        let e = find_keyframes(&BTreeMap::new()).unwrap_err();
        assert!(e.hint.unwrap().contains("video.keyframes"));
    }
}
