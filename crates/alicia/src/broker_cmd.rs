//! `alicia broker` / `alicia up`: building the broker from command-line options or a
//! Mosquitto configuration file, running it, and reloading its security on SIGHUP.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use alicia_broker::auth::{FileSecurity, MosquittoConf, SecurityConf};
use alicia_broker::reason;
use alicia_broker::{
    Access, Broker, Config, Credentials, Identity, ListenerConfig, Refusal, Security, TlsReloader, Transport,
};
use alicia_gateway::tokens::TokenIssuer;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::Path;

#[derive(Args, Clone)]
pub struct BrokerArgs {
    /// A configuration file: Alicia's YAML (`*.yaml`, a `broker:` section) or Mosquitto's
    /// mosquitto.conf syntax (any other name). Its listeners replace
    /// --bind/--port; its other settings override the options below.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// MQTT port [default: 1883] (0 picks a free one; the chosen address is printed on
    /// stdout). With a configuration file it replaces the port of its first plain listener.
    #[arg(long)]
    pub port: Option<u16>,
    /// With a configuration file: replaces the port of its first TLS listener.
    #[arg(long)]
    pub tls_port: Option<u16>,
    /// Longest keep-alive a client may use, in seconds; MQTT 5 clients asking for more are told
    /// this value (Server Keep Alive).
    #[arg(long, default_value_t = 65535)]
    max_keepalive: u16,
    /// Largest packet accepted, in bytes (0 = no limit below the protocol's).
    #[arg(long, default_value_t = 0)]
    max_packet_size: u32,
    /// Largest PUBLISH payload accepted, in bytes (0 = no limit).
    #[arg(long, default_value_t = 0)]
    message_size_limit: usize,
    /// Messages queued per offline session.
    #[arg(long, default_value_t = 1000)]
    max_queued: usize,
    /// QoS 1/2 messages in flight per client (`max_inflight_messages` in a configuration file,
    /// which also sets --receive-maximum, as in Mosquitto).
    #[arg(long, default_value_t = 256)]
    max_inflight: u16,
    /// QoS 2 messages a client may have unacknowledged towards the broker (Receive Maximum in
    /// CONNACK; exceeding it ends the connection with 0x93).
    #[arg(long, default_value_t = Config::default().receive_maximum)]
    receive_maximum: u16,
    /// Topic aliases a client may use towards the broker (Topic Alias Maximum in CONNACK;
    /// `max_topic_alias` in a configuration file).
    #[arg(long, default_value_t = Config::default().topic_alias_maximum)]
    max_topic_alias: u16,
    /// Maximum simultaneous connections (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// Keep sessions, queued messages and retained messages in this directory across restarts.
    #[arg(long, value_name = "DIR")]
    persistence: Option<PathBuf>,
    /// Seconds between full rewrites of the persistence store.
    #[arg(long, default_value_t = 1800)]
    autosave_interval: u64,
    /// Seconds between `$SYS/broker/...` statistics updates (0 = off).
    #[arg(long, default_value_t = 10)]
    sys_interval: u64,
    /// Refuse subscriptions to this exact topic filter (repeatable).
    #[arg(long = "deny-subscribe", value_name = "FILTER")]
    deny_subscribe: Vec<String>,
    /// Serve `GET /metrics` (Prometheus), `GET /health` and `GET /ready` on this address
    /// (port 0 picks a free one; printed as `http listening on ADDR`); with `alicia up` the
    /// monitor serves them, plus the dashboard at `/`, `/alerts` and `/history` [default with
    /// `alicia up`: 127.0.0.1:8090].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Accept JWTs signed with this key (hex, as `alicia init` writes `keys/jwt.key`) as MQTT
    /// passwords, the user name being the token's subject (a device id).
    #[arg(long, value_name = "FILE")]
    pub jwt_key: Option<PathBuf>,
    /// Write the process id here, for `alicia broker reload` [default with `alicia up`:
    /// alicia.pid in the home, which `alicia certs revoke` signals].
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Stamp every message a client publishes with the MQTT 5 user properties `alicia-user`
    /// (its authenticated user name) and `alicia-auth` (certificate, token, password or
    /// anonymous), replacing any the client set (`identity_properties: true` in Alicia's YAML).
    #[arg(long)]
    pub identity_properties: bool,
    /// Most levels a topic or filter may have (0 = no limit); deeper ones are refused.
    #[arg(long, default_value_t = Config::default().max_topic_levels)]
    max_topic_levels: usize,
    /// Let clients publish to `$SYS/...` (the broker's own topics; refused by default).
    #[arg(long)]
    allow_sys_publish: bool,
    /// Send no Reason String to MQTT 5 clients when refusing or closing a connection (as
    /// Mosquitto does), only the reason code.
    #[arg(long)]
    no_reason_strings: bool,
    /// With `alicia up`: address of the security gateway's HTTPS listener, where devices log in
    /// with their client certificate (printed as `gateway-tls listening on ADDR`; port 0 picks
    /// a free one) [default: 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR")]
    pub gateway_tls: Option<SocketAddr>,
}

