//! Running the child as PID 1 should: forward signals, reap every zombie, enforce the
//! deadline and the memory limit with a TERM→KILL ladder, clean up what the child leaves
//! behind, and forward its output meanwhile.

pub mod cgroup;
pub mod framing;
mod ladder;
pub mod output;
pub mod procfs;
pub mod signals;
mod spawn;
pub mod tail;

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub use cgroup::MemoryCgroup;
pub use ladder::{MemoryMeasure, StopReason};
pub use output::{LineSink, LogFormat, Stream};
pub use signals::SignalInbox;
pub use spawn::ChildSpec;

use crate::error::AgentError;
use crate::mask::Masker;
use ladder::{Action, Ladder};
use output::LineWriter;
use tail::TailBuffer;

/// How long what is left of the child's processes gets between SIGTERM and SIGKILL once the
/// main child has exited.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// The grace between SIGTERM and SIGKILL when the memory limit is crossed: memory keeps
/// growing while a task shuts down, so this is short whatever `--grace` says.
const MEMORY_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the output threads to drain after the processes are gone.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Provisional record updates happen at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub grace: Duration,
    /// Bound on the summed RSS of the child's process tree.
    pub soft_limit: Option<u64>,
    /// The container's memory cgroup and the working set at which the task is stopped.
    pub cgroup: Option<(MemoryCgroup, Option<u64>)>,
    pub poll_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct OutputPlan {
    pub format: LogFormat,
    pub identity_members: Arc<str>,
    pub masker: Arc<Masker>,
    pub tail_lines: usize,
    /// Where each line also goes, masked (telemetry's log records), if anywhere.
    pub sink: Option<Arc<dyn LineSink>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone)]
pub struct Supervised {
    pub exit: ChildExit,
    pub stop: Option<StopReason>,
    /// The kernel, not the agent, killed the child for memory.
    pub kernel_oom: bool,
    pub peak_memory_bytes: u64,
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    pub log_tail: Vec<String>,
}

