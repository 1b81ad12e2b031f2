//! A published workflow's files on a runner. An attempt names the files
//! of the workflow it runs from ([`WireFile`]: path, SHA-256, size); the
//! runner fetches each content it does not have yet into a cache keyed by
//! hash (`DIR/.orch-files/SHA256`), checks its size and hash, and copies
//! them into a folder of their own for that set of files
//! (`DIR/.orch-trees/KEY`, where KEY hashes every path with its hash).
//! Attempts of runs from the same files share that folder: their scripts
//! run from there. Everything the server sends is checked: bounded
//! counts and sizes, paths relative and without `..`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::exec::remote::{WireFile, MAX_SHIPPED_BYTES, MAX_SHIPPED_FILE, MAX_SHIPPED_FILES};

pub(crate) use crate::digest::sha256_hex;

/// `path` as a relative path of plain names, or why not.
pub(crate) fn check_path(path: &str) -> Result<PathBuf, String> {
    crate::exec::remote::check_relative(path).map_err(|e| format!("file {e}"))
}

/// Checks what an attempt says it needs: at most [`MAX_SHIPPED_FILES`]
/// files of at most [`MAX_SHIPPED_FILE`] bytes each and
/// [`MAX_SHIPPED_BYTES`] in all, hex hashes, plain relative paths, each
/// path once.
pub(crate) fn check_files(files: &[WireFile]) -> Result<(), String> {
    if files.len() > MAX_SHIPPED_FILES {
        return Err(format!(
            "field `files`: {} files, at most {MAX_SHIPPED_FILES}",
            files.len()
        ));
    }
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    for f in files {
        check_path(&f.path)?;
        if !seen.insert(f.path.as_str()) {
            return Err(format!("file path `{}` is named twice", f.path));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "file `{}`: its SHA-256 is not 64 hex digits",
                f.path
            ));
        }
        if f.bytes > MAX_SHIPPED_FILE {
            return Err(format!(
                "file `{}`: {} bytes, at most {MAX_SHIPPED_FILE}",
                f.path, f.bytes
            ));
        }
        total += f.bytes;
    }
    if total > MAX_SHIPPED_BYTES {
        return Err(format!(
            "field `files`: {total} bytes in all, at most {MAX_SHIPPED_BYTES}"
        ));
    }
    Ok(())
}

/// The key of a set of files: the SHA-256 of every path with its
/// content's hash, in path order.
pub(crate) fn tree_key(files: &[WireFile]) -> String {
    let mut lines: Vec<String> = files
        .iter()
        .map(|f| format!("{}\0{}\n", f.path, f.sha256.to_ascii_lowercase()))
        .collect();
    lines.sort();
    sha256_hex(lines.concat().as_bytes())
}

