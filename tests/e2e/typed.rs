//! Typed native tasks, run for real: the tasks below are defined in this
//! test binary, so every native attempt is this binary started again in
//! task mode while libtest owns `main`.

use orch::promise::Promise;
use orch::{Context, Failure, NodeState, RunExport, RunStatus, Task};
use serde::{Deserialize, Serialize};

use crate::util::*;

#[orch::task]
fn numbers(count: u64) -> Vec<u64> {
    (1..=count).collect()
}

#[orch::task]
fn square(x: u64) -> u64 {
    x * x
}

#[orch::task]
async fn total(xs: Vec<u64>) -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    xs.iter().sum()
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Facts {
    pid: u32,
    pgid: u32,
    marker_seen: bool,
    child_saw_marker: bool,
    /// What a child reading its inherited stdin read.
    child_stdin: String,
    /// Descriptors above 2 that a child would inherit.
    inheritable: Vec<i32>,
}

/// The descriptors above 2 of this process that a child would inherit.
fn inheritable_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| fd > 2)
        // SAFETY: F_GETFD only reads the descriptor's flags.
        .filter(|&fd| {
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .collect()
}

/// Where and how it runs.
#[orch::task]
fn facts() -> Facts {
    println!("this goes to the log, not the protocol");
    let child = std::process::Command::new("sh")
        .args(["-c", "test -n \"$ORCH_NATIVE_TASK\" && echo yes || echo no"])
        .output()
        .expect("sh runs");
    let cat = std::process::Command::new("cat")
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("cat runs");
    Facts {
        inheritable: inheritable_fds(),
        child_stdin: String::from_utf8_lossy(&cat.stdout).into_owned(),
        pid: std::process::id(),
        // SAFETY: getpgrp has no preconditions.
        pgid: unsafe { libc::getpgrp() } as u32,
        marker_seen: std::env::var_os(orch::native::TASK_ENV).is_some(),
        child_saw_marker: String::from_utf8_lossy(&child.stdout).trim() == "yes",
    }
}

/// Adds `n` typed nodes at run time, and a promise about them.
#[orch::task]
fn fan_out(ctx: &mut Context, n: u64) -> orch::Result<Vec<String>> {
    ctx.promise(Promise::OnlyNodes {
        pattern: "task:square".into(),
    })?;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(ctx.add(square::call(i + 1))?.id().to_string());
    }
    Ok(ids)
}

/// Adds a node whose input has the wrong type, untyped, and reports what
/// the orchestrator said.
#[orch::task]
fn bad_add(ctx: &mut Context) -> String {
    let inputs = serde_json::json!({"x": "seven"});
    match ctx.add_node("sq", Task::native("square"), inputs, Default::default()) {
        Ok(()) => "accepted".into(),
        Err(e) => e.to_string(),
    }
}

#[orch::task(retries = 2)]
fn flaky(ctx: &mut Context, fail_until: u32) -> Result<u32, Failure> {
    if ctx.attempt() < fail_until {
        return Err(Failure::retryable(format!(
            "attempt {} failed",
            ctx.attempt()
        )));
    }
    Ok(ctx.attempt())
}

#[orch::task(retries = 3)]
fn doomed() -> Result<(), Failure> {
    Err(Failure::terminal("no point retrying"))
}

#[orch::task]
fn explode(n: u32) -> u32 {
    if n > 0 {
        panic!("n was {n}");
    }
    n
}

/// An argument named like its function, and a raw identifier.
#[orch::task]
fn twice(twice: u64, r#type: String) -> String {
    format!("{} {type}", twice * 2)
}

