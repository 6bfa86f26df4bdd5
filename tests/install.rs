//! `task-agent install DIR`, as an init container runs it: the copy is the agent itself,
//! executable by anyone and writable by no one, replaces an earlier one whole, and a
//! directory that cannot be written is a clear error.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{AGENT, agent_command};

#[test]
fn the_installed_copy_is_the_agent_and_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("opt/task-agent");
    let output = agent_command()
        .args(["install"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let installed = dir.join("task-agent");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        installed.display().to_string()
    );
    assert_eq!(fs::read(&installed).unwrap(), fs::read(AGENT).unwrap());
    let mode = fs::metadata(&installed).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o555, "mode {mode:o}");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "nothing but the agent"
    );

    // The copy works as the entrypoint of another container would use it.
    let workdir = scratch.path().join("workspace");
    let ran = std::process::Command::new(&installed)
        .args(["run", "--workdir"])
        .arg(&workdir)
        .arg("--return-file")
        .arg(workdir.join("r.json"))
        .args(["--", "sh", "-c", "echo from-the-copy"])
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "from-the-copy\n");
}

#[test]
fn a_second_install_replaces_the_first_whole() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let installed = dir.join("task-agent");
    fs::write(&installed, b"an older, shorter agent").unwrap();
    fs::set_permissions(&installed, fs::Permissions::from_mode(0o555)).unwrap();

    let output = agent_command().arg("install").arg(dir).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(AGENT).unwrap());
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["task-agent"], "no partial copy left behind");
}

#[test]
fn a_directory_that_cannot_be_made_is_named_with_the_fix() {
    let scratch = tempfile::tempdir().unwrap();
    let in_the_way = scratch.path().join("a-file");
    fs::write(&in_the_way, b"").unwrap();
    let dir = in_the_way.join("opt");
    let output = agent_command().arg("install").arg(&dir).output().unwrap();
    assert_eq!(output.status.code(), Some(70), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot create the install directory {}",
            dir.display()
        )) && stderr.contains("emptyDir"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
