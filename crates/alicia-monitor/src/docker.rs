//! Container monitoring through the Docker Engine API (bollard, unix socket only): health
//! status, restart count, memory and CPU of each container, and its recent log lines for the
//! analyzer. When no engine answers, the state is `unavailable` with the reason, and the
//! monitor keeps running and retries every `retry_secs`.

use std::time::Duration;

use alicia_config::DockerConfig;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions, LogsOptions, StatsOptions};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::logs::LogLine;

/// What the monitor knows about the container engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum EngineState {
    /// Turned off in the configuration.
    Disabled,
    /// Not asked yet.
    Starting,
    /// Answering; `version` is the engine's API version.
    Available { version: String },
    /// No engine here: nothing at the socket's path (the usual case on a machine without
    /// Docker or Podman). Not a fault, so no alert; looked for again every `retry_secs`.
    #[serde(rename = "not_installed")]
    NotInstalled { socket: String },
    /// There is a socket, but the engine does not answer; retried every `retry_secs`.
    Unavailable { reason: String, socket: String },
}

/// One container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    /// created, running, exited, ...
    pub state: String,
    /// healthy, unhealthy, starting, none
    pub health: String,
    pub restart_count: i64,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_ratio: Option<f64>,
}

/// What the poller reports to the monitor.
#[derive(Debug, Clone)]
pub enum DockerReport {
    State(EngineState),
    Containers(Vec<Container>),
}

/// Polls the engine until `stop` turns true.
pub(crate) async fn run(
    cfg: DockerConfig,
    reports: mpsc::UnboundedSender<DockerReport>,
    logs: mpsc::Sender<LogLine>,
    mut stop: watch::Receiver<bool>,
) {
    let socket = cfg.socket.display().to_string();
    let mut last_state = None;
    let mut since: i64 = unix_now();
    loop {
        let (state, wait) = match poll(&cfg, &socket, since, &logs).await {
            Ok((version, containers, polled_at)) => {
                since = polled_at;
                let _ = reports.send(DockerReport::Containers(containers));
                (EngineState::Available { version }, cfg.poll_secs)
            }
            Err(_) if !cfg.socket.exists() => (EngineState::NotInstalled { socket: socket.clone() }, cfg.retry_secs),
            Err(reason) => (EngineState::Unavailable { reason, socket: socket.clone() }, cfg.retry_secs),
        };
        if last_state.as_ref() != Some(&state) {
            match &state {
                EngineState::Unavailable { reason, .. } => {
                    tracing::info!(%socket, %reason, "container engine unavailable; retrying every {}s", cfg.retry_secs)
                }
                EngineState::NotInstalled { .. } => tracing::info!(
                    %socket,
                    "no container engine on this machine (nothing at the socket); containers are not monitored"
                ),
                EngineState::Available { version } => tracing::info!(%socket, %version, "container engine available"),
                _ => {}
            }
            let _ = reports.send(DockerReport::State(state.clone()));
            last_state = Some(state);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait.max(1))) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

fn unix_now() -> i64 {
    std::time::UNIX_EPOCH.elapsed().map(|d| d.as_secs() as i64).unwrap_or(0)
}

async fn poll(
    cfg: &DockerConfig,
    socket: &str,
    since: i64,
    logs: &mpsc::Sender<LogLine>,
) -> Result<(String, Vec<Container>, i64), String> {
    if !cfg.socket.exists() {
        return Err(format!("no socket at {socket}"));
    }
    let docker = Docker::connect_with_unix(socket, 10, bollard::API_DEFAULT_VERSION).map_err(|e| e.to_string())?;
    let version = docker.version().await.map_err(|e| format!("{socket}: {e}"))?;
    let version = version.api_version.unwrap_or_else(|| "unknown".into());
    let polled_at = unix_now();
    let list = docker
        .list_containers(Some(ListContainersOptions { all: true, ..Default::default() }))
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    let mut out = Vec::with_capacity(list.len());
    for summary in list {
        let Some(id) = summary.id.clone() else { continue };
        let name = summary
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| id.chars().take(12).collect());
        let mut c = Container {
            id: id.clone(),
            name: name.clone(),
            image: summary.image.clone().unwrap_or_default(),
            state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
            health: "none".into(),
            restart_count: 0,
            memory_bytes: None,
            memory_limit_bytes: None,
            cpu_ratio: None,
        };
        match docker.inspect_container(&id, None::<InspectContainerOptions>).await {
            Ok(i) => {
                c.restart_count = i.restart_count.unwrap_or(0);
                if let Some(st) = i.state {
                    if let Some(s) = st.status {
                        c.state = s.to_string();
                    }
                    if let Some(h) = st.health.and_then(|h| h.status) {
                        c.health = h.to_string();
                    }
                }
            }
            Err(e) => tracing::debug!(container = %name, error = %e, "inspect failed"),
        }
        if c.state == "running" {
            let mut stats = docker.stats(&id, Some(StatsOptions { stream: false, one_shot: false }));
            if let Some(Ok(s)) = stats.next().await {
                if let Some(m) = s.memory_stats {
                    c.memory_bytes = m.usage;
                    c.memory_limit_bytes = m.limit;
                }
                c.cpu_ratio = cpu_ratio(s.cpu_stats.as_ref(), s.precpu_stats.as_ref());
            }
            let mut lines = docker.logs(
                &id,
                Some(LogsOptions {
                    stdout: true,
                    stderr: true,
                    since: i32::try_from(since).unwrap_or(0),
                    tail: cfg.log_lines.to_string(),
                    ..Default::default()
                }),
            );
            while let Some(Ok(chunk)) = lines.next().await {
                for line in String::from_utf8_lossy(&chunk.into_bytes()).lines() {
                    if !line.trim().is_empty() {
                        let _ = logs.try_send(LogLine { source: format!("container:{name}"), line: line.to_string() });
                    }
                }
            }
        }
        out.push(c);
    }
    Ok((version, out, polled_at))
}

/// CPU use as a fraction of one CPU times the CPUs online, the way `docker stats` computes it.
fn cpu_ratio(
    cpu: Option<&bollard::models::ContainerCpuStats>,
    pre: Option<&bollard::models::ContainerCpuStats>,
) -> Option<f64> {
    let (cpu, pre) = (cpu?, pre?);
    let total = cpu.cpu_usage.as_ref()?.total_usage? as f64 - pre.cpu_usage.as_ref()?.total_usage? as f64;
    let system = cpu.system_cpu_usage? as f64 - pre.system_cpu_usage? as f64;
    let cpus = f64::from(cpu.online_cpus.unwrap_or(1).max(1));
    (system > 0.0 && total >= 0.0).then(|| total / system * cpus)
}