#[orch::task(name = "renamed")]
fn with_a_name(s: String) -> String {
    s.to_uppercase()
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
enum Coin {
    Heads,
    Tails,
}

#[orch::task]
fn toss(heads: bool) -> Coin {
    if heads {
        Coin::Heads
    } else {
        Coin::Tails
    }
}

#[orch::task]
fn shout(c: Coin) -> String {
    format!("{c:?}!")
}

#[orch::task]
fn count_to(n: u32) -> Vec<u32> {
    (0..n).collect()
}

#[orch::task]
fn describe(xs: Vec<u32>) -> String {
    format!("{} items", xs.len())
}

fn pids(ex: &RunExport) -> Vec<u32> {
    ex.nodes
        .iter()
        .flat_map(|n| n.attempts.iter().filter_map(|a| a.pid))
        .collect()
}

#[test]
fn a_typed_map_runs_every_task_in_its_own_process() {
    let space = Space::new();
    let mut wf = space.workflow("typed");
    wf.live_picture(false);
    let xs = wf.add(numbers::call(4));
    let squares = wf.map(&xs, square::call);
    let sum = wf.add(total::call(squares.output()));
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.reason);
    assert_eq!(
        ex.node(sum.id()).unwrap().output,
        Some(serde_json::json!(30))
    );
    assert_eq!(
        ex.node("square.all").unwrap().output,
        Some(serde_json::json!([1, 4, 9, 16]))
    );
    for i in 0..4 {
        let copy = ex.node(&format!("square[{i}]")).unwrap();
        assert_eq!(copy.task.name, "square");
        assert_eq!(copy.state, NodeState::Succeeded);
    }
    let pids = pids(&ex);
    assert_eq!(
        pids.len(),
        ex.nodes.len(),
        "one attempt with a pid per node"
    );
    assert!(pids
        .iter()
        .all(|&p| Some(p) != ex.orchestrator_pid && p != std::process::id()));
    let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
    assert_eq!(
        distinct.len(),
        pids.len(),
        "each attempt is its own process"
    );
}

#[test]
fn an_empty_collection_maps_to_an_empty_vec() {
    let space = Space::new();
    let mut wf = space.workflow("typed-empty");
    wf.live_picture(false);
    let xs = wf.add(numbers::call(0));
    let squares = wf.map(&xs, square::call);
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert_eq!(
        ex.node(squares.id()).unwrap().output,
        Some(serde_json::json!([]))
    );
    assert!(edge_set(&ex).contains(&("square.each".into(), "square.all".into())));
}

#[test]
fn task_mode_clears_the_marker_and_owns_a_process_group() {
    let space = Space::new();
    let mut wf = space.workflow("facts");
    wf.live_picture(false);
    let f = wf.add(facts::call());
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let facts: Facts =
        serde_json::from_value(ex.node(f.id()).unwrap().output.clone().unwrap()).unwrap();
    assert_eq!(
        facts.pid, facts.pgid,
        "the task leads its own process group"
    );
    assert_eq!(Some(facts.pid), ex.node(f.id()).unwrap().attempts[0].pid);
    assert!(
        !facts.marker_seen,
        "the marker is cleared before task code runs"
    );
    assert!(
        !facts.child_saw_marker,
        "children of the task never see the marker"
    );
    assert_eq!(
        facts.child_stdin, "",
        "a child reading stdin gets EOF, not the protocol"
    );
    // Whatever this test process passes down (cargo's jobserver) aside,
    // the task holds no descriptor a child would inherit: the protocol's
    // are close-on-exec.
    let ours = inheritable_fds();
    assert!(
        facts.inheritable.iter().all(|fd| ours.contains(fd)),
        "the task's inheritable fds {:?} beyond the orchestrator's {ours:?}",
        facts.inheritable
    );
    let logs = logs_text(&space, &outcome.run, f.id());
    assert!(
        logs.contains("this goes to the log, not the protocol"),
        "{logs}"
    );
}

#[test]
fn a_native_task_grows_the_graph_with_typed_nodes() {
    let space = Space::new();
    let mut wf = space.workflow("fan-out");
    wf.live_picture(false);
    let f = wf.add(fan_out::call(3));
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let ids: Vec<String> =
        serde_json::from_value(ex.node(f.id()).unwrap().output.clone().unwrap()).unwrap();
    assert_eq!(
        ids,
        [
            "fan_out.square[0]",
            "fan_out.square[1]",
            "fan_out.square[2]"
        ]
    );
    for (i, id) in ids.iter().enumerate() {
        let n = ex.node(id).unwrap();
        assert_eq!(n.output, Some(serde_json::json!((i + 1) * (i + 1))));
    }
    assert_eq!(ex.promises.len(), 1, "{:?}", ex.promises);
}

#[test]
fn run_time_nodes_are_type_checked_and_the_error_names_the_field() {
    let space = Space::new();
    let mut wf = space.workflow("bad-add");
    wf.live_picture(false);
    let b = wf.add(bad_add::call());
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let said = ex.node(b.id()).unwrap().output.clone().unwrap();
    let said = said.as_str().unwrap();
    assert!(
        said.contains("add_node `sq`")
            && said.contains("input `x` of task `square` must be a `u64`"),
        "{said}"
    );
    assert!(ex.node("sq").is_none(), "the refused node was not added");
}

