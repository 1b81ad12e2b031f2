//! Workflows kept under git: the repository `orch serve` owns.
//!
//! A [`Repo`] is a **bare** git repository driven with the `git` program
//! through plumbing only (`hash-object`, `update-index` on a private index
//! file, `write-tree`, `mktree`, `commit-tree`, and `update-ref` with the
//! expected old value). There is no work tree that could be left dirty: a
//! change is built as objects first and becomes visible in one
//! compare-and-swap of `refs/heads/main`, so a failed or interrupted
//! operation leaves at most unreachable objects, never a half-written
//! workflow.
//!
//! Layout: `workflows/<name>/…`. A workflow is a folder holding exactly one
//! main file ([`MAIN_FILES`]) at its top plus any other files (scripts,
//! data) under relative paths. Every publish and delete is one commit on
//! `main` whose author is the user and whose committer is `orch`; history
//! stays linear.
//!
//! Writers are serialized twice: a mutex per [`Repo`] handle and an
//! exclusive `flock` on `orch.lock` inside the repository (so two handles,
//! or two processes, on one directory take turns). The compare-and-swap of
//! the branch catches anything else writing to the repository; such a
//! publish is rebuilt on the new head and retried.
//!
//! Readers take no lock: they resolve the head once and read immutable
//! objects from there.

mod cache;
mod error;
mod git;
mod lock;
mod read;
#[cfg(test)]
mod tests;
mod tree;
mod types;
mod validate;
mod write;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub(crate) use error::Shown;
pub use error::{RepoError, RepoErrorKind};
use git::{Call, Git};
use tree::parse_ls_tree;
pub use types::{Author, Entry, HistoryPage, Published, Snapshot, Version, WorkflowFile};
pub use validate::validate_name;
use validate::{validate_author, validate_files, validate_message, validate_path};

/// The tests check files' digests with it.
#[cfg(test)]
use crate::digest::sha256_hex;

/// Results of this module.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// The branch every version lives on.
pub const BRANCH: &str = "refs/heads/main";

/// The folder, at the top of the repository, that holds one folder per
/// workflow.
pub const WORKFLOWS_DIR: &str = "workflows";

/// The names a workflow's main file may have, at the top of its folder.
/// A workflow has exactly one of them.
pub const MAIN_FILES: [&str; 4] = [
    "workflow.yaml",
    "workflow.yml",
    "workflow.json",
    "workflow.py",
];

/// The longest workflow name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The longest file path inside a workflow's folder, in bytes.
pub const MAX_PATH_BYTES: usize = 255;

/// The most files one workflow may hold.
pub const MAX_FILES: usize = 256;

/// The largest single file of a workflow, in bytes (1 MiB).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The most bytes all files of one workflow may hold together (8 MiB).
pub const MAX_TOTAL_BYTES: usize = 8 * 1024 * 1024;

/// The longest commit message, in bytes (4 KiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// The longest author name or email, in bytes.
pub const MAX_AUTHOR_BYTES: usize = 256;

/// The most versions one [`Repo::history`] call returns; page with its
/// `before` parameter for more.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// A sensible page size for [`Repo::history`].
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// How long one git call may run before it is killed.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a publish or delete waits for another writer (a thread or a
/// process) to release the repository before it gives up with
/// [`RepoError::Busy`].
pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// The committer of every commit (the author is the user).
pub const COMMITTER_NAME: &str = "orch";

/// The committer's email.
pub const COMMITTER_EMAIL: &str = "orch@localhost";

/// How many times a publish or delete is rebuilt when the branch moved
/// under it.
const CAS_ATTEMPTS: u32 = 5;

/// The cap on what a listing or history call may print (bytes).
const MAX_LISTING_OUT: usize = 32 * 1024 * 1024;

/// The lock file inside the repository.
const LOCK_FILE: &str = "orch.lock";

/// A bare git repository of workflows.
///
/// ```
/// use orch::repo::{Author, Repo, RepoErrorKind};
///
/// let dir = tempfile::tempdir()?;
/// let repo = Repo::open(dir.path().join("workflows.git"))?;
/// let ada = Author::new("Ada", "ada@example.com");
///
/// let files = vec![
///     ("workflow.yaml".to_string(), b"name: etl\n".to_vec()),
///     ("scripts/step.py".to_string(), b"print('hi')\n".to_vec()),
/// ];
/// let v1 = repo.publish("etl", files, &ada, "first version")?;
/// assert!(v1.changed);
///
/// let v2 = repo.publish("etl", vec![("workflow.yaml".into(), b"name: etl2\n".to_vec())], &ada, "drop the script")?;
/// let page = repo.history("etl", 10, None)?;
/// assert_eq!(page.versions[0].commit, v2.version.commit);
/// assert_eq!(page.versions[1].commit, v1.version.commit);
///
/// // Any version reads back.
/// let old = repo.get("etl", Some(&v1.version.commit))?;
/// assert_eq!(old.file("scripts/step.py").unwrap().content, b"print('hi')\n");
///
/// repo.delete("etl", &ada, "retire it")?;
/// assert_eq!(repo.get("etl", None).unwrap_err().kind(), RepoErrorKind::NotFound);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Repo {
    dir: PathBuf,
    git: Git,
    /// The open lock file; the mutex keeps this handle's threads in turn
    /// (a `flock` is held per open file, so threads sharing one would not
    /// exclude each other).
    lock: Mutex<File>,
    /// Workflows already read, by commit (a commit's files never change).
    snapshots: Mutex<cache::Snapshots>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn folder_path(name: &str) -> String {
    format!("{WORKFLOWS_DIR}/{name}")
}