#[derive(Subcommand, Clone)]
pub enum BrokerCommand {
    /// Ask a running broker to reload its password file, ACL file and certificates. On any
    /// error the running broker keeps its old ones and says why.
    Reload {
        /// The file the broker was started with as --pid-file.
        #[arg(long, value_name = "FILE")]
        pid_file: PathBuf,
    },
}

/// Where and how much to log, from the configuration file's `log_dest` and `log_type`. The
/// whole configuration is checked first (files, certificates, passwords, ACL), so that a bad
/// one is refused before anything (a log file, a store) is created.
pub fn log_plan(args: &BrokerArgs) -> anyhow::Result<crate::broker_log::LogPlan> {
    let plan = plan(args)?;
    load_security_for(&plan, args.jwt_key.as_deref())?;
    Ok(crate::broker_log::plan(plan.conf.as_ref()))
}

pub fn control(cmd: BrokerCommand) -> anyhow::Result<()> {
    match cmd {
        BrokerCommand::Reload { pid_file } => {
            let text =
                std::fs::read_to_string(&pid_file).with_context(|| format!("cannot read {}", pid_file.display()))?;
            let pid: u32 = text.trim().parse().with_context(|| format!("{}: not a process id", pid_file.display()))?;
            let status = std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status()?;
            if !status.success() {
                bail!("cannot signal process {pid}");
            }
            eprintln!("reload requested; the broker logs the outcome and publishes it on $SYS/broker/reload");
            Ok(())
        }
    }
}

/// Reads a configuration file: Alicia's YAML (`.yaml`/`.yml`) or a `mosquitto.conf`.
fn load_conf(path: &std::path::Path) -> anyhow::Result<MosquittoConf> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => crate::broker_yaml::load(path),
        _ => Ok(MosquittoConf::load(path)?),
    }
}

/// Everything needed to start the broker.
struct Plan {
    config: Config,
    listeners: Vec<ListenerConfig>,
    /// `None`: no configuration file, so no authentication (development and tests).
    security: Option<SecurityConf>,
    sys_interval: u64,
    /// The configuration file as read, if there is one.
    conf: Option<MosquittoConf>,
    /// What the file asked for that is ignored or adjusted, to log once logging runs.
    warnings: Vec<String>,
}