/// A name no other writer uses at once, for a file or folder written
/// whole and then renamed into place.
fn temporary(dir: &Path, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// The folder holding `files` under the runner's `dir`, made if needed:
/// contents missing from the cache come from `fetch` (checked against
/// their size and hash before they are kept). Returns its key and path.
pub(crate) fn prepare(
    dir: &Path,
    files: &[WireFile],
    mut fetch: impl FnMut(&WireFile) -> Result<Vec<u8>, String>,
) -> Result<(String, PathBuf), String> {
    check_files(files)?;
    let key = tree_key(files);
    let trees = dir.join(".orch-trees");
    let tree = trees.join(&key);
    if tree.is_dir() {
        return Ok((key, tree));
    }
    let cache = dir.join(".orch-files");
    for d in [&cache, &trees] {
        std::fs::create_dir_all(d).map_err(|e| io("creating", d, e))?;
    }
    for f in files {
        let sha = f.sha256.to_ascii_lowercase();
        let cached = cache.join(&sha);
        if cached.is_file() {
            continue;
        }
        let content = fetch(f).map_err(|e| format!("fetching file `{}`: {e}", f.path))?;
        if content.len() as u64 != f.bytes || sha256_hex(&content) != sha {
            return Err(format!(
                "file `{}`: the server sent {} bytes that are not the {} bytes of SHA-256 {sha}",
                f.path,
                content.len(),
                f.bytes
            ));
        }
        let tmp = temporary(&cache, &sha);
        std::fs::File::create(&tmp)
            .and_then(|mut w| w.write_all(&content).and_then(|()| w.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &cached))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io("writing", &cached, e)
            })?;
    }
    // Built aside and renamed into place: a folder under its key is
    // whole. Copies, not links: a task that writes over a script cannot
    // spoil the cache.
    let tmp = temporary(&trees, &key);
    let built = (|| {
        for f in files {
            let dest = tmp.join(check_path(&f.path)?);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
            }
            let cached = cache.join(f.sha256.to_ascii_lowercase());
            std::fs::copy(&cached, &dest).map_err(|e| io("copying to", &dest, e))?;
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &tree) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another attempt put the same files in place meanwhile.
        if !tree.is_dir() {
            return Err(io("putting in place", &tree, e));
        }
    }
    Ok((key, tree))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8]) -> WireFile {
        WireFile {
            path: path.into(),
            sha256: sha256_hex(content),
            bytes: content.len() as u64,
        }
    }

    #[test]
    fn paths_stay_inside_the_folder() {
        assert_eq!(check_path("a/b.py").unwrap(), PathBuf::from("a/b.py"));
        // An inner `.` is no step anywhere: it is dropped.
        assert_eq!(check_path("a/./b").unwrap(), PathBuf::from("a/b"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a\nb"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn files_are_fetched_once_checked_and_put_together() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            file("main.py", b"print(1)\n"),
            file("lib/util.py", b"X = 2\n"),
        ];
        let contents: std::collections::HashMap<String, Vec<u8>> = [
            (files[0].sha256.clone(), b"print(1)\n".to_vec()),
            (files[1].sha256.clone(), b"X = 2\n".to_vec()),
        ]
        .into();
        let mut fetched = Vec::new();
        let (key, tree) = prepare(dir.path(), &files, |f| {
            fetched.push(f.path.clone());
            Ok(contents[&f.sha256].clone())
        })
        .unwrap();
        assert_eq!(fetched, ["main.py", "lib/util.py"]);
        assert_eq!(std::fs::read(tree.join("lib/util.py")).unwrap(), b"X = 2\n");
        assert_eq!(key, tree_key(&files));
        // Again: nothing is fetched.
        let (_, again) = prepare(dir.path(), &files, |_| panic!("fetched again")).unwrap();
        assert_eq!(again, tree);
        // Another set sharing a content fetches only the new one.
        let more = vec![files[0].clone(), file("other.py", b"pass\n")];
        let mut fetched = Vec::new();
        prepare(dir.path(), &more, |f| {
            fetched.push(f.path.clone());
            Ok(b"pass\n".to_vec())
        })
        .unwrap();
        assert_eq!(fetched, ["other.py"]);
    }

    #[test]
    fn what_the_server_sends_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let wrong = prepare(dir.path(), &[file("a.py", b"good")], |_| {
            Ok(b"evil".to_vec())
        });
        assert!(wrong.unwrap_err().contains("not the 4 bytes"));
        let mut escaping = file("x", b"1");
        escaping.path = "../../outside.py".into();
        let e = prepare(dir.path(), &[escaping], |_| Ok(b"1".to_vec())).unwrap_err();
        assert!(e.contains("relative"), "{e}");
        assert!(!dir.path().join("../outside.py").exists());
        let mut big = file("big", b"");
        big.bytes = MAX_SHIPPED_FILE + 1;
        assert!(check_files(&[big]).is_err());
        let twice = [file("a", b"1"), file("a", b"2")];
        assert!(check_files(&twice).unwrap_err().contains("twice"));
        let mut bad_hash = file("a", b"1");
        bad_hash.sha256 = "zz".into();
        assert!(check_files(&[bad_hash]).is_err());
        // Nothing half-made is left under a key.
        let trees = dir.path().join(".orch-trees");
        let left: Vec<_> = std::fs::read_dir(&trees)
            .map(|d| d.filter_map(|e| e.ok()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }
}
