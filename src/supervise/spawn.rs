//! Starting the child: its own process group, stdin from /dev/null, piped output, the
//! prepared environment, and an OOM score that makes the kernel pick it before the agent.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

use crate::error::AgentError;

#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The child's whole environment.
    pub env: Vec<(OsString, OsString)>,
    pub workdir: PathBuf,
}

pub struct Started {
    pub pid: i32,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

pub fn spawn(spec: &ChildSpec) -> Result<Started, AgentError> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let agent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls on static data; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // The agent blocks the signals it reads from its signalfd; a blocked mask is
            // inherited across exec, and the task must receive its signals normally.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // If the agent dies without reporting (SIGKILL), the task must not live on
            // unsupervised. Checking the parent afterwards closes the race with an agent
            // that died before the prctl.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != agent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(fd, b"1000".as_ptr().cast(), 4);
                libc::close(fd);
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| classify(spec, e))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(AgentError::Internal("child pipes were not created".into()));
    };
    // The child is reaped by the supervisor's waitpid(-1) loop, never through `child`.
    Ok(Started {
        pid: child.id() as i32,
        stdout,
        stderr,
    })
}

fn classify(spec: &ChildSpec, error: io::Error) -> AgentError {
    let command = spec.program.to_string_lossy().into_owned();
    let named_file = Path::new(&spec.program).components().count() > 1;
    let resolved = if named_file {
        spec.workdir.join(&spec.program)
    } else {
        PathBuf::new()
    };
    match error.kind() {
        io::ErrorKind::NotFound if named_file && resolved.exists() => {
            AgentError::CommandNotExecutable {
                command,
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "the interpreter named on its `#!` line does not exist",
                ),
            }
        }
        io::ErrorKind::NotFound => AgentError::CommandNotFound {
            command,
            path: spec
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.to_string_lossy().into_owned())
                .unwrap_or_else(|| "(unset)".into()),
        },
        io::ErrorKind::PermissionDenied => AgentError::CommandNotExecutable {
            command,
            source: error,
        },
        _ if error.raw_os_error() == Some(libc::ENOEXEC) => AgentError::CommandNotExecutable {
            command,
            source: error,
        },
        _ => AgentError::Spawn {
            command,
            source: error,
        },
    }
}