fn plan(args: &BrokerArgs) -> anyhow::Result<Plan> {
    let mut config = Config {
        max_keepalive: args.max_keepalive,
        max_packet_size: args.max_packet_size,
        message_size_limit: args.message_size_limit,
        max_queued: args.max_queued,
        max_inflight: args.max_inflight,
        receive_maximum: args.receive_maximum.max(1),
        topic_alias_maximum: args.max_topic_alias,
        max_connections: args.max_connections,
        deny_subscribe: args.deny_subscribe.clone(),
        persistence: args.persistence.clone(),
        autosave_interval: args.autosave_interval,
        identity_properties: args.identity_properties,
        reason_strings: !args.no_reason_strings,
        max_topic_levels: args.max_topic_levels,
        allow_sys_publish: args.allow_sys_publish,
        ..Config::default()
    };
    let default_listener = ListenerConfig::tcp(SocketAddr::new(args.bind, args.port.unwrap_or(1883)));
    let Some(path) = &args.config else {
        return Ok(Plan {
            config,
            listeners: vec![default_listener],
            security: None,
            sys_interval: args.sys_interval,
            conf: None,
            warnings: Vec::new(),
        });
    };
    let conf = load_conf(path)?;
    // Every file the configuration names must be there before anything starts.
    conf.check_files()?;
    let warnings = conf.warnings.iter().map(ToString::to_string).collect();
    if let Some(v) = conf.max_inflight_messages {
        // Mosquitto uses it for both directions: its CONNACK's Receive Maximum is this value.
        config.max_inflight = if v == 0 { u16::MAX } else { v };
        config.receive_maximum = config.max_inflight;
    }
    if let Some(v) = conf.max_topic_alias {
        config.topic_alias_maximum = v;
    }
    if let Some(v) = conf.max_queued_messages {
        config.max_queued = if v == 0 { usize::MAX } else { v };
    }
    if let Some(v) = conf.message_size_limit {
        config.message_size_limit = v as usize;
    }
    if let Some(v) = conf.max_keepalive {
        config.max_keepalive = v;
    }
    config.identity_properties |= conf.identity_properties;
    if conf.persistence {
        config.persistence = Some(conf.persistence_location.clone().unwrap_or_else(|| PathBuf::from(".")));
    }
    if let Some(v) = conf.autosave_interval {
        config.autosave_interval = if v == 0 { u64::MAX / 4 } else { v as u64 };
    }
    let sys_interval = conf.sys_interval.map_or(args.sys_interval, u64::from);
    let mut listeners = Vec::new();
    for l in &conf.listeners {
        if let Some(files) = l.tls() {
            // Certificates and keys are read now, so that a bad one names its listener before
            // the broker starts.
            alicia_broker::server_config(&files)
                .with_context(|| format!("{}:{}: listener {}", path.display(), l.line, l.port))?;
        }
        let host = l.address.as_deref().unwrap_or("0.0.0.0");
        let addr = (host, l.port)
            .to_socket_addrs()
            .with_context(|| format!("{}:{}: cannot resolve listener address {host}", path.display(), l.line))?
            .next()
            .with_context(|| format!("{}:{}: no address for {host}", path.display(), l.line))?;
        listeners.push(ListenerConfig {
            addr,
            transport: l.protocol,
            tls: l.tls(),
            max_connections: l.max_connections.unwrap_or(0) as usize,
        });
    }
    if listeners.is_empty() {
        listeners.push(default_listener);
    }
    if let Some(port) = args.port {
        if let Some(l) = listeners.iter_mut().find(|l| l.tls.is_none()) {
            l.addr.set_port(port);
        }
    }
    if let Some(port) = args.tls_port {
        if let Some(l) = listeners.iter_mut().find(|l| l.tls.is_some()) {
            l.addr.set_port(port);
        }
    }
    if conf.per_listener_settings && conf.listeners.iter().any(|l| l.security != conf.security_for(0).clone()) {
        tracing::warn!(
            "{}: per_listener_settings with different security per listener is not supported yet; \
             the first listener's settings apply to all",
            path.display()
        );
    }
    let security = Some(conf.security_for(0).clone());
    Ok(Plan { config, listeners, security, sys_interval, conf: Some(conf), warnings })
}

/// Where the gateway's HTTPS listener goes unless `--gateway-tls` says otherwise.
pub const DEFAULT_GATEWAY_TLS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 8443);

/// The security gateway `alicia up` serves next to the broker, from the files of an Alicia home.
pub struct GatewaySetup {
    /// HTTP address of the gateway API.
    pub addr: SocketAddr,
    /// The Alicia home (certs/, keys/).
    pub home: PathBuf,
}