#[test]
fn a_python_task_adding_a_native_node_gets_the_same_check() {
    let space = Space::new();
    space.write(
        "add.py",
        r#"
import orch
ctx = orch.start()
try:
    ctx.add_node("sq", task={"kind": "native", "task": "square"}, inputs={"y": 1})
    orch.output("accepted")
except orch.OrchError as e:
    orch.output(str(e))
"#,
    );
    let mut wf = space.workflow("py-adds-native");
    wf.live_picture(false);
    wf.node("add", Task::python("add.py"));
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let said = ex.node("add").unwrap().output.clone().unwrap();
    assert!(
        said.as_str()
            .unwrap()
            .contains("task `square` has no input `y`; it takes x: u64"),
        "{said}"
    );
}

#[test]
fn registration_checks_untyped_native_nodes() {
    let space = Space::new();
    let mut wf = space.workflow("bad-registration");
    wf.node("a", Task::native("square")).input("x", -3);
    let err = wf.run().unwrap_err().to_string();
    assert!(
        err.contains("add_node `a`") && err.contains("input `x` of task `square` must be a `u64`"),
        "{err}"
    );
    let mut wf = space.workflow("unknown-native");
    wf.node("a", Task::native("nope"));
    let err = wf.run().unwrap_err().to_string();
    assert!(err.contains("no native task `nope`"), "{err}");
}

#[test]
fn a_python_output_is_checked_against_its_declared_type() {
    let space = Space::new();
    space.write(
        "good.py",
        "import orch\norch.start()\norch.output([1, 2, 3])\n",
    );
    space.write(
        "bad.py",
        "import orch\norch.start()\norch.output({'oops': True})\n",
    );
    let mut wf = space.workflow("py-typed");
    wf.live_picture(false);
    let good = wf
        .node("good", Task::python("good.py"))
        .returns::<Vec<u64>>();
    let sum = wf.add(total::call(good.output()));
    // A typed output feeds an untyped node just as well.
    space.write(
        "echo.py",
        "import orch\nctx = orch.start()\norch.output(ctx.inputs['n'] * 10)\n",
    );
    wf.node("echo", Task::python("echo.py"))
        .input("n", sum.output());
    wf.node("bad", Task::python("bad.py")).returns::<Vec<u64>>();
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(ex.node("total").unwrap().output, Some(serde_json::json!(6)));
    assert_eq!(ex.node("echo").unwrap().output, Some(serde_json::json!(60)));
    let bad = ex.node("bad").unwrap();
    assert_eq!(bad.state, NodeState::Failed);
    let error = bad.attempts[0].error.clone().unwrap();
    assert!(
        error.contains("node `bad`") && error.contains("is not a `Vec<u64>`"),
        "{error}"
    );
}

/// Runs one typed node alone and exports the run.
fn run_one<T: orch::TaskDef>(call: orch::Call<T>) -> (Space, orch::RunOutcome, RunExport, String) {
    let space = Space::new();
    let mut wf = space.workflow("one");
    wf.live_picture(false);
    let id = wf.add(call).id().to_string();
    let (outcome, ex) = space.run(&wf);
    (space, outcome, ex, id)
}

#[test]
fn retries_failures_and_panics_behave_like_other_tasks() {
    let (_, outcome, ex, id) = run_one(flaky::call(3));
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let flaky = ex.node(&id).unwrap();
    assert_eq!(flaky.output, Some(serde_json::json!(3)));
    assert_eq!(flaky.attempts.len(), 3);
    assert!(flaky.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("attempt 1 failed"));
    assert_eq!(
        flaky.attempts[0].exit_code,
        Some(1),
        "a task that returns Err exits 1, as a Python task's fail does"
    );

    let (_, outcome, ex, id) = run_one(doomed::call());
    assert_eq!(outcome.status, RunStatus::Failed);
    let doomed = ex.node(&id).unwrap();
    assert_eq!(
        doomed.attempts.len(),
        1,
        "a terminal failure is not retried"
    );
    assert!(doomed.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("no point retrying"));

    let (space, outcome, ex, id) = run_one(explode::call(7));
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = ex.node(&id).unwrap().attempts[0].error.clone().unwrap();
    assert!(
        error.contains("native task `explode` panicked: n was 7"),
        "{error}"
    );
    assert!(logs_text(&space, &outcome.run, &id).contains("n was 7"));
    assert_eq!(
        ex.node(&id).unwrap().attempts[0].exit_code,
        Some(101),
        "a panic exits 101, as a Rust program's does"
    );

    assert_eq!(
        format!("{:?}", <twice as orch::TaskDef>::fields()),
        "[twice: u64, type: String]"
    );
    let (_, outcome, ex, id) = run_one(twice::call(21, "apples"));
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert_eq!(
        ex.node(&id).unwrap().output,
        Some(serde_json::json!("42 apples"))
    );
    assert_eq!(ex.node(&id).unwrap().inputs["type"], "apples");

    let (_, outcome, ex, id) = run_one(with_a_name::call("quiet"));
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert_eq!(id, "renamed");
    let renamed = ex.node(&id).unwrap();
    assert_eq!(renamed.task.name, "renamed");
    assert_eq!(renamed.output, Some(serde_json::json!("QUIET")));
}

