//! The workflow repository against a real `git`, in temporary
//! directories.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::*;

type Files = Vec<(String, Vec<u8>)>;

fn ada() -> Author {
    Author::new("Ada Lovelace", "ada@example.com")
}

fn files(main: &str, extra: &[(&str, &str)]) -> Files {
    let mut out = vec![("workflow.yaml".to_string(), main.as_bytes().to_vec())];
    for (p, c) in extra {
        out.push((p.to_string(), c.as_bytes().to_vec()));
    }
    out
}

fn fresh() -> (tempfile::TempDir, Repo) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(dir.path().join("wf.git")).unwrap();
    (dir, repo)
}

/// Plain `git` in the repository, as an operator would run it.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A commit of `tree` made by a writer other than orch, with `parents`
/// (`-p COMMIT` pairs): its id.
fn foreign_commit(dir: &Path, tree: &str, parents: &[&str], message: &str) -> String {
    let mut args = vec![
        "-c",
        "user.name=x",
        "-c",
        "user.email=x@y",
        "commit-tree",
        tree,
    ];
    args.extend_from_slice(parents);
    args.extend_from_slice(&["-m", message]);
    git(dir, &args).trim().to_string()
}

fn git_log(dir: &Path, name: &str) -> Vec<String> {
    git(
        dir,
        &[
            "log",
            "--format=%H",
            "main",
            "--",
            &format!("workflows/{name}"),
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn assert_fsck_clean(dir: &Path) {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(["fsck", "--strict", "--no-dangling"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn assert_linear(dir: &Path) {
    assert_eq!(git(dir, &["rev-list", "--merges", "main"]), "");
}

#[test]
fn open_creates_a_bare_repository_on_main_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/wf.git");
    let repo = Repo::open(&path).unwrap();
    assert_eq!(repo.head().unwrap(), None);
    assert_eq!(repo.list().unwrap(), vec![]);
    assert_eq!(
        git(&path, &["rev-parse", "--is-bare-repository"]).trim(),
        "true"
    );
    assert_eq!(
        git(&path, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
    let v = repo
        .publish("a", files("x: 1\n", &[]), &ada(), "one")
        .unwrap();
    drop(repo);
    let again = Repo::open(&path).unwrap();
    assert_eq!(again.head().unwrap(), Some(v.version.commit));
}

#[test]
fn open_refuses_a_directory_with_other_things_in_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Repo::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::Internal);
    assert!(
        err.to_string().contains("not a workflow repository"),
        "{err}"
    );
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert!(!dir.path().join("HEAD").exists());
}

#[test]
fn publish_then_get_round_trips_every_file_with_its_hash() {
    let (_dir, repo) = fresh();
    let given = files(
        "name: etl\n",
        &[
            ("scripts/step.py", "print(1)\n"),
            ("a/b/c/deep.txt", ""),
            ("data.bin", "\u{1}\u{2}"),
        ],
    );
    let p = repo
        .publish("etl", given.clone(), &ada(), "  first\n\n")
        .unwrap();
    assert!(p.changed);
    assert_eq!(p.version.message, "first");
    assert_eq!(p.version.author, ada());
    assert_eq!(p.version.commit.len(), 40);
    assert!(!p.version.deleted);
    assert_eq!(
        repo.head().unwrap().as_deref(),
        Some(p.version.commit.as_str())
    );
    let snap = repo.get("etl", None).unwrap();
    assert_eq!(snap.commit, p.version.commit);
    assert_eq!(snap.main_file, "workflow.yaml");
    let mut want = given.clone();
    want.sort();
    let got: Vec<(String, Vec<u8>)> = snap
        .files
        .iter()
        .map(|f| (f.path.clone(), f.content.clone()))
        .collect();
    assert_eq!(got, want);
    // sha256("") is well known.
    assert_eq!(
        snap.file("a/b/c/deep.txt").unwrap().sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // The same at the commit, by a short prefix too.
    assert_eq!(repo.get("etl", Some(&p.version.commit[..7])).unwrap(), snap);
    // Author is the user, committer is orch.
    let idents = git(
        repo.dir(),
        &["log", "-1", "--format=%an <%ae>|%cn <%ce>", "main"],
    );
    assert_eq!(
        idents.trim(),
        "Ada Lovelace <ada@example.com>|orch <orch@localhost>"
    );
    assert_fsck_clean(repo.dir());
}

#[test]
fn publish_replaces_the_folder_and_old_versions_stay_readable() {
    let (_dir, repo) = fresh();
    let v1 = repo
        .publish("etl", files("v: 1\n", &[("old.py", "old\n")]), &ada(), "v1")
        .unwrap();
    let other = repo
        .publish("other", files("o\n", &[]), &ada(), "other")
        .unwrap();
    let v2 = repo
        .publish("etl", files("v: 2\n", &[("new.py", "new\n")]), &ada(), "v2")
        .unwrap();
    let now = repo.get("etl", None).unwrap();
    let paths: Vec<&str> = now.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["new.py", "workflow.yaml"]);
    let then = repo.get("etl", Some(&v1.version.commit)).unwrap();
    assert_eq!(then.file("old.py").unwrap().content, b"old\n");
    assert!(then.file("new.py").is_none());
    assert_eq!(then.file("workflow.yaml").unwrap().content, b"v: 1\n");
    // A commit that did not touch etl still shows etl as it was.
    let mid = repo.get("etl", Some(&other.version.commit)).unwrap();
    assert_eq!(mid.file("workflow.yaml").unwrap().content, b"v: 1\n");
    // The other workflow is untouched by etl's publishes.
    assert_eq!(repo.get("other", None).unwrap().files.len(), 1);
    let list = repo.list().unwrap();
    let names: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.main_file.as_str(),
                e.last.commit.as_str(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("etl", "workflow.yaml", v2.version.commit.as_str()),
            ("other", "workflow.yaml", other.version.commit.as_str())
        ]
    );
    assert_fsck_clean(repo.dir());
}

#[test]
fn history_hashes_equal_git_log_and_page() {
    let (_dir, repo) = fresh();
    let mut made = Vec::new();
    for i in 0..7 {
        let p = repo
            .publish(
                "etl",
                files(&format!("v: {i}\n"), &[]),
                &ada(),
                &format!("v{i}"),
            )
            .unwrap();
        made.push(p.version.commit);
        // Commits of another workflow in between are not in etl's history.
        repo.publish("noise", files(&format!("n: {i}\n"), &[]), &ada(), "noise")
            .unwrap();
    }
    made.reverse();
    let page = repo.history("etl", DEFAULT_HISTORY_LIMIT, None).unwrap();
    let hashes: Vec<String> = page.versions.iter().map(|v| v.commit.clone()).collect();
    assert_eq!(hashes, git_log(repo.dir(), "etl"));
    assert_eq!(hashes, made);
    assert_eq!(page.next, None);
    assert_eq!(page.versions[0].message, "v6");
    assert_eq!(page.versions[0].author, ada());
    assert!(page.versions[0].time.ends_with('Z'));
    assert!(page.versions[0].unix_seconds > 1_600_000_000);
    // Pages of 3: 3 + 3 + 1, joined they are the whole history.
    let mut all = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = repo.history("etl", 3, before.as_deref()).unwrap();
        assert!(page.versions.len() <= 3);
        all.extend(page.versions.iter().map(|v| v.commit.clone()));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(all, made);
    // Before the first commit: an empty page, not an error.
    let oldest = made.last().unwrap();
    let empty = repo.history("etl", 3, Some(oldest)).unwrap();
    assert!(empty.versions.is_empty() && empty.next.is_none());
}

#[test]
fn delete_makes_a_commit_that_history_marks() {
    let (_dir, repo) = fresh();
    let v1 = repo
        .publish("etl", files("a\n", &[]), &ada(), "add")
        .unwrap();
    let del = repo.delete("etl", &ada(), "remove it").unwrap();
    assert!(del.deleted);
    assert_eq!(repo.list().unwrap(), vec![]);
    let err = repo.get("etl", None).unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::NotFound);
    assert!(err.to_string().contains("`etl`"), "{err}");
    let h = repo.history("etl", 10, None).unwrap();
    let flags: Vec<(String, bool)> = h
        .versions
        .iter()
        .map(|v| (v.commit.clone(), v.deleted))
        .collect();
    assert_eq!(
        flags,
        [
            (del.commit.clone(), true),
            (v1.version.commit.clone(), false)
        ]
    );
    assert_eq!(
        h.versions
            .iter()
            .map(|v| v.commit.clone())
            .collect::<Vec<_>>(),
        git_log(repo.dir(), "etl")
    );
    // The old version still reads back; at the delete commit it is absent.
    assert_eq!(
        repo.get("etl", Some(&v1.version.commit))
            .unwrap()
            .files
            .len(),
        1
    );
    let err = repo.get("etl", Some(&del.commit)).unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::NotFound);
    assert!(
        err.to_string().contains("`etl`") && err.to_string().contains(&del.commit),
        "{err}"
    );
    // Deleting again, or something never published: not found.
    for name in ["etl", "never"] {
        let err = repo.delete(name, &ada(), "again").unwrap_err();
        assert_eq!(err.kind(), RepoErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
    }
    // Publishing again after a delete brings it back.
    let back = repo
        .publish("etl", files("b\n", &[]), &ada(), "back")
        .unwrap();
    assert!(back.changed);
    assert_eq!(repo.history("etl", 10, None).unwrap().versions.len(), 3);
    assert_fsck_clean(repo.dir());
}

#[test]
fn identical_republish_makes_no_commit() {
    let (_dir, repo) = fresh();
    let first = repo
        .publish("etl", files("a\n", &[("s.py", "x")]), &ada(), "one")
        .unwrap();
    repo.publish("other", files("o\n", &[]), &ada(), "other")
        .unwrap();
    let head = repo.head().unwrap();
    // Same files in another order, another author and message.
    let mut same = files("a\n", &[("s.py", "x")]);
    same.reverse();
    let again = repo
        .publish("etl", same, &Author::new("Bob", ""), "no change")
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.version, first.version);
    assert_eq!(repo.head().unwrap(), head);
    // A different file set is a change, even if only a file is dropped.
    let dropped = repo
        .publish("etl", files("a\n", &[]), &ada(), "drop s.py")
        .unwrap();
    assert!(dropped.changed);
}

#[test]
fn eight_threads_publishing_one_workflow_lose_nothing() {
    let (_dir, repo) = fresh();
    let repo = Arc::new(repo);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let repo = Arc::clone(&repo);
            std::thread::spawn(move || {
                repo.publish(
                    "shared",
                    files(&format!("writer: {i}\n"), &[(&format!("w{i}.py"), "x")]),
                    &Author::new(format!("writer {i}"), ""),
                    &format!("writer {i}"),
                )
                .unwrap()
            })
        })
        .collect();
    let results: Vec<Published> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(results.iter().all(|p| p.changed));
    let history = repo.history("shared", 100, None).unwrap();
    assert_eq!(history.versions.len(), 8);
    let mut committed: Vec<&str> = results.iter().map(|p| p.version.commit.as_str()).collect();
    let mut listed: Vec<&str> = history.versions.iter().map(|v| v.commit.as_str()).collect();
    committed.sort();
    listed.sort();
    assert_eq!(committed, listed);
    assert_eq!(
        git(repo.dir(), &["rev-list", "--count", "main"]).trim(),
        "8"
    );
    assert_linear(repo.dir());
    // The head holds exactly the last writer's files.
    let last = &history.versions[0];
    let i: usize = last.message.trim_start_matches("writer ").parse().unwrap();
    let snap = repo.get("shared", None).unwrap();
    let paths: Vec<&str> = snap.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, [format!("w{i}.py").as_str(), "workflow.yaml"]);
    assert_fsck_clean(repo.dir());
}