/// The `gateway:` section of `alicia.yaml` (everything optional):
///
/// ```yaml
/// gateway:
///   max_requests_per_minute: 60   # per client IP, over HTTP and HTTPS together
///   crlfile: certs/crl.pem        # revocation list, re-read when it changes
///   cafile: certs/ca.crt          # CA of device certificates
///   certfile: certs/server.crt    # the HTTPS listener's certificate
///   keyfile: certs/server.key
/// ```
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GatewayYaml {
    max_requests_per_minute: Option<u32>,
    crlfile: Option<PathBuf>,
    cafile: Option<PathBuf>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct GatewayFile {
    #[serde(default)]
    gateway: Option<GatewayYaml>,
}

/// The gateway's settings, with paths resolved against the file's directory.
#[derive(Debug, PartialEq)]
pub struct GatewayConf {
    pub max_requests_per_minute: u32,
    pub cafile: PathBuf,
    pub crlfile: PathBuf,
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
}

impl GatewayConf {
    /// The defaults for a home: `certs/ca.crt`, `certs/crl.pem`, `certs/server.crt`/`.key`, 60
    /// requests per minute.
    pub fn defaults(home: &Path) -> Self {
        let home = alicia_home::Home::new(home);
        Self {
            max_requests_per_minute: alicia_gateway::http::DEFAULT_MAX_REQUESTS_PER_MINUTE,
            cafile: home.ca_cert(),
            crlfile: home.crl(),
            certfile: home.server_cert(),
            keyfile: home.server_key(),
        }
    }

    /// Reads the `gateway:` section of an Alicia YAML file (other sections are not looked at);
    /// errors name the file, line and key. No section: the defaults of `home`.
    pub fn load(path: &Path, home: &Path) -> anyhow::Result<Self> {
        let mut conf = Self::defaults(home);
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: GatewayFile = serde_yaml_ng::from_str(&text).map_err(|e| match e.location() {
            Some(l) => anyhow::anyhow!("{}:{}:{}: {}", path.display(), l.line(), l.column(), yaml_message(&e)),
            None => anyhow::anyhow!("{}: {e}", path.display()),
        })?;
        let Some(g) = file.gateway else { return Ok(conf) };
        let dir = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
        if let Some(n) = g.max_requests_per_minute {
            if n == 0 {
                let line = text
                    .lines()
                    .position(|l| l.trim_start().starts_with("max_requests_per_minute"))
                    .map_or(0, |i| i + 1);
                bail!("{}:{line}: gateway.max_requests_per_minute: must be at least 1", path.display());
            }
            conf.max_requests_per_minute = n;
        }
        conf.cafile = g.cafile.map(resolve).unwrap_or(conf.cafile);
        conf.crlfile = g.crlfile.map(resolve).unwrap_or(conf.crlfile);
        conf.certfile = g.certfile.map(resolve).unwrap_or(conf.certfile);
        conf.keyfile = g.keyfile.map(resolve).unwrap_or(conf.keyfile);
        Ok(conf)
    }
}

/// serde_yaml_ng's message without its trailing "at line X column Y" (the location is given).
fn yaml_message(e: &serde_yaml_ng::Error) -> String {
    let s = e.to_string();
    s.find(" at line ").map_or(s.clone(), |i| s[..i].to_string())
}

impl GatewaySetup {
    /// The settings: from the YAML configuration file if there is one, else the defaults.
    fn conf(&self, config: Option<&Path>) -> anyhow::Result<GatewayConf> {
        match config.filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))) {
            Some(path) => GatewayConf::load(path, &self.home),
            None => Ok(GatewayConf::defaults(&self.home)),
        }
    }

    fn build(&self, conf: &GatewayConf) -> anyhow::Result<alicia_gateway::http::Gateway> {
        let devices = alicia_gateway::DeviceAuthority::load(&conf.cafile, Some(conf.crlfile.as_path()))
            .map_err(|e| anyhow::anyhow!("device authority: {}", e.reason()))?;
        let home = alicia_home::Home::new(&self.home);
        let tokens = TokenIssuer::from_key_file(&home.jwt_key())?;
        let keys = alicia_gateway::KeyRing::load(&home.keys_dir())?;
        Ok(alicia_gateway::http::Gateway::new(devices, tokens, keys, conf.max_requests_per_minute))
    }

    /// Binds and starts the HTTP and HTTPS listeners, printing `gateway listening on ADDR`
    /// and `gateway-tls listening on ADDR`.
    async fn start(
        &self,
        config: Option<&Path>,
        tls_addr: SocketAddr,
        rate_limit: Option<u32>,
        tasks: &mut tokio::task::JoinSet<std::io::Result<()>>,
    ) -> anyhow::Result<()> {
        let mut conf = self.conf(config)?;
        if let Some(n) = rate_limit {
            conf.max_requests_per_minute = n;
        }
        let gw = std::sync::Arc::new(self.build(&conf)?);
        let tls_config = alicia_gateway::tls::server_config(&conf.certfile, &conf.keyfile, &gw.devices)
            .context("the gateway's HTTPS listener")?;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("cannot listen on {}", self.addr))?;
        crate::listening::announce("gateway", listener.local_addr()?);
        tasks.spawn(alicia_gateway::http::serve(listener, gw.clone()));
        let listener =
            tokio::net::TcpListener::bind(tls_addr).await.with_context(|| format!("cannot listen on {tls_addr}"))?;
        crate::listening::announce("gateway-tls", listener.local_addr()?);
        tasks.spawn(alicia_gateway::tls::serve_tls(listener, std::sync::Arc::new(tls_config), gw));
        Ok(())
    }
}

