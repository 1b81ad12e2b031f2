//! The examples keep their final-DAG properties over repeated runs.

use orch::Store as _;
use std::collections::BTreeSet;

use orch::{NodeState, RunStatus};

use crate::util::*;

fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "example failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn random_map_is_always_a_then_m_star_then_b() {
    let space = Space::new();
    let mut ks = BTreeSet::new();
    // Every k once, then a few random ones.
    let forced: Vec<Option<u32>> = (0..=8).map(Some).chain([None, None, None]).collect();
    for k in forced {
        let k_text = k.map(|k| k.to_string()).unwrap_or_default();
        let env: Vec<(&str, &str)> = k
            .iter()
            .map(|_| ("ORCH_EXAMPLE_K", k_text.as_str()))
            .collect();
        let out = space.example("random_map", &env);
        assert_ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("run started") && !stderr.contains('\x1b'),
            "logs into a pipe carry no colour codes: {stderr:?}"
        );
        let ex = space.export(&printed_run(&out));
        assert_eq!(ex.status, RunStatus::Succeeded);
        let got_k = ex.node("A").unwrap().output.as_ref().unwrap()["k"]
            .as_u64()
            .unwrap() as usize;
        if let Some(k) = k {
            assert_eq!(got_k, k as usize);
        }
        ks.insert(got_k);
        let ms: Vec<String> = (0..got_k).map(|i| format!("M_{i}")).collect();
        let mut want_nodes: BTreeSet<String> = ms.iter().cloned().collect();
        want_nodes.extend(["A".to_string(), "B".to_string()]);
        assert_eq!(node_ids(&ex), want_nodes);
        let want_edges: BTreeSet<(String, String)> = if got_k == 0 {
            edges(&[("A", "B")])
        } else {
            ms.iter()
                .flat_map(|m| [("A".to_string(), m.clone()), (m.clone(), "B".to_string())])
                .collect()
        };
        assert_eq!(edge_set(&ex), want_edges, "k = {got_k}");
        for m in &ms {
            assert_eq!(ex.node(m).unwrap().task.name, "M");
        }
        let sum: u64 = (0..got_k as u64).map(|i| i * i).sum();
        assert_eq!(ex.node("B").unwrap().output.as_ref().unwrap()["sum"], sum);
        assert!(ex.nodes.iter().all(|n| n.state == NodeState::Succeeded));
    }
    assert!(
        (0..=8).all(|k| ks.contains(&k)),
        "every forced k was run: {ks:?}"
    );
}

#[test]
fn random_branch_is_one_whole_branch() {
    let space = Space::new();
    let left = edges(&[
        ("start", "choose"),
        ("choose", "left_1"),
        ("left_1", "left_2"),
        ("left_2", "end"),
    ]);
    let right = edges(&[("start", "choose"), ("choose", "right"), ("right", "end")]);
    let mut seen = BTreeSet::new();
    let seeds = ["0", "1", "", "", "", ""];
    for seed in seeds {
        let env: Vec<(&str, &str)> = if seed.is_empty() {
            vec![]
        } else {
            vec![("ORCH_EXAMPLE_SEED", seed)]
        };
        let out = space.example("random_branch", &env);
        assert_ok(&out);
        let ex = space.export(&printed_run(&out));
        assert_eq!(ex.status, RunStatus::Succeeded);
        let got = edge_set(&ex);
        let branch = ex.node("choose").unwrap().output.as_ref().unwrap()["branch"]
            .as_str()
            .unwrap()
            .to_string();
        match branch.as_str() {
            "left" => assert_eq!(got, left),
            "right" => assert_eq!(got, right),
            other => panic!("branch {other}"),
        }
        let ids = node_ids(&ex);
        assert_eq!(ids.contains("right"), branch == "right", "never a mix");
        assert_eq!(ids.contains("left_1"), branch == "left", "never a mix");
        seen.insert(branch);
    }
    assert_eq!(seen.len(), 2, "seeds 0 and 1 give both variants");
}

#[test]
fn static_pipeline_is_the_same_dag_every_time() {
    let space = Space::new();
    let want = edges(&[("start", "1"), ("start", "2"), ("2", "end")]);
    for _ in 0..3 {
        let out = space.example("static_pipeline", &[]);
        assert_ok(&out);
        let ex = space.export(&printed_run(&out));
        assert_eq!(ex.status, RunStatus::Succeeded);
        assert_eq!(edge_set(&ex), want);
        let ids: Vec<&str> = ex.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["start", "1", "2", "end"]);
        // One batch only: the registration.
        let batches = space
            .store()
            .events(&ex.run, None)
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.kind, orch::EventKind::BatchCommitted { .. }))
            .count();
        assert_eq!(batches, 1);
    }
}

