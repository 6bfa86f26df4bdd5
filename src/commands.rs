//! The commands beside `run`: `fetch`, `pack`, `publish` (snapshots) and `install`.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::cli::{FetchArgs, InstallArgs, PackArgs, PublishArgs};
use crate::error::{AgentError, exit};
use crate::logging::{AgentLog, LogLevel};
use crate::mask::{MaskHandle, Masker};
use crate::snapshot::source::BlobLocation;
use crate::snapshot::{self, Source, Transfer, blob, pack::pack as pack_dir, stream};
use crate::supervise::LogFormat;

pub fn fetch(args: FetchArgs) -> i32 {
    let masks = credential_masks([args.snapshot.snapshot.as_ref()]);
    install_log(args.log_format, args.log_level, &masks);
    let Some(request) = args.snapshot.request() else {
        return fail(&AgentError::Usage(
            "`task-agent fetch` needs --snapshot URI (or TASK_AGENT_SNAPSHOT)".into(),
        ));
    };
    if let Err(source) = fs::create_dir_all(&args.workdir) {
        return fail(&AgentError::Path {
            action: "create the workdir",
            path: args.workdir,
            fix: "pass --workdir with a directory the agent may create or write",
            source,
        });
    }
    let cancel = AtomicBool::new(false);
    match snapshot::fetch(&request, &args.workdir, &cancel) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            0
        }
        Err(error) => fail(&error.into()),
    }
}

pub fn pack(args: PackArgs) -> i32 {
    install_log(LogFormat::Text, LogLevel::Info, &MaskHandle::default());
    match pack_dir(&args.dir, &args.output) {
        Ok(packed) => {
            println!("{}  {}", packed.sha256, args.output.display());
            0
        }
        Err(e) => fail(&AgentError::Usage(format!(
            "cannot pack {} into {}: {e}",
            args.dir.display(),
            args.output.display()
        ))),
    }
}

pub fn publish(args: PublishArgs) -> i32 {
    let masks = credential_masks([Some(&args.to)]);
    install_log(LogFormat::Text, LogLevel::Info, &masks);
    let Source::Blob(location) = &args.to else {
        return fail(&AgentError::Usage("--to must be a blob URL".into()));
    };
    let bytes = match archive_bytes(&args.path) {
        Ok(bytes) => bytes,
        Err(message) => return fail(&AgentError::Usage(message)),
    };
    let digest = {
        use sha2::Digest;
        stream::hex(&sha2::Sha256::digest(&bytes))
    };
    let transfer = Transfer {
        retry_budget: args.retry_budget,
        ..Transfer::default()
    };
    match blob::upload::upload(location, bytes, &transfer) {
        Ok(()) => {
            println!("{digest}  {}", location.url);
            0
        }
        Err(error) => fail(&error.into()),
    }
}

pub fn install(args: InstallArgs) -> i32 {
    install_log(LogFormat::Text, LogLevel::Info, &MaskHandle::default());
    let installed = std::env::current_exe()
        .map_err(|source| AgentError::Path {
            action: "find the running binary",
            path: "/proc/self/exe".into(),
            fix: "run the agent with /proc mounted",
            source,
        })
        .and_then(|binary| crate::install::install(&binary, &args.dir));
    match installed {
        Ok(path) => {
            println!("{}", path.display());
            0
        }
        Err(error) => fail(&error),
    }
}

/// The archive to publish: a directory is packed (into a temporary file) first.
fn archive_bytes(path: &Path) -> Result<Vec<u8>, String> {
    if path.is_dir() {
        let temp = tempfile_path();
        let packed =
            pack_dir(path, &temp).map_err(|e| format!("cannot pack {}: {e}", path.display()));
        let bytes = packed.and_then(|_| fs::read(&temp).map_err(|e| e.to_string()));
        let _ = fs::remove_file(&temp);
        return bytes;
    }
    let mut file =
        fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if stream::detect(&bytes[..bytes.len().min(stream::HEAD_LEN)]).is_none() {
        return Err(format!(
            "{} is neither a .tar.gz nor a .tar; publish a directory or a file made by `task-agent pack`",
            path.display()
        ));
    }
    Ok(bytes)
}

fn tempfile_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("task-agent-publish-{}.tar.gz", std::process::id()))
}

/// A masker for the credentials blob operations may hold (SAS queries, account keys from
/// the environment), so no log line, error or record can carry them.
pub fn credential_masks<'a>(sources: impl IntoIterator<Item = Option<&'a Source>>) -> MaskHandle {
    let masks = MaskHandle::default();
    if let Ok(masker) = Masker::new(credential_secrets(sources)) {
        masks.set(masker);
    }
    masks
}

/// The credential values themselves, for a masker that also holds other secrets.
pub fn credential_secrets<'a>(
    sources: impl IntoIterator<Item = Option<&'a Source>>,
) -> Vec<String> {
    let locations = sources
        .into_iter()
        .flatten()
        .filter_map(|source| match source {
            Source::Blob(location) => Some(location),
            Source::Local(_) => None,
        });
    let env = |name: &str| std::env::var(name).ok();
    let mut secrets = blob::auth::secrets_to_mask(None, &env);
    secrets.extend(option_credentials(locations));
    secrets.extend(
        std::env::var("AZURE_CLIENT_SECRET")
            .ok()
            .filter(|s| s.len() >= 4),
    );
    secrets
}

/// The credentials given with blob locations in the agent's own options (the SAS, and its
/// signature alone): meant for the agent, never for the task (see `conceal`).
pub fn option_credentials<'a>(
    locations: impl IntoIterator<Item = &'a BlobLocation>,
) -> Vec<String> {
    locations
        .into_iter()
        .flat_map(|location| blob::auth::secrets_to_mask(location.sas.as_deref(), &|_| None))
        .collect()
}

fn install_log(format: LogFormat, level: LogLevel, masks: &MaskHandle) {
    AgentLog::new(format, level, Arc::from(""), masks.clone()).install();
    crate::logging::install_masking_panic_hook(masks.clone());
}

fn fail(error: &AgentError) -> i32 {
    let disposition = error.disposition();
    tracing::error!(kind = disposition.kind, "{error}");
    if disposition.exit_code == exit::USAGE {
        return exit::USAGE;
    }
    disposition.exit_code
}
