//! The one helper every test goes through: the real `onceledger serve` binary as a child
//! process on a free loopback port with a fresh data directory, spoken to over real HTTP.
//!
//! Every wait here is bounded by a named deadline and fails the test with the server's last log
//! lines instead of hanging. The child's stdout and stderr are drained by background threads so
//! its pipes never fill.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use onceledger_client::tls::Connector;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the server may take to print its `listening on` line.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How long the server may take to exit after SIGTERM or SIGKILL.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(20);
/// How long `onceledger check` may run.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(60);
/// How long one HTTP exchange may take, connection included.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// How many of the server's log lines are kept for failure messages.
const LOG_LINES_MAX: usize = 300;
/// Poll interval while waiting for a child process to exit (a bounded wait, not a sync point).
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);

pub const BIN: &str = env!("CARGO_BIN_EXE_onceledger");

/// hyper's pooled client over onceledger's connector: plain HTTP, or HTTPS for a TLS server.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// A client with the default connection pool (keep-alive reuse).
pub fn new_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(Connector::new(HttpConnector::new(), None))
}

/// A client that never keeps an idle connection: each request opens its own TCP connection, so
/// simultaneous requests are truly simultaneous on the server.
pub fn fresh_connection_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(Connector::new(HttpConnector::new(), None))
}

