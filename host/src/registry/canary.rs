//! The rule that ends a canary, as Flagger and KServe users expect: the new
//! version is rolled back as soon as it is clearly worse than the one it is
//! tried against, and promoted when its window ends without that.
//!
//! "Clearly worse": at least [`MIN_REQUESTS`] requests reached the canary
//! and its error rate (5xx answers, timeouts included) is above the
//! baseline's by more than [`MARGIN`]. Fewer requests are no evidence
//! either way, so a canary that saw too few is promoted at the end of its
//! window (the reason says how many it saw).

/// Requests the canary must have answered before the rule can call it worse.
pub const MIN_REQUESTS: u64 = 20;
/// How far above the baseline's error rate the canary's may go (5 points).
pub const MARGIN: f64 = 0.05;

/// Requests and server errors counted over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests answered.
    pub requests: u64,
    /// Of those, 5xx answers (timeouts are 504).
    pub errors: u64,
}

impl Tally {
    /// What was counted since `start`.
    pub fn since(self, start: Tally) -> Tally {
        Tally {
            requests: self.requests.saturating_sub(start.requests),
            errors: self.errors.saturating_sub(start.errors),
        }
    }

    fn rate(self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }
}

/// What to do with a running canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Keep it running.
    Wait,
    /// Make it `live`, with the reason.
    Promote(String),
    /// Send traffic back to the baseline, with the reason.
    RollBack(String),
}

/// Judges a canary from what both versions answered during its window so
/// far; `ended` once the window is over.
pub fn judge(canary: Tally, baseline: Tally, ended: bool) -> Verdict {
    let (c, b) = (canary.rate(), baseline.rate());
    let seen = format!(
        "canary {}/{} errors ({:.1}%), baseline {}/{} ({:.1}%)",
        canary.errors,
        canary.requests,
        c * 100.0,
        baseline.errors,
        baseline.requests,
        b * 100.0
    );
    if canary.requests >= MIN_REQUESTS && c > b + MARGIN {
        return Verdict::RollBack(format!("error rate more than 5 points above the baseline's: {seen}"));
    }
    if !ended {
        return Verdict::Wait;
    }
    if canary.requests < MIN_REQUESTS {
        return Verdict::Promote(format!("window ended with fewer than {MIN_REQUESTS} requests to judge: {seen}"));
    }
    Verdict::Promote(format!("healthy over its window: {seen}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(requests: u64, errors: u64) -> Tally {
        Tally { requests, errors }
    }

    #[test]
    fn a_clearly_worse_canary_is_rolled_back_before_its_window_ends() {
        assert!(matches!(judge(t(20, 20), t(180, 0), false), Verdict::RollBack(_)));
        assert!(matches!(judge(t(40, 3), t(400, 0), false), Verdict::RollBack(_)), "7.5% against 0%");
    }

    #[test]
    fn too_few_requests_or_a_small_difference_is_not_evidence() {
        assert_eq!(judge(t(19, 19), t(100, 0), false), Verdict::Wait);
        assert_eq!(judge(t(100, 9), t(100, 5), false), Verdict::Wait, "9% against 5%");
        assert!(matches!(judge(t(19, 19), t(100, 0), true), Verdict::Promote(r) if r.contains("fewer than 20")));
    }

    #[test]
    fn a_healthy_canary_is_promoted_when_its_window_ends() {
        assert!(matches!(judge(t(50, 1), t(450, 4), true), Verdict::Promote(r) if r.contains("healthy")));
        assert_eq!(t(10, 2).since(t(4, 1)), t(6, 1));
    }
}
