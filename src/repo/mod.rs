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

mod error;
mod git;
#[cfg(test)]
mod tests;
mod validate;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub(crate) use error::Shown;
pub use error::{RepoError, RepoErrorKind};
use git::{Call, Git};
pub use validate::validate_name;
use validate::{validate_author, validate_commit, validate_files, validate_message, validate_path};

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

/// Who made a change: a user's name and email (the email may be empty).
/// Neither may hold a newline, a control character, `<` or `>`, nor be
/// longer than [`MAX_AUTHOR_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Author {
    /// The display name.
    pub name: String,
    /// The email address (may be empty).
    pub email: String,
}

impl Author {
    /// An author from a name and an email.
    ///
    /// ```
    /// let ada = orch::repo::Author::new("Ada", "ada@example.com");
    /// assert_eq!(ada.name, "Ada");
    /// ```
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Self {
        Author {
            name: name.into(),
            email: email.into(),
        }
    }
}

/// One commit in a workflow's history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Version {
    /// The full commit id (40 hex digits).
    pub commit: String,
    /// Who made the change.
    pub author: Author,
    /// When, as RFC 3339 UTC (`2026-11-24T01:31:11.000Z`; git keeps
    /// seconds).
    pub time: String,
    /// When, in seconds since the Unix epoch.
    pub unix_seconds: i64,
    /// The commit message, trimmed.
    pub message: String,
    /// This commit removed the workflow.
    pub deleted: bool,
}

/// What [`Repo::publish`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The new commit; or, when nothing changed, the last commit that
    /// changed the workflow (its current version).
    pub version: Version,
    /// A commit was made. `false` when the files were already exactly
    /// these: no empty commit is made.
    pub changed: bool,
}

/// One page of a workflow's history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryPage {
    /// The versions, newest first.
    pub versions: Vec<Version>,
    /// When older versions exist: the value to pass as `before` for the
    /// next page (the oldest commit of this one).
    pub next: Option<String>,
}

/// One file of a workflow at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkflowFile {
    /// The path relative to the workflow's folder, `/`-separated.
    pub path: String,
    /// The content.
    pub content: Vec<u8>,
    /// The SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// A workflow's files at one commit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The workflow.
    pub workflow: String,
    /// The full id of the commit read.
    pub commit: String,
    /// The main file's path ([`MAIN_FILES`]).
    pub main_file: String,
    /// Every file, sorted by path.
    pub files: Vec<WorkflowFile>,
}

impl Snapshot {
    /// The file at `path`, if the workflow holds it.
    pub fn file(&self, path: &str) -> Option<&WorkflowFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// A workflow at the head of the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The workflow's name.
    pub name: String,
    /// Its main file's path ([`MAIN_FILES`]).
    pub main_file: String,
    /// The last commit that changed it.
    pub last: Version,
}

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
}

/// Held while a publish or delete runs.
struct WriteLock<'a> {
    file: MutexGuard<'a, File>,
}

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor this guard's file owns.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Takes an exclusive `flock` on `file`, waiting at most [`LOCK_WAIT`].
fn flock_exclusive(file: &File, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        // SAFETY: flock on a descriptor `file` owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
            _ => {
                return Err(RepoError::Io {
                    path: dir.join(LOCK_FILE),
                    source: err,
                })
            }
        }
        if started.elapsed() >= LOCK_WAIT {
            return Err(RepoError::Busy {
                dir: dir.to_path_buf(),
                after: LOCK_WAIT,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// One entry of `git ls-tree -z` output: `<mode> <type> <oid>` and its
/// name.
struct TreeEntry {
    mode: String,
    kind: String,
    oid: String,
    /// `ls-tree -l`: the blob's size.
    size: Option<u64>,
    name: Vec<u8>,
}

impl TreeEntry {
    fn mktree_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{} {} {}\t", self.mode, self.kind, self.oid).as_bytes());
        out.extend_from_slice(&self.name);
        out.push(0);
    }
}

fn parse_ls_tree(command: &str, out: &[u8]) -> Result<Vec<TreeEntry>> {
    let bad = |detail: &str| RepoError::Unexpected {
        command: command.to_string(),
        detail: detail.to_string(),
    };
    let mut entries = Vec::new();
    for record in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let tab = record
            .iter()
            .position(|&b| b == b'\t')
            .ok_or_else(|| bad("an entry without a tab"))?;
        let meta = std::str::from_utf8(&record[..tab]).map_err(|_| bad("non-UTF-8 entry"))?;
        let mut parts = meta.split_ascii_whitespace();
        let (Some(mode), Some(kind), Some(oid)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("an entry with fewer than three fields"));
        };
        let size = parts.next().and_then(|s| s.parse().ok());
        entries.push(TreeEntry {
            mode: mode.to_string(),
            kind: kind.to_string(),
            oid: oid.to_string(),
            size,
            name: record[tab + 1..].to_vec(),
        });
    }
    Ok(entries)
}