/// Runs the child to its end. Every memory sample also feeds `meter`; `on_progress` hears
/// the peak memory and the meter while the child runs, at most once a second, so the
/// provisional record can carry them.
pub fn supervise(
    spec: &ChildSpec,
    limits: &Limits,
    output: &OutputPlan,
    inbox: &mut SignalInbox,
    meter: &mut crate::usage::Meter,
    mut on_progress: impl FnMut(u64, &crate::usage::Meter),
) -> Result<Supervised, AgentError> {
    become_subreaper();
    let started = spawn::spawn(spec)?;
    let child = Pid::from_raw(started.pid);
    tracing::info!(pid = started.pid, "command started");

    let tail = Arc::new(Mutex::new(TailBuffer::new(output.tail_lines)));
    let (drained_tx, drained_rx) = mpsc::channel();
    let forwarders = [
        start_forwarder(
            started.stdout,
            io::stdout(),
            Stream::Stdout,
            output,
            None,
            drained_tx.clone(),
        ),
        start_forwarder(
            started.stderr,
            io::stderr(),
            Stream::Stderr,
            output,
            Some(Arc::clone(&tail)),
            drained_tx,
        ),
    ];
    if let Some(Err(e)) = forwarders.into_iter().find(Result::is_err) {
        let _ = killpg(child, Signal::SIGKILL);
        return Err(AgentError::Internal(format!(
            "cannot start an output thread: {e}"
        )));
    }

    let mut watch = MemoryWatch::new(limits);
    let oom_kills_before = watch.oom_kills();
    let started_at = Instant::now();
    let deadline = limits.timeout.map(|t| started_at + t);
    let mut ladder = Ladder::default();
    // The first sample waits one interval: a command that is done by then costs no /proc
    // scan, and its peak still comes from getrusage.
    let mut next_sample = started_at + limits.poll_interval;
    let mut last_progress: Option<Instant> = None;
    let mut inbox_failed = false;

    let exit = loop {
        if let Reaped {
            main: Some(exit), ..
        } = reap(child)
        {
            break exit;
        }
        let now = Instant::now();
        if ladder.due(now) == Some(Action::SendKill) {
            tracing::warn!("grace period over, sending SIGKILL to the command's processes");
            signal_tree(child, Signal::SIGKILL);
        }
        if let Some(deadline) = deadline
            && now >= deadline
            && ladder.is_idle()
        {
            let timeout = limits.timeout.unwrap_or_default();
            tracing::warn!(timeout = %humantime::format_duration(timeout), grace = %humantime::format_duration(limits.grace), "timeout reached, sending SIGTERM");
            stop(
                &mut ladder,
                child,
                StopReason::TimedOut { timeout },
                limits.grace,
                now,
            );
        }
        if now >= next_sample {
            next_sample = now + limits.poll_interval;
            let processes = procfs::my_descendants();
            let resident = processes.iter().map(|p| p.rss_pages).sum::<u64>() * watch.page_size;
            meter.sample(&processes, resident, now);
            if let Some(reason) = watch.sample(resident) {
                if ladder.is_idle()
                    && let StopReason::MemoryExceeded { used, limit, what } = &reason
                {
                    tracing::warn!(used = %crate::units::format_bytes(*used), limit = %crate::units::format_bytes(*limit), measure = ?what, "memory limit crossed, sending SIGTERM");
                }
                stop(
                    &mut ladder,
                    child,
                    reason,
                    limits.grace.min(MEMORY_GRACE),
                    now,
                );
            }
            if last_progress.is_none_or(|at| now.duration_since(at) >= PROGRESS_EVERY) {
                last_progress = Some(now);
                on_progress(watch.peak, meter);
            }
        }

        let mut wake = next_sample;
        if let Some(deadline) = deadline.filter(|_| ladder.is_idle()) {
            wake = wake.min(deadline);
        }
        if let Some(kill_at) = ladder.next_deadline() {
            wake = wake.min(kill_at);
        }
        let signals = match inbox.wait(Some(wake.saturating_duration_since(Instant::now()))) {
            Ok(signals) => signals,
            Err(e) => {
                if !inbox_failed {
                    tracing::warn!(error = %e, "cannot read signals; polling instead");
                    inbox_failed = true;
                }
                thread::sleep(limits.poll_interval);
                Vec::new()
            }
        };
        for signal in signals {
            match signal {
                Signal::SIGCHLD => {}
                Signal::SIGTERM => {
                    tracing::warn!(grace = %humantime::format_duration(limits.grace), "received SIGTERM, stopping the command");
                    if !ladder.is_idle() {
                        let _ = killpg(child, Signal::SIGTERM);
                    }
                    stop(
                        &mut ladder,
                        child,
                        StopReason::Terminated,
                        limits.grace,
                        Instant::now(),
                    );
                }
                other => {
                    tracing::info!(signal = other.as_str(), "forwarding signal");
                    let _ = killpg(child, other);
                }
            }
        }
    };

    let exit_detail = match exit {
        ChildExit::Code(code) => format!("exit code {code}"),
        ChildExit::Signal(number) => format!("signal {}", signals::name(number)),
    };
    tracing::info!(exit = %exit_detail, "command exited");
    clean_up_leftovers(child, inbox);
    meter.ended(Instant::now());
    for _ in 0..2 {
        if drained_rx.recv_timeout(DRAIN_WAIT).is_err() {
            tracing::warn!(
                "output is still held open by a process outside the task; not waiting for it"
            );
            break;
        }
    }

    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).ok();
    let millis =
        |tv: nix::sys::time::TimeVal| (tv.tv_sec() as u64) * 1000 + (tv.tv_usec() as u64) / 1000;
    let largest_process = usage
        .as_ref()
        .map_or(0, |u| u.max_rss().max(0) as u64 * 1024);
    let oom_kills_after = watch.oom_kills();
    let kernel_oom = exit == ChildExit::Signal(libc::SIGKILL)
        && !ladder.sent_kill()
        && (oom_kills_after > oom_kills_before || watch.near_limit());
    let log_tail = tail.lock().map(|t| t.lines()).unwrap_or_default();
    Ok(Supervised {
        exit,
        stop: ladder.reason().cloned(),
        kernel_oom,
        peak_memory_bytes: watch.peak.max(largest_process),
        cpu_user_ms: usage.as_ref().map_or(0, |u| millis(u.user_time())),
        cpu_system_ms: usage.as_ref().map_or(0, |u| millis(u.system_time())),
        log_tail,
    })
}

/// PID 1 inherits every orphan anyway; anywhere else (a developer machine, a container with
/// a shell as PID 1), registering as child subreaper makes orphaned grandchildren the
/// agent's to reap and to clean up.
fn become_subreaper() {
    if std::process::id() != 1
        && let Err(e) = nix::sys::prctl::set_child_subreaper(true)
    {
        tracing::warn!(error = %e, "cannot become child subreaper; orphaned grandchildren will not be reaped by task-agent");
    }
}

fn stop(ladder: &mut Ladder, child: Pid, reason: StopReason, grace: Duration, now: Instant) {
    if ladder.begin(reason, grace, now) == Some(Action::SendTerm) {
        signal_tree(child, Signal::SIGTERM);
    }
}