#[test]
fn two_handles_on_one_directory_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wf.git");
    // Both open the new directory at once: one creates it, the other
    // reuses it.
    let opens: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Repo::open(path).unwrap())
        })
        .collect();
    let handles: Vec<Arc<Repo>> = opens
        .into_iter()
        .map(|t| Arc::new(t.join().unwrap()))
        .collect();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let repo = Arc::clone(&handles[i % 2]);
            std::thread::spawn(move || {
                let name = if i % 3 == 0 { "a" } else { "b" };
                repo.publish(
                    name,
                    files(&format!("n: {i}\n"), &[]),
                    &ada(),
                    &format!("{i}"),
                )
                .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().changed);
    }
    assert_eq!(git(&path, &["rev-list", "--count", "main"]).trim(), "6");
    assert_linear(&path);
    assert_eq!(handles[0].history("a", 10, None).unwrap().versions.len(), 2);
    assert_eq!(handles[1].history("b", 10, None).unwrap().versions.len(), 4);
    assert_fsck_clean(&path);
}

#[test]
fn a_branch_moved_by_someone_else_is_not_overwritten() {
    let (_dir, repo) = fresh();
    let v1 = repo.publish("a", files("1\n", &[]), &ada(), "one").unwrap();
    // Another writer (not orch) moves main to a commit of its own.
    let tree = git(repo.dir(), &["rev-parse", "main^{tree}"]);
    let foreign = foreign_commit(repo.dir(), tree.trim(), &["-p", "main"], "foreign");
    git(
        repo.dir(),
        &[
            "update-ref",
            "refs/heads/main",
            foreign.trim(),
            &v1.version.commit,
        ],
    );
    let v2 = repo.publish("a", files("2\n", &[]), &ada(), "two").unwrap();
    // The new commit sits on top of the foreign one.
    let parent = git(
        repo.dir(),
        &["rev-parse", &format!("{}^", v2.version.commit)],
    );
    assert_eq!(parent.trim(), foreign.trim());
}