impl Repo {
    /// Opens the repository at `dir`, creating it (a bare repository whose
    /// default branch is `main`) when `dir` is missing or empty. A
    /// directory that holds something else is refused. Fails with
    /// [`RepoError::GitMissing`] when `git` is not on `PATH`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Repo> {
        let dir = std::path::absolute(dir.as_ref()).map_err(io_err(dir.as_ref()))?;
        let mut version = Git::bare_command();
        version.arg("--version");
        let out = git::run_command(version, &Call::new(["--version"]), GIT_TIMEOUT)?;
        if !out.ok() {
            return Err(RepoError::Git {
                command: "git --version".into(),
                code: out.code,
                stderr: out.stderr,
            });
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let git = Git::new(&dir, GIT_TIMEOUT);
        let repo = Repo {
            dir,
            git,
            lock: Mutex::new(lock),
            snapshots: Mutex::default(),
        };
        {
            // Under the lock: two processes opening one new directory do
            // not both initialise it, nor see it half-initialised.
            let _held = repo.write_lock()?;
            if !repo.dir.join("HEAD").exists() {
                repo.init()?;
            }
            let bare = repo
                .git
                .run(Call::new(["rev-parse", "--is-bare-repository"]))?;
            if !bare.ok() || String::from_utf8_lossy(&bare.stdout).trim() != "true" {
                return Err(RepoError::NotARepository {
                    dir: repo.dir.clone(),
                    reason: "it is not a bare git repository".into(),
                });
            }
        }
        tracing::debug!(dir = %repo.dir.display(), "workflow repository open");
        Ok(repo)
    }

    fn init(&self) -> Result<()> {
        let others = std::fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .filter_map(|e| e.ok())
            .any(|e| e.file_name() != LOCK_FILE);
        if others {
            return Err(RepoError::NotARepository {
                dir: self.dir.clone(),
                reason: "it is not empty and holds no git repository".into(),
            });
        }
        let mut init = Git::bare_command();
        init.args(["init", "--bare", "-q"]).current_dir(&self.dir);
        let out = git::run_command(init, &Call::new(["init"]), GIT_TIMEOUT)?;
        if !out.ok() {
            return Err(RepoError::Git {
                command: "git init".into(),
                code: out.code,
                stderr: out.stderr,
            });
        }
        self.git.ok(Call::new(["symbolic-ref", "HEAD", BRANCH]))?;
        // A reflog in a bare repository: every move of `main` is recorded,
        // so a bad change can be traced and undone by hand.
        self.git
            .ok(Call::new(["config", "core.logAllRefUpdates", "always"]))?;
        tracing::info!(dir = %self.dir.display(), "workflow repository created");
        Ok(())
    }

    /// The repository's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The commit `main` points at; `None` before the first publish.
    pub fn head(&self) -> Result<Option<String>> {
        let out = self
            .git
            .run(Call::new(["rev-parse", "--verify", "-q", BRANCH]))?;
        match out.code {
            Some(0) => Ok(Some(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )),
            Some(1) => Ok(None),
            code => Err(RepoError::Git {
                command: "git rev-parse".into(),
                code,
                stderr: out.stderr,
            }),
        }
    }

