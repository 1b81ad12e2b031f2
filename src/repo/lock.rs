//! Writers take turns: a mutex per [`Repo`] handle and an exclusive
//! `flock` on the lock file inside the repository.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::{MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Repo, RepoError, Result, LOCK_FILE, LOCK_WAIT};

/// Held while a publish or delete runs.
pub(super) struct WriteLock<'a> {
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

impl Repo {
    pub(super) fn write_lock(&self) -> Result<WriteLock<'_>> {
        let file = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        flock_exclusive(&file, &self.dir)?;
        Ok(WriteLock { file })
    }
}
