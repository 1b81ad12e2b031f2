//! Two `#[orch::task]` functions with the same task name: the binary
//! refuses to orchestrate (a child started for the name could run either).
//! Its own test binary, since every run in it is refused.

mod a {
    #[orch::task(name = "dup")]
    pub fn one(x: u64) -> u64 {
        x
    }
}

mod b {
    #[orch::task(name = "dup")]
    pub fn two(x: u64) -> u64 {
        x + 1
    }
}

#[test]
fn two_tasks_with_one_name_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut wf = orch::Workflow::new("dup");
    wf.dir(dir.path()).db(dir.path().join("orch.db"));
    wf.add(b::two::call(7));
    let err = wf.run().unwrap_err().to_string();
    assert!(
        err.contains("two #[orch::task] functions are named `dup`")
            && err.contains("duplicate_tasks::a")
            && err.contains("duplicate_tasks::b"),
        "{err}"
    );
    assert!(!dir.path().join("orch.db").exists(), "no run was started");
}