#[test]
fn fully_dynamic_grows_two_levels_from_one_node() {
    let space = Space::new();
    let out = space.example("fully_dynamic", &[]);
    assert_ok(&out);
    let ex = space.export(&printed_run(&out));
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(
        node_ids(&ex),
        ["root", "root.0", "root.1", "root.0.0", "root.0.1", "root.1.0", "root.1.1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        edge_set(&ex),
        edges(&[
            ("root", "root.0"),
            ("root", "root.1"),
            ("root.0", "root.0.0"),
            ("root.0", "root.0.1"),
            ("root.1", "root.1.0"),
            ("root.1", "root.1.1"),
        ])
    );
    // Only the root was registered.
    let registered = space.cli(&["export", "latest", "--registered"]);
    assert!(registered.status.success());
    let reg: orch::RunExport = serde_json::from_slice(&registered.stdout).unwrap();
    assert_eq!(reg.nodes.len(), 1);
}

#[test]
fn attempts_never_overlap_by_default() {
    let space = Space::new();
    space.write(
        "nap.py",
        "import time, orch\norch.start()\ntime.sleep(0.05)\norch.output(1)\n",
    );
    let mut wf = space.workflow("serial");
    for i in 0..5 {
        wf.node(format!("n{i}"), orch::Task::python("nap.py"));
    }
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded());
    let mut spans: Vec<(String, String)> = ex
        .nodes
        .iter()
        .flat_map(|n| &n.attempts)
        .map(|a| (a.started_at.clone(), a.finished_at.clone().unwrap()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "attempts overlap: {w:?}");
    }
    let order: Vec<&str> = {
        let mut v: Vec<_> = ex.nodes.iter().collect();
        v.sort_by_key(|n| n.started_at.clone());
        v.iter().map(|n| n.id.as_str()).collect()
    };
    assert_eq!(order, ["n0", "n1", "n2", "n3", "n4"], "insertion order");
}

/// Needs Podman and the images of `.ci/images` (see `containers.rs`).
#[test]
fn the_containers_example_runs_a_shell_and_a_python_task() {
    crate::containers::podman_ready();
    let space = Space::new();
    let out = space.example("containers", &[]);
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ex = space.export(&printed_run(&out));
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert!(
        node_ids(&ex)
            == ["generate", "summary"]
                .map(String::from)
                .into_iter()
                .collect(),
        "{:?}",
        node_ids(&ex)
    );
    assert_eq!(
        ex.node("summary").unwrap().output,
        Some(serde_json::json!({"count": 10, "sum": 55, "mean": 5.5, "max": 10}))
    );
}

#[test]
fn late_merge_always_merges_every_pdf_once() {
    let space = Space::new();
    for seed in ["11", "12", "13"] {
        let out = space.example("late_merge", &[("ORCH_EXAMPLE_SEED", seed)]);
        assert_ok(&out);
        let ex = space.export(&printed_run(&out));
        assert_eq!(ex.status, RunStatus::Succeeded);
        let pdfs: BTreeSet<String> = ex
            .nodes
            .iter()
            .filter(|n| n.task.name == "pdf")
            .map(|n| n.id.clone())
            .collect();
        assert!(pdfs.contains("cover"), "seed {seed}: {pdfs:?}");
        let into_merge: BTreeSet<String> = ex
            .edges
            .iter()
            .filter(|e| e.to == "merge")
            .map(|e| e.from.clone())
            .collect();
        assert_eq!(into_merge, pdfs, "seed {seed}: merge waits for every pdf");
        assert!(ex.nodes.iter().all(|n| n.state == NodeState::Succeeded));
    }
}

#[test]
fn loop_until_converges_to_sqrt_2_with_a_chain_of_iterations() {
    let space = Space::new();
    for tol in ["1e-3", "1e-12"] {
        let out = space.example("loop_until", &[("ORCH_EXAMPLE_TOL", tol)]);
        assert_ok(&out);
        let ex = space.export(&printed_run(&out));
        assert_eq!(ex.status, RunStatus::Succeeded);
        let n = ex.node("report").unwrap().output.as_ref().unwrap()["iterations"]
            .as_u64()
            .unwrap();
        let refines: BTreeSet<String> = ex
            .nodes
            .iter()
            .filter(|n| n.task.name == "refine")
            .map(|n| n.id.clone())
            .collect();
        let want: BTreeSet<String> = (1..=n).map(|k| format!("refine#{k}")).collect();
        assert_eq!(refines, want, "tol {tol}: one node per iteration");
        assert!(ex.nodes.iter().all(|n| n.state == NodeState::Succeeded));
    }
}