/// A unique idempotency key (unique within this test process).
pub fn key(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One HTTP answer: status, headers and the body bytes exactly as received.
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<non-ascii>"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!("body is not JSON ({e}): {self}"),
        }
    }

    /// The problem `type` of an error body, or "" when there is none.
    pub fn problem_type(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.text();
        if text.len() > 2000 {
            let mut cut = 2000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        write!(f, "HTTP {} {:?} body: {}", self.status, self.headers, text)
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Asserts an RFC 9457 problem answer of the given status and kind (`/problems/<kind>`).
#[track_caller]
pub fn assert_problem(resp: &Resp, status: u16, kind: &str) {
    assert_eq!(
        resp.status, status,
        "expected HTTP {status} /problems/{kind}, got {resp}"
    );
    let content_type = resp.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/problem+json"),
        "a problem must be application/problem+json, got content-type {content_type:?}: {resp}"
    );
    let body = resp.json();
    assert_eq!(
        body["type"],
        Value::from(format!("/problems/{kind}")),
        "problem type: {resp}"
    );
    assert_eq!(
        body["status"],
        Value::from(status),
        "problem status must equal the HTTP status: {resp}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "problem title: {resp}"
    );
    assert!(body["detail"].is_string(), "problem detail: {resp}");
    assert!(
        resp.header("x-request-id").is_some(),
        "every response carries X-Request-Id: {resp}"
    );
}

/// Asserts a 201 that ran now (not a replay) and returns its JSON body.
#[track_caller]
pub fn assert_created(resp: &Resp) -> Value {
    assert_eq!(resp.status, 201, "expected 201, got {resp}");
    assert!(
        resp.header("idempotent-replayed").is_none(),
        "a fresh answer must not carry Idempotent-Replayed: {resp}"
    );
    resp.json()
}

/// Asserts that `replay` is `original` replayed: same status, byte-identical body, and the
/// header `Idempotent-Replayed: true`.
#[track_caller]
pub fn assert_replay_of(replay: &Resp, original: &Resp) {
    assert_eq!(
        replay.status, original.status,
        "replay status differs: original {original}, replay {replay}"
    );
    assert_eq!(
        replay.body, original.body,
        "replay body is not byte-identical: original {original}, replay {replay}"
    );
    assert!(
        replay.replayed(),
        "a replay must carry Idempotent-Replayed: true: {replay}"
    );
}

/// The admin token of each server this test process started, by address, so raw-socket helpers
/// can authenticate too. Set when a server prints `listening on`.
static TOKENS: Mutex<Vec<(SocketAddr, String)>> = Mutex::new(Vec::new());

/// The admin token of the server at `addr`, if this process started it.
pub fn token_of(addr: SocketAddr) -> Option<String> {
    let tokens = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
    tokens
        .iter()
        .rev()
        .find(|(a, _)| *a == addr)
        .map(|(_, t)| t.clone())
}

/// `raw` with an `Authorization` line for the server at `addr` inserted after the request line,
/// unless it has one (raw-socket tests speak to `/v1` too).
pub fn with_auth(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let has_auth = String::from_utf8_lossy(raw)
        .to_ascii_lowercase()
        .contains("\r\nauthorization:");
    let (Some(token), Some(end)) = (token_of(addr), raw.windows(2).position(|w| w == b"\r\n"))
    else {
        return raw.to_vec();
    };
    if has_auth {
        return raw.to_vec();
    }
    let mut out = raw[..end + 2].to_vec();
    out.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
    out.extend_from_slice(&raw[end + 2..]);
    out
}

/// A cheap handle to send requests to one server incarnation; cloneable into tasks. It sends
/// `Authorization: Bearer TOKEN` with every request (the server's admin token by default) unless
/// the request names its own `authorization` header or the endpoint has no token.
#[derive(Clone)]
pub struct Endpoint {
    pub base: String,
    pub addr: SocketAddr,
    client: HttpClient,
    token: Option<Arc<str>>,
}

impl Endpoint {
    /// An endpoint with the admin token of the server at `addr` (if this process started it).
    pub fn new(addr: SocketAddr, client: HttpClient) -> Endpoint {
        Endpoint {
            base: format!("http://{addr}"),
            addr,
            client,
            token: token_of(addr).map(Arc::from),
        }
    }

    /// The same server through another client (for example one connection per request).
    pub fn with_client(&self, client: HttpClient) -> Endpoint {
        Endpoint {
            client,
            ..self.clone()
        }
    }

    /// The same server over HTTPS, trusting the PEM certificates of `ca_file`.
    pub fn over_tls(&self, ca_file: &Path) -> Endpoint {
        let tls = onceledger_client::tls::client_connector(Some(ca_file)).expect("a TLS client");
        let client = Client::builder(TokioExecutor::new())
            .build(Connector::new(HttpConnector::new(), Some(tls)));
        Endpoint {
            base: format!("https://{}", self.addr),
            client,
            ..self.clone()
        }
    }

    /// The same server, sending `token` (None: no Authorization header at all).
    pub fn with_token(&self, token: Option<&str>) -> Endpoint {
        Endpoint {
            token: token.map(Arc::from),
            ..self.clone()
        }
    }

    /// The token this endpoint sends.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Sends one request; `Err` describes a transport failure or the deadline passing.
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Bytes,
    ) -> Result<Resp, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        let names_auth = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        if let Some(token) = self.token.as_deref().filter(|_| !names_auth) {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("bad header name {name:?}: {e}"))?;
            let value = HeaderValue::from_bytes(value)
                .map_err(|e| format!("bad header value {value:?}: {e}"))?;
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| format!("building request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {e:?}"))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("reading body failed: {e:?}"))?
                .to_bytes();
            Ok(Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(REQUEST_DEADLINE, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {REQUEST_DEADLINE:?} for {path}")),
        }
    }

    /// A JSON POST with an optional Idempotency-Key.
    pub async fn try_post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> Result<Resp, String> {
        let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
        if let Some(key) = key {
            headers.push(("idempotency-key", key.as_bytes()));
        }
        self.try_request(
            Method::POST,
            path,
            &headers,
            Bytes::copy_from_slice(body.as_bytes()),
        )
        .await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &str) -> Resp {
        match self.try_post(path, key, body).await {
            Ok(r) => r,
            Err(e) => panic!("POST {path} (key {key:?}): {e}"),
        }
    }

    pub async fn post_raw(&self, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Resp {
        self.request(Method::POST, path, headers, body).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Resp {
        let shown = method.clone();
        match self
            .try_request(method, path, headers, Bytes::copy_from_slice(body))
            .await
        {
            Ok(r) => r,
            Err(e) => panic!("{shown} {path}: {e}"),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, &[], b"").await
    }
}

type Log = Arc<Mutex<VecDeque<String>>>;

fn push_log(log: &Log, line: String) {
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    if log.len() == LOG_LINES_MAX {
        log.pop_front();
    }
    log.push_back(line);
}

fn log_text(log: &Log) -> String {
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Reads lines (lossily, so odd bytes never stop the drain) until EOF, calling `each`.
fn drain_lines(pipe: impl Read + Send + 'static, mut each: impl FnMut(String) + Send + 'static) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => each(String::from_utf8_lossy(&buf).trim_end().to_owned()),
            }
        }
    });
}

