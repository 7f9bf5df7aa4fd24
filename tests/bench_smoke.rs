//! Smoke test of `onceledger bench`: the real binary serves on a free loopback port, the real
//! binary benches it as a child process, and the JSON report must show money moved exactly once
//! per logical charge for each workload. No timing assertions: only counts.
//!
//! Every wait is bounded by a named deadline; on failure the message carries the children's
//! output.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_onceledger");
/// How long the server may take to print `listening on`.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long one bench run may take (setup, measured phase, resolution, read-back), debug build.
const BENCH_DEADLINE: Duration = Duration::from_secs(240);
/// How long the server may take to exit after SIGTERM, and `onceledger check` to run.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);
/// Poll interval while waiting for a child to exit (a bounded wait, not a synchronisation point).
const POLL: Duration = Duration::from_millis(20);
/// Server log kept for failure messages.
const LOG_BYTES_MAX: usize = 64 * 1024;

/// Waits for `child` to exit within `deadline`; kills it and returns `None` if it does not.
fn wait_bounded(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(POLL),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Reads a child's pipe to the end on a thread, so the child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut log) = log.lock()
                        && log.len() < LOG_BYTES_MAX
                    {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = found.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match listening.recv_timeout(STARTUP_DEADLINE) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no `listening on` line within {STARTUP_DEADLINE:?}; server log:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        Server {
            child,
            url: format!("http://{addr}"),
            log,
            dir,
        }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGTERM, a bounded wait for exit 0, then `onceledger check` on the store.
    fn stop_and_check(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "cannot send SIGTERM");
        let status = wait_bounded(&mut self.child, EXIT_DEADLINE);
        assert!(
            status.is_some_and(|s| s.success()),
            "server did not exit 0 after SIGTERM ({status:?}); log:\n{}",
            self.log()
        );
        check_store(self.dir.path());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn check_store(data_dir: &Path) {
    let mut child = Command::new(BIN)
        .arg("check")
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("check starts");
    let (out, err) = (
        drain(child.stdout.take().expect("stdout")),
        drain(child.stderr.take().expect("stderr")),
    );
    let status = wait_bounded(&mut child, EXIT_DEADLINE);
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "onceledger check failed ({status:?}):\n{out}\n{err}"
    );
}

/// Runs `onceledger bench --json` against `server` and returns its report.
fn bench(server: &Server, extra: &[&str]) -> Value {
    let mut child = Command::new(BIN)
        .args(["bench", "--json", "--seed", "1", "--url", &server.url])
        .arg("--token-file")
        .arg(server.dir.path().join("admin.token"))
        .env_remove("ONCELEDGER_TOKEN")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bench starts");
    let (out, err) = (
        drain(child.stdout.take().expect("stdout")),
        drain(child.stderr.take().expect("stderr")),
    );
    let status = wait_bounded(&mut child, BENCH_DEADLINE);
    let lifecycle = extra.contains(&"lifecycle");
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let context = || {
        format!(
            "bench {extra:?}\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
            server.log()
        )
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "bench exited with {status:?}\n{}",
        context()
    );
    let line = out.lines().rev().find(|l| !l.trim().is_empty());
    let report: Value = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report\n{}", context()));
    if lifecycle {
        assert_lifecycle_balanced(&report, &context());
    } else {
        assert_effects_equal_operations(&report, &context());
    }
    report
}

/// A lifecycle run's check: every captured payment moved its amount once, refunds moved back
/// exactly what succeeded, no hold is left.
fn assert_lifecycle_balanced(report: &Value, context: &str) {
    let check = &report["check"];
    assert_eq!(check["ok"], true, "check failed: {check}\n{context}");
    let captured = number(report, &["check", "logical_charges"]);
    assert!(captured > 0, "no payment was captured\n{context}");
    let amount = number(report, &["amount"]);
    assert_eq!(
        number(report, &["check", "debits"]),
        captured * amount,
        "{context}"
    );
    assert_eq!(
        number(report, &["check", "credits"]),
        captured * amount,
        "{context}"
    );
    assert_eq!(
        number(report, &["check", "wrong_way"]),
        number(report, &["check", "refunded_expected"]),
        "{context}"
    );
    assert_eq!(number(report, &["check", "pending"]), 0, "{context}");
    assert_eq!(number(report, &["check", "unresolved"]), 0, "{context}");
    assert_eq!(number(report, &["check", "anomalies"]), 0, "{context}");
}

fn number(report: &Value, path: &[&str]) -> u64 {
    let mut value = report;
    for part in path {
        value = &value[part];
    }
    value
        .as_u64()
        .unwrap_or_else(|| panic!("report has no integer at {path:?}: {report}"))
}

fn assert_effects_equal_operations(report: &Value, context: &str) {
    let check = &report["check"];
    assert_eq!(check["ok"], true, "check failed: {check}\n{context}");
    let logical = number(report, &["check", "logical_charges"]);
    let amount = number(report, &["amount"]);
    assert!(logical > 0, "no charge succeeded\n{context}");
    assert_eq!(
        number(report, &["check", "debits"]),
        logical * amount,
        "{context}"
    );
    assert_eq!(
        number(report, &["check", "credits"]),
        logical * amount,
        "{context}"
    );
    assert_eq!(
        number(report, &["check", "charges_applied_delta"]),
        logical,
        "{context}"
    );
    assert_eq!(number(report, &["check", "wrong_way"]), 0, "{context}");
    assert_eq!(number(report, &["check", "unresolved"]), 0, "{context}");
    assert_eq!(number(report, &["check", "anomalies"]), 0, "{context}");
}

/// Every request slot of a --count run was answered or counted as a transport error, and a
/// duplicate pair used two of them.
fn assert_count_spent(report: &Value, count: u64) {
    let sent = number(report, &["requests"]) + number(report, &["transport_errors"]);
    assert_eq!(sent, count, "{report}");
    let slots = number(report, &["picked", "new"])
        + number(report, &["picked", "retry"])
        + 2 * number(report, &["picked", "duplicate"]);
    assert_eq!(slots, count, "{report}");
}

#[test]
fn bench_moves_money_exactly_once_per_logical_charge() {
    let server = Server::start();
    let small = ["--customers", "200", "--merchants", "20"];

    let uniform = bench(
        &server,
        &[
            &[
                "--connections",
                "8",
                "--count",
                "2000",
                "--workload",
                "uniform",
            ][..],
            &["--retry-share", "0.1", "--duplicate-share", "0.05"],
            &small,
        ]
        .concat(),
    );
    assert_count_spent(&uniform, 2000);
    assert!(number(&uniform, &["picked", "retry"]) > 0, "{uniform}");
    assert!(number(&uniform, &["picked", "duplicate"]) > 0, "{uniform}");
    assert!(
        number(&uniform, &["replayed"]) > 0,
        "retries are replays: {uniform}"
    );

    let hot = bench(
        &server,
        &[
            &["--connections", "8", "--count", "500", "--workload", "hot"][..],
            &["--duplicate-share", "0.05"],
            &small,
        ]
        .concat(),
    );
    assert_count_spent(&hot, 500);
    assert_eq!(number(&hot, &["merchants"]), 1, "hot uses one merchant");

    let replay = bench(
        &server,
        &[
            &[
                "--connections",
                "4",
                "--count",
                "500",
                "--workload",
                "replay",
            ][..],
            &small,
        ]
        .concat(),
    );
    assert_count_spent(&replay, 500);
    assert!(
        number(&replay, &["picked", "retry"]) >= 100,
        "about half are retries: {replay}"
    );

    // Authorize then capture, a partial refund on one in ten, a void on one in twenty.
    let lifecycle = bench(
        &server,
        &[
            &[
                "--connections",
                "4",
                "--count",
                "600",
                "--workload",
                "lifecycle",
            ][..],
            &small,
        ]
        .concat(),
    );
    let operations = &lifecycle["lifecycle"];
    assert!(
        number(&lifecycle, &["check", "refunded_expected"]) > 0,
        "some payments were refunded: {operations}"
    );

    server.stop_and_check();
}