#[test]
fn a_typed_branch_adds_exactly_the_chosen_case() {
    for heads in [true, false] {
        let space = Space::new();
        let mut wf = space.workflow("branch");
        wf.live_picture(false);
        let coin = wf.add(toss::call(heads));
        let result = wf
            .branch(&coin)
            .case(Coin::Heads, |b, c| b.add(shout::call(c)))
            .case(Coin::Tails, |b, _| {
                let xs = b.add(count_to::call(3));
                b.add(describe::call(xs.output()))
            })
            .join();
        let (outcome, ex) = space.run(&wf);
        assert!(outcome.succeeded(), "{:?}", outcome.reason);
        let out = ex.node(result.id()).unwrap().output.clone().unwrap();
        let ids = node_ids(&ex);
        if heads {
            assert_eq!(out, "Heads!");
            assert!(ids.contains("toss.Heads.shout"));
            assert!(!ids.iter().any(|i| i.starts_with("toss.Tails")));
        } else {
            assert_eq!(out, "3 items");
            assert!(edge_set(&ex)
                .contains(&("toss.Tails.count_to".into(), "toss.Tails.describe".into())));
            assert!(!ids.iter().any(|i| i.starts_with("toss.Heads")));
        }
    }
}

#[test]
fn a_branch_that_is_not_a_chain_is_refused_at_registration() {
    let space = Space::new();
    let mut wf = space.workflow("bad-branch");
    let coin = wf.add(toss::call(true));
    wf.branch(&coin)
        .case(Coin::Heads, |b, c| {
            let a = b.add(shout::call(c));
            b.add(with_a_name::call(a.output()));
            a
        })
        .join();
    let err = wf.run().unwrap_err().to_string();
    assert!(
        err.contains("case `Heads`") && err.contains("result"),
        "{err}"
    );
}