/// Polls `try_wait` until the child exits or the deadline passes.
pub async fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for the server process: {e}"),
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(EXIT_POLL_INTERVAL).await;
    }
}

/// The output of a command run to completion under a deadline.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command with drained pipes and a deadline; kills it and fails if the deadline passes.
pub async fn run_bounded(command: &mut Command, deadline: Duration) -> Finished {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let (out_done_tx, out_done_rx) = tokio::sync::oneshot::channel::<()>();
    let (err_done_tx, err_done_rx) = tokio::sync::oneshot::channel::<()>();
    for (pipe, sink, done) in [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            stdout.clone(),
            out_done_tx,
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            stderr.clone(),
            err_done_tx,
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = pipe.read_to_end(&mut all);
            *sink.lock().unwrap_or_else(|p| p.into_inner()) =
                String::from_utf8_lossy(&all).into_owned();
            let _ = done.send(());
        });
    }
    let Some(status) = wait_exit(&mut child, deadline).await else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{shown} did not finish within {deadline:?}");
    };
    // The pipes close when the process exits; the readers finish right after.
    let _ = tokio::time::timeout(EXIT_DEADLINE, out_done_rx).await;
    let _ = tokio::time::timeout(EXIT_DEADLINE, err_done_rx).await;
    let stdout = stdout.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let stderr = stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// A running `onceledger serve` child process and its data directory.
pub struct Server {
    endpoint: Endpoint,
    data_dir: PathBuf,
    tempdir: Option<tempfile::TempDir>,
    child: Option<Child>,
    log: Log,
    incarnation: u32,
    /// Extra `serve` flags, kept for restarts.
    serve_args: Vec<String>,
    /// Pass the listen address and data directory through ONCELEDGER_* variables, not flags.
    by_env: bool,
    /// `--listen`: `127.0.0.1:0` (a new free port each start) unless pinned by `start_at`.
    listen: String,
    /// Extra environment variables of the child (fault points), kept for restarts.
    env: Vec<(String, String)>,
    /// `serve`, or `consume` for a hub fed by NATS.
    subcommand: String,
}

impl Server {
    /// Starts the real binary on 127.0.0.1:0 with a fresh, empty data directory (a directory
    /// that does not exist yet, so it also guards "created if missing").
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// Like `start`, with extra `serve` flags (for example `--commit-queue-max 1`).
    pub async fn start_with(serve_args: &[&str]) -> Server {
        Server::launch(serve_args, false).await
    }

    /// Like `start_with`, with extra environment variables for the child (fault points, the
    /// store's test marks), kept for restarts.
    pub async fn start_with_env(serve_args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch_full("serve", serve_args, false, "127.0.0.1:0", env).await
    }

    /// Like `start`, but the listen address and data directory reach the server through
    /// ONCELEDGER_LISTEN and ONCELEDGER_DATA_DIR instead of flags.
    pub async fn start_by_env() -> Server {
        Server::launch(&[], true).await
    }

    /// Like `start_with`, on a fixed address kept across restarts (a hub its nodes point at), and
    /// with extra environment variables for the child.
    pub async fn start_at(listen: SocketAddr, serve_args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_command_at("serve", listen, serve_args, env).await
    }

    /// Like `start_at` with another subcommand that runs a server (`consume`).
    pub async fn start_command_at(
        subcommand: &str,
        listen: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Server::launch_full(subcommand, args, false, &listen.to_string(), env).await
    }

    async fn launch(serve_args: &[&str], by_env: bool) -> Server {
        Server::launch_full("serve", serve_args, by_env, "127.0.0.1:0", &[]).await
    }

