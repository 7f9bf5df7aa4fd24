//! Issue 21's process-level durability guarantees, through the real binary: a journal that is not
//! the store's own refuses the start (and says why), a stop on failing storage is not reported as
//! a clean one, and the files whose names must survive a power cut have their directory synced.

use std::process::Command;
use std::time::Duration;

use crate::harness::{BIN, Server, balance, charge_ok, create_account, run_bounded};

const START_DEADLINE: Duration = Duration::from_secs(60);

/// Opens a server's books: `bank` (no overdraft limit) and `shop`, then charges 1..=n.
async fn books_with_charges(server: &Server, n: i64) {
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    for amount in 1..=n {
        charge_ok(&ep, "bank", "shop", amount, "EUR").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_journal_is_gone_refuses_to_start_and_says_why() {
    // Guards the journal's identity: after a SIGKILL the acknowledged charges since the last
    // checkpoint are only in the journal. Without it the node must not start (a new journal
    // would silently lose them); with it put back, every charge is there.
    let mut server = Server::start().await;
    books_with_charges(&server, 10).await;
    server.kill_hard().await;
    let journal = server.data_dir().join("onceledger.journal");
    let aside = server.data_dir().with_file_name("journal-aside");
    std::fs::rename(&journal, &aside).expect("move the journal away");

    let refused = run_bounded(
        Command::new(BIN)
            .env_remove("ONCELEDGER_LISTEN")
            .env_remove("ONCELEDGER_DATA_DIR")
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(server.data_dir()),
        START_DEADLINE,
    )
    .await;
    assert_ne!(refused.status.code(), Some(0), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("the journal is missing") && refused.stderr.contains("RUNBOOK"),
        "the refusal names the cause and the runbook entry:\n{}",
        refused.stderr
    );
    assert!(
        !journal.exists(),
        "the refused start made no new journal, so the next start refuses too"
    );

    std::fs::rename(&aside, &journal).expect("put the journal back");
    server.restart().await;
    assert_eq!(balance(&server.endpoint(), "shop").await, 55);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_whose_final_checkpoint_fails_exits_non_zero_and_loses_nothing() {
    // Guards the unclean stop: SIGTERM on failing storage (here the final checkpoint fails, as
    // when the disk goes away) must not look like a clean stop to a supervisor, and the journal
    // still holds everything acknowledged.
    let mut server = Server::start().await;
    books_with_charges(&server, 5).await;
    server.set_env(&[("ONCELEDGER_FAULT_FINAL_CHECKPOINT_FAILS", "1")]);
    server.restart().await;
    let ep = server.endpoint();
    for amount in 6..=8 {
        charge_ok(&ep, "bank", "shop", amount, "EUR").await;
    }
    let status = server.terminate_with_status().await;
    assert_eq!(
        status.code(),
        Some(1),
        "a failed final checkpoint is an unclean stop; log:\n{}",
        server.log_tail()
    );
    assert!(
        server
            .log_lines()
            .iter()
            .any(|line| line.contains("final checkpoint failed")),
        "the log says why; log:\n{}",
        server.log_tail()
    );
    server.set_env(&[]);
    server.restart().await;
    assert_eq!(balance(&server.endpoint(), "shop").await, 36);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_renamed_files_have_their_directory_synced() {
    // Guards the directory syncs: a file's name is on disk only once its directory is synced.
    // `serve` on a fresh directory creates the journal and renames the admin token into place;
    // strace shows an fsync of the data directory after each.
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is needed (.ci/run installs it: apt-get install strace)");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let trace = dir.path().join("trace");
    let mut child = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e"])
        .arg("trace=openat,rename,renameat,renameat2,fsync,fdatasync")
        .arg("-o")
        .arg(&trace)
        .args([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env_remove("ONCELEDGER_LISTEN")
        .env_remove("ONCELEDGER_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strace starts");
    // `serve` prints `listening on` after it wrote the admin token.
    let stdout = child.stdout.take().expect("piped");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("listening on") {
                let _ = ready_tx.send(());
            }
        }
    });
    let ready = ready_rx.recv_timeout(START_DEADLINE);
    // Stop the traced server itself (killing strace would leave it running, detached): its pid
    // opens the trace. strace exits when it does.
    let first_line = std::fs::read_to_string(&trace).unwrap_or_default();
    let server_pid = first_line
        .split_whitespace()
        .next()
        .filter(|pid| pid.parse::<u32>().is_ok())
        .map(str::to_owned);
    if let Some(pid) = &server_pid {
        let _ = run_bounded(Command::new("kill").args(["-TERM", pid]), START_DEADLINE).await;
    }
    if crate::harness::wait_exit(&mut child, START_DEADLINE)
        .await
        .is_none()
    {
        let _ = child.kill();
        let _ = child.wait();
        if let Some(pid) = &server_pid {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        panic!("the traced server did not stop within {START_DEADLINE:?}");
    }
    ready.expect("the traced server started");

    let text = std::fs::read_to_string(&trace).expect("trace");
    let data = data_dir
        .canonicalize()
        .expect("data dir")
        .display()
        .to_string();
    // The next traced call of the thread that made the call `needle` finds (after it opened the
    // directory) is an fsync of the data directory.
    let dir_synced_after = |needle: &dyn Fn(&str) -> bool| {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|line| needle(line))
            .unwrap_or_else(|| panic!("no such call in the trace:\n{text}"));
        let thread = lines[at].split_whitespace().next().unwrap_or_default();
        lines[at + 1..]
            .iter()
            .filter(|line| line.split_whitespace().next() == Some(thread))
            // Opening the directory to sync it is part of syncing it.
            .find(|line| !line.contains(&format!("\"{}\"", data_dir.display())))
            .is_some_and(|next| next.contains("fsync(") && next.contains(&format!("<{data}>)")))
    };
    assert!(
        dir_synced_after(&|line| line.contains("onceledger.journal\"")
            && line.contains("O_CREAT")
            && line.contains("openat(")),
        "the journal's creation is followed by a sync of {data}:\n{text}"
    );
    assert!(
        dir_synced_after(&|line| line.contains("rename") && line.contains("admin.token\"")),
        "the admin token's rename is followed by a sync of {data}:\n{text}"
    );
}
