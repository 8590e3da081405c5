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
