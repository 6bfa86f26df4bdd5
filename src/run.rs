//! `task-agent run`: the one place that orders the phases of a task.
//!
//! prepare (workdir, return file; later snapshot and secrets) → process (supervise the
//! child) → report (return value, record). Every path, failures included, ends in exactly
//! one final record.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::artifacts;
use crate::cli::{Declared, RunArgs, default_result_file};
use crate::error::AgentError;
use crate::logging::AgentLog;
use crate::mask::{MaskHandle, Masker};
use crate::report::{Outcome, Reporter, ResultFile, Status, return_value};
use crate::report::{ReturnValue, ReturnValueRef};
use crate::secrets;
use crate::snapshot::source::BlobLocation;
use crate::snapshot::{self, Source};
use crate::supervise::cgroup::{self, MemoryCgroup};
use crate::supervise::{
    ChildSpec, Limits, OutputPlan, SignalInbox, StopReason, Supervised, supervise,
};
use crate::telemetry::{self, PhaseSpan, Telemetry};
use crate::units::format_bytes;
use crate::usage;
use crate::verdict::verdict;
use std::sync::atomic::{AtomicBool, Ordering};

/// The variable through which the child learns where to write its return value.
pub const RETURN_FILE_VAR: &str = "TASK_AGENT_RETURN_FILE";
/// Settings of the agent itself; the child does not inherit them.
const AGENT_VAR_PREFIX: &str = "TASK_AGENT_";

pub fn run(mut args: RunArgs) -> i32 {
    let started = Instant::now();
    // The child runs in the workdir: paths given relative to where the agent started must
    // mean the same to both.
    for path in [&mut args.workdir, &mut args.return_file] {
        if let Ok(absolute) = std::path::absolute(&*path) {
            *path = absolute;
        }
    }
    // First, before any thread exists (see SignalInbox::install).
    let inbox = SignalInbox::install();
    let telemetry_config = telemetry::Config::from_env(|name| std::env::var(name).ok());
    let agent_sources = [args.snapshot.snapshot.as_ref(), args.return_upload.as_ref()];
    let agent_locations: Vec<&BlobLocation> = agent_sources
        .into_iter()
        .flatten()
        .filter_map(|source| match source {
            Source::Blob(location) => Some(location),
            Source::Local(_) => None,
        })
        .chain(args.artifacts.locations())
        .collect();
    let agent_credentials = crate::commands::option_credentials(agent_locations);
    // Also before any thread: it rewrites the environment strings in place.
    let concealed = crate::conceal::conceal(&agent_credentials);
    let mut credentials = crate::commands::credential_secrets(agent_sources);
    credentials.extend(agent_credentials);
    credentials.extend(telemetry_config.header_values.iter().cloned());
    let masks = MaskHandle::default();
    if let Ok(masker) = Masker::new(&credentials) {
        masks.set(masker);
    }
    let identity = args.task.identity();
    let identity_members: Arc<str> = identity.json_members().into();
    // Its threads, if any, start after the signal mask is set, so they inherit it.
    let (telemetry, telemetry_problems) =
        Telemetry::start(&telemetry_config, &identity, masks.clone());
    let log = AgentLog::new(
        args.log_format,
        args.log_level,
        Arc::clone(&identity_members),
        masks.clone(),
    );
    match telemetry.agent_events() {
        Some(events) => log.install_with(events),
        None => log.install(),
    }
    crate::logging::install_masking_panic_hook(masks.clone());
    tracing::info!(version = env!("CARGO_PKG_VERSION"), command = %describe(&args.command), "task-agent starting");
    if let Err(error) = concealed {
        tracing::warn!(
            "cannot hide the agent's own credentials from the task's view of /proc ({error}); a SAS in the agent's options may be readable by the task"
        );
    }
    for problem in telemetry_problems {
        tracing::warn!("telemetry: {problem}");
    }

    let result_path = args.result_file.clone().or_else(default_result_file);
    let (file, file_error) = match result_path.as_deref().map(ResultFile::open) {
        None => (None, None),
        Some(Ok(file)) => (Some(file), None),
        Some(Err(source)) => (
            None,
            Some(AgentError::Path {
                action: "open the result file",
                path: result_path.clone().unwrap_or_default(),
                fix: "pass --result-file with a writable path",
                source,
            }),
        ),
    };
    let mut reporter = Reporter::new(file, identity, masks.clone());
    reporter.set_trace_id(telemetry.trace_id());
    let mut meter = usage::Meter::start(
        usage::Resources {
            cpu_millicores: args.cpu_request,
            memory_bytes: args.memory_request,
        },
        usage::Resources {
            cpu_millicores: args.cpu_limit,
            memory_bytes: args.pod_memory_limit.or_else(|| {
                MemoryCgroup::detect()
                    .as_ref()
                    .and_then(MemoryCgroup::limit)
            }),
        },
    );

    let result = match (file_error, inbox) {
        (Some(error), _) => Err(error),
        (None, Err(e)) => Err(AgentError::Internal(format!(
            "cannot set up signal handling: {e}"
        ))),
        (None, Ok(mut inbox)) => {
            // A bug in a phase must still end in a record, not in a bare panic message.
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                execute(
                    &args,
                    &mut reporter,
                    &mut inbox,
                    &mut meter,
                    identity_members,
                    &masks,
                    &credentials,
                    &telemetry,
                )
            }))
            .unwrap_or_else(|panic| Err(AgentError::Internal(panic_message(panic.as_ref()))))
        }
    };
    let outcome = result.unwrap_or_else(|error| {
        tracing::error!(kind = error.disposition().kind, "{error}");
        Outcome::from_error(&error)
    });
    reporter.set_duration("total", millis(started.elapsed()));
    let peak = reporter.record().resources.peak_memory_bytes;
    reporter.set_usage(meter.usage(peak, moved(reporter.record())));
    reporter.finish(outcome.clone());
    let peak = reporter.record().resources.peak_memory_bytes;
    tracing::info!(
        status = outcome.status.as_str(),
        exit_code = outcome.exit_code,
        duration = %format!("{:.2}s", started.elapsed().as_secs_f64()),
        peak_memory = %format_bytes(peak),
        "task finished"
    );
    telemetry.finish(reporter.record(), args.telemetry_timeout);
    outcome.exit_code
}