pub async fn run(
    args: BrokerArgs,
    gateway: Option<GatewaySetup>,
    services: Option<crate::up::Services>,
) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM that arrives right after the listening line (which is
    // what scripts wait for) must still shut down cleanly and save the store.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let plan = plan(&args)?;
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    // The environment's security section may set the gateway's rate limit (the design
    // document's `rate_limiting`, `max_requests_per_minute`).
    let rate_limit = match &services {
        Some(s) => s.check()?,
        None => None,
    };
    // Everything is checked before the store is opened (which creates it).
    let security = load_security_for(&plan, args.jwt_key.as_deref())?;
    let broker = Broker::open(plan.config).context("cannot open the persistence store")?;
    if let Some(security) = security {
        broker.set_security(security);
    }
    broker.spawn_sys(Duration::from_secs(plan.sys_interval));
    let mut reloaders: Vec<TlsReloader> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound = Vec::new();
    for l in plan.listeners {
        let kind = match (l.transport, l.tls.is_some()) {
            (Transport::Mqtt, false) => "mqtt",
            (Transport::Mqtt, true) => "mqtts",
            (Transport::WebSockets, false) => "ws",
            (Transport::WebSockets, true) => "wss",
        };
        let addr = l.addr;
        let listener = broker.listen_with(l).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        reloaders.extend(listener.tls_reloader());
        tracing::info!(%local, kind, "listener ready");
        // Scripts and tests read these lines to learn the ports chosen for port 0.
        crate::listening::announce(kind, local);
        bound.push((kind, local));
        tasks.spawn(listener.serve());
    }
    if let Some(g) = &gateway {
        let tls_addr = args.gateway_tls.unwrap_or(DEFAULT_GATEWAY_TLS);
        g.start(args.config.as_deref(), tls_addr, rate_limit, &mut tasks)
            .await
            .context("cannot start the security gateway")?;
    }
    let running = match &services {
        Some(s) => {
            let b = broker.clone();
            let metrics: alicia_monitor::ExtraMetrics = std::sync::Arc::new(move || b.metrics());
            Some(s.start(crate::up::local_broker(&bound)?, Some(metrics)).await?)
        }
        None => None,
    };
    if let Some(addr) = args.http {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        crate::listening::announce("http", listener.local_addr()?);
        // With the services, the monitor answers: its health and readiness cover them, and its
        // /metrics carries the broker's next to theirs and the system's.
        let app = match &running {
            Some(r) => r.http_router(),
            None => http_routes(broker.clone()),
        };
        tasks.spawn(async move { axum::serve(listener, app).await });
    }
    if services.is_some() {
        // After every listening line: scripts may wait for this one.
        println!("alicia ready");
        if let Some(g) = &gateway {
            if let Err(e) = crate::listening::write(&g.home) {
                tracing::warn!(error = %e, "cannot write the addresses into the home");
            }
            println!("home: {} (certificates, secrets, configuration, data)", g.home.display());
            println!(
                "next: alicia devices add kitchen_sensor --type sensor --location kitchen   (in another terminal)"
            );
        }
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    // `alicia up` always leaves its pid in the home, for `alicia certs revoke` to signal.
    let pid_file =
        args.pid_file.clone().or_else(|| gateway.as_ref().map(|g| alicia_home::Home::new(&g.home).pid_file()));
    if let Some(pid_file) = &pid_file {
        crate::certs::write_public(pid_file, format!("{}\n", std::process::id()).as_bytes())?;
    }
    loop {
        tokio::select! {
            Some(r) = tasks.join_next() => {
                r.context("listener task failed")?.context("listener failed")?;
            }
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => reload(&broker, plan.security.as_ref(), args.jwt_key.as_deref(), &reloaders),
        }
    }
    tracing::info!("shutting down");
    if let Some(running) = running {
        running.stop().await;
    }
    broker.shutdown(Duration::from_secs(2)).await;
    if let Some(pid_file) = &pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    if let Some(g) = &gateway {
        let _ = std::fs::remove_file(alicia_home::Home::new(&g.home).addresses_file());
    }
    Ok(())
}

/// The security of a plan, if it has any.
fn load_security_for(plan: &Plan, jwt_key: Option<&Path>) -> anyhow::Result<Option<Box<dyn Security>>> {
    plan.security.as_ref().map(|s| load_security(s, jwt_key)).transpose()
}

/// Password file, ACL and (optionally) JWT logins, loaded completely or not at all.
fn load_security(sec: &SecurityConf, jwt_key: Option<&Path>) -> anyhow::Result<Box<dyn Security>> {
    let files = FileSecurity::load(sec)?;
    let tokens = jwt_key
        .map(|p| TokenIssuer::from_key_file(p).with_context(|| format!("cannot load the JWT key {}", p.display())))
        .transpose()?;
    Ok(Box::new(BrokerSecurity { files, tokens }))
}

/// The broker's security in `alicia up`: a verified client certificate, a JWT from the
/// security gateway (user name = its subject), or a user name and password from the password
/// file; then the ACL decides what each may do.
struct BrokerSecurity {
    files: FileSecurity,
    tokens: Option<TokenIssuer>,
}

impl Security for BrokerSecurity {
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, Refusal> {
        if creds.info.cert_identity.is_none() {
            if let (Some(tokens), Some(user), Some(pw)) = (&self.tokens, creds.username, creds.password) {
                if looks_like_jwt(pw) {
                    return match tokens.verify_password_jwt(user, pw) {
                        Ok(claims) => Ok(Identity::token(claims.sub)),
                        Err(e) => Err(Refusal {
                            reason: reason::BAD_USERNAME_OR_PASSWORD,
                            why: format!("token refused: {e}"),
                        }),
                    };
                }
            }
        }
        self.files.authenticate(creds)
    }

    fn authorize(&self, client_id: &str, username: Option<&str>, access: Access, topic: &str) -> bool {
        self.files.authorize(client_id, username, access, topic)
    }

    fn checks_reads(&self) -> bool {
        self.files.checks_reads()
    }
}

/// Three base64url parts separated by dots: a compact JWS.
fn looks_like_jwt(pw: &[u8]) -> bool {
    pw.iter().filter(|&&b| b == b'.').count() == 2
        && pw.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// Liveness, readiness and metrics. Readiness means every listener is bound, which is true
/// once this router is served (it starts after them).
fn http_routes(broker: Broker) -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    axum::Router::new().route("/health", get(|| async { "ok\n" })).route("/ready", get(|| async { "ready\n" })).route(
        "/metrics",
        get(move || {
            let text = broker.metrics();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text) }
        }),
    )
}

