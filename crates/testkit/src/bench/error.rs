//! Why a bench run could not be carried out (a run whose money check failed is a report with
//! failures and exit status 3, not an error).

use std::fmt;

pub use super::prom::MetricsError;

#[derive(Debug)]
#[non_exhaustive]
pub enum BenchError {
    /// `--retry-share` and `--duplicate-share` together exceed 1.
    Shares {
        retry_share: f64,
        duplicate_share: f64,
    },
    /// The lifecycle workload cannot run with these flags (its amount, or a share it ignores).
    Lifecycle(String),
    /// The tokio runtime could not be built.
    Runtime(std::io::Error),
    /// The URL, the token or the TLS setup is unusable, or no server answers at the URL.
    Target(String),
    /// Connections to the server could not be opened.
    Connect(String),
    /// Creating the run's accounts or reading them back failed.
    Accounts(String),
    /// `GET /metrics` failed.
    Scrape(String),
    /// A worker task panicked or was cancelled.
    Worker(tokio::task::JoinError),
    Histogram(hdrhistogram::CreationError),
    HistogramMerge(hdrhistogram::AdditionError),
    /// The server's counters do not give the run's numbers.
    Metrics(MetricsError),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Shares {
                retry_share,
                duplicate_share,
            } => write!(
                f,
                "--retry-share {retry_share} plus --duplicate-share {duplicate_share} exceed 1"
            ),
            BenchError::Runtime(error) => write!(f, "cannot start the runtime: {error}"),
            BenchError::Target(message)
            | BenchError::Connect(message)
            | BenchError::Accounts(message)
            | BenchError::Scrape(message)
            | BenchError::Lifecycle(message) => f.write_str(message),
            BenchError::Worker(error) => write!(f, "a worker failed: {error}"),
            BenchError::Histogram(error) => write!(f, "cannot make a latency histogram: {error}"),
            BenchError::HistogramMerge(error) => {
                write!(f, "cannot merge latency histograms: {error:?}")
            }
            BenchError::Metrics(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Runtime(error) => Some(error),
            BenchError::Worker(error) => Some(error),
            BenchError::Histogram(error) => Some(error),
            BenchError::HistogramMerge(error) => Some(error),
            BenchError::Metrics(error) => Some(error),
            _ => None,
        }
    }
}

impl From<MetricsError> for BenchError {
    fn from(error: MetricsError) -> Self {
        BenchError::Metrics(error)
    }
}
