//! The transcript: one JSON line per attempt, for people and tests to see what the client did.
//!
//! Lines are written and flushed as each attempt ends, so a transcript of a killed process
//! stops at its last finished attempt instead of losing a buffer.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::classify::RetryCause;

/// What the client did after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The answer is final (2xx or a 4xx a retry would repeat); returned to the caller.
    Done,
    /// Another attempt follows after `delay_ms`.
    Retry,
    /// Retryable, but this was the last attempt allowed.
    GiveUpAttempts,
    /// Retryable, but the retry budget is empty: failing fast.
    GiveUpBudget,
    /// Retryable, but the server asked to wait longer than the client's `retry_after_max`.
    GiveUpRetryAfter,
}

/// One line of the transcript.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord<'a> {
    /// `account` or `charge`.
    pub operation: &'a str,
    /// The idempotency key: the same on every attempt of one logical operation.
    pub key: &'a str,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The HTTP status, when an answer arrived.
    pub status: Option<u16>,
    /// The transport failure, when none did.
    pub error: Option<&'a str>,
    /// Why the outcome was retryable.
    pub cause: Option<RetryCause>,
    /// The server's `Retry-After`, when it sent one the client could read.
    pub retry_after_ms: Option<f64>,
    pub decision: Decision,
    /// The wait chosen before the next attempt (only with `retry`).
    pub delay_ms: Option<f64>,
    /// Tokens left in the retry budget after this decision.
    pub budget_tokens: u32,
    /// The answer carried `Idempotent-Replayed: true`.
    pub replayed: bool,
}

/// A shared sink for transcript lines; clones write to the same place.
#[derive(Clone)]
pub struct Transcript {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    /// A write failure is reported once, then the transcript falls silent.
    failed: Arc<AtomicBool>,
}

impl Transcript {
    /// Writes lines to `writer`.
    pub fn new(writer: impl Write + Send + 'static) -> Transcript {
        Transcript {
            out: Arc::new(Mutex::new(Box::new(writer))),
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> io::Result<Transcript> {
        Ok(Transcript::new(File::create(path)?))
    }

    pub fn record(&self, record: &AttemptRecord<'_>) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(error) => return self.fail(&error),
        };
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = out.write_all(&line).and_then(|()| out.flush()) {
            self.fail(&error);
        }
    }

    fn fail(&self, error: &dyn std::fmt::Display) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "cannot write the transcript; no further lines");
        }
    }
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transcript")
    }
}