/// One phase of the task, from its start (the provisional record says which phase it is)
/// to its end (its duration in the record and the log); its span lives on until the caller
/// has recorded the phase's outcome on it.
struct Phase {
    name: &'static str,
    started: Instant,
    span: PhaseSpan,
}

impl Phase {
    fn start(name: &'static str, reporter: &mut Reporter, telemetry: &Telemetry) -> Phase {
        reporter.set_phase(name);
        reporter.write_provisional();
        Phase {
            name,
            started: Instant::now(),
            span: telemetry.phase(name),
        }
    }

    fn finish(self, reporter: &mut Reporter) -> PhaseSpan {
        let duration_ms = millis(self.started.elapsed());
        reporter.set_duration(self.name, duration_ms);
        tracing::info!(phase = self.name, duration_ms, "phase finished");
        self.span
    }
}

#[allow(clippy::too_many_arguments)]
fn execute(
    args: &RunArgs,
    reporter: &mut Reporter,
    inbox: &mut SignalInbox,
    meter: &mut usage::Meter,
    identity_members: Arc<str>,
    masks: &MaskHandle,
    credentials: &[String],
    telemetry: &Telemetry,
) -> Result<Outcome, AgentError> {
    let phase = Phase::start("prepare", reporter, telemetry);
    let (secrets_request, declared) =
        prepare(args).inspect_err(|error| phase.span.failed(error))?;
    drop(phase.finish(reporter));
    // Declarations read from files may carry a SAS too.
    let mut credentials = credentials.to_vec();
    credentials.extend(crate::commands::option_credentials(
        declared
            .outputs
            .iter()
            .filter_map(|o| o.destination.as_ref())
            .chain(declared.inputs.iter().map(|i| &i.source))
            .filter_map(artifacts::Location::blob),
    ));
    masks.set(Masker::new(&credentials).map_err(AgentError::Internal)?);
    let credentials = credentials.as_slice();

    if let Some(request) = args.snapshot.request() {
        let phase = Phase::start("snapshot", reporter, telemetry);
        let workdir = args.workdir.clone();
        let fetched = interruptible("snapshot", inbox, move |cancel| {
            snapshot::fetch(&request, &workdir, cancel).map_err(AgentError::from)
        });
        let span = phase.finish(reporter);
        match fetched {
            Ok(report) => {
                span.snapshot(&report);
                reporter.set_snapshot(report)
            }
            Err(Interrupted::Signal(signal)) => return Ok(not_started(signal)),
            Err(Interrupted::Failed(error)) => {
                span.failed(&error);
                return Err(error);
            }
        }
    }
    if !declared.inputs.is_empty() {
        let phase = Phase::start("inputs", reporter, telemetry);
        let (specs, workdir, transfer) = (
            declared.inputs.clone(),
            args.workdir.clone(),
            args.artifacts.transfer(),
        );
        let fetched = interruptible("inputs", inbox, move |cancel| {
            artifacts::inputs::fetch(&specs, &workdir, &transfer, cancel).map_err(AgentError::from)
        });
        let span = phase.finish(reporter);
        match fetched {
            Ok(inputs) => reporter.set_inputs(inputs),
            Err(Interrupted::Signal(signal)) => return Ok(not_started(signal)),
            Err(Interrupted::Failed(error)) => {
                span.failed(&error);
                return Err(error);
            }
        }
    }
    let mut delivery = None;
    if let Some(request) = secrets_request {
        let phase = Phase::start("secrets", reporter, telemetry);
        let delivered = interruptible("secrets", inbox, move |_| {
            secrets::deliver(&request).map_err(AgentError::from)
        });
        let span = phase.finish(reporter);
        let delivered = match delivered {
            Ok(delivered) => delivered,
            Err(Interrupted::Signal(signal)) => return Ok(not_started(signal)),
            Err(Interrupted::Failed(error)) => {
                span.failed(&error);
                return Err(error);
            }
        };
        span.secrets(&delivered.report);
        // Every value joins the masker before the child can print it.
        let values = credentials
            .iter()
            .map(String::as_str)
            .chain(delivered.values());
        masks.set(Masker::new(values).map_err(AgentError::Internal)?);
        reporter.set_secrets(delivered.report);
        delivery = Some(delivered);
    }

    if let Some(signal) = termination_requested(inbox) {
        tracing::warn!(
            signal = signal.as_str(),
            "told to stop before the command started"
        );
        return Ok(not_started(signal));
    }

    let limits = limits(args);
    reporter.resources_mut().memory_limit_bytes = limits.soft_limit;
    let mut env = child_env(std::env::vars_os(), &args.return_file);
    if let Some(delivered) = delivery.take() {
        env.retain(|(key, _)| {
            !delivered
                .env
                .iter()
                .any(|(name, _)| key.as_os_str() == name.as_str())
        });
        env.extend(
            delivered
                .env
                .iter()
                .map(|(name, value)| (OsString::from(name), OsString::from(value.as_str()))),
        );
        // `delivered` drops here: the agent's copies of the values are zeroed, leaving the
        // one in the child's environment and the masker's.
    }
    let mut spec = ChildSpec {
        program: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        env,
        workdir: args.workdir.clone(),
    };

    let phase = Phase::start("process", reporter, telemetry);
    // User code that traces continues the task's trace under the process span.
    phase.span.child_env(&mut spec.env);
    let plan = OutputPlan {
        format: args.log_format,
        identity_members,
        masker: masks.current(),
        tail_lines: args.log_tail_lines,
        sink: telemetry.child_lines(&phase.span),
    };
    let ran = supervise(&spec, &limits, &plan, inbox, meter, |peak, meter| {
        reporter.resources_mut().peak_memory_bytes = peak;
        let usage = meter.usage(peak, moved(reporter.record()));
        telemetry.usage(&usage);
        reporter.set_usage(usage);
        reporter.write_provisional();
    });
    let span = phase.finish(reporter);
    zero_environment(&mut spec.env);
    let ran = ran.inspect_err(|error| span.failed(error))?;
    span.process(&ran);
    drop(span);

    reporter.set_phase("report");
    record_resources(reporter, &ran);
    reporter.set_log_tail(ran.log_tail.clone());
    let mut outcome = verdict(&ran);
    if outcome.status == Status::Succeeded
        && !declared.outputs.is_empty()
        && let Some(prefix) = &args.artifacts.artifacts
    {
        let phase = Phase::start("outputs", reporter, telemetry);
        let (specs, prefix, workdir, transfer) = (
            declared.outputs.clone(),
            prefix.clone(),
            args.workdir.clone(),
            args.artifacts.transfer(),
        );
        let (block_size, parallel) = (
            usize::try_from(args.artifacts.upload_block_size).unwrap_or(4 << 20),
            args.artifacts.upload_parallelism,
        );
        let published = interruptible("outputs", inbox, move |cancel| {
            let uploader = artifacts::upload::Uploader::new(transfer, block_size, parallel)
                .map_err(|e| {
                    AgentError::Internal(format!("cannot start the upload runtime: {e}"))
                })?;
            artifacts::outputs::publish(&specs, &prefix, &workdir, &uploader, cancel)
                .map_err(AgentError::from)
        });
        let span = phase.finish(reporter);
        match published {
            Ok(published) => reporter.set_outputs(published),
            Err(Interrupted::Signal(signal)) => {
                return Ok(stopped(
                    signal,
                    "while uploading the outputs; they were not published",
                ));
            }
            Err(Interrupted::Failed(error)) => {
                span.failed(&error);
                tracing::error!("{error}");
                return Ok(Outcome {
                    child_exit_code: outcome.child_exit_code,
                    ..Outcome::from_error(&error)
                });
            }
        }
        reporter.set_phase("report");
    }
    let span = telemetry.phase("report");
    if outcome.status == Status::Succeeded {
        let read = return_value::read(&args.return_file).and_then(|value| {
            match (&value, &args.return_upload) {
                (ReturnValue::TooLarge { .. }, Some(Source::Blob(prefix))) => {
                    let uploaded = upload_return_value(&args.return_file, prefix)?;
                    reporter.set_return_value_ref(uploaded);
                }
                _ => reporter.set_return_value(value),
            }
            Ok(())
        });
        match read {
            Ok(()) => {}
            Err(error) => {
                tracing::error!("{error}");
                span.failed(&error);
                outcome = Outcome {
                    child_exit_code: outcome.child_exit_code,
                    ..Outcome::from_error(&error)
                };
            }
        }
    }
    // Only a task whose command ran gets here; every other end keeps the phase it happened
    // in, so the record says where things stopped.
    reporter.set_phase("finished");
    Ok(outcome)
}