#[test]
fn a_binary_started_for_an_unknown_task_refuses_to_orchestrate() {
    let space = Space::new();
    let out = space.example("typed_map", &[("ORCH_NATIVE_TASK", "no_such_task")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("native task `no_such_task`") && stderr.contains("numbers, square, total"),
        "{stderr}"
    );
    assert!(!space.db().exists(), "no run was started");
}

#[test]
fn the_typed_examples_run_and_every_native_attempt_is_a_child() {
    let space = Space::new();
    let out = space.example("typed_map", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ex = space.export(&printed_run(&out));
    assert_eq!(
        ex.node("total").unwrap().output,
        Some(serde_json::json!(55))
    );
    let pids = pids(&ex);
    assert_eq!(pids.len(), ex.nodes.len());
    assert!(pids.iter().all(|&p| Some(p) != ex.orchestrator_pid));
    for value in ["small", "large"] {
        let out = space.example_args("typed_branch", &["--value", value]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ex = space.export(&printed_run(&out));
        let report = ex.node("report").unwrap().output.clone().unwrap();
        let want = if value == "small" {
            "Small: done in one step"
        } else {
            "Large: combined 4 parts"
        };
        assert_eq!(report, want);
    }
}

#[test]
fn a_crate_outside_the_workspace_runs_a_typed_workflow() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = root.join("tests/outside/Cargo.toml");
    // The outer `cargo test` may hold the lock of the workspace's target
    // folder; share the compile-fail tests' one (same dependencies, built
    // for the host triple), which saves a second build of them.
    let target = root.join("target/tests/trybuild");
    let triple = host_triple();
    let space = Space::new();
    let out = std::process::Command::new(cargo())
        .args(["run", "--quiet", "--target", &triple, "--manifest-path"])
        .arg(&manifest)
        .arg("--")
        .arg(space.path())
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ex = space.export(&printed_run(&out));
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(
        ex.node("longest").unwrap().output,
        Some(serde_json::json!("workflows"))
    );
    let binary = target.join(&triple).join("debug/orch-outside");
    for n in &ex.nodes {
        let pid = n.attempts[0].pid.expect("a process");
        assert_ne!(Some(pid), ex.orchestrator_pid, "{} ran in a child", n.id);
    }
    assert!(binary.exists());
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn host_triple() -> String {
    let out = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

#[test]
fn the_orch_cli_resumes_a_typed_run_in_the_recorded_binary() {
    for point in ["after_spawn", "before_commit"] {
        let space = Space::new();
        // The orchestrator dies like `kill -9` while `square[2]` runs (or
        // just before its batch commits).
        let fault = format!("{point}:square[2]");
        let out = space.example("typed_map", &[("ORCH_FAULT", &fault)]);
        // The CLI binary defines no task: it starts the recorded one.
        let ex = resume_killed(&space, out.status, point);
        assert_eq!(ex.status, RunStatus::Succeeded, "{point}");
        assert_eq!(
            ex.node("total").unwrap().output,
            Some(serde_json::json!(55)),
            "{point}"
        );
        let copy = ex.node("square[2]").unwrap();
        assert_eq!(copy.attempts.len(), 2, "{point}: square[2] ran again");
        assert_eq!(
            ex.node("numbers").unwrap().attempts.len(),
            1,
            "{point}: done work stays done"
        );
    }
}

#[test]
fn two_maps_and_two_branches_on_the_same_nodes_get_their_own_ids() {
    let space = Space::new();
    let mut wf = space.workflow("twice");
    wf.live_picture(false);
    let xs = wf.add(numbers::call(3));
    let a = wf.map(&xs, square::call);
    let b = wf.map(&xs, square::call);
    let s = wf.add(square::call(2));
    assert_eq!(
        (a.id(), b.id(), s.id()),
        ("square.all", "square_2.all", "square_3")
    );
    let coin = wf.add(toss::call(true));
    let first = wf
        .branch(&coin)
        .case(Coin::Heads, |b, c| b.add(shout::call(c)))
        .otherwise(|b, c| b.add(shout::call(c)))
        .join();
    let second = wf
        .branch(&coin)
        .case(Coin::Heads, |b, c| b.add(shout::call(c)))
        .otherwise(|b, c| b.add(shout::call(c)))
        .join();
    assert_eq!((first.id(), second.id()), ("toss.join", "toss_2.join"));
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert_eq!(
        ex.node(b.id()).unwrap().output,
        Some(serde_json::json!([1, 4, 9]))
    );
    assert_eq!(
        ex.node(second.id()).unwrap().output,
        Some(serde_json::json!("Heads!"))
    );
    assert!(ex.node("toss_2.Heads.shout").is_some());
}

#[test]
fn templates_keep_ordering_edges_and_attributes() {
    let space = Space::new();
    let mut wf = space.workflow("after");
    wf.live_picture(false);
    let first = wf.add(square::call(3));
    let coin = wf.add(toss::call(true));
    let result = wf
        .branch(&coin)
        .case(Coin::Heads, |b, c| {
            let s = b.add(shout::call(c).attr("color", "gold"));
            // Runs after a node of the case (no data) and after one outside.
            b.add(square::call(2).after(&s).after(&first))
        })
        .otherwise(|b, _| b.add(square::call(1)))
        .join();
    let xs = wf.add(numbers::call(2));
    wf.map(&xs, |x| square::call(x).attr("color", "blue"));
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert_eq!(
        ex.node(result.id()).unwrap().output,
        Some(serde_json::json!(4))
    );
    let e = edge_set(&ex);
    assert!(e.contains(&("toss.Heads.shout".into(), "toss.Heads.square".into())));
    assert!(
        e.contains(&("square".into(), "toss.switch".into())),
        "{e:?}"
    );
    assert_eq!(ex.node("toss.Heads.shout").unwrap().attrs["color"], "gold");
    assert_eq!(ex.node("square_2[1]").unwrap().attrs["color"], "blue");
}
