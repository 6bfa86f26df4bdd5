//! The stop ladder: once the task must stop (deadline, memory, pod deletion) its process
//! group gets SIGTERM, then SIGKILL when the grace period runs out. The first reason to
//! stop is the one reported; later ones only add signals already on their way.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// `--timeout` ran out.
    TimedOut { timeout: Duration },
    /// The task used more memory than allowed; `limit` was crossed by `used`.
    MemoryExceeded {
        used: u64,
        limit: u64,
        what: MemoryMeasure,
    },
    /// The agent itself was told to stop (SIGTERM: pod deletion, eviction).
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMeasure {
    /// Summed RSS of the child's process tree, against the soft limit.
    ProcessTree,
    /// The container cgroup's working set, against the container limit less headroom.
    Cgroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SendTerm,
    SendKill,
}

#[derive(Debug, Default)]
pub struct Ladder {
    reason: Option<StopReason>,
    kill_at: Option<Instant>,
    killed: bool,
}

impl Ladder {
    /// Starts the ladder for `reason`. The first call returns `SendTerm`; later calls only
    /// move the SIGKILL earlier if their grace is shorter.
    pub fn begin(&mut self, reason: StopReason, grace: Duration, now: Instant) -> Option<Action> {
        let kill_at = now + grace;
        if self.reason.is_some() {
            if !self.killed && self.kill_at.is_none_or(|at| kill_at < at) {
                self.kill_at = Some(kill_at);
            }
            return None;
        }
        self.reason = Some(reason);
        self.kill_at = Some(kill_at);
        Some(Action::SendTerm)
    }

    /// The action due at `now`, if any.
    pub fn due(&mut self, now: Instant) -> Option<Action> {
        match self.kill_at {
            Some(at) if !self.killed && now >= at => {
                self.killed = true;
                self.kill_at = None;
                Some(Action::SendKill)
            }
            _ => None,
        }
    }

    /// When [`Ladder::due`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.kill_at
    }

    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.as_ref()
    }

    pub fn is_idle(&self) -> bool {
        self.reason.is_none()
    }

    /// Whether the ladder itself sent SIGKILL (so a SIGKILL death is ours, not the kernel's).
    pub fn sent_kill(&self) -> bool {
        self.killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    #[test]
    fn term_first_then_kill_after_grace() {
        let t0 = Instant::now();
        let mut ladder = Ladder::default();
        assert!(ladder.is_idle());
        assert_eq!(
            ladder.begin(StopReason::Terminated, GRACE, t0),
            Some(Action::SendTerm)
        );
        assert_eq!(ladder.due(t0 + Duration::from_secs(29)), None);
        assert_eq!(ladder.next_deadline(), Some(t0 + GRACE));
        assert_eq!(ladder.due(t0 + GRACE), Some(Action::SendKill));
        assert!(ladder.sent_kill());
        assert_eq!(ladder.due(t0 + GRACE * 2), None);
        assert_eq!(ladder.next_deadline(), None);
    }

    #[test]
    fn the_first_reason_is_kept() {
        let t0 = Instant::now();
        let mut ladder = Ladder::default();
        let timeout = StopReason::TimedOut {
            timeout: Duration::from_secs(5),
        };
        ladder.begin(timeout.clone(), GRACE, t0);
        assert_eq!(ladder.begin(StopReason::Terminated, GRACE, t0), None);
        assert_eq!(ladder.reason(), Some(&timeout));
    }

    #[test]
    fn a_shorter_grace_brings_the_kill_forward() {
        let t0 = Instant::now();
        let mut ladder = Ladder::default();
        ladder.begin(StopReason::Terminated, GRACE, t0);
        let memory = StopReason::MemoryExceeded {
            used: 2,
            limit: 1,
            what: MemoryMeasure::ProcessTree,
        };
        ladder.begin(memory, Duration::from_secs(2), t0);
        assert_eq!(ladder.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(ladder.reason(), Some(&StopReason::Terminated));
    }
}