/// Checks the secret list and the declared inputs and outputs, and readies the workdir and
/// the return file; returns what the secrets phase is to fetch and what was declared.
fn prepare(args: &RunArgs) -> Result<(Option<secrets::Request>, Declared), AgentError> {
    // A malformed secret list or declaration is a usage error, found before anything is
    // fetched.
    let secrets_request = args
        .secrets
        .request(args.task.tenant.as_deref())
        .map_err(AgentError::Usage)?;
    let declared = args.artifacts.declared().map_err(AgentError::Usage)?;
    check_storage_policy(args, &declared)?;
    prepare_workdir(&args.workdir)?;
    prepare_return_file(&args.return_file)?;
    Ok((secrets_request, declared))
}

/// Every blob the task will read or write lies in its tenant's storage, when the policy
/// file says which that is: checked before any request.
fn check_storage_policy(args: &RunArgs, declared: &Declared) -> Result<(), AgentError> {
    let Some(path) = &args.secrets.policy_file else {
        return Ok(());
    };
    if declared.inputs.is_empty() && declared.outputs.is_empty() {
        return Ok(());
    }
    let origin = format!("--policy-file {}", path.display());
    let text = fs::read_to_string(path)
        .map_err(|e| AgentError::Usage(format!("{origin}: cannot read it: {e}")))?;
    let Some(allowed) = artifacts::policy::allowed(&text, &origin, args.task.tenant.as_deref())
        .map_err(AgentError::Usage)?
    else {
        return Ok(());
    };
    let locations = args
        .artifacts
        .artifacts
        .iter()
        .chain(
            declared
                .outputs
                .iter()
                .filter_map(|o| o.destination.as_ref()),
        )
        .chain(declared.inputs.iter().map(|i| &i.source));
    artifacts::policy::check(locations.map(artifacts::Location::shown), &allowed).map_err(
        |(uri, allowed)| AgentError::from(artifacts::ArtifactError::PolicyDenied { uri, allowed }),
    )
}