/// Reloads passwords, ACL and certificates all or nothing, and says how it went.
fn reload(broker: &Broker, security: Option<&SecurityConf>, jwt_key: Option<&Path>, tls: &[TlsReloader]) {
    let result = (|| -> anyhow::Result<()> {
        let sec = security.map(|s| load_security(s, jwt_key)).transpose()?;
        let certs = tls.iter().map(TlsReloader::prepare).collect::<Result<Vec<_>, _>>()?;
        if let Some(sec) = sec {
            broker.set_security(sec);
        }
        certs.into_iter().for_each(|c| c.install());
        Ok(())
    })();
    let payload = match &result {
        Ok(()) => {
            tracing::info!("reloaded passwords, ACL and certificates");
            "{\"ok\":true}".to_string()
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload failed; the previous passwords, ACL and certificates stay in force");
            format!("{{\"ok\":false,\"error\":{:?}}}", format!("{e:#}"))
        }
    };
    broker.publish("$SYS/broker/reload", payload, false);
}

#[cfg(test)]
mod gateway_conf_tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<GatewayConf> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alicia.yaml");
        std::fs::write(&path, text).unwrap();
        GatewayConf::load(&path, Path::new("/home/a"))
    }

    #[test]
    fn gateway_section() {
        let c =
            load("broker:\n  allow_anonymous: false\ngateway:\n  max_requests_per_minute: 5\n  crlfile: /x/crl.pem\n")
                .unwrap();
        assert_eq!(c.max_requests_per_minute, 5);
        assert_eq!(c.crlfile, Path::new("/x/crl.pem"));
        assert_eq!(c.cafile, Path::new("/home/a/certs/ca.crt"));
        assert_eq!(load("broker: {}\n").unwrap(), GatewayConf::defaults(Path::new("/home/a")));

        let err = load("broker: {}\ngateway:\n  max_request_per_minute: 5\n").unwrap_err().to_string();
        assert!(err.contains("alicia.yaml:3:") && err.contains("max_request_per_minute"), "{err}");
        let err = load("broker: {}\ngateway:\n  max_requests_per_minute: lots\n").unwrap_err().to_string();
        assert!(err.contains("alicia.yaml:3:") && err.contains("invalid type"), "{err}");
        let err = load("broker: {}\ngateway:\n  max_requests_per_minute: 0\n").unwrap_err().to_string();
        assert!(err.contains("alicia.yaml:3: gateway.max_requests_per_minute: must be at least 1"), "{err}");
    }
}