    async fn launch_full(
        subcommand: &str,
        serve_args: &[&str],
        by_env: bool,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let subcommand = subcommand.to_owned();
        let serve_args: Vec<String> = serve_args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let listen = listen.to_owned();
        let tempdir = tempfile::Builder::new()
            .prefix("onceledger-it-")
            .tempdir()
            .expect("create a temporary directory");
        let data_dir = tempdir.path().join("data");
        let log: Log = Arc::new(Mutex::new(VecDeque::new()));
        let (child, addr) = spawn_server(
            &subcommand,
            &data_dir,
            &serve_args,
            by_env,
            &log,
            1,
            &listen,
            &env,
        )
        .await;
        Server {
            endpoint: Endpoint::new(addr, new_client()),
            data_dir,
            tempdir: Some(tempdir),
            child: Some(child),
            log,
            incarnation: 1,
            serve_args,
            by_env,
            listen,
            env,
            subcommand,
        }
    }

    /// Replaces the child's extra environment for the next restart.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Replaces the extra flags for the next restart (an operator fixing a node's configuration).
    pub fn set_args(&mut self, args: &[&str]) {
        self.serve_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Waits (bounded) for a server that is meant to crash by itself (a fault point) to exit.
    pub async fn wait_crashed(&mut self, deadline: Duration) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("wait_crashed: the server is not running");
        };
        match wait_exit(&mut child, deadline).await {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not exit within {deadline:?}; log:\n{}",
                    self.log_tail()
                );
            }
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    pub fn base(&self) -> &str {
        &self.endpoint.base
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's last stderr lines (its log, without the stdout lines), oldest first.
    pub fn log_lines(&self) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|l| l.contains(" err] "))
            .cloned()
            .collect()
    }

    /// The server's last log lines (stdout and stderr), for failure messages.
    pub fn log_tail(&self) -> String {
        log_text(&self.log)
    }

    /// Starts the server again on the same data directory (stopping it gracefully first if it
    /// still runs). The port changes; `endpoint()` handles taken before are stale.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate().await;
        }
        self.incarnation += 1;
        push_log(
            &self.log,
            format!("---- restart #{} ----", self.incarnation),
        );
        let (child, addr) = spawn_server(
            &self.subcommand,
            &self.data_dir,
            &self.serve_args,
            self.by_env,
            &self.log,
            self.incarnation,
            &self.listen,
            &self.env,
        )
        .await;
        self.child = Some(child);
        // A fresh client: nothing pooled from the previous incarnation may be reused.
        self.endpoint = Endpoint::new(addr, new_client());
    }

    /// SIGKILL: the process dies at once, with no chance to flush or clean up.
    pub async fn kill_hard(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("kill_hard: the server is not running");
        };
        child.kill().expect("send SIGKILL to the server");
        if wait_exit(&mut child, EXIT_DEADLINE).await.is_none() {
            panic!("the server did not die within {EXIT_DEADLINE:?} of SIGKILL");
        }
    }

    /// Sends SIGTERM (through the `kill` command) and asserts that the server exits with
    /// status 0 within the deadline.
    pub async fn terminate(&mut self) {
        let status = self.terminate_with_status().await;
        assert_eq!(
            status.code(),
            Some(0),
            "after SIGTERM the server must exit with status 0, got {status}; log:\n{}",
            self.log_tail()
        );
    }

    /// Sends SIGTERM and returns the exit status, which must come within the deadline.
    pub async fn terminate_with_status(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("terminate: the server is not running");
        };
        let pid = child.id().to_string();
        let sent = run_bounded(Command::new("kill").args(["-TERM", &pid]), EXIT_DEADLINE).await;
        assert!(
            sent.status.success(),
            "kill -TERM {pid} failed: {}",
            sent.stderr
        );
        match wait_exit(&mut child, EXIT_DEADLINE).await {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not exit within {EXIT_DEADLINE:?} of SIGTERM; log:\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// Stops the server gracefully, then runs `onceledger check --data-dir DIR`, which verifies
    /// every invariant of DESIGN.md on the store, and asserts exit 0 and zero balance sums.
    /// Returns the JSON summary.
    pub async fn check(mut self) -> Value {
        if self.child.is_some() {
            self.terminate().await;
        }
        let done = run_bounded(
            Command::new(BIN)
                .env_remove("ONCELEDGER_DATA_DIR")
                .arg("check")
                .arg("--data-dir")
                .arg(&self.data_dir),
            CHECK_DEADLINE,
        )
        .await;
        assert_eq!(
            done.status.code(),
            Some(0),
            "`onceledger check` found violations (exit {}):\nstdout: {}\nstderr: {}",
            done.status,
            done.stdout,
            done.stderr
        );
        let summary: Value = serde_json::from_str(done.stdout.trim())
            .ok()
            .or_else(|| {
                done.stdout
                    .lines()
                    .rev()
                    .find(|l| l.trim_start().starts_with('{'))
                    .and_then(|l| serde_json::from_str(l).ok())
            })
            .unwrap_or_else(|| {
                panic!(
                    "`onceledger check` must print a JSON summary on stdout, got: {}",
                    done.stdout
                )
            });
        for name in ["accounts", "charges", "events", "idempotency_records"] {
            assert!(
                summary[name].is_u64(),
                "check summary lacks a count {name:?}: {summary}"
            );
        }
        let sums = summary["balance_sum_by_currency"]
            .as_object()
            .unwrap_or_else(|| panic!("check summary lacks balance_sum_by_currency: {summary}"));
        for (currency, sum) in sums {
            assert_eq!(
                sum.as_i64(),
                Some(0),
                "balances of {currency} must sum to zero: {summary}"
            );
        }
        summary
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &str) -> Resp {
        self.endpoint.post(path, key, body).await
    }

    pub async fn post_raw(&self, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Resp {
        self.endpoint.post_raw(path, headers, body).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Resp {
        self.endpoint.request(method, path, headers, body).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.endpoint.get(path).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- onceledger server log (last {LOG_LINES_MAX} lines) ----\n{}\n----",
                self.log_tail()
            );
            if let Some(dir) = self.tempdir.take() {
                eprintln!("data directory kept at {}", dir.keep().display());
            }
        }
    }
}

