//! Signal intake. The agent blocks the signals it handles in every thread and reads them
//! from a signalfd in its main loop, so no handler ever runs at an arbitrary point and a
//! signal that arrives before the child exists stays pending until the loop asks for it.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Signals passed on to the child's process group, as tini and dumb-init do.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

pub struct SignalInbox {
    fd: SignalFd,
}

impl SignalInbox {
    /// Blocks the forwarded signals and SIGCHLD in the calling thread, and so in every thread
    /// it starts later. Call before any thread exists: a thread that does not block them
    /// could take a SIGTERM with the default action and kill the agent unreported.
    pub fn install() -> nix::Result<SignalInbox> {
        let mut mask = SigSet::empty();
        for signal in FORWARDED {
            mask.add(signal);
        }
        mask.add(Signal::SIGCHLD);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(SignalInbox { fd })
    }

    /// Waits up to `timeout` (forever if `None`) for signals; returns those that arrived,
    /// possibly none.
    pub fn wait(&mut self, timeout: Option<Duration>) -> nix::Result<Vec<Signal>> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so a wait never returns just before its deadline and spins.
            Some(t) => PollTimeout::try_from(t.as_millis().saturating_add(1).min(i32::MAX as u128))
                .unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        self.pending()
    }

    /// The signals that have arrived, without waiting.
    pub fn pending(&mut self) -> nix::Result<Vec<Signal>> {
        let mut signals = Vec::new();
        while let Some(info) = self.fd.read_signal()? {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                signals.push(signal);
            }
        }
        Ok(signals)
    }
}

/// `SIGKILL` for 9; `SIG42` for numbers without a name.
pub fn name(number: i32) -> String {
    Signal::try_from(number)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("SIG{number}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_unknown_signals() {
        assert_eq!(name(9), "SIGKILL");
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(45), "SIG45");
    }
}