#[test]
fn invalid_names_are_refused_and_named() {
    let (_dir, repo) = fresh();
    let long = "a".repeat(129);
    for bad in [
        "", "..", "../x", "a/b", "-rf", ".x", "_x", "a..b", "a b", "a\0b", "a\nb", "é", "a:b",
        "a*", &long,
    ] {
        for err in [
            repo.publish(bad, files("x\n", &[]), &ada(), "m")
                .unwrap_err(),
            repo.get(bad, None).unwrap_err(),
            repo.history(bad, 10, None).unwrap_err(),
            repo.delete(bad, &ada(), "m").unwrap_err(),
        ] {
            assert_eq!(err.kind(), RepoErrorKind::Invalid, "{bad:?}: {err}");
            assert!(err.to_string().starts_with("workflow name `"), "{err}");
            assert!(
                !err.to_string().contains('\n') && !err.to_string().contains('\0'),
                "{err}"
            );
        }
    }
    assert!(validate_name(&"a".repeat(128)).is_ok());
    assert!(validate_name("A1_b.c-d").is_ok());
    assert_eq!(repo.head().unwrap(), None);
}

#[test]
fn invalid_paths_and_file_sets_are_refused_and_named() {
    let (_dir, repo) = fresh();
    let long = format!("{}.py", "p".repeat(255));
    for bad in [
        "",
        "/etc/passwd",
        "a//b",
        "a/",
        "./a",
        "a/./b",
        "../x",
        "a/../b",
        ".git/config",
        "x/.GIT/y",
        "a\\b",
        "a\0b",
        "-x",
        "s/-x",
        "a\nb",
        &long,
    ] {
        let err = repo
            .publish("etl", files("x\n", &[(bad, "x")]), &ada(), "m")
            .unwrap_err();
        assert_eq!(err.kind(), RepoErrorKind::Invalid, "{bad:?}: {err}");
        let text = err.to_string();
        assert!(text.starts_with("workflow `etl`: file path `"), "{text}");
        assert!(!text.contains('\n') && !text.contains('\0'), "{text}");
    }
    let set_cases: Vec<(Files, &str)> = vec![
        (vec![("s.py".into(), b"x".to_vec())], "no main file"),
        (
            vec![
                ("workflow.yaml".into(), vec![]),
                ("workflow.py".into(), vec![]),
            ],
            "more than one main file",
        ),
        (vec![("sub/workflow.yaml".into(), vec![])], "no main file"),
        (
            files("x", &[("s.py", "1"), ("s.py", "2")]),
            "`s.py` is given twice",
        ),
        (files("x", &[("S.py", "1"), ("s.py", "2")]), "only in case"),
        (
            files("x", &[("a", "1"), ("a/b", "2")]),
            "`a` is both a file and the folder of `a/b`",
        ),
        (
            files("x", &[("big", &"x".repeat(MAX_FILE_BYTES + 1))]),
            "more than the limit of 1048576",
        ),
        (
            (0..9)
                .map(|i| (format!("f{i}"), vec![0u8; MAX_FILE_BYTES]))
                .chain([("workflow.json".to_string(), vec![])])
                .collect(),
            "more than the limit of 8388608",
        ),
        (
            (0..MAX_FILES)
                .map(|i| (format!("f{i}"), vec![]))
                .chain([("workflow.json".to_string(), vec![])])
                .collect(),
            "257 files is more than the limit of 256",
        ),
    ];
    for (set, want) in set_cases {
        let err = repo.publish("etl", set, &ada(), "m").unwrap_err();
        assert_eq!(err.kind(), RepoErrorKind::Invalid, "{err}");
        assert!(err.to_string().starts_with("workflow `etl`: "), "{err}");
        assert!(err.to_string().contains(want), "{err} (wanted {want})");
    }
    // Exactly at the limits is fine.
    let full: Vec<(String, Vec<u8>)> = (0..MAX_FILES - 1)
        .map(|i| (format!("d{}/f{i}", i % 7), vec![b'x'; 10]))
        .chain([("workflow.py".to_string(), vec![b'y'; MAX_FILE_BYTES])])
        .collect();
    let p = repo.publish("full", full, &ada(), "limits").unwrap();
    let snap = repo.get("full", Some(&p.version.commit)).unwrap();
    assert_eq!(snap.files.len(), MAX_FILES);
    assert_eq!(snap.main_file, "workflow.py");
    assert_eq!(
        repo.history("etl", 1, None).unwrap_err().kind(),
        RepoErrorKind::NotFound
    );
    assert_fsck_clean(repo.dir());
}