/// Uploads a return value too large for the record to `PREFIX/SHA256.json`: named by its
/// content, so a retried task that returns the same value writes the same blob.
fn upload_return_value(path: &Path, prefix: &BlobLocation) -> Result<ReturnValueRef, AgentError> {
    use sha2::Digest;
    let bytes = fs::read(path).map_err(|source| AgentError::ReturnValueUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let sha256 = snapshot::stream::hex(&sha2::Sha256::digest(&bytes));
    let mut target = prefix.clone();
    if let Ok(mut segments) = target.url.path_segments_mut() {
        segments.pop().push(&format!("{sha256}.json"));
    }
    let size = bytes.len() as u64;
    let started = Instant::now();
    snapshot::blob::upload::upload(&target, bytes, &snapshot::Transfer::default()).map_err(
        |error| AgentError::ReturnUpload {
            destination: target.url.to_string(),
            detail: error.to_string(),
        },
    )?;
    tracing::info!(uri = %target.url, bytes = size, duration_ms = millis(started.elapsed()), "return value uploaded");
    Ok(ReturnValueRef {
        uri: target.url.to_string(),
        sha256,
        bytes: size,
    })
}

/// Overwrites the child's environment as the agent holds it, now the child has its own.
fn zero_environment(env: &mut Vec<(OsString, OsString)>) {
    use zeroize::Zeroize;
    for (_, value) in env.iter_mut() {
        let mut bytes = std::mem::take(value).into_encoded_bytes();
        bytes.zeroize();
    }
    env.clear();
}

/// The bytes the snapshot, inputs and outputs phases moved, as the record has them so far.
fn moved(record: &crate::report::Record) -> usage::Moved {
    let sum = |list: &Option<Vec<artifacts::Artifact>>| {
        list.iter().flatten().map(|a| a.bytes).sum::<u64>()
    };
    usage::Moved {
        snapshot: record.snapshot.as_ref().map_or(0, |s| s.bytes),
        inputs: sum(&record.inputs),
        outputs: sum(&record.outputs),
    }
}

fn record_resources(reporter: &mut Reporter, ran: &Supervised) {
    let resources = reporter.resources_mut();
    resources.peak_memory_bytes = ran.peak_memory_bytes;
    resources.cpu_user_ms = ran.cpu_user_ms;
    resources.cpu_system_ms = ran.cpu_system_ms;
}

fn limits(args: &RunArgs) -> Limits {
    let cgroup = MemoryCgroup::detect();
    let container_limit = cgroup.as_ref().and_then(MemoryCgroup::limit);
    let soft_limit = args
        .memory_limit
        .or(container_limit.map(cgroup::default_soft_limit));
    match (container_limit, soft_limit) {
        (Some(container), Some(soft)) => {
            tracing::info!(container_limit = %format_bytes(container), soft_limit = %format_bytes(soft), "memory limits")
        }
        (None, Some(soft)) => tracing::info!(soft_limit = %format_bytes(soft), "memory limit"),
        _ => tracing::debug!("no memory limit"),
    }
    let threshold = container_limit.map(cgroup::default_soft_limit);
    Limits {
        timeout: args.timeout,
        grace: args.grace,
        soft_limit,
        cgroup: cgroup.map(|c| (c, threshold)),
        poll_interval: args.memory_poll_interval.max(Duration::from_millis(10)),
    }
}

enum Interrupted {
    Signal(Signal),
    Failed(AgentError),
}

/// Runs a network phase (snapshot, secrets) on a worker thread while this one keeps
/// listening for signals: a pod deleted during a long download or a throttled vault stops
/// promptly and reports `terminated`. The worker gets a cancel flag to stop at its next
/// step; the process ends soon after anyway.
fn interruptible<T: Send + 'static>(
    phase: &'static str,
    inbox: &mut SignalInbox,
    work: impl FnOnce(&AtomicBool) -> Result<T, AgentError> + Send + 'static,
) -> Result<T, Interrupted> {
    let cancel = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let cancel = Arc::clone(&cancel);
        std::thread::Builder::new()
            .name(phase.into())
            .spawn(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(&cancel)))
                    .unwrap_or_else(|panic| {
                        Err(AgentError::Internal(panic_message(panic.as_ref())))
                    });
                let _ = done_tx.send(result);
                // Wakes the main thread's signalfd at once; no child exists yet, so a
                // SIGCHLD means nothing else here.
                let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGCHLD);
            })
    };
    if let Err(e) = worker {
        return Err(Interrupted::Failed(AgentError::Internal(format!(
            "cannot start the {phase} thread: {e}"
        ))));
    }
    loop {
        match done_rx.try_recv() {
            Ok(result) => return result.map_err(Interrupted::Failed),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                return Err(Interrupted::Failed(AgentError::Internal(format!(
                    "the {phase} thread ended without a result"
                ))));
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        let signals = inbox.wait(Some(Duration::from_secs(1))).unwrap_or_default();
        if let Some(signal) = signals
            .into_iter()
            .find(|s| matches!(s, Signal::SIGTERM | Signal::SIGINT))
        {
            tracing::warn!(
                signal = signal.as_str(),
                phase,
                "told to stop before the command started"
            );
            cancel.store(true, Ordering::Relaxed);
            return Err(Interrupted::Signal(signal));
        }
    }
}

