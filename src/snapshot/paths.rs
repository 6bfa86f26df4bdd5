//! Pure rules for where an archive entry may go. The archive is hostile input: every name
//! and link target is checked here, lexically, before anything touches the filesystem.

use std::collections::HashMap;

/// A path inside the workdir, as its components (never empty, never `.` or `..`).
pub type EntryPath = Vec<Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    Absolute,
    ParentComponent,
    TooLong { bytes: usize, limit: usize },
    TooDeep { depth: usize, limit: usize },
    NulByte,
}

impl PathProblem {
    pub fn explain(&self) -> String {
        match self {
            PathProblem::Absolute => "is an absolute path".into(),
            PathProblem::ParentComponent => "contains a `..` component".into(),
            PathProblem::TooLong { bytes, limit } => format!(
                "is {bytes} bytes long, over the limit of {limit} (raise --snapshot-max-path-bytes if this is intended)"
            ),
            PathProblem::TooDeep { depth, limit } => format!(
                "is {depth} directories deep, over the limit of {limit} (raise --snapshot-max-depth if this is intended)"
            ),
            PathProblem::NulByte => "contains a NUL byte".into(),
        }
    }
}

/// Normalizes an entry's name: `./` and empty components go; `..` and absolute names are
/// refused outright (no legitimate snapshot has them). `Ok(None)` is the archive's root.
pub fn entry_path(
    raw: &[u8],
    max_bytes: usize,
    max_depth: usize,
) -> Result<Option<EntryPath>, PathProblem> {
    if raw.contains(&0) {
        return Err(PathProblem::NulByte);
    }
    if raw.first() == Some(&b'/') {
        return Err(PathProblem::Absolute);
    }
    if raw.len() > max_bytes {
        return Err(PathProblem::TooLong {
            bytes: raw.len(),
            limit: max_bytes,
        });
    }
    let mut path = EntryPath::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(PathProblem::ParentComponent),
            name => path.push(name.to_vec()),
        }
    }
    if path.len() > max_depth {
        return Err(PathProblem::TooDeep {
            depth: path.len(),
            limit: max_depth,
        });
    }
    Ok((!path.is_empty()).then_some(path))
}

/// How many symlinks one resolution may pass through before it counts as a loop (Linux's
/// own limit).
const MAX_HOPS: usize = 40;

/// Resolves where a symlink at `link` pointing to `target` leads, through the symlinks the
/// archive has made so far (`links`: link path → its raw target). `None` when it leads
/// outside the workdir (or is absolute, or loops).
pub fn resolve_link(
    link: &EntryPath,
    target: &[u8],
    links: &HashMap<EntryPath, Vec<u8>>,
) -> Option<EntryPath> {
    let mut hops = 0;
    let base = link[..link.len().saturating_sub(1)].to_vec();
    resolve(base, target, links, &mut hops)
}

fn resolve(
    mut at: EntryPath,
    target: &[u8],
    links: &HashMap<EntryPath, Vec<u8>>,
    hops: &mut usize,
) -> Option<EntryPath> {
    if target.first() == Some(&b'/') || target.contains(&0) {
        return None;
    }
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                at.pop()?;
            }
            name => {
                at.push(name.to_vec());
                if let Some(next) = links.get(&at) {
                    *hops += 1;
                    if *hops > MAX_HOPS {
                        return None;
                    }
                    let parent = at[..at.len() - 1].to_vec();
                    at = resolve(parent, next, links, hops)?;
                }
            }
        }
    }
    Some(at)
}

/// Shows an entry name for messages: lossy UTF-8, control characters escaped, so a hostile
/// name cannot forge log lines.
pub fn display(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> EntryPath {
        entry_path(text.as_bytes(), 4096, 64).unwrap().unwrap()
    }

    #[test]
    fn names_are_normalized_and_hostile_ones_refused() {
        assert_eq!(
            p("./src//main.py"),
            vec![b"src".to_vec(), b"main.py".to_vec()]
        );
        assert_eq!(entry_path(b"./", 4096, 64), Ok(None));
        assert_eq!(
            entry_path(b"/etc/passwd", 4096, 64),
            Err(PathProblem::Absolute)
        );
        assert_eq!(
            entry_path(b"a/../../x", 4096, 64),
            Err(PathProblem::ParentComponent)
        );
        assert_eq!(
            entry_path(b"..", 4096, 64),
            Err(PathProblem::ParentComponent)
        );
        assert_eq!(entry_path(b"a\0b", 4096, 64), Err(PathProblem::NulByte));
        assert!(matches!(
            entry_path(b"a/b/c", 4096, 2),
            Err(PathProblem::TooDeep { depth: 3, limit: 2 })
        ));
        assert!(matches!(
            entry_path(&[b'a'; 30], 20, 64),
            Err(PathProblem::TooLong {
                bytes: 30,
                limit: 20
            })
        ));
    }

    #[test]
    fn links_inside_resolve_and_escapes_do_not() {
        let none = HashMap::new();
        assert_eq!(
            resolve_link(&p("lib/x"), b"../src/y", &none),
            Some(p("src/y"))
        );
        assert_eq!(resolve_link(&p("x"), b".", &none), Some(vec![]));
        assert_eq!(resolve_link(&p("x"), b"../outside", &none), None);
        assert_eq!(resolve_link(&p("a/x"), b"/etc", &none), None);
        assert_eq!(resolve_link(&p("a/b/x"), b"../../../..", &none), None);
    }

    #[test]
    fn chains_of_links_are_followed_before_judging() {
        // `here -> .` then `up -> here/..`: lexically `up` is the root, really it is its parent.
        let mut links = HashMap::new();
        links.insert(p("d/here"), b".".to_vec());
        assert_eq!(resolve_link(&p("d/up"), b"here/..", &links), Some(vec![]));
        links.insert(p("here"), b".".to_vec());
        assert_eq!(resolve_link(&p("up"), b"here/..", &links), None);
        // Loops end as escapes rather than hanging.
        let mut loops = HashMap::new();
        loops.insert(p("a"), b"b".to_vec());
        loops.insert(p("b"), b"a".to_vec());
        assert_eq!(resolve_link(&p("c"), b"a", &loops), None);
    }

    #[test]
    fn display_escapes_control_characters() {
        assert_eq!(display(b"a\nb\x1b"), "a\\nb\\u{1b}");
    }
}
