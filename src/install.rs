//! `task-agent install DIR`: copies the running binary into DIR, so an init container from
//! the agent image can give any user image the agent. The main container mounts DIR read-only
//! and runs `DIR/task-agent run …`, so a hostile snapshot can never replace its entrypoint.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::AgentError;

/// The name the agent gets in DIR.
pub const INSTALLED_NAME: &str = "task-agent";

/// Copies `source` (the running binary) to `dir/task-agent`, mode 0555. The copy is written
/// under a temporary name, synced and renamed into place, so a reader never sees half a binary
/// and a second install replaces the first whole.
pub fn install(source: &Path, dir: &Path) -> Result<PathBuf, AgentError> {
    let fail = |action: &'static str, path: &Path, source: io::Error| AgentError::Path {
        action,
        path: path.to_path_buf(),
        fix: "give a directory the agent can write, such as an emptyDir mounted read-write in the init container",
        source,
    };
    fs::create_dir_all(dir).map_err(|e| fail("create the install directory", dir, e))?;
    let target = dir.join(INSTALLED_NAME);
    let partial = dir.join(format!(".{INSTALLED_NAME}.{}.partial", std::process::id()));
    let copied = copy_synced(source, &partial)
        .map_err(|e| fail("write the agent to", &partial, e))
        .and_then(|()| {
            fs::rename(&partial, &target).map_err(|e| fail("move the agent into", &target, e))
        });
    if let Err(error) = copied {
        let _ = fs::remove_file(&partial);
        return Err(error);
    }
    // The rename is durable only once the directory itself is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail("sync", dir, e))?;
    Ok(target)
}

fn copy_synced(source: &Path, partial: &Path) -> io::Result<()> {
    let mut from = File::open(source)?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(partial)?;
    io::copy(&mut from, &mut to)?;
    // Readable and executable by every user the main container may run as; writable by none.
    to.set_permissions(fs::Permissions::from_mode(0o555))?;
    to.sync_all()
}
