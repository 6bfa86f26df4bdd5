//! Starting the child: its own process group, stdin from /dev/null, piped output, the
//! prepared environment, and an OOM score that makes the kernel pick it before the agent.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

use crate::error::AgentError;

const DEV_NULL: &str = "/dev/null";

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
    // Opened here rather than by `Stdio::null()`, so a missing /dev/null (a hand-made
    // root) is reported as what it is, not as a command that cannot be executed.
    let null = File::open(DEV_NULL).map_err(|source| AgentError::Spawn {
        command: command_name(spec),
        step: format!("opening {DEV_NULL} for its standard input"),
        fix: "the container needs the /dev/null device (every container runtime provides one; a root built by hand must too)",
        source,
    })?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.workdir)
        .stdin(Stdio::from(null))
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
    let mut child = command
        .spawn()
        .map_err(|e| diagnose(spec, &e, Probe::of(spec)).into_error(spec, e))?;
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

fn command_name(spec: &ChildSpec) -> String {
    spec.program.to_string_lossy().into_owned()
}

/// What the file system says after a failed start, gathered once so that `diagnose` is
/// pure logic over it.
#[derive(Debug, Default)]
struct Probe {
    /// Why the workdir cannot be entered, if it cannot.
    workdir: Option<io::Error>,
    /// The file `execve` was given: the program, or the first `PATH` entry holding it.
    program: Option<ProgramFile>,
    /// The `PATH` searched, for a bare command name.
    search_path: String,
}

#[derive(Debug, Default)]
struct ProgramFile {
    path: PathBuf,
    is_dir: bool,
    /// Some execute bit is set.
    executable: bool,
    /// The interpreter of a `#!` line, and whether it exists and is executable.
    interpreter: Option<(PathBuf, Option<bool>)>,
}

impl Probe {
    fn of(spec: &ChildSpec) -> Probe {
        let workdir = fs::metadata(&spec.workdir)
            .and_then(|meta| {
                if meta.is_dir() {
                    nix::unistd::access(&spec.workdir, nix::unistd::AccessFlags::X_OK)
                        .map_err(io::Error::from)
                } else {
                    Err(io::Error::from_raw_os_error(libc::ENOTDIR))
                }
            })
            .err();
        let search_path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| "(unset)".into());
        let program = candidates(spec, &search_path)
            .into_iter()
            .find_map(ProgramFile::read);
        Probe {
            workdir,
            program,
            search_path,
        }
    }
}

/// Where `execve` looks for the program: itself (relative to the workdir) when it names a
/// path, else each `PATH` entry in turn (an empty entry is the workdir).
fn candidates(spec: &ChildSpec, search_path: &str) -> Vec<PathBuf> {
    let program = Path::new(&spec.program);
    if program.components().count() > 1 || spec.program.as_encoded_bytes().contains(&b'/') {
        return vec![spec.workdir.join(program)];
    }
    search_path
        .split(':')
        .map(|dir| spec.workdir.join(dir).join(program))
        .collect()
}

impl ProgramFile {
    fn read(path: PathBuf) -> Option<ProgramFile> {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(&path).ok()?;
        let interpreter = if meta.is_file() {
            shebang(&path).map(|interpreter| {
                let usable = fs::metadata(&interpreter)
                    .ok()
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
                (interpreter, usable)
            })
        } else {
            None
        };
        Some(ProgramFile {
            is_dir: meta.is_dir(),
            executable: meta.permissions().mode() & 0o111 != 0,
            interpreter,
            path,
        })
    }
}

/// The interpreter named on a script's `#!` line.
fn shebang(path: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 256];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let word = line
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(word)))
}

