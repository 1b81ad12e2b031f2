//! Workflow files through the `orch` command line: `orch run` runs one to
//! the end (the shipped examples too), `orch validate` checks files and
//! names the file, line, column and task at fault, `orch schema` prints
//! the JSON Schema.

use std::path::Path;

use orch::{NodeState, RunStatus, Store as _};
use serde_json::{json, Value};

use crate::util::Space;

/// Copies the files of `examples/pipelines` into the space.
fn with_examples(space: &Space) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipelines");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            space.write(
                path.file_name().unwrap().to_str().unwrap(),
                &std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn orch_run_runs_the_tork_style_example_with_its_sugar_and_params() {
    let space = Space::new();
    with_examples(&space);
    let out = space.cli(&["run", "thumbnails.yaml", "--param", "count=4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = space.store().resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(ex.workflow, "thumbnails");
    for n in &ex.nodes {
        assert_eq!(n.state, NodeState::Succeeded, "{}", n.id);
    }
    // each: four copies named after the task, gathered in order.
    let copies: Vec<&str> = ex
        .nodes
        .iter()
        .filter(|n| n.id.starts_with("thumbs["))
        .map(|n| n.task.name.as_str())
        .collect();
    assert_eq!(copies, ["resize"; 4]);
    assert_eq!(
        ex.node("thumbs").unwrap().output,
        Some(json!([
            "out/thumb-0.txt",
            "out/thumb-1.txt",
            "out/thumb-2.txt",
            "out/thumb-3.txt"
        ]))
    );
    assert_eq!(ex.node("report").unwrap().output, Some(json!(4)));
    // pre, parallel and post as plain edges.
    let edges: std::collections::BTreeSet<(String, String)> = crate::util::edge_set(&ex);
    for (from, to) in [
        ("prepare", "list"),
        ("list", "thumbs.each"),
        ("thumbs", "count_files"),
        ("thumbs", "total_size"),
        ("count_files", "report"),
        ("total_size", "report"),
        ("report", "cleanup"),
    ] {
        assert!(
            edges.contains(&(from.into(), to.into())),
            "{from} -> {to} in {edges:?}"
        );
    }
    assert!(
        !space.path().join("out").exists(),
        "the post task cleaned up"
    );
}

#[test]
fn orch_run_of_the_seed_pipeline_in_yaml_and_a_failing_file_exits_like_the_examples() {
    let space = Space::new();
    with_examples(&space);
    let out = space.cli(&["run", "hello.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = space.cli(&["logs", "latest", "print_test2"]);
    assert!(text(&logs.stdout).contains("test2"));

    space.write(
        "fails.yaml",
        "name: fails\nkeep_going: true\ntasks:\n  - {id: bad, command: 'exit 3'}\n  - {id: after_bad, command: [true], after: [bad]}\n  - {id: fine, command: [true]}\n",
    );
    let out = space.cli(&["run", "fails.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let run = space.store().resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Failed);
    assert_eq!(
        ex.node("fine").unwrap().state,
        NodeState::Succeeded,
        "the file keeps going"
    );
    assert_eq!(
        ex.node("after_bad").unwrap().state,
        NodeState::UpstreamFailed
    );
}

#[test]
fn orch_validate_names_the_file_line_column_and_task_and_runs_nothing() {
    let space = Space::new();
    with_examples(&space);
    space
        .write("typo.yaml", "name: t\ntasks:\n  - id: a\n    pyhton: a.py\n")
        .write(
            "dangling.yaml",
            "name: d\ntasks:\n  - id: a\n    command: [a]\n  - id: b\n    command: [b]\n    after: [a, nope]\n",
        )
        .write(
            "cycle.yaml",
            "name: c\ntasks:\n  - {id: a, command: [a], after: [b]}\n  - {id: b, command: [b], after: [a]}\n",
        )
        .write("garbage.json", "{\"name\": \"g\", \"tasks\": [}\n");
    let ok = space.cli(&["validate", "hello.yaml", "thumbnails.yaml"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(
        text(&ok.stdout),
        "hello.yaml: ok (workflow `test_yaml`, 2 nodes)\nthumbnails.yaml: ok (workflow `thumbnails`, 8 nodes)\n"
    );
    let bad = space.cli(&[
        "validate",
        "typo.yaml",
        "dangling.yaml",
        "cycle.yaml",
        "garbage.json",
        "missing.yaml",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "one line per bad file: {err}");
    let root = space.path().canonicalize().unwrap();
    let at = |f: &str| root.join(f).display().to_string();
    assert!(
        lines[0].starts_with(&format!("{}:4:5: ", at("typo.yaml"))),
        "{err}"
    );
    assert!(lines[0].contains("pyhton"), "{err}");
    assert_eq!(
        lines[1],
        format!(
            "{}:7:16: task `b`: after names `nope`, which is no task of dangling.yaml",
            at("dangling.yaml")
        )
    );
    assert!(
        lines[2].starts_with(&format!("{}:", at("cycle.yaml"))) && lines[2].contains("cycle"),
        "{err}"
    );
    assert!(
        lines[3].starts_with(&format!("{}:1:", at("garbage.json"))),
        "{err}"
    );
    assert!(
        lines[4].starts_with("missing.yaml: cannot read it"),
        "{err}"
    );
    assert!(!space.db().exists(), "validate writes no database");
}

#[test]
fn orch_schema_prints_the_json_schema_of_workflow_files() {
    let space = Space::new();
    let out = space.cli(&["schema"]);
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "orch workflow file");
    assert!(schema["required"]
        .as_array()
        .unwrap()
        .contains(&json!("tasks")));
    assert!(schema["$defs"]["TaskDoc"]["properties"]["each"].is_object());
}

#[test]
fn the_seed_pipeline_file_runs_unchanged_but_for_its_import_line() {
    let space = Space::new();
    with_examples(&space);
    let ok = space.cli(&["validate", "seed.py"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(text(&ok.stdout), "seed.py: ok (workflow `test`, 2 nodes)\n");
    let out = space.cli(&["run", "seed.py"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = space.store().resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.workflow, "test");
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(
        crate::util::edge_set(&ex),
        crate::util::edges(&[("print_test1", "print_test2")])
    );
    for (node, line) in [("print_test1", "test1"), ("print_test2", "test2")] {
        let logs = space.cli(&["logs", "latest", node]);
        assert!(text(&logs.stdout).contains(line), "{}", text(&logs.stdout));
    }
}

#[test]
fn pipeline_files_that_hang_raise_or_print_garbage_are_errors_with_their_place() {
    let space = Space::new();
    let head = "from orch import Pipeline, PythonTask\n";
    space
        .write("hangs.py", &format!("{head}import time\ntime.sleep(600)\n"))
        .write("raises.py", &format!("{head}p = Pipeline('x')\nraise RuntimeError('boom in the file')\n"))
        .write("garbage.py", "import os\nprint('noise')\nos.write(1, b'{not json')\n")
        .write(
            "schedule.py",
            &format!("{head}p = Pipeline('x', schedule='0 99 * * *')\ndef f(): pass\nPythonTask('a', python_callable=f, pipeline=p)\n"),
        )
        .write(
            "cycle.py",
            &format!(
                "{head}p = Pipeline('x')\ndef f(): pass\na = PythonTask('a', python_callable=f, pipeline=p)\nb = PythonTask('b', python_callable=f, pipeline=p)\na >> b\nb >> a\n"
            ),
        )
        .write(
            "lambda.py",
            &format!("{head}p = Pipeline('x')\nPythonTask('a', python_callable=lambda: 1, pipeline=p)\n"),
        )
        .write("json.py", &format!("{head}p = Pipeline('j')\n"))
        .write(
            "child.py",
            &format!(
                "import subprocess\nkid = subprocess.Popen(['sleep', '600'])\nopen('kid', 'w').write(str(kid.pid))\n{head}p = Pipeline('c')\ndef f(): pass\nPythonTask('a', python_callable=f, pipeline=p)\n"
            ),
        );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .args([
            "validate",
            "hangs.py",
            "raises.py",
            "garbage.py",
            "schedule.py",
            "cycle.py",
            "lambda.py",
            "json.py",
            "child.py",
        ])
        // Long enough for a loaded machine to start Python for each file;
        // the one that hangs is stopped at it.
        .env("ORCH_PIPELINE_TIMEOUT", "5")
        .current_dir(space.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let root = space.path().canonicalize().unwrap();
    let at = |f: &str| root.join(f).display().to_string();
    assert!(
        err.contains(&format!(
            "{}: evaluating it took longer than 5s and was stopped",
            at("hangs.py")
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: evaluating it failed", at("raises.py"))),
        "{err}"
    );
    assert!(
        err.contains("RuntimeError: boom in the file"),
        "the traceback: {err}"
    );
    assert!(err.contains("garbage.py: declares no Pipeline"), "{err}");
    assert!(
        err.contains(&format!(
            "{}:2:1: schedule `0 99 * * *`: the hour field `99` is wrong",
            at("schedule.py")
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:", at("cycle.py"))) && err.contains("cycle"),
        "{err}"
    );
    assert!(
        err.contains("python_callable must be a top-level function"),
        "{err}"
    );
    assert!(
        err.contains("the file name `json` is a module of Python's own"),
        "{err}"
    );
    assert!(
        text(&out.stdout).contains("child.py: ok (workflow `c`, 1 nodes)"),
        "{}",
        text(&out.stdout)
    );
    // What a pipeline file starts goes with its evaluation.
    let kid: u32 = std::fs::read_to_string(space.path().join("kid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        crate::util::gone_within(kid, 10),
        "the file's child was stopped"
    );
    assert!(!space.db().exists());
}

#[test]
fn each_run_of_a_file_works_in_its_own_folder_and_lists_the_files_it_declares() {
    let space = Space::new();
    space.write(
        "count.yaml",
        r#"name: count
tasks:
  - id: bump
    command: "n=$(cat counter 2>/dev/null || echo 0); echo $((n + 1)) > counter; echo $ORCH_RUN_DIR > where; test -f $ORCH_WORKFLOW_DIR/count.yaml"
    produces: [counter, where]
  - id: missing
    command: "true"
    produces: [never.txt]
    after: [bump]
"#,
    );
    let mut runs = Vec::new();
    for _ in 0..2 {
        let out = space.cli(&["run", "count.yaml"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "`missing` fails: {}",
            text(&out.stderr)
        );
        runs.push(space.store().resolve_run("latest").unwrap());
    }
    assert!(
        !space.path().join("counter").exists(),
        "nothing written beside the file"
    );
    for run in &runs {
        // The database's folder holds each run's folder.
        let dir = space.path().join("runs").join(run).join("work");
        // Each run started from an empty folder: neither saw the other's counter.
        assert_eq!(
            std::fs::read_to_string(dir.join("counter")).unwrap().trim(),
            "1",
            "{run}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("where")).unwrap().trim(),
            dir.canonicalize().unwrap().display().to_string(),
            "ORCH_RUN_DIR names it"
        );
        let ex = space.export(run);
        let bump = &ex.node("bump").unwrap().attempts[0];
        let files: Vec<(&str, u64)> = bump
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.bytes))
            .collect();
        assert_eq!(files[0], ("counter", 2));
        assert_eq!(files[1].0, "where");
        let missing = &ex.node("missing").unwrap().attempts[0];
        assert_eq!(
            missing.error.as_deref(),
            Some("declared file `never.txt` was not produced")
        );
        let show = space.cli(&["show", run]);
        assert!(
            text(&show.stdout).contains("files produced:\n  bump: counter (2 bytes)"),
            "{}",
            text(&show.stdout)
        );
    }
    space.write(
        "link.yaml",
        "name: link\ntasks:\n  - {id: a, command: \"ln -s /etc/hostname out\", produces: [out]}\n",
    );
    space.cli(&["run", "link.yaml"]);
    let ex = space.export(&space.store().resolve_run("latest").unwrap());
    assert_eq!(
        ex.node("a").unwrap().attempts[0].error.as_deref(),
        Some("declared file `out` is a symbolic link, not a file the task wrote")
    );
    space.write(
        "escape.yaml",
        "name: e\ntasks:\n  - {id: a, command: [\"true\"], produces: [../outside]}\n",
    );
    let out = space.cli(&["validate", "escape.yaml"]);
    assert!(
        text(&out.stderr)
            .contains("produces `../outside`: a relative path inside the run's folder"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_task_whose_requirements_this_machine_cannot_meet_fails_before_it_starts() {
    let space = Space::new();
    space.write(
        "needs.yaml",
        "name: needs\nkeep_going: true\ntasks:\n  - {id: fast_disk, command: [\"true\"], requires: {labels: [ssd], cpu: 1, memory: 1M}}\n  - {id: huge, command: [\"true\"], requires: {cpu: 100000}}\n",
    );
    let run = |labels: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orch"));
        cmd.args(["run", "needs.yaml"])
            .env("ORCH_DB", space.db())
            .current_dir(space.path());
        match labels {
            Some(l) => cmd.env("ORCH_LABELS", l),
            None => cmd.env_remove("ORCH_LABELS"),
        };
        assert_eq!(cmd.output().unwrap().status.code(), Some(1));
        space.export(&space.store().resolve_run("latest").unwrap())
    };
    let ex = run(None);
    let error = |ex: &orch::RunExport, id: &str| {
        ex.node(id).unwrap().attempts[0]
            .error
            .clone()
            .unwrap_or_default()
    };
    assert!(
        error(&ex, "fast_disk")
            .contains("the task requires the labels ssd, which this machine lacks"),
        "{}",
        error(&ex, "fast_disk")
    );
    assert!(
        error(&ex, "huge").contains("the task requires cpu: 100000, and this machine offers"),
        "{}",
        error(&ex, "huge")
    );
    assert!(
        ex.node("huge").unwrap().attempts[0].pid.is_none(),
        "nothing started"
    );
    let ex = run(Some("ssd, fast"));
    assert_eq!(ex.node("fast_disk").unwrap().state, NodeState::Succeeded);
    space.write(
        "bad.yaml",
        "name: b\ntasks:\n  - {id: a, command: [\"true\"], requires: {memory: 4X}}\n",
    );
    let out = space.cli(&["validate", "bad.yaml"]);
    assert!(
        text(&out.stderr).contains("requires: memory `4X` has the unknown unit `X`"),
        "{}",
        text(&out.stderr)
    );
}