#[test]
fn invalid_messages_and_authors_are_refused_and_named() {
    let (_dir, repo) = fresh();
    for (msg, want) in [
        ("", "is empty"),
        ("  \n\t", "is empty"),
        ("a\0b", "NUL"),
        (&"m".repeat(MAX_MESSAGE_BYTES + 1), "longer than 4096"),
    ] {
        let err = repo
            .publish("etl", files("x\n", &[]), &ada(), msg)
            .unwrap_err();
        assert_eq!(err.kind(), RepoErrorKind::Invalid);
        assert!(
            err.to_string()
                .starts_with("workflow `etl`: the commit message is invalid: "),
            "{err}"
        );
        assert!(err.to_string().contains(want), "{err}");
    }
    let long = "n".repeat(MAX_AUTHOR_BYTES + 1);
    for (author, field) in [
        (Author::new("", "a@b"), "name"),
        (Author::new("  ", "a@b"), "name"),
        (Author::new("Ada\nEvil", "a@b"), "name"),
        (Author::new("Ada <x>", "a@b"), "name"),
        (Author::new("Ada\0", "a@b"), "name"),
        (Author::new(long.as_str(), "a@b"), "name"),
        (Author::new("Ada", "a@b>"), "email"),
        (Author::new("Ada", "a@b\n"), "email"),
        (Author::new("Ada", long.as_str()), "email"),
    ] {
        let err = repo
            .publish("etl", files("x\n", &[]), &author, "m")
            .unwrap_err();
        assert_eq!(err.kind(), RepoErrorKind::Invalid, "{err}");
        assert!(
            err.to_string().starts_with(&format!("author {field} `")),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
    }
    assert_eq!(repo.head().unwrap(), None);
}

#[test]
fn invalid_and_unknown_commits_are_refused_and_named() {
    let (_dir, repo) = fresh();
    let p = repo.publish("etl", files("x\n", &[]), &ada(), "m").unwrap();
    for bad in [
        "",
        "abc",
        "-p",
        "--all",
        "HEAD",
        "main",
        "main~1",
        "abcz",
        "g123",
        &"a".repeat(41),
        "abcd:x",
    ] {
        let err = repo.get("etl", Some(bad)).unwrap_err();
        assert_eq!(err.kind(), RepoErrorKind::Invalid, "{bad:?}: {err}");
        assert!(err.to_string().starts_with("commit `"), "{err}");
        assert_eq!(
            repo.history("etl", 10, Some(bad)).unwrap_err().kind(),
            RepoErrorKind::Invalid
        );
        assert_eq!(
            repo.checkout("etl", bad, Path::new("/nonexistent"))
                .unwrap_err()
                .kind(),
            RepoErrorKind::Invalid
        );
    }
    // Well-formed but unknown.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let err = repo.get("etl", Some(unknown)).unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::NotFound);
    assert!(err.to_string().contains(unknown), "{err}");
    // An object that is not a commit (the tree), and a commit that never
    // reached main (built but not published), are not versions.
    let tree = git(repo.dir(), &["rev-parse", "main^{tree}"]);
    assert_eq!(
        repo.get("etl", Some(tree.trim())).unwrap_err().kind(),
        RepoErrorKind::NotFound
    );
    let stray = git(
        repo.dir(),
        &[
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@y",
            "commit-tree",
            tree.trim(),
            "-m",
            "stray",
        ],
    );
    let err = repo.get("etl", Some(stray.trim())).unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::NotFound, "{err}");
    // A workflow absent at a real commit: names both.
    let err = repo.get("other", Some(&p.version.commit)).unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::NotFound);
    assert!(
        err.to_string().contains("`other`") && err.to_string().contains(&p.version.commit),
        "{err}"
    );
    // Limits of a history page.
    for limit in [0, MAX_HISTORY_LIMIT + 1] {
        let err = repo.history("etl", limit, None).unwrap_err();
        assert_eq!(err.kind(), RepoErrorKind::Invalid);
        assert!(err.to_string().contains(&limit.to_string()), "{err}");
    }
}