/// Signals the child's process group and every other process below the agent (a child
/// may have moved some into groups of their own), each process once.
fn signal_tree(group: Pid, signal: Signal) {
    let _ = killpg(group, signal);
    for process in procfs::my_descendants() {
        if process.pgrp != group.as_raw() {
            let _ = kill(Pid::from_raw(process.pid), signal);
        }
    }
}

struct Reaped {
    /// The main child's exit, if it was among those reaped.
    main: Option<ChildExit>,
    /// Whether the agent still has children. As PID 1 or child subreaper, every process
    /// below the agent is reparented to it when its parent dies, so none left means the whole
    /// tree is gone.
    children_left: bool,
}

/// Reaps every exited child of the agent.
fn reap(child: Pid) -> Reaped {
    let mut main = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => main = Some(ChildExit::Code(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                main = Some(ChildExit::Signal(signal as i32))
            }
            Ok(WaitStatus::StillAlive) => {
                return Reaped {
                    main,
                    children_left: true,
                };
            }
            Err(Errno::ECHILD) => {
                return Reaped {
                    main,
                    children_left: false,
                };
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => {
                return Reaped {
                    main,
                    children_left: true,
                };
            }
        }
    }
}

/// Once the main child has exited: SIGTERM what is left of its processes, SIGKILL them after
/// a short grace, and reap them all.
fn clean_up_leftovers(group: Pid, inbox: &mut SignalInbox) {
    if !reap(group).children_left {
        return;
    }
    tracing::info!("the command left processes behind; stopping them");
    signal_tree(group, Signal::SIGTERM);
    let mut deadline = Instant::now() + LEFTOVER_GRACE;
    let mut killed = false;
    loop {
        if !reap(group).children_left {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            if killed {
                tracing::warn!("processes survived SIGKILL; leaving them");
                return;
            }
            signal_tree(group, Signal::SIGKILL);
            killed = true;
            deadline = now + LEFTOVER_GRACE;
        }
        let _ = inbox.wait(Some(Duration::from_millis(50)));
    }
}

fn start_forwarder<R, W>(
    input: R,
    out: W,
    stream: Stream,
    plan: &OutputPlan,
    tail: Option<Arc<Mutex<TailBuffer>>>,
    drained: mpsc::Sender<()>,
) -> io::Result<thread::JoinHandle<()>>
where
    R: io::Read + Send + 'static,
    W: io::Write + Send + 'static,
{
    let mut writer = LineWriter::new(
        out,
        stream,
        plan.format,
        Arc::clone(&plan.identity_members),
        Arc::clone(&plan.masker),
        tail,
    )
    .with_sink(plan.sink.clone());
    thread::Builder::new()
        .name(format!("forward-{}", stream.name()))
        .spawn(move || {
            if let Err(e) = output::forward(input, &mut writer)
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                tracing::warn!(stream = stream.name(), error = %e, "cannot forward the command's output");
            }
            let _ = drained.send(());
        })
}

/// Samples memory use against the limits and keeps the peak.
struct MemoryWatch {
    soft_limit: Option<u64>,
    cgroup: Option<(MemoryCgroup, Option<u64>)>,
    page_size: u64,
    peak: u64,
}

impl MemoryWatch {
    fn new(limits: &Limits) -> MemoryWatch {
        MemoryWatch {
            soft_limit: limits.soft_limit,
            cgroup: limits.cgroup.clone(),
            page_size: procfs::page_size(),
            peak: 0,
        }
    }

    /// Checks one sample: `tree`, the task tree's summed resident memory.
    fn sample(&mut self, tree: u64) -> Option<StopReason> {
        self.peak = self.peak.max(tree);
        if let Some(limit) = self.soft_limit
            && tree > limit
        {
            return Some(StopReason::MemoryExceeded {
                used: tree,
                limit,
                what: MemoryMeasure::ProcessTree,
            });
        }
        if let Some((cgroup, Some(threshold))) = &self.cgroup
            && let Some(working_set) = cgroup.working_set()
            && working_set > *threshold
        {
            return Some(StopReason::MemoryExceeded {
                used: working_set,
                limit: *threshold,
                what: MemoryMeasure::Cgroup,
            });
        }
        None
    }

    fn oom_kills(&self) -> u64 {
        self.cgroup
            .as_ref()
            .and_then(|(cgroup, _)| cgroup.oom_kills())
            .unwrap_or(0)
    }

    /// Whether the peak came within 10 % of the soft limit: a SIGKILL then is most likely
    /// the kernel's OOM killer.
    fn near_limit(&self) -> bool {
        self.soft_limit
            .is_some_and(|limit| self.peak >= limit / 10 * 9)
    }
}