#[cfg(test)]
mod security_tests {
    use super::*;
    use alicia_broker::auth::{set_user, PasswordFile};
    use alicia_broker::{AuthMethod, ConnInfo};

    fn info() -> ConnInfo {
        let addr: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        ConnInfo::new(addr, addr)
    }

    /// The method `BrokerSecurity` reports is what `alicia-auth` carries: `token` for a gateway
    /// JWT given as the password, `password` for the password file, `certificate` for a client
    /// certificate.
    #[test]
    fn broker_security_reports_how_each_client_authenticated() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        set_user(&passwd, "stt_service", "pw-1234").unwrap();
        let tokens = TokenIssuer::new(&[7u8; 32]).unwrap();
        let jwt = tokens.issue("sonos_kitchen_001");
        let security = BrokerSecurity {
            files: FileSecurity::new(false, Some(PasswordFile::load(&passwd).unwrap()), None),
            tokens: Some(tokens),
        };
        let info = info();
        let creds = |user: &'static str, pw: &[u8]| -> Result<Identity, Refusal> {
            let c = Credentials { client_id: "c", username: Some(user), password: Some(pw), info: &info };
            security.authenticate(&c)
        };
        let id = creds("sonos_kitchen_001", jwt.as_bytes()).unwrap();
        assert_eq!((id.authenticated_user(), id.method), (Some("sonos_kitchen_001"), AuthMethod::Token));
        let id = creds("stt_service", b"pw-1234").unwrap();
        assert_eq!((id.authenticated_user(), id.method), (Some("stt_service"), AuthMethod::Password));
        assert!(creds("front_door_lock", jwt.as_bytes()).is_err(), "a token for another subject");
        let mut cert = ConnInfo::new(info.peer, info.local);
        cert.cert_identity = Some("device-001".into());
        let c = Credentials { client_id: "c", username: None, password: None, info: &cert };
        let id = security.authenticate(&c).unwrap();
        assert_eq!((id.authenticated_user(), id.method), (Some("device-001"), AuthMethod::Certificate));
    }
}
