//! The proxy's errors: fault rates that do not make a plan, and a proxy that cannot start.

use std::fmt;

/// Fault rates that [`FaultRates::validate`](super::FaultRates::validate) refuses.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum RatesError {
    /// One rate is outside `[0, 1]` (or not a number).
    OutOfRange { name: &'static str, rate: f64 },
    /// The rates together exceed 1: more than every request would get a fault.
    SumOverOne { sum: f64 },
}

impl fmt::Display for RatesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RatesError::OutOfRange { name, rate } => {
                write!(f, "fault rate {name} = {rate} is not a share from 0 to 1")
            }
            RatesError::SumOverOne { sum } => write!(f, "fault rates add up to {sum}, more than 1"),
        }
    }
}

impl std::error::Error for RatesError {}

/// Why [`Proxy::start`](super::Proxy::start) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    Rates(RatesError),
    /// Binding 127.0.0.1 on a free port failed.
    Listen(std::io::Error),
    /// The bound listener could not name its address.
    LocalAddr(std::io::Error),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Rates(error) => error.fmt(f),
            ProxyError::Listen(error) => write!(f, "proxy cannot listen on 127.0.0.1: {error}"),
            ProxyError::LocalAddr(error) => write!(f, "proxy has no local address: {error}"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Rates(error) => Some(error),
            ProxyError::Listen(error) | ProxyError::LocalAddr(error) => Some(error),
        }
    }
}

impl From<RatesError> for ProxyError {
    fn from(error: RatesError) -> Self {
        ProxyError::Rates(error)
    }
}
