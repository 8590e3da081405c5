//! Quantized Whisper models made by vsum's own quantizer, on the real tiny.en weights:
//! whisper.cpp (through whisper-rs) must load them and transcribe espeak-ng speech with
//! the same words as the f16 model. Skips loudly without the installed models, fails in CI.

mod support;

use std::path::Path;

use serde_json::json;
use support::*;
use vsum_models::quant::QType;
use vsum_models::{InstallOptions, ModelsDir, ModelsManifest, ggml, install};
use vsum_stages::speech::transcript::Transcript;

const SENTENCES: [&str; 4] = [
    "Please remember to bring your laptop to the meeting tomorrow.",
    "We will review the quarterly budget on Friday afternoon.",
    "Machine learning models can transcribe speech into text.",
    "The weather today is sunny with a light breeze.",
];

fn transcribe(model: &str, audio: &Path, base: &Path) -> Transcript {
    let (out, r) = run_stage(
        &whisper(),
        json!({ "model": model }),
        &[("audio", audio)],
        base,
        None,
    );
    r.unwrap_or_else(|e| panic!("{model}: {e:?}"));
    serde_json::from_slice(&std::fs::read(out.path().join("transcript.json")).unwrap()).unwrap()
}

#[test]
fn quantized_tiny_en_loads_and_transcribes_the_same_words_as_f16() {
    if !ready("quantized_tiny_en_loads_and_transcribes_the_same_words_as_f16") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("no-packages");
    std::fs::create_dir_all(&empty).unwrap();
    let no_fetch = InstallOptions {
        from: Some(empty),
        force: false,
    };

    // q8_0 by its installed name, made from the installed f16 model (nothing fetched:
    // the `--from` folder is empty).
    let real = models();
    let q8 = install(&real, "whisper-tiny.en-q8_0", &no_fetch).unwrap();
    let f16_entry = ModelsManifest::load(&real).unwrap().models["whisper-tiny.en"].clone();
    assert_eq!(q8.entry.sources, f16_entry.sources);
    assert_eq!(q8.entry.license, "MIT");
    let info = ggml::inspect(&q8.path).unwrap();
    assert_eq!(info.hparams.ftype, 2000 + QType::Q8_0.ftype());
    // 8.5 bits a weight instead of 16, but the positional embeddings stay f32.
    assert!(
        q8.entry.size < f16_entry.size * 6 / 10,
        "{} vs {}",
        q8.entry.size,
        f16_entry.size
    );

    // q5_1 into a private models folder holding a copy of the f16 model.
    let private = ModelsDir::new(tmp.path().join("models"));
    std::fs::create_dir_all(private.root()).unwrap();
    std::fs::copy(real.path(&f16_entry.file), private.path(&f16_entry.file)).unwrap();
    let mut m = ModelsManifest::default();
    m.models.insert("whisper-tiny.en".into(), f16_entry.clone());
    m.save(&private).unwrap();
    let q5 = install(&private, "whisper-tiny.en-q5_1", &no_fetch).unwrap();
    assert_eq!(
        ggml::inspect(&q5.path).unwrap().hparams.ftype,
        2000 + QType::Q5_1.ftype()
    );
    assert!(q5.entry.size < q8.entry.size);

    let (samples, _) = sentences(tmp.path(), &SENTENCES, 0.5, 0.8);
    let audio = tmp.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    write_wav(&audio.join("audio.wav"), &samples);
    let reference = SENTENCES.join(" ");

    let f16 = transcribe("whisper-tiny.en", &audio, tmp.path());
    let q8t = transcribe("whisper-tiny.en-q8_0", &audio, tmp.path());
    let q5t = transcribe(q5.path.to_str().unwrap(), &audio, tmp.path());
    for (name, t) in [("f16", &f16), ("q8_0", &q8t), ("q5_1", &q5t)] {
        eprintln!(
            "{name}: WER {:.3}: {}",
            wer(&reference, &t.text()),
            t.text()
        );
    }
    assert!(wer(&reference, &f16.text()) <= 0.1);
    assert_eq!(
        words(&q8t.text()),
        words(&f16.text()),
        "q8_0 must give the f16 model's words"
    );
    assert!(wer(&reference, &q5t.text()) <= 0.1, "{}", q5t.text());
}
