//! A folder of pipeline files as the scheduler sees it: every workflow
//! file under it, reloaded when it changes, each either its pipelines or
//! the error that keeps it from loading (an import error), never both and
//! never a reason to stop reading the others.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::file::{Compiled, FileError, Place};

/// How deep the folder is read.
pub const MAX_DEPTH: usize = 8;
/// How many files the folder may hold.
pub const MAX_FILES: usize = 10_000;

/// What changes when a file changes: its modification time and size.
type Stamp = (Option<SystemTime>, u64);

/// One file of the folder.
#[derive(Debug)]
pub struct Entry {
    stamp: Stamp,
    /// The files it includes (sub-workflows), with their stamps: a
    /// change to one reloads it too.
    includes: Vec<(PathBuf, Stamp)>,
    /// Its pipelines, or why it cannot be loaded.
    pub loaded: Result<Vec<Compiled>, FileError>,
}

/// The workflow files of a folder.
#[derive(Debug, Default)]
pub struct Folder {
    dir: PathBuf,
    /// Folders inside it that are not read (the database's, and its
    /// `runs`, where runs write their files).
    skip: Vec<PathBuf>,
    /// By path, in order.
    pub entries: BTreeMap<PathBuf, Entry>,
    /// A problem with the folder itself (unreadable, too many files).
    pub problem: Option<String>,
}

impl Folder {
    /// The folder at `dir`, not read yet.
    pub fn new(dir: impl Into<PathBuf>) -> Folder {
        Folder {
            dir: dir.into(),
            ..Folder::default()
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The same folder, leaving out `skip` (and what is under it): the
    /// database's folder, whose runs' files must never become pipelines.
    pub fn skipping(mut self, skip: &Path) -> Folder {
        self.skip = [skip.to_path_buf(), skip.join("runs")]
            .iter()
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        self
    }

    /// Reads the folder again: new and changed files are loaded, removed
    /// ones forgotten; returns the paths (re)loaded.
    pub fn reload(&mut self) -> Vec<PathBuf> {
        let found = match scan(&self.dir, &self.skip) {
            Ok(found) => {
                self.problem = None;
                found
            }
            Err(e) => {
                self.problem = Some(e);
                return Vec::new();
            }
        };
        self.entries.retain(|p, _| found.contains_key(p));
        let mut loaded = Vec::new();
        for (path, stamp) in found {
            if self.entries.get(&path).is_some_and(|e| {
                e.stamp == stamp && e.includes.iter().all(|(p, s)| stamp_of(p) == *s)
            }) {
                continue;
            }
            let result = crate::file::load_all(&path);
            let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
            let mut includes: Vec<PathBuf> = result
                .iter()
                .flatten()
                .flat_map(|c| c.places.values().map(|p| p.file.clone()))
                .filter(|f| *f != canonical)
                .collect();
            includes.sort();
            includes.dedup();
            let includes = includes.into_iter().map(|p| {
                let s = stamp_of(&p);
                (p, s)
            });
            if let Err(e) = &result {
                tracing::warn!(file = %path.display(), error = %e, "pipeline file does not load");
            }
            self.entries.insert(
                path.clone(),
                Entry {
                    stamp,
                    includes: includes.collect(),
                    loaded: result,
                },
            );
            loaded.push(path);
        }
        loaded
    }

    /// Every pipeline that loaded, by name, and the import errors: a
    /// pipeline name declared by two files belongs to the first (in path
    /// order); the second file's is an error.
    pub fn pipelines(&self) -> (BTreeMap<String, (&Path, &Compiled)>, Vec<FileError>) {
        let mut by_name: BTreeMap<String, (&Path, &Compiled)> = BTreeMap::new();
        let mut errors = Vec::new();
        for (path, entry) in &self.entries {
            match &entry.loaded {
                Ok(pipelines) => {
                    for c in pipelines {
                        let name = c.definition.name.clone();
                        if let Some((first, _)) = by_name.get(&name) {
                            errors.push(FileError::new(
                                Place::file(path),
                                format!(
                                    "pipeline `{name}` is declared by {} too: names must be unique in a folder",
                                    first.display()
                                ),
                            ));
                        } else {
                            by_name.insert(name, (path.as_path(), c));
                        }
                    }
                }
                Err(e) => errors.push(e.clone()),
            }
        }
        (by_name, errors)
    }
}

/// The workflow files under `dir`: `.yaml`, `.yml` and `.json` files, and
/// `.py` files that mention `Pipeline` (like Airflow's safe mode, other
/// Python modules beside them are not evaluated); hidden entries and
/// `__pycache__` are skipped, symbolic links to folders not followed.
fn scan(dir: &Path, skip: &[PathBuf]) -> Result<HashMap<PathBuf, Stamp>, String> {
    let mut out = HashMap::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&folder)
            .map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" {
                continue;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let skipped = path.canonicalize().is_ok_and(|p| skip.contains(&p));
                if depth + 1 < MAX_DEPTH && !skipped {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let wanted = match ext {
                "yaml" | "yml" | "json" => true,
                "py" => kind.is_file() && mentions_pipeline(&path),
                _ => false,
            };
            if !wanted {
                continue;
            }
            if out.len() >= MAX_FILES {
                return Err(format!(
                    "{} holds more than {MAX_FILES} workflow files",
                    dir.display()
                ));
            }
            // Only regular files: a FIFO would block the reader.
            if !kind.is_file() && !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let stamp = stamp_of(&path);
            out.insert(path, stamp);
        }
    }
    Ok(out)
}

/// A file's modification time and size (nothing, when it is gone).
fn stamp_of(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok();
    (
        meta.as_ref().and_then(|m| m.modified().ok()),
        meta.map_or(0, |m| m.len()),
    )
}

/// True when the Python file's text names `Pipeline` (read at most 1 MiB).
fn mentions_pipeline(path: &Path) -> bool {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut text))
        .is_ok()
        && text.windows(8).any(|w| w == b"Pipeline")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_include_reloads_its_includer_and_the_database_folder_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("parts")).unwrap();
        std::fs::create_dir_all(root.join("db/runs/r1/work")).unwrap();
        std::fs::write(
            root.join("main.yaml"),
            "name: main\ntasks:\n  - {id: sub, workflow: parts/sub.yaml}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("parts/sub.yaml"),
            "name: sub\ntasks:\n  - {id: a, command: [\"true\"]}\n",
        )
        .unwrap();
        // A task's output inside the database's folder is no pipeline.
        std::fs::write(
            root.join("db/runs/r1/work/out.yaml"),
            "name: out\ntasks: []\n",
        )
        .unwrap();
        let mut folder = Folder::new(root).skipping(&root.join("db"));
        folder.reload();
        let (found, errors) = folder.pipelines();
        assert!(errors.is_empty(), "{errors:?}");
        // parts/sub.yaml is a workflow file of its own too.
        assert_eq!(found.keys().collect::<Vec<_>>(), ["main", "sub"]);
        drop(found);
        // Break the include (a size change: no waiting for the clock).
        std::fs::write(
            root.join("parts/sub.yaml"),
            "name: sub\ntasks:\n  - {id: a}\n",
        )
        .unwrap();
        let reloaded = folder.reload();
        assert!(
            reloaded.iter().any(|p| p.ends_with("main.yaml")),
            "{reloaded:?}"
        );
        let (found, errors) = folder.pipelines();
        assert!(!found.contains_key("main"), "main no longer loads");
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