/// A SIGTERM or SIGINT that arrived while preparing: the pod is going away, so the command
/// is not started at all.
fn termination_requested(inbox: &mut SignalInbox) -> Option<Signal> {
    let pending = inbox.pending().unwrap_or_default();
    pending
        .into_iter()
        .find(|s| matches!(s, Signal::SIGTERM | Signal::SIGINT))
}

fn not_started(signal: Signal) -> Outcome {
    stopped(signal, "before the command started; it was not run")
}

/// The pod is going away (`signal`) at a moment `when` describes.
fn stopped(signal: Signal, when: &str) -> Outcome {
    let mut outcome = verdict(&Supervised {
        exit: crate::supervise::ChildExit::Code(0),
        stop: Some(StopReason::Terminated),
        kernel_oom: false,
        peak_memory_bytes: 0,
        cpu_user_ms: 0,
        cpu_system_ms: 0,
        log_tail: Vec::new(),
    });
    outcome.child_exit_code = None;
    if let Some(error) = &mut outcome.error {
        error.message = format!("task-agent received {} {when}", signal.as_str());
    }
    outcome
}

fn prepare_workdir(workdir: &Path) -> Result<(), AgentError> {
    fs::create_dir_all(workdir).map_err(|source| AgentError::Path {
        action: "create the workdir",
        path: workdir.to_path_buf(),
        fix: "pass --workdir with a directory the agent may create or write",
        source,
    })
}