#[test]
fn checkout_writes_exactly_the_files_of_that_version() {
    let (dir, repo) = fresh();
    let v1 = repo
        .publish(
            "etl",
            files("v1\n", &[("lib/a.py", "a1"), ("lib/deep/b.sh", "b1")]),
            &ada(),
            "v1",
        )
        .unwrap();
    repo.publish("etl", files("v2\n", &[("c.py", "c2")]), &ada(), "v2")
        .unwrap();
    let dest = dir.path().join("run-1/workflow");
    let snap = repo.checkout("etl", &v1.version.commit, &dest).unwrap();
    let mut on_disk = Vec::new();
    fn walk(root: &Path, at: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(at).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    walk(&dest, &dest, &mut on_disk);
    on_disk.sort();
    let want: Vec<(String, Vec<u8>)> = vec![
        ("lib/a.py".into(), b"a1".to_vec()),
        ("lib/deep/b.sh".into(), b"b1".to_vec()),
        ("workflow.yaml".into(), b"v1\n".to_vec()),
    ];
    assert_eq!(on_disk, want);
    for f in &snap.files {
        assert_eq!(
            f.sha256,
            sha256_hex(&std::fs::read(dest.join(&f.path)).unwrap())
        );
    }
    // Never over an existing file, never through a symbolic link.
    let err = repo.checkout("etl", &v1.version.commit, &dest).unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::Internal);
    let linked = dir.path().join("run-2");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(dir.path(), linked.join("lib")).unwrap();
    let err = repo
        .checkout("etl", &v1.version.commit, &linked)
        .unwrap_err();
    assert!(err.to_string().contains("lib"), "{err}");
    assert!(!dir.path().join("a.py").exists());
    // Unknown workflow at that commit.
    let err = repo
        .checkout("nope", &v1.version.commit, &dir.path().join("run-3"))
        .unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::NotFound);
}