/// Spawns `onceledger serve` and waits for its `listening on 127.0.0.1:PORT` line.
#[allow(clippy::too_many_arguments)]
async fn spawn_server(
    subcommand: &str,
    data_dir: &Path,
    serve_args: &[String],
    by_env: bool,
    log: &Log,
    incarnation: u32,
    listen: &str,
    env: &[(String, String)],
) -> (Child, SocketAddr) {
    let mut command = Command::new(BIN);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
        .env_remove("ONCELEDGER_LISTEN")
        .env_remove("ONCELEDGER_DATA_DIR")
        .env_remove("ONCELEDGER_IDEMPOTENCY_RETENTION")
        .env_remove("ONCELEDGER_BATCH_COMMANDS_MAX")
        .env_remove("ONCELEDGER_COMMIT_QUEUE_MAX")
        .env("NO_COLOR", "1")
        .arg(subcommand);
    if by_env {
        command
            .env("ONCELEDGER_LISTEN", listen)
            .env("ONCELEDGER_DATA_DIR", data_dir);
    } else {
        command
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir);
    }
    let mut child = command
        .args(serve_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));

    let (port_tx, port_rx) = tokio::sync::oneshot::channel::<u16>();
    let mut port_tx = Some(port_tx);
    let out_log = log.clone();
    let stdout = child.stdout.take().expect("piped stdout");
    drain_lines(stdout, move |line| {
        if let Some(rest) = line.trim().strip_prefix("listening on 127.0.0.1:")
            && let Ok(port) = rest.trim().parse::<u16>()
            && let Some(tx) = port_tx.take()
        {
            let _ = tx.send(port);
        }
        push_log(&out_log, format!("[{incarnation} out] {line}"));
    });
    let err_log = log.clone();
    let stderr = child.stderr.take().expect("piped stderr");
    drain_lines(stderr, move |line| {
        push_log(&err_log, format!("[{incarnation} err] {line}"))
    });

    match tokio::time::timeout(STARTUP_DEADLINE, port_rx).await {
        Ok(Ok(port)) => {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // `serve` writes admin.token before it prints `listening on`.
            match std::fs::read_to_string(data_dir.join("admin.token")) {
                Ok(token) => TOKENS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((addr, token.trim().to_owned())),
                Err(error) => panic!("no admin.token in {}: {error}", data_dir.display()),
            }
            (child, addr)
        }
        Ok(Err(_)) => {
            // stdout closed without the line: the process is exiting.
            let status = wait_exit(&mut child, EXIT_DEADLINE).await;
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server closed stdout without printing `listening on 127.0.0.1:PORT` \
                 (exit {status:?}); log:\n{}",
                log_text(log)
            );
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not print `listening on 127.0.0.1:PORT` within \
                 {STARTUP_DEADLINE:?}; log:\n{}",
                log_text(log)
            );
        }
    }
}

