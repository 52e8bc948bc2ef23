//! Spoken announcements for speakers that cannot speak text: `speaker_manager` has the text
//! synthesised by the TTS service on the bus (`capability:text_to_speech`) and serves the WAV
//! here, `GET /media/<id>.wav`, for the speaker to fetch as its `audio_url`.
//!
//! Why `speaker_manager` serves the clip itself: it makes the clip, for one command it sends
//! moments later; handing ~100 kB per announcement to another service would put it on the bus
//! (retained) only to be fetched once. Ids are 128 random bits (the URL is the capability: a
//! speaker needs no login to fetch it); a clip lives [`TTL`], and at most [`MAX_CLIPS`] are kept.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_sdk::ApiError;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use parking_lot::Mutex;

/// How long a clip may be fetched after it was made.
pub const TTL: Duration = Duration::from_secs(600);
/// Clips kept at once (the oldest goes first).
pub const MAX_CLIPS: usize = 64;

struct Clip {
    id: String,
    made: Instant,
    wav: Bytes,
}

/// The clips, and the URL speakers fetch them from.
pub struct Media {
    clips: Mutex<VecDeque<Clip>>,
    base: String,
}

impl Media {
    /// Serves clips on `bind`; their URLs start with `public` (default: `http://<bound address>`,
    /// right for speakers on this machine; give the address speakers on the network reach).
    pub async fn serve(
        bind: SocketAddr,
        public: Option<String>,
    ) -> std::io::Result<(Arc<Media>, SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let local = listener.local_addr()?;
        let base = public.unwrap_or_else(|| format!("http://{local}")).trim_end_matches('/').to_string();
        let media = Arc::new(Media { clips: Mutex::default(), base });
        let app = axum::Router::new().route("/media/{file}", axum::routing::get(fetch)).with_state(media.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the media server stopped");
            }
        });
        Ok((media, local, task))
    }

    /// Keeps `wav` and returns its URL.
    pub fn add(&self, wav: Bytes) -> String {
        let id = alicia_envelope::Uuid::new_v4().simple().to_string();
        let mut clips = self.clips.lock();
        clips.retain(|c| c.made.elapsed() < TTL);
        while clips.len() >= MAX_CLIPS {
            clips.pop_front();
        }
        clips.push_back(Clip { id: id.clone(), made: Instant::now(), wav });
        format!("{}/media/{id}.wav", self.base)
    }

    fn get(&self, id: &str) -> Option<Bytes> {
        self.clips.lock().iter().find(|c| c.id == id && c.made.elapsed() < TTL).map(|c| c.wav.clone())
    }
}

async fn fetch(State(media): State<Arc<Media>>, Path(file): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let id = file.strip_suffix(".wav").unwrap_or_default();
    match media.get(id) {
        Some(wav) => Ok(([(header::CONTENT_TYPE, "audio/wav")], wav)),
        None => Err(ApiError::not_found(format!("no clip {file:?} (clips live {} s)", TTL.as_secs()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (String::from_utf8_lossy(&out[..split]).into_owned(), out[split + 4..].to_vec())
    }

    #[tokio::test]
    async fn clips_are_served_by_their_url_and_the_oldest_go_first() {
        let (media, addr, _task) = Media::serve("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let url = media.add(Bytes::from_static(b"RIFF....WAVE"));
        let path = url.strip_prefix(&format!("http://{addr}")).expect("the URL names the bound address");
        let (head, body) = get(addr, path).await;
        assert!(head.starts_with("HTTP/1.1 200") && head.to_lowercase().contains("content-type: audio/wav"), "{head}");
        assert_eq!(body, b"RIFF....WAVE");
        let (head, body) = get(addr, "/media/0123456789abcdef0123456789abcdef.wav").await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("\"not_found\""));
        // Past MAX_CLIPS, the first is gone and the last is there.
        let mut last = String::new();
        for _ in 0..MAX_CLIPS {
            last = media.add(Bytes::from_static(b"x"));
        }
        assert!(get(addr, path).await.0.starts_with("HTTP/1.1 404"));
        let last = last.strip_prefix(&format!("http://{addr}")).unwrap().to_string();
        assert!(get(addr, &last).await.0.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_public_url_is_used_as_given() {
        let (media, _addr, _task) =
            Media::serve("127.0.0.1:0".parse().unwrap(), Some("http://alicia.lan:8095/".into())).await.unwrap();
        assert!(media.add(Bytes::new()).starts_with("http://alicia.lan:8095/media/"));
    }
}