use crate::digest::sha256_hex;

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

    fn write_lock(&self) -> Result<WriteLock<'_>> {
        let file = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        flock_exclusive(&file, &self.dir)?;
        Ok(WriteLock { file })
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
    pub fn get(&self, name: &str, at: Option<&str>) -> Result<Snapshot> {
        validate_name(name)?;
        let commit = match at {
            Some(at) => self.resolve(at)?,
            None => self.head()?.ok_or_else(|| RepoError::WorkflowNotFound {
                workflow: name.to_string(),
            })?,
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
        self.read_folder(name, &commit, &tree)
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
        Ok(snapshot)
    }

    // ---- building changes ----

    /// Writes the blobs and the folder's tree; returns the tree id.
    fn write_folder(&self, name: &str, files: &[(String, Vec<u8>)]) -> Result<String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut index_info = Vec::new();
        for (path, content) in files {
            let oid = self
                .git
                .line(Call::new(["hash-object", "-w", "--no-filters", "--stdin"]).stdin(content))?;
            index_info.extend_from_slice(format!("100644 {oid}\t{path}").as_bytes());
            index_info.push(0);
        }
        // A private index holding only this folder's files: one
        // `write-tree` builds every subfolder's tree at once.
        let index = std::env::temp_dir().join(format!(
            "orch-repo-index-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            self.git
                .ok(Call::new(["update-index", "-z", "--index-info"])
                    .stdin(&index_info)
                    .env("GIT_INDEX_FILE", &index))?;
            self.git
                .line(Call::new(["write-tree"]).env("GIT_INDEX_FILE", &index))
        })();
        let _ = std::fs::remove_file(&index);
        let mut lock = index.into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
        let tree = result?;
        tracing::debug!(workflow = name, tree = %tree, files = files.len(), "folder written");
        Ok(tree)
    }

    /// The root tree of `head` with `workflows/<name>` replaced by
    /// `folder` (or removed when `None`); and whether it existed.
    fn replace_folder(
        &self,
        head: Option<&str>,
        name: &str,
        folder: Option<&str>,
    ) -> Result<(String, bool)> {
        let mut root = match head {
            Some(head) => self.ls_tree(&format!("{head}^{{tree}}"))?,
            None => Vec::new(),
        };
        let at = root
            .iter()
            .position(|e| e.name == WORKFLOWS_DIR.as_bytes() && e.kind == "tree");
        let mut folders = match at {
            Some(i) => self.ls_tree(&root[i].oid)?,
            None => Vec::new(),
        };
        let before = folders.len();
        folders.retain(|e| e.name != name.as_bytes());
        let existed = folders.len() != before;
        if let Some(folder) = folder {
            folders.push(TreeEntry {
                mode: "040000".into(),
                kind: "tree".into(),
                oid: folder.to_string(),
                size: None,
                name: name.as_bytes().to_vec(),
            });
        }
        root.retain(|e| e.name != WORKFLOWS_DIR.as_bytes());
        if !folders.is_empty() {
            let oid = self.mktree(&folders)?;
            root.push(TreeEntry {
                mode: "040000".into(),
                kind: "tree".into(),
                oid,
                size: None,
                name: WORKFLOWS_DIR.as_bytes().to_vec(),
            });
        }
        Ok((self.mktree(&root)?, existed))
    }

    fn ls_tree(&self, tree: &str) -> Result<Vec<TreeEntry>> {
        let out = self
            .git
            .ok(Call::new(["ls-tree", "-z", tree]).max_out(MAX_LISTING_OUT))?;
        parse_ls_tree("git ls-tree", &out)
    }

    fn mktree(&self, entries: &[TreeEntry]) -> Result<String> {
        let mut input = Vec::new();
        for e in entries {
            e.mktree_line(&mut input);
        }
        self.git.line(Call::new(["mktree", "-z"]).stdin(&input))
    }

    fn tree_of(&self, commit: &str) -> Result<String> {
        self.git.line(Call::new([
            "rev-parse".to_string(),
            "--verify".to_string(),
            format!("{commit}^{{tree}}"),
        ]))
    }

    /// Commits `tree` on top of `head` and moves the branch if it still
    /// points at `head`. `None`: it moved (the commit stays unreachable).
    fn commit(
        &self,
        head: Option<&str>,
        tree: &str,
        author: &Author,
        message: &str,
    ) -> Result<Option<Version>> {
        let now = crate::time::unix_millis() / 1000;
        let date = format!("@{now} +0000");
        let mut args = vec!["commit-tree".to_string(), tree.to_string()];
        if let Some(head) = head {
            args.push("-p".into());
            args.push(head.to_string());
        }
        args.push("-F".into());
        args.push("-".into());
        let commit = self.git.line(
            Call::new(args)
                .stdin(message.as_bytes())
                .env("GIT_AUTHOR_NAME", &author.name)
                .env("GIT_AUTHOR_EMAIL", &author.email)
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_NAME", COMMITTER_NAME)
                .env("GIT_COMMITTER_EMAIL", COMMITTER_EMAIL)
                .env("GIT_COMMITTER_DATE", &date),
        )?;
        let out = self.git.run(Call::new([
            "update-ref",
            "-m",
            "orch",
            BRANCH,
            commit.as_str(),
            head.unwrap_or(""),
        ]))?;
        if !out.ok() {
            // Refused because the branch moved: rebuild on the new head.
            // Refused while it still points at `head`: git itself failed
            // (a full disk, a stale ref lock), which retrying would only
            // hide behind a conflict.
            if self.head()?.as_deref() != head {
                tracing::debug!(stderr = %out.stderr, "update-ref refused: the branch moved");
                return Ok(None);
            }
            return Err(RepoError::Git {
                command: "git update-ref".into(),
                code: out.code,
                stderr: out.stderr,
            });
        }
        Ok(Some(Version {
            commit,
            author: author.clone(),
            time: crate::time::format_millis(now * 1000),
            unix_seconds: now as i64,
            message: message.trim().to_string(),
            deleted: false,
        }))
    }

    // ---- reading ----

    /// Resolves a user's commit id to a full id of a commit on `main`.
    fn resolve(&self, commit: &str) -> Result<String> {
        validate_commit(commit)?;
        let out = self.git.run(Call::new([
            "rev-parse".to_string(),
            "--verify".to_string(),
            format!("{commit}^{{commit}}"),
        ]))?;
        if !out.ok() {
            if out.stderr.contains("ambiguous") {
                return Err(RepoError::InvalidCommit {
                    commit: commit.to_string(),
                    reason: "this prefix matches more than one object; give more digits".into(),
                });
            }
            return Err(RepoError::CommitNotFound {
                commit: commit.to_string(),
            });
        }
        let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let Some(head) = self.head()? else {
            return Err(RepoError::CommitNotFound {
                commit: commit.to_string(),
            });
        };
        // Only commits on `main`: a commit whose branch update lost its
        // race was never published.
        let out = self.git.run(Call::new([
            "merge-base",
            "--is-ancestor",
            full.as_str(),
            head.as_str(),
        ]))?;
        match out.code {
            Some(0) => Ok(full),
            Some(1) => Err(RepoError::CommitNotFound {
                commit: commit.to_string(),
            }),
            code => Err(RepoError::Git {
                command: "git merge-base".into(),
                code,
                stderr: out.stderr,
            }),
        }
    }

    /// The object id `spec` (`<commit>:<path>`) names, when it exists.
    fn object_at(&self, spec: &str) -> Result<Option<String>> {
        Ok(self
            .objects_at(&[spec.to_string()])?
            .remove(0)
            .map(|(oid, _)| oid))
    }

    /// `git cat-file --batch-check` for each spec: its id and type.
    fn objects_at(&self, specs: &[String]) -> Result<Vec<Option<(String, String)>>> {
        let mut input = String::new();
        for spec in specs {
            input.push_str(spec);
            input.push('\n');
        }
        let out = self.git.ok(Call::new(["cat-file", "--batch-check"])
            .stdin(input.as_bytes())
            .max_out(MAX_LISTING_OUT))?;
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() != specs.len() {
            return Err(RepoError::Unexpected {
                command: "git cat-file".into(),
                detail: format!("{} answers for {} questions", lines.len(), specs.len()),
            });
        }
        Ok(lines
            .iter()
            .map(|line| {
                let mut parts = line.split(' ');
                match (parts.next(), parts.next()) {
                    (Some(oid), Some(kind)) if kind != "missing" && kind != "ambiguous" => {
                        Some((oid.to_string(), kind.to_string()))
                    }
                    _ => None,
                }
            })
            .collect())
    }

    /// The tree of the folder of `name` at each commit, `None` where it
    /// does not exist.
    fn folders_at(&self, commits: &[String], name: &str) -> Result<Vec<Option<String>>> {
        let folder = folder_path(name);
        let specs: Vec<String> = commits.iter().map(|c| format!("{c}:{folder}")).collect();
        Ok(self
            .objects_at(&specs)?
            .into_iter()
            .map(|o| o.and_then(|(oid, kind)| (kind == "tree").then_some(oid)))
            .collect())
    }

    /// `git log` of the folder of `name` from `starts`, at most `n`
    /// commits, with whether each removed the workflow.
    fn log(&self, starts: &[String], name: &str, n: usize) -> Result<Vec<Version>> {
        let mut args = vec![
            "log".to_string(),
            "-z".to_string(),
            "--no-show-signature".to_string(),
            "--format=%H%x00%an%x00%ae%x00%at%x00%B".to_string(),
            format!("--max-count={n}"),
        ];
        args.extend(starts.iter().cloned());
        args.push("--".into());
        args.push(folder_path(name));
        let out = self.git.ok(Call::new(args).max_out(MAX_LISTING_OUT))?;
        let bad = |detail: &str| RepoError::Unexpected {
            command: "git log".into(),
            detail: detail.to_string(),
        };
        let mut fields = out.split(|&b| b == 0);
        let mut versions = Vec::new();
        while let Some(commit) = fields.next() {
            if commit.is_empty() {
                break;
            }
            let (Some(an), Some(ae), Some(at), Some(body)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("a commit with missing fields"));
            };
            let commit = String::from_utf8_lossy(commit).trim().to_string();
            if !commit.bytes().all(|b| b.is_ascii_hexdigit()) || commit.len() < 40 {
                return Err(bad("a commit id that is not hexadecimal"));
            }
            let unix_seconds: i64 = String::from_utf8_lossy(at)
                .trim()
                .parse()
                .map_err(|_| bad("a time that is not a number"))?;
            versions.push(Version {
                commit,
                author: Author {
                    name: String::from_utf8_lossy(an).into_owned(),
                    email: String::from_utf8_lossy(ae).into_owned(),
                },
                time: crate::time::format_millis(unix_seconds.max(0) as u64 * 1000),
                unix_seconds,
                message: String::from_utf8_lossy(body).trim().to_string(),
                deleted: false,
            });
        }
        if !versions.is_empty() {
            let commits: Vec<String> = versions.iter().map(|v| v.commit.clone()).collect();
            for (v, folder) in versions.iter_mut().zip(self.folders_at(&commits, name)?) {
                v.deleted = folder.is_none();
            }
        }
        Ok(versions)
    }

    /// Reads every file of the folder tree `tree` of `name` at `commit`.
    fn read_folder(&self, name: &str, commit: &str, tree: &str) -> Result<Snapshot> {
        let corrupt = |reason: String| RepoError::Corrupt {
            workflow: name.to_string(),
            commit: commit.to_string(),
            reason,
        };
        let out = self
            .git
            .ok(Call::new(["ls-tree", "-r", "-z", "-l", tree]).max_out(MAX_LISTING_OUT))?;
        let entries = parse_ls_tree("git ls-tree", &out)?;
        if entries.len() > MAX_FILES {
            return Err(corrupt(format!("more than {MAX_FILES} files")));
        }
        let mut total = 0u64;
        let mut input = String::new();
        let mut paths = Vec::new();
        for e in &entries {
            let path = String::from_utf8(e.name.clone())
                .map_err(|_| corrupt("a file path that is not UTF-8".into()))?;
            if e.kind != "blob" || !(e.mode == "100644" || e.mode == "100755") {
                return Err(corrupt(format!(
                    "`{}` is a {} (mode {}), not a regular file",
                    Shown(&path),
                    e.kind,
                    e.mode
                )));
            }
            let size = e.size.unwrap_or(0);
            if size > MAX_FILE_BYTES as u64 {
                return Err(corrupt(format!(
                    "`{}` has {size} bytes, more than {MAX_FILE_BYTES}",
                    Shown(&path)
                )));
            }
            total += size;
            input.push_str(&e.oid);
            input.push('\n');
            paths.push(path);
        }
        if total > MAX_TOTAL_BYTES as u64 {
            return Err(corrupt(format!(
                "{total} bytes, more than {MAX_TOTAL_BYTES}"
            )));
        }
        let out = self.git.ok(Call::new(["cat-file", "--batch"])
            .stdin(input.as_bytes())
            .max_out(MAX_TOTAL_BYTES + (MAX_FILES + 1) * 128))?;
        let mut files = Vec::with_capacity(paths.len());
        let mut rest: &[u8] = &out;
        for path in paths {
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| corrupt("git cat-file said too little".into()))?;
            let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let size: usize = header
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(format!("git cat-file said `{}`", Shown(&header))))?;
            let body = rest
                .get(nl + 1..nl + 1 + size)
                .ok_or_else(|| corrupt("git cat-file said too little".into()))?;
            let content = body.to_vec();
            rest = rest.get(nl + 2 + size..).unwrap_or(&[]);
            files.push(WorkflowFile {
                path,
                sha256: sha256_hex(&content),
                content,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mains: Vec<&str> = files
            .iter()
            .map(|f| f.path.as_str())
            .filter(|p| MAIN_FILES.contains(p))
            .collect();
        let [main_file] = mains.as_slice() else {
            return Err(corrupt(format!(
                "{} main files (one of {} expected)",
                mains.len(),
                MAIN_FILES.join(", ")
            )));
        };
        Ok(Snapshot {
            workflow: name.to_string(),
            commit: commit.to_string(),
            main_file: main_file.to_string(),
            files,
        })
    }
}