/// What came back on a raw socket: the status (if a status line arrived) and everything read.
pub struct RawAnswer {
    pub status: Option<u16>,
    pub raw: Vec<u8>,
}

impl RawAnswer {
    /// Parses the status code of the first status line, if one arrived.
    pub fn from_raw(raw: Vec<u8>) -> RawAnswer {
        let first_line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(raw.len());
        let status = std::str::from_utf8(&raw[..first_line_end])
            .ok()
            .and_then(|line| line.strip_prefix("HTTP/1.1 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        RawAnswer { status, raw }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The body after the blank line (not de-chunked).
    pub fn body(&self) -> &[u8] {
        match self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => &self.raw[i + 4..],
            None => &[],
        }
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it (send
/// `Connection: close`), all within the request deadline. A reset after a partial answer is
/// returned as what was read.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        // The server may answer and close before taking everything (413, bad headers).
        let _ = stream.write_all(&with_auth(addr, request)).await;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        raw
    };
    let raw = tokio::time::timeout(REQUEST_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| {
            panic!("raw exchange with {addr}: no close within {REQUEST_DEADLINE:?}")
        });
    RawAnswer::from_raw(raw)
}

/// A loopback port that was free a moment ago, for a server that must keep its address across
/// restarts (a hub). Bound and released at once; nothing else on this machine picks ports here.
pub fn free_loopback_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Polls `probe` until it returns `Some`, at most `deadline`; panics with `what` otherwise. For
/// progress that happens in another process (replication), where no event can be awaited.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    const POLL: Duration = Duration::from_millis(50);
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// JSON helpers for the bodies the tests send.
pub fn account_body(id: &str, currency: &str, overdraft_limit: Option<i64>) -> String {
    serde_json::json!({"id": id, "currency": currency, "overdraft_limit": overdraft_limit})
        .to_string()
}

pub fn charge_body(source: &str, destination: &str, amount: i64, currency: &str) -> String {
    serde_json::json!({
        "source": source, "destination": destination, "amount": amount, "currency": currency
    })
    .to_string()
}

/// Creates an account and asserts 201.
pub async fn create_account(
    ep: &Endpoint,
    id: &str,
    currency: &str,
    overdraft_limit: Option<i64>,
) -> Value {
    let resp = ep
        .post(
            "/v1/accounts",
            Some(&key("acct")),
            &account_body(id, currency, overdraft_limit),
        )
        .await;
    assert_created(&resp)
}

/// Creates `customers` EUR accounts without an overdraft limit (`c0`, `c1`, ...) and a merchant
/// `shop`, so charges from customers to the merchant always succeed. Returns (customers, merchant).
pub async fn create_accounts_and_fund(ep: &Endpoint, customers: usize) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..customers).map(|i| format!("c{i}")).collect();
    for id in &ids {
        create_account(ep, id, "EUR", None).await;
    }
    create_account(ep, "shop", "EUR", Some(0)).await;
    (ids, "shop".to_owned())
}

/// Charges and asserts a fresh 201; returns the charge.
pub async fn charge_ok(
    ep: &Endpoint,
    source: &str,
    destination: &str,
    amount: i64,
    currency: &str,
) -> Value {
    let resp = ep
        .post(
            "/v1/charges",
            Some(&key("ch")),
            &charge_body(source, destination, amount, currency),
        )
        .await;
    assert_created(&resp)
}

/// GET /v1/accounts/{id}, asserting 200.
pub async fn account(ep: &Endpoint, id: &str) -> Value {
    let resp = ep.get(&format!("/v1/accounts/{id}")).await;
    assert_eq!(resp.status, 200, "GET account {id}: {resp}");
    resp.json()
}

/// The balance of an account (GET /v1/accounts/{id}).
pub async fn balance(ep: &Endpoint, id: &str) -> i64 {
    let acct = account(ep, id).await;
    acct["balance"]
        .as_i64()
        .unwrap_or_else(|| panic!("account {id} has no integer balance: {acct}"))
}

/// Pages through every event with `limit` per page (at most `PAGES_MAX` pages), asserting that
/// each page continues where the last ended. Returns all events in order.
pub async fn all_events(ep: &Endpoint, limit: u32) -> Vec<Value> {
    const PAGES_MAX: usize = 100_000;
    let mut events = Vec::new();
    let mut after = 0u64;
    for _ in 0..PAGES_MAX {
        let resp = ep
            .get(&format!("/v1/events?after={after}&limit={limit}"))
            .await;
        assert_eq!(resp.status, 200, "GET events after {after}: {resp}");
        let page = resp.json();
        let batch = page["events"]
            .as_array()
            .unwrap_or_else(|| panic!("events page without an events array: {page}"))
            .clone();
        assert!(
            batch.len() <= limit as usize,
            "a page holds at most limit={limit} events, got {}",
            batch.len()
        );
        let next_after = page["next_after"]
            .as_u64()
            .unwrap_or_else(|| panic!("events page without next_after: {page}"));
        if batch.is_empty() {
            assert_eq!(
                next_after, after,
                "an empty page's next_after is the `after` asked for: {page}"
            );
            return events;
        }
        let last_seq = batch.last().and_then(|e| e["seq"].as_u64());
        assert_eq!(
            Some(next_after),
            last_seq,
            "next_after is the seq of the last event returned: {page}"
        );
        after = next_after;
        events.extend(batch);
    }
    panic!("more than {PAGES_MAX} pages of events");
}

/// Asserts that events carry seq 1, 2, 3, ... with no gap and no repeat.
#[track_caller]
pub fn assert_dense(events: &[Value]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event["seq"].as_u64(),
            Some(i as u64 + 1),
            "event sequence numbers must be dense from 1; event #{i} is {event}"
        );
    }
}