/// Why the start failed, named by the step that failed.
#[derive(Debug)]
enum Diagnosis {
    /// Opening the output pipes ran out of file descriptors.
    Pipes,
    /// The kernel refused a new process (a process limit, or memory).
    Fork,
    /// The workdir could not be entered, for this reason.
    Workdir(io::Error),
    /// No file of the program's name where `execve` looks (the `PATH` searched).
    NotFound(String),
    /// The program cannot be executed, for `reason`; `fix` says what to do.
    NotExecutable { reason: String, fix: &'static str },
    /// `execve` failed for another reason, named by the OS error.
    Exec(PathBuf),
}

fn diagnose(spec: &ChildSpec, error: &io::Error, probe: Probe) -> Diagnosis {
    let errno = error.raw_os_error();
    if matches!(errno, Some(libc::EMFILE) | Some(libc::ENFILE)) {
        return Diagnosis::Pipes;
    }
    if matches!(errno, Some(libc::EAGAIN) | Some(libc::ENOMEM)) {
        return Diagnosis::Fork;
    }
    // The child changes into the workdir before it executes anything.
    if let Some(cause) = probe.workdir {
        return Diagnosis::Workdir(cause);
    }
    let Some(program) = probe.program else {
        return if error.kind() == io::ErrorKind::NotFound {
            Diagnosis::NotFound(probe.search_path)
        } else {
            Diagnosis::Exec(spec.workdir.join(&spec.program))
        };
    };
    let shown = program.path.display();
    if program.is_dir {
        return Diagnosis::NotExecutable {
            reason: format!("{shown} is a directory"),
            fix: "name a program or a script in it",
        };
    }
    if error.kind() == io::ErrorKind::PermissionDenied && !program.executable {
        return Diagnosis::NotExecutable {
            reason: format!("{shown} has no execute bit"),
            fix: "set it (chmod +x) before packing the snapshot, or run the file through its interpreter (for example `sh task.sh`)",
        };
    }
    match (&program.interpreter, error.kind()) {
        (Some((interpreter, None)), io::ErrorKind::NotFound) => {
            return Diagnosis::NotExecutable {
                reason: format!(
                    "the interpreter {} named on its `#!` line does not exist",
                    interpreter.display()
                ),
                fix: "install that interpreter in the image, or correct the `#!` line",
            };
        }
        (Some((interpreter, Some(false))), io::ErrorKind::PermissionDenied) => {
            return Diagnosis::NotExecutable {
                reason: format!(
                    "the interpreter {} named on its `#!` line is not executable",
                    interpreter.display()
                ),
                fix: "correct the `#!` line to name a program",
            };
        }
        _ => {}
    }
    if errno == Some(libc::ENOEXEC) {
        return Diagnosis::NotExecutable {
            reason: format!(
                "{shown} is neither a program for this machine nor a script with a `#!` line ({error})"
            ),
            fix: "add a `#!` line naming its interpreter, or run it through its interpreter",
        };
    }
    if error.kind() == io::ErrorKind::PermissionDenied {
        return Diagnosis::NotExecutable {
            reason: format!("running {shown} was denied ({error})"),
            fix: "check that its file system is not mounted noexec and that the agent's user may run it",
        };
    }
    Diagnosis::Exec(program.path)
}

impl Diagnosis {
    fn into_error(self, spec: &ChildSpec, source: io::Error) -> AgentError {
        let command = command_name(spec);
        let spawn = |step: String, fix: &'static str, source: io::Error| AgentError::Spawn {
            command: command.clone(),
            step,
            fix,
            source,
        };
        match self {
            Diagnosis::Pipes => spawn(
                "creating the pipes for its output".into(),
                "raise the open-files limit (RLIMIT_NOFILE, `ulimit -n`)",
                source,
            ),
            Diagnosis::Fork => spawn(
                "creating its process (fork)".into(),
                "a process or memory limit was reached (RLIMIT_NPROC, the pod's pids limit, or memory); the task may be retried",
                source,
            ),
            Diagnosis::Workdir(cause) => spawn(
                format!("entering the workdir {} (chdir)", spec.workdir.display()),
                "the workdir must exist and be searchable by the agent's user until the command starts; nothing else may remove it",
                cause,
            ),
            Diagnosis::NotFound(path) => AgentError::CommandNotFound { command, path },
            Diagnosis::NotExecutable { reason, fix } => AgentError::CommandNotExecutable {
                command,
                reason,
                fix,
            },
            Diagnosis::Exec(path) => spawn(
                format!("executing {} (execve)", path.display()),
                "a program whose dynamic loader is missing from the image fails this way too: check `ldd` on it",
                source,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str) -> ChildSpec {
        ChildSpec {
            program: program.into(),
            args: Vec::new(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            workdir: "/workspace".into(),
        }
    }

    fn file(path: &str, executable: bool, interpreter: Option<(&str, Option<bool>)>) -> Probe {
        Probe {
            program: Some(ProgramFile {
                path: path.into(),
                is_dir: false,
                executable,
                interpreter: interpreter.map(|(p, usable)| (p.into(), usable)),
            }),
            search_path: "/usr/bin:/bin".into(),
            ..Probe::default()
        }
    }

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    fn message(diagnosis: Diagnosis, errno: i32) -> String {
        diagnosis
            .into_error(&spec("./task.sh"), os(errno))
            .to_string()
    }

    #[test]
    fn a_workdir_gone_is_named_before_anything_about_the_command() {
        let probe = Probe {
            workdir: Some(os(libc::ENOENT)),
            ..file("/workspace/task.sh", true, None)
        };
        let diagnosis = diagnose(&spec("./task.sh"), &os(libc::ENOENT), probe);
        assert!(matches!(diagnosis, Diagnosis::Workdir(_)), "{diagnosis:?}");
        let text = message(diagnosis, libc::ENOENT);
        assert!(
            text.contains("entering the workdir /workspace (chdir)"),
            "{text}"
        );
        assert!(!text.contains("#!") && !text.contains("chmod"), "{text}");
    }

    #[test]
    fn out_of_descriptors_or_processes_names_the_call() {
        let text = message(
            diagnose(&spec("x"), &os(libc::EMFILE), Probe::default()),
            libc::EMFILE,
        );
        assert!(
            text.contains("pipes") && text.contains("RLIMIT_NOFILE"),
            "{text}"
        );
        let error = diagnose(&spec("x"), &os(libc::EAGAIN), Probe::default())
            .into_error(&spec("x"), os(libc::EAGAIN));
        assert!(error.to_string().contains("fork"), "{error}");
        assert!(error.disposition().retryable);
    }

    #[test]
    fn no_file_is_not_found_with_the_path_searched() {
        let diagnosis = diagnose(
            &spec("nope"),
            &os(libc::ENOENT),
            Probe {
                search_path: "/usr/bin:/bin".into(),
                ..Probe::default()
            },
        );
        assert!(matches!(&diagnosis, Diagnosis::NotFound(path) if path == "/usr/bin:/bin"));
    }

    #[test]
    fn a_missing_interpreter_is_blamed_only_when_it_is_missing() {
        let missing = diagnose(
            &spec("./task.sh"),
            &os(libc::ENOENT),
            file("/workspace/task.sh", true, Some(("/usr/bin/python9", None))),
        );
        let text = message(missing, libc::ENOENT);
        assert!(
            text.contains("/usr/bin/python9") && text.contains("`#!`"),
            "{text}"
        );
        assert!(!text.contains("chmod"), "{text}");

        // ENOENT from a file that exists, whose interpreter exists too: a missing dynamic
        // loader, say. Neither `#!` nor the execute bit is the cause.
        let loader = diagnose(
            &spec("./prog"),
            &os(libc::ENOENT),
            file("/workspace/prog", true, Some(("/bin/sh", Some(true)))),
        );
        assert!(matches!(&loader, Diagnosis::Exec(path) if path == Path::new("/workspace/prog")));
        let text = message(loader, libc::ENOENT);
        assert!(text.contains("execve") && !text.contains("chmod"), "{text}");
    }

    #[test]
    fn the_execute_bit_is_blamed_only_when_it_is_missing() {
        let text = message(
            diagnose(
                &spec("./task.sh"),
                &os(libc::EACCES),
                file("/workspace/task.sh", false, Some(("/bin/sh", Some(true)))),
            ),
            libc::EACCES,
        );
        assert!(
            text.contains("no execute bit") && text.contains("chmod +x"),
            "{text}"
        );

        let text = message(
            diagnose(
                &spec("./task.sh"),
                &os(libc::EACCES),
                file("/workspace/task.sh", true, None),
            ),
            libc::EACCES,
        );
        assert!(text.contains("noexec") && !text.contains("chmod"), "{text}");
    }

    #[test]
    fn an_unknown_format_asks_for_a_shebang() {
        let text = message(
            diagnose(
                &spec("./data.txt"),
                &os(libc::ENOEXEC),
                file("/workspace/data.txt", true, None),
            ),
            libc::ENOEXEC,
        );
        assert!(
            text.contains("neither a program") && text.contains("`#!`"),
            "{text}"
        );
    }

    #[test]
    fn candidates_follow_execvp() {
        let bare = spec("python");
        assert_eq!(
            candidates(&bare, "/usr/bin::/opt/bin"),
            [
                PathBuf::from("/usr/bin/python"),
                PathBuf::from("/workspace/python"),
                PathBuf::from("/opt/bin/python"),
            ]
        );
        assert_eq!(
            candidates(&spec("bin/run"), "/usr/bin"),
            [PathBuf::from("/workspace/bin/run")]
        );
        assert_eq!(
            candidates(&spec("/usr/bin/env"), "/usr/bin"),
            [PathBuf::from("/usr/bin/env")]
        );
    }

    #[test]
    fn the_shebang_interpreter_is_read_from_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        fs::write(&script, "#! /usr/bin/env python3\nprint()\n").unwrap();
        assert_eq!(shebang(&script), Some(PathBuf::from("/usr/bin/env")));
        fs::write(&script, "print()\n").unwrap();
        assert_eq!(shebang(&script), None);
    }
}