    /// Makes the folder of workflow `name` hold exactly `files` (paths
    /// relative to the folder, `/`-separated; files not given are
    /// removed), as one commit on `main` with `author` as its author,
    /// `orch` as its committer and `message` (trimmed) as its message.
    ///
    /// Publishing exactly the files the workflow already holds makes no
    /// commit: it returns the current version with `changed: false`.
    /// Concurrent publishes (threads, handles, processes) take turns; none
    /// is lost and history stays linear.
    pub fn publish(
        &self,
        name: &str,
        files: Vec<(String, Vec<u8>)>,
        author: &Author,
        message: &str,
    ) -> Result<Published> {
        validate_name(name)?;
        validate_files(name, &files)?;
        let author = validate_author(author)?;
        let message = validate_message(name, message)?;
        // Objects first, outside the lock: they are content-addressed and
        // invisible until the branch points at a commit that holds them.
        let folder = self.write_folder(name, &files)?;
        let _held = self.write_lock()?;
        for attempt in 1..=CAS_ATTEMPTS {
            let head = self.head()?;
            let (root, _existed) = self.replace_folder(head.as_deref(), name, Some(&folder))?;
            if let Some(head) = &head {
                if self.tree_of(head)? == root {
                    let version = self
                        .log(std::slice::from_ref(head), name, 1)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| RepoError::Unexpected {
                            command: "git log".into(),
                            detail: format!("no commit touched workflow `{}`", Shown(name)),
                        })?;
                    tracing::info!(workflow = name, commit = %version.commit, "publish: no change");
                    return Ok(Published {
                        version,
                        changed: false,
                    });
                }
            }
            if let Some(version) = self.commit(head.as_deref(), &root, &author, &message)? {
                tracing::info!(workflow = name, commit = %version.commit, author = %author.name, "published");
                return Ok(Published {
                    version,
                    changed: true,
                });
            }
            tracing::warn!(
                workflow = name,
                attempt,
                "the branch moved during publish; rebuilding"
            );
        }
        Err(RepoError::Conflict {
            workflow: name.to_string(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Removes workflow `name` in one commit. A workflow that does not
    /// exist at the head is [`RepoError::WorkflowNotFound`].
    pub fn delete(&self, name: &str, author: &Author, message: &str) -> Result<Version> {
        validate_name(name)?;
        let author = validate_author(author)?;
        let message = validate_message(name, message)?;
        let _held = self.write_lock()?;
        for attempt in 1..=CAS_ATTEMPTS {
            let head = self.head()?;
            let (root, existed) = self.replace_folder(head.as_deref(), name, None)?;
            if !existed {
                return Err(RepoError::WorkflowNotFound {
                    workflow: name.to_string(),
                });
            }
            if let Some(mut version) = self.commit(head.as_deref(), &root, &author, &message)? {
                version.deleted = true;
                tracing::info!(workflow = name, commit = %version.commit, author = %author.name, "deleted");
                return Ok(version);
            }
            tracing::warn!(
                workflow = name,
                attempt,
                "the branch moved during delete; rebuilding"
            );
        }
        Err(RepoError::Conflict {
            workflow: name.to_string(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Versions of workflow `name`, newest first: every commit on `main`
    /// that changed its folder (the same commits, in the same order, as
    /// `git log --format=%H -- workflows/<name>`), at most `limit`
    /// (1 to [`MAX_HISTORY_LIMIT`]) of them, starting below commit
    /// `before` when given (the `next` of the previous page).
    ///
    /// A name with no history at all is [`RepoError::WorkflowNotFound`];
    /// a deleted workflow still has its history.
    pub fn history(&self, name: &str, limit: usize, before: Option<&str>) -> Result<HistoryPage> {
        validate_name(name)?;
        if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
            return Err(RepoError::InvalidLimit {
                limit,
                max: MAX_HISTORY_LIMIT,
            });
        }
        let starts = match before {
            Some(before) => {
                let full = self.resolve(before)?;
                let parents = self
                    .git
                    .line(Call::new(["rev-parse".to_string(), format!("{full}^@")]))?;
                parents.split_whitespace().map(str::to_string).collect()
            }
            None => match self.head()? {
                Some(head) => vec![head],
                None => Vec::new(),
            },
        };
        let mut versions = if starts.is_empty() {
            Vec::new()
        } else {
            self.log(&starts, name, limit + 1)?
        };
        if versions.is_empty() && before.is_none() {
            return Err(RepoError::WorkflowNotFound {
                workflow: name.to_string(),
            });
        }
        let next = if versions.len() > limit {
            versions.truncate(limit);
            versions.last().map(|v| v.commit.clone())
        } else {
            None
        };
        Ok(HistoryPage { versions, next })
    }

    /// The files of workflow `name` at commit `at` (4 to 40 hex digits, a
    /// commit on `main`), or at the head when `None`, each with its
    /// SHA-256.
    ///
    /// A workflow read at a commit is kept (a commit's files never
    /// change; at most 64 snapshots and 16 MiB of files): read again at
    /// that commit's full id or at the head, it costs one git call, the
    /// check that the commit is still on `main`, instead of four to six.
    pub fn get(&self, name: &str, at: Option<&str>) -> Result<Snapshot> {
        validate_name(name)?;
        let commit = match at {
            Some(at) => {
                // A full id read before needs no git call but the check
                // that it is still on `main`.
                if let Some(kept) = self.kept(name, at) {
                    return if self.on_main(at)? {
                        Ok(kept)
                    } else {
                        Err(RepoError::CommitNotFound {
                            commit: at.to_string(),
                        })
                    };
                }
                self.resolve(at)?
            }
            None => {
                let head = self.head()?.ok_or_else(|| RepoError::WorkflowNotFound {
                    workflow: name.to_string(),
                })?;
                if let Some(kept) = self.kept(name, &head) {
                    return Ok(kept);
                }
                head
            }
        };
        let Some(tree) = self
            .folders_at(std::slice::from_ref(&commit), name)?
            .remove(0)
        else {
            return Err(if at.is_some() {
                RepoError::NotFoundAt {
                    workflow: name.to_string(),
                    commit,
                }
            } else {
                RepoError::WorkflowNotFound {
                    workflow: name.to_string(),
                }
            });
        };
        let snapshot = self.read_folder(name, &commit, &tree)?;
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(&snapshot);
        Ok(snapshot)
    }

    /// The snapshot of `name` at `commit` read before. Snapshots are kept
    /// under the full id git printed, so a shorter prefix never matches
    /// and is resolved first.
    fn kept(&self, name: &str, commit: &str) -> Option<Snapshot> {
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name, commit)
    }

    /// The workflows at the head, sorted by name, each with its main file
    /// and the last commit that changed it. Costs two git calls per
    /// workflow.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let Some(head) = self.head()? else {
            return Ok(Vec::new());
        };
        let Some(root) = self.object_at(&format!("{head}:{WORKFLOWS_DIR}"))? else {
            return Ok(Vec::new());
        };
        let out = self
            .git
            .ok(Call::new(["ls-tree", "-z", root.as_str()]).max_out(MAX_LISTING_OUT))?;
        let mut entries = Vec::new();
        for folder in parse_ls_tree("git ls-tree", &out)? {
            let Ok(name) = String::from_utf8(folder.name) else {
                continue;
            };
            if folder.kind != "tree" || validate_name(&name).is_err() {
                tracing::warn!(entry = %Shown(&name), "not a workflow folder; skipped");
                continue;
            }
            let inside = self
                .git
                .ok(Call::new(["ls-tree", "-z", folder.oid.as_str()]))?;
            let main_file = parse_ls_tree("git ls-tree", &inside)?
                .into_iter()
                .filter(|e| e.kind == "blob")
                .filter_map(|e| String::from_utf8(e.name).ok())
                .find(|n| MAIN_FILES.contains(&n.as_str()));
            let Some(main_file) = main_file else {
                tracing::warn!(workflow = %name, "folder without a main file; skipped");
                continue;
            };
            let Some(last) = self
                .log(std::slice::from_ref(&head), &name, 1)?
                .into_iter()
                .next()
            else {
                continue;
            };
            entries.push(Entry {
                name,
                main_file,
                last,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Writes the files of workflow `name` at `commit` under `dest` (a
    /// fresh directory for a run; created if missing) and returns them
    /// with their SHA-256. Every path is checked again before it is
    /// written; an existing file or a symbolic link on the way is refused,
    /// never followed or overwritten.
    pub fn checkout(&self, name: &str, commit: &str, dest: &Path) -> Result<Snapshot> {
        let snapshot = self.get(name, Some(commit))?;
        self.write_out(name, &snapshot, dest)?;
        Ok(snapshot)
    }

    /// [`Repo::checkout`] at the head: the workflow as published now.
    /// A version read before costs one git call (where the branch points).
    pub fn checkout_head(&self, name: &str, dest: &Path) -> Result<Snapshot> {
        let snapshot = self.get(name, None)?;
        self.write_out(name, &snapshot, dest)?;
        Ok(snapshot)
    }

    /// Writes `snapshot`'s files under `dest`, refusing what exists.
    fn write_out(&self, name: &str, snapshot: &Snapshot, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest).map_err(io_err(dest))?;
        for file in &snapshot.files {
            validate_path(name, &file.path)?;
            let mut at = dest.to_path_buf();
            let parts: Vec<&str> = file.path.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                at.push(part);
                match std::fs::create_dir(&at) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let meta = std::fs::symlink_metadata(&at).map_err(io_err(&at))?;
                        if !meta.is_dir() {
                            return Err(RepoError::Io {
                                path: at,
                                source: std::io::Error::new(
                                    std::io::ErrorKind::AlreadyExists,
                                    "exists and is not a directory",
                                ),
                            });
                        }
                    }
                    Err(e) => return Err(io_err(&at)(e)),
                }
            }
            at.push(parts[parts.len() - 1]);
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&at)
                .map_err(io_err(&at))?;
            out.write_all(&file.content).map_err(io_err(&at))?;
        }
        tracing::debug!(workflow = name, commit = %snapshot.commit, dest = %dest.display(), "checked out");
        Ok(())
    }
}
