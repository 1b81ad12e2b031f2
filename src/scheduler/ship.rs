//! The files a pipeline-folder run ships to runners. A published
//! workflow's run ships the files of its commit; a run fired from a
//! pipeline folder has no commit, so the files of its workflow's folder
//! (the folder its file is in, and below) are hashed when the run starts
//! and recorded as its [`Source`], under the name `folder:` and a hash of
//! the whole set. Runners then fetch them as they fetch a commit's
//! (`docs/runners.md`), and a file changed on the server after the run
//! started is refused by its hash, as for a commit.
//!
//! Hidden entries (`.git`, `.orch`), `__pycache__` and the folders given
//! to leave out (the database's) are not shipped; the walk stops past the
//! limits a run ships ([`MAX_SHIPPED_FILES`], [`MAX_SHIPPED_BYTES`]), so
//! that the shipment names the limit, and never follows a symbolic link
//! out of the folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::digest::sha256_hex;
use crate::exec::remote::{MAX_SHIPPED_BYTES, MAX_SHIPPED_FILES};
use crate::model::Source;

/// How deep the folder is walked.
const MAX_DEPTH: usize = 8;

/// The files under `dir` (leaving out `skip` and what is under it) as a
/// run's source; an error names the file or folder that cannot be read.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("flow.yaml"), "name: flow\n").unwrap();
/// std::fs::create_dir(dir.path().join("lib")).unwrap();
/// std::fs::write(dir.path().join("lib/step.py"), "print(1)\n").unwrap();
/// std::fs::write(dir.path().join(".secret"), "no").unwrap();
/// let s = orch::scheduler::ship::folder_source(dir.path(), &[]).unwrap();
/// assert!(s.commit.starts_with("folder:"));
/// assert_eq!(s.files.keys().collect::<Vec<_>>(), ["flow.yaml", "lib/step.py"]);
/// ```
pub fn folder_source(dir: &Path, skip: &[PathBuf]) -> Result<Source, String> {
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    // A folder to leave out that holds the whole folder (a database
    // folder around the pipelines) leaves out nothing.
    let skip: Vec<PathBuf> = skip
        .iter()
        .filter(|s| !dir.starts_with(s))
        .cloned()
        .collect();
    walk(dir, dir, &skip, 0, &mut files, &mut total)?;
    let listing: String = files.iter().map(|(p, h)| format!("{h}  {p}\n")).collect();
    Ok(Source {
        commit: format!("folder:{}", &sha256_hex(listing.as_bytes())[..16]),
        files,
    })
}

fn walk(
    root: &Path,
    dir: &Path,
    skip: &[PathBuf],
    depth: usize,
    files: &mut BTreeMap<String, String>,
    total: &mut u64,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let read = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut entries: Vec<_> = read.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        // Past a limit: one more file is enough for the shipment to say so.
        if files.len() > MAX_SHIPPED_FILES || *total > MAX_SHIPPED_BYTES {
            return Ok(());
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        let path = entry.path();
        if skip.iter().any(|s| path.starts_with(s)) {
            continue;
        }
        // Not followed: a link may lead anywhere on the server.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(root, &path, skip, depth + 1, files, total)?;
        } else if kind.is_file() {
            let content =
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            *total += content.len() as u64;
            let rel = path
                .strip_prefix(root)
                .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?;
            let rel: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            files.insert(rel.join("/"), sha256_hex(&content));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_skipped_and_linked_entries_are_left_out_and_the_name_follows_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.py"), "1").unwrap();
        std::fs::create_dir_all(d.join("db/runs")).unwrap();
        std::fs::write(d.join("db/orch.db"), "x").unwrap();
        std::fs::create_dir_all(d.join("__pycache__")).unwrap();
        std::fs::write(d.join("__pycache__/a.pyc"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", d.join("etc")).unwrap();
        let s = folder_source(d, &[d.join("db")]).unwrap();
        assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a.py"]);
        // A folder to leave out around the whole folder leaves out nothing.
        let around = folder_source(d, &[d.parent().unwrap().to_path_buf()]).unwrap();
        assert_eq!(
            around.files.keys().collect::<Vec<_>>(),
            ["a.py", "db/orch.db"]
        );
        let again = folder_source(d, &[d.join("db")]).unwrap();
        assert_eq!(s.commit, again.commit);
        std::fs::write(d.join("a.py"), "2").unwrap();
        assert_ne!(folder_source(d, &[d.join("db")]).unwrap().commit, s.commit);
    }

    #[test]
    fn the_walk_stops_one_past_the_file_limit() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_SHIPPED_FILES + 5 {
            std::fs::write(dir.path().join(format!("f{i}")), "").unwrap();
        }
        let s = folder_source(dir.path(), &[]).unwrap();
        assert_eq!(s.files.len(), MAX_SHIPPED_FILES + 1);
    }
}
