//! Which fault a request gets: a pure choice from a seeded source, so a run's faults repeat
//! given its seed.

use serde::Serialize;

use onceledger_client::rng::Rng;

use super::RatesError;

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Forward the request, return the answer.
    Pass,
    /// Forward the request, read the server's whole answer, then close the client's connection
    /// without sending it: the server did the work, the client cannot know.
    LostResponse,
    /// Reset the client's connection (TCP RST) without forwarding: the server never sees it.
    Reset,
    /// Hold the request for the configured delay, then forward it and return the answer. The
    /// forward happens even if the client gave up meanwhile, as a packet already on its way does.
    Delay,
}

/// Shares of requests that get each fault; the rest pass. Each in `[0, 1]`, their sum at most 1.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct FaultRates {
    pub lost_response: f64,
    pub reset: f64,
    pub delay: f64,
}

impl FaultRates {
    pub fn validate(&self) -> Result<(), RatesError> {
        for (name, rate) in [
            ("lost_response", self.lost_response),
            ("reset", self.reset),
            ("delay", self.delay),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(RatesError::OutOfRange { name, rate });
            }
        }
        let sum = self.lost_response + self.reset + self.delay;
        if sum > 1.0 {
            return Err(RatesError::SumOverOne { sum });
        }
        Ok(())
    }

    /// The fault for a roll uniform in `[0, 1)`.
    pub fn choose(&self, roll: f64) -> Fault {
        let mut edge = self.lost_response;
        if roll < edge {
            return Fault::LostResponse;
        }
        edge += self.reset;
        if roll < edge {
            return Fault::Reset;
        }
        edge += self.delay;
        if roll < edge {
            return Fault::Delay;
        }
        Fault::Pass
    }
}

/// The sequence of faults of one proxy: the `i`-th request to arrive gets the `i`-th fault.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    rates: FaultRates,
    rng: Rng,
}

impl FaultPlan {
    pub fn new(rates: FaultRates, seed: u64) -> FaultPlan {
        FaultPlan {
            rates,
            rng: Rng::new(seed, 0),
        }
    }

    pub fn next_fault(&mut self) -> Fault {
        self.rates.choose(self.rng.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: FaultRates = FaultRates {
        lost_response: 0.2,
        reset: 0.1,
        delay: 0.05,
    };

    #[test]
    fn same_seed_same_faults_and_rates_roughly_kept() {
        let faults = |seed| {
            let mut plan = FaultPlan::new(RATES, seed);
            (0..20_000).map(|_| plan.next_fault()).collect::<Vec<_>>()
        };
        let a = faults(7);
        assert_eq!(a, faults(7));
        assert_ne!(a, faults(8));
        let share = |f| a.iter().filter(|x| **x == f).count() as f64 / a.len() as f64;
        assert!((share(Fault::LostResponse) - 0.2).abs() < 0.02);
        assert!((share(Fault::Reset) - 0.1).abs() < 0.02);
        assert!((share(Fault::Delay) - 0.05).abs() < 0.02);
        assert!((share(Fault::Pass) - 0.65).abs() < 0.02);
    }

    #[test]
    fn choose_edges_and_validation() {
        // The bands are [0, 0.2) lost, [0.2, 0.3) reset, [0.3, 0.35) delay, the rest pass (edges
        // up to float rounding: 0.2 + 0.1 is a hair above 0.3).
        assert_eq!(RATES.choose(0.0), Fault::LostResponse);
        assert_eq!(RATES.choose(0.199), Fault::LostResponse);
        assert_eq!(RATES.choose(0.2), Fault::Reset);
        assert_eq!(RATES.choose(0.299), Fault::Reset);
        assert_eq!(RATES.choose(0.301), Fault::Delay);
        assert_eq!(RATES.choose(0.351), Fault::Pass);
        assert_eq!(FaultRates::default().choose(0.0), Fault::Pass);
        assert!(RATES.validate().is_ok());
        let all_lost = FaultRates {
            lost_response: 1.0,
            ..FaultRates::default()
        };
        assert!(all_lost.validate().is_ok());
        assert_eq!(all_lost.choose(0.999_999), Fault::LostResponse);
        for bad in [
            FaultRates {
                reset: -0.1,
                ..RATES
            },
            FaultRates {
                delay: 1.5,
                ..RATES
            },
            FaultRates {
                lost_response: f64::NAN,
                ..RATES
            },
            FaultRates {
                lost_response: 0.6,
                reset: 0.5,
                delay: 0.0,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