/// Reads one sample of a Prometheus text exposition: the sum of the values of every series of
/// `name` whose labels include all of `labels` (0 when there is none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value_text) = if let Some(inner) = rest.strip_prefix('{') {
            match inner.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // a longer metric name with this prefix
        };
        if !labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        if let Some(value) = value_text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            sum += value;
        }
    }
    sum
}

/// GET /metrics as text, asserting 200.
pub async fn metrics(ep: &Endpoint) -> String {
    let resp = ep.get("/metrics").await;
    assert_eq!(resp.status, 200, "GET /metrics: {resp}");
    resp.text()
}

/// True when `s` is an RFC 3339 timestamp in UTC (`Z` or `+00:00`).
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let date_time_ok = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !date_time_ok {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    matches!(rest, "Z" | "z" | "+00:00")
}

/// Makes a token of `tenant` with `role` through the admin endpoints (the tenant too, unless it
/// is `default` or exists) and returns it; `admin` sends an admin token.
pub async fn make_token(admin: &Endpoint, tenant: &str, role: &str) -> String {
    if tenant != "default" {
        let body = serde_json::json!({ "name": tenant }).to_string();
        let made = admin.post("/v1/tenants", Some(&key("tenant")), &body).await;
        assert!(
            made.status == 201 || made.problem_type() == "/problems/tenant-exists",
            "{made}"
        );
    }
    let body = serde_json::json!({ "tenant": tenant, "role": role }).to_string();
    let made = admin.post("/v1/tokens", Some(&key("token")), &body).await;
    assert_eq!(made.status, 201, "{made}");
    made.json()["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {made}"))
        .to_owned()
}