#[test]
fn a_missing_git_is_a_clear_error_at_open() {
    let mut cmd = Command::new("/nonexistent/git-for-orch-tests");
    cmd.arg("--version");
    let err = git::run_command(cmd, &git::Call::new(["--version"]), GIT_TIMEOUT).unwrap_err();
    assert!(matches!(err, RepoError::GitMissing { .. }));
    assert_eq!(err.kind(), RepoErrorKind::Internal);
    assert!(
        err.to_string()
            .contains("`git` program was not found on PATH"),
        "{err}"
    );
}

#[test]
fn git_calls_are_bounded_in_time_and_output() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 5"]);
    let started = std::time::Instant::now();
    let err =
        git::run_command(cmd, &git::Call::new(["sleep"]), Duration::from_millis(200)).unwrap_err();
    assert!(matches!(err, RepoError::GitTimeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "yes"]);
    let err = git::run_command(
        cmd,
        &git::Call::new(["yes"]).max_out(1000),
        Duration::from_secs(20),
    )
    .unwrap_err();
    assert!(
        matches!(err, RepoError::GitOutputTooLarge { limit: 1000, .. }),
        "{err}"
    );
}

#[test]
fn git_runs_with_a_fixed_environment() {
    let cmd = git::Git::bare_command();
    let envs: Vec<_> = cmd.get_envs().collect();
    for (key, value) in [
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_LITERAL_PATHSPECS", "1"),
        ("LC_ALL", "C"),
    ] {
        assert!(
            envs.iter()
                .any(|(k, v)| *k == key && *v == Some(std::ffi::OsStr::new(value))),
            "{key}"
        );
    }
}