/// Creates the return file's directory and removes a return value left by an earlier run,
/// so a stale one is never reported as this run's.
fn prepare_return_file(return_file: &Path) -> Result<(), AgentError> {
    if let Some(dir) = return_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| AgentError::Path {
            action: "create the return-value directory",
            path: dir.to_path_buf(),
            fix: "pass --return-file with a path in a writable directory",
            source,
        })?;
    }
    match fs::remove_file(return_file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(AgentError::Path {
            action: "remove the stale return value",
            path: return_file.to_path_buf(),
            fix: "pass --return-file with a path in a writable directory",
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The agent's environment less its own `TASK_AGENT_*` settings, plus the return-file path.
pub fn child_env(
    agent_env: impl Iterator<Item = (OsString, OsString)>,
    return_file: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = agent_env
        .filter(|(key, _)| {
            !key.as_encoded_bytes()
                .starts_with(AGENT_VAR_PREFIX.as_bytes())
        })
        .collect();
    env.push((RETURN_FILE_VAR.into(), return_file.as_os_str().to_owned()));
    env
}

fn describe(command: &[OsString]) -> String {
    command
        .iter()
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("task-agent panicked: {detail}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_gets_no_agent_settings_but_the_return_file() {
        let agent_env = vec![
            (OsString::from("PATH"), OsString::from("/usr/bin")),
            (OsString::from("TASK_AGENT_TIMEOUT"), OsString::from("5s")),
            (
                OsString::from("TASK_AGENT_RESULT_FILE"),
                OsString::from("/x"),
            ),
            (OsString::from("MY_TASK_AGENT_VAR"), OsString::from("kept")),
        ];
        let env = child_env(
            agent_env.into_iter(),
            Path::new("/airflow/xcom/return.json"),
        );
        assert_eq!(
            env,
            vec![
                (OsString::from("PATH"), OsString::from("/usr/bin")),
                (OsString::from("MY_TASK_AGENT_VAR"), OsString::from("kept")),
                (
                    OsString::from(RETURN_FILE_VAR),
                    OsString::from("/airflow/xcom/return.json")
                ),
            ]
        );
    }

    #[test]
    fn a_panic_becomes_an_internal_error_message() {
        let panic = std::panic::catch_unwind(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(
            panic_message(panic.as_ref()),
            "task-agent panicked: boom 42"
        );
        let panic = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(
            panic_message(panic.as_ref()),
            "task-agent panicked: unknown panic"
        );
    }

    #[test]
    fn a_stale_return_value_is_removed_and_its_directory_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xcom/return.json");
        prepare_return_file(&path).unwrap();
        assert!(path.parent().unwrap().is_dir());
        fs::write(&path, "{}").unwrap();
        prepare_return_file(&path).unwrap();
        assert!(!path.exists());
    }
}
