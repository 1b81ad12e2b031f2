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
//!
//! A folder fired again reads only the files that changed: a file's hash
//! is kept by its path, size and modification time (`Hashes`), as `git`
//! keeps its index, and a file modified in the last two seconds is always
//! read again (it may change again within one tick of the clock).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

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
    static KNOWN: OnceLock<Mutex<Hashes>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| Mutex::new(Hashes::default()));
    // A panic while hashing leaves nothing half-written: every entry is
    // whole, so a poisoned cache is still a right one.
    let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
    source_with(dir, skip, &mut known)
}

fn source_with(dir: &Path, skip: &[PathBuf], known: &mut Hashes) -> Result<Source, String> {
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    // A folder to leave out that holds the whole folder (a database
    // folder around the pipelines) leaves out nothing.
    let skip: Vec<PathBuf> = skip
        .iter()
        .filter(|s| !dir.starts_with(s))
        .cloned()
        .collect();
    walk(dir, dir, &skip, 0, &mut files, &mut total, known)?;
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
    known: &mut Hashes,
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
            walk(root, &path, skip, depth + 1, files, total, known)?;
        } else if kind.is_file() {
            let (hash, len) = known.hash(&path)?;
            *total += len;
            let rel = path
                .strip_prefix(root)
                .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?;
            let rel: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            files.insert(rel.join("/"), hash);
        }
    }
    Ok(())
}

/// The hashes of files read before, by path, kept while the file's size
/// and modification time stay the same.
#[derive(Default)]
struct Hashes {
    by_path: HashMap<PathBuf, Known>,
    /// Files read (not found here), for the tests.
    reads: usize,
}

struct Known {
    len: u64,
    modified: SystemTime,
    hash: String,
}

/// How many hashes are kept: past it the cache starts again empty.
const MAX_KNOWN: usize = 16 * MAX_SHIPPED_FILES;

/// A file modified this recently is read every time.
const RACY: Duration = Duration::from_secs(2);

impl Hashes {
    /// The SHA-256 (hex) of the file at `path` and its size.
    fn hash(&mut self, path: &Path) -> Result<(String, u64), String> {
        let unreadable = |e: std::io::Error| format!("reading {}: {e}", path.display());
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        let modified = meta.modified().ok();
        if let (Some(m), Some(k)) = (modified, self.by_path.get(path)) {
            if k.len == meta.len() && k.modified == m {
                return Ok((k.hash.clone(), k.len));
            }
        }
        let content = std::fs::read(path).map_err(unreadable)?;
        self.reads += 1;
        let hash = sha256_hex(&content);
        let len = content.len() as u64;
        let settled = modified.filter(|m| {
            SystemTime::now()
                .duration_since(*m)
                .is_ok_and(|age| age >= RACY)
        });
        match settled {
            // Read as stated: the hash is that of the size and time seen.
            Some(modified) if len == meta.len() => {
                if self.by_path.len() >= MAX_KNOWN {
                    self.by_path.clear();
                }
                let known = Known {
                    len,
                    modified,
                    hash: hash.clone(),
                };
                self.by_path.insert(path.to_path_buf(), known);
            }
            _ => {
                self.by_path.remove(path);
            }
        }
        Ok((hash, len))
    }
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
    fn a_folder_fired_again_reads_only_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write_old = |name: &str, text: &str, age: u64| {
            std::fs::write(d.join(name), text).unwrap();
            let f = std::fs::File::options()
                .write(true)
                .open(d.join(name))
                .unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
        };
        write_old("a.py", "1", 60);
        write_old("b.py", "2", 60);
        std::fs::write(d.join("new.py"), "3").unwrap();
        let mut known = Hashes::default();
        let first = source_with(d, &[], &mut known).unwrap();
        assert_eq!(known.reads, 3);
        let again = source_with(d, &[], &mut known).unwrap();
        assert_eq!(again, first);
        assert_eq!(
            known.reads, 4,
            "only the file modified just now is read again"
        );
        // Changed, whatever its size or time: read again, a new name.
        write_old("a.py", "9", 30);
        std::fs::write(d.join("b.py"), "22").unwrap();
        let changed = source_with(d, &[], &mut known).unwrap();
        assert_eq!(known.reads, 7, "a.py has another time, b.py another size");
        assert_ne!(changed.commit, first.commit);
        assert_eq!(
            changed,
            folder_source(d, &[]).unwrap(),
            "the same as read afresh"
        );
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