/// Not a test on its own: the body of each process of
/// `two_processes_on_one_directory_take_turns`, which runs this test
/// binary again with `ORCH_REPO_TEST_DIR` set.
#[test]
#[ignore = "run by two_processes_on_one_directory_take_turns"]
fn child_process_publisher() {
    let Some(dir) = std::env::var_os("ORCH_REPO_TEST_DIR") else {
        return;
    };
    let me = std::env::var("ORCH_REPO_TEST_WRITER").unwrap();
    let repo = Repo::open(dir).unwrap();
    for i in 0..5 {
        let p = repo
            .publish(
                "shared",
                files(&format!("{me}: {i}\n"), &[]),
                &Author::new(format!("process {me}"), ""),
                &format!("{me} {i}"),
            )
            .unwrap();
        assert!(p.changed);
    }
}

#[test]
fn two_processes_on_one_directory_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wf.git");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|me| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "repo::tests::child_process_publisher",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env("ORCH_REPO_TEST_DIR", &path)
                .env("ORCH_REPO_TEST_WRITER", me)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
    assert_eq!(git(&path, &["rev-list", "--count", "main"]).trim(), "10");
    assert_linear(&path);
    let repo = Repo::open(&path).unwrap();
    let history = repo.history("shared", 100, None).unwrap();
    assert_eq!(history.versions.len(), 10);
    for me in ["a", "b"] {
        let mine = history
            .versions
            .iter()
            .filter(|v| v.author.name == format!("process {me}"))
            .count();
        assert_eq!(mine, 5, "{me}");
    }
    assert_fsck_clean(&path);
}

#[test]
fn a_stuck_ref_lock_is_a_git_error_naming_update_ref_not_a_conflict() {
    let (_dir, repo) = fresh();
    repo.publish("a", files("1\n", &[]), &ada(), "one").unwrap();
    // A crashed git left the branch's lock file behind.
    std::fs::write(repo.dir().join("refs/heads/main.lock"), "").unwrap();
    let err = repo
        .publish("a", files("2\n", &[]), &ada(), "two")
        .unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::Internal, "{err}");
    assert!(err.to_string().contains("git update-ref failed"), "{err}");
    std::fs::remove_file(repo.dir().join("refs/heads/main.lock")).unwrap();
    assert!(
        repo.publish("a", files("2\n", &[]), &ada(), "two")
            .unwrap()
            .changed
    );
}

#[test]
fn a_kept_snapshot_is_handed_out_only_while_its_commit_is_on_main() {
    let (_dir, repo) = fresh();
    let v1 = repo.publish("a", files("1\n", &[]), &ada(), "one").unwrap();
    let first = repo.get("a", None).unwrap();
    // Read again, at the head and at its full id: the same files.
    assert_eq!(repo.get("a", None).unwrap(), first);
    assert_eq!(repo.get("a", Some(&v1.version.commit)).unwrap(), first);
    let out = tempfile::tempdir().unwrap();
    assert_eq!(repo.checkout_head("a", out.path()).unwrap(), first);
    assert_eq!(
        std::fs::read(out.path().join("workflow.yaml")).unwrap(),
        b"1\n"
    );
    let v2 = repo.publish("a", files("2\n", &[]), &ada(), "two").unwrap();
    // The head moved: the new version, not the kept one.
    let second = repo.get("a", None).unwrap();
    assert_eq!(second.commit, v2.version.commit);
    assert_eq!(second.file("workflow.yaml").unwrap().content, b"2\n");
    // The old version is still on main.
    assert_eq!(repo.get("a", Some(&v1.version.commit)).unwrap(), first);
    // Another writer (not orch) rewinds main to a commit of its own that
    // has neither version: the kept snapshots are on main no more.
    let empty_tree = git(repo.dir(), &["mktree"]);
    let foreign = foreign_commit(repo.dir(), empty_tree.trim(), &[], "foreign root");
    git(
        repo.dir(),
        &["update-ref", "refs/heads/main", foreign.trim()],
    );
    for at in [&v1.version.commit, &v2.version.commit] {
        let err = repo.get("a", Some(at)).unwrap_err();
        assert_eq!(err.kind(), RepoErrorKind::NotFound, "{err}");
    }
    let err = repo.get("a", None).unwrap_err();
    assert_eq!(err.kind(), RepoErrorKind::NotFound, "{err}");
}
