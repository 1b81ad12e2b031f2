use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::*;
use crate::model::Exec;
use crate::promise::Promise;

/// Compiles `text` as `/w/main.yaml`; other files come from `files`.
fn compile_with(text: &str, params: Value, files: &[(&str, &str)]) -> Result<Compiled, FileError> {
    let main = PathBuf::from("/w/main.yaml");
    let doc = parse(&main, text)?;
    let files: HashMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    let mut load = |p: &Path| {
        let p = normal(p);
        let text = files
            .get(&p)
            .ok_or_else(|| FileError::new(Place::file(&p), "no such file"))?;
        Ok((p.clone(), parse(&p, text)?))
    };
    let params: Map<String, Value> = serde_json::from_value(params).unwrap();
    let c = compile(&main, &doc, &params, &mut load)?;
    check(&c)?;
    Ok(c)
}

/// `/w/sub/../x.yaml` as `/w/x.yaml` (the tests' files do not exist).
fn normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn compiled(text: &str) -> Compiled {
    compile_with(text, json!({}), &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    compile_with(text, json!({}), &[]).unwrap_err().to_string()
}

fn edges(c: &Compiled) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = c
        .definition
        .registration
        .iter()
        .filter_map(|m| match m {
            Mutation::AddEdge { from, to, .. } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    out.sort();
    out
}

fn node<'c>(c: &'c Compiled, id: &str) -> (&'c crate::Task, &'c Value) {
    c.definition
        .registration
        .iter()
        .find_map(|m| match m {
            Mutation::AddNode {
                id: i,
                task,
                inputs,
                ..
            } if i == id => Some((&**task, inputs)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no node {id}"))
}

#[test]
fn every_kind_of_task_with_its_settings() {
    let c = compiled(
        r#"
name: kinds
tasks:
  - id: a
    python: a.py
    retries: 2
    retry_delay: 500ms
    timeout: 5m
    output_required: true
    attrs: {label: first}
  - id: b
    python_fn: "stats:mean"
    inputs: {xs: [1, 2], first: {"$output": a}}
  - id: c
    command: [echo, hi]
    after: [b]
  - id: d
    command: "echo $HOME | wc -c"
    name: shell
    after: [c]
  - id: e
    input: true
    after: [d]
"#,
    );
    let (a, _) = node(&c, "a");
    assert_eq!(
        a.exec,
        Exec::Python {
            script: "a.py".into()
        }
    );
    assert_eq!(
        (a.retries, a.retry_delay, a.timeout),
        (2, Some(0.5), Some(300.0))
    );
    assert!(a.output_required);
    let (b, inputs) = node(&c, "b");
    assert_eq!(
        b.exec,
        Exec::PythonFn {
            module: "stats".into(),
            function: "mean".into()
        }
    );
    assert_eq!(inputs["first"], json!({"$output": "a"}));
    assert_eq!(
        node(&c, "d").0.exec,
        Exec::Command {
            argv: vec!["sh".into(), "-c".into(), "echo $HOME | wc -c".into()]
        }
    );
    assert_eq!(node(&c, "d").0.name, "shell");
    assert_eq!(node(&c, "e").0.exec, Exec::Input { listen: None });
    assert_eq!(edges(&c), pairs(&[("b", "c"), ("c", "d"), ("d", "e")]));
    assert_eq!(c.places["c"].at, Some((14, 9)));
}

#[test]
fn pre_post_and_parallel_compile_to_plain_nodes_and_edges() {
    let c = compiled(
        r#"
name: sugar
tasks:
  - id: fetch
    command: [fetch]
    pre:
      - {id: mkdir, command: [mkdir, -p, out]}
      - {id: clean, command: [rm, -f, out/x]}
    post:
      - {id: report, command: [report]}
  - id: both
    after: [fetch]
    parallel:
      - {id: left, command: [l]}
      - {id: right, command: [r], post: [{id: right_done, command: [d]}]}
  - id: end
    command: [end]
    after: [both]
"#,
    );
    assert_eq!(
        edges(&c),
        pairs(&[
            ("mkdir", "clean"),
            ("clean", "fetch"),
            ("fetch", "report"),
            ("right", "right_done"),
            ("report", "left"),
            ("report", "right"),
            ("left", "end"),
            ("right_done", "end"),
        ])
    );
}

#[test]
fn each_is_a_spawner_and_a_gatherer_under_a_map_promise() {
    let c = compiled(
        r#"
name: fan
params:
  sizes: {default: [1, 2, 3]}
tasks:
  - id: list
    python: list.py
  - id: thumbs
    each:
      items: {"$output": list}
      task: {id: resize, python: resize.py, inputs: {size: {"$param": sizes}}}
      max: 10
  - id: zip
    command: [zip]
    inputs: {all: {"$output": thumbs}}
"#,
    );
    let (spawner, inputs) = node(&c, "thumbs.each");
    assert_eq!(
        spawner.exec,
        Exec::PythonFn {
            module: "orch._builtins".into(),
            function: "each".into()
        }
    );
    assert_eq!(inputs["items"], json!({"$output": "list"}));
    assert_eq!(inputs["inputs"], json!({"size": [1, 2, 3]}));
    assert_eq!(inputs["template"]["name"], "resize");
    assert_eq!(inputs["template"]["script"], "resize.py");
    assert_eq!(inputs["max"], 10);
    let (gather, inputs) = node(&c, "thumbs");
    assert_eq!(
        gather.exec,
        Exec::PythonFn {
            module: "orch._builtins".into(),
            function: "gather".into()
        }
    );
    assert_eq!(inputs["prefix"], "thumbs");
    let promise = c.definition.registration.iter().find_map(|m| match m {
        Mutation::AddPromise { promise } => Some(promise.to_string()),
        _ => None,
    });
    assert_eq!(
        promise.as_deref(),
        Some("shape(thumbs.each, thumbs, resize{0,10})")
    );
}

#[test]
fn sub_workflows_are_inlined_with_prefixed_ids_and_their_own_params() {
    let c = compile_with(
        r#"
name: outer
params: {day: {default: "2024-01-01"}}
tasks:
  - id: start
    command: [start]
  - id: etl
    workflow: sub/etl.yaml
    params: {day: {"$param": day}}
    after: [start]
  - id: end
    command: [end]
    after: [etl]
"#,
        json!({"day": "2025-02-03"}),
        &[(
            "/w/sub/etl.yaml",
            r#"
name: etl
params: {day: {}}
tasks:
  - {id: extract, python: extract.py, inputs: {day: {"$param": day}}}
  - {id: load, command: [load, "--day={{day}}"], inputs: {rows: {"$output": extract}}}
"#,
        )],
    )
    .unwrap();
    assert_eq!(
        edges(&c),
        pairs(&[("start", "etl.extract"), ("etl.load", "end")])
    );
    let (extract, inputs) = node(&c, "etl.extract");
    assert_eq!(
        extract.exec,
        Exec::Python {
            script: "sub/extract.py".into()
        }
    );
    assert_eq!(inputs["day"], "2025-02-03");
    let (load, inputs) = node(&c, "etl.load");
    assert_eq!(
        load.exec,
        Exec::Command {
            argv: vec!["load".into(), "--day=2025-02-03".into()]
        }
    );
    assert_eq!(inputs["rows"], json!({"$output": "etl.extract"}));
    assert_eq!(c.places["etl.load"].file, PathBuf::from("/w/sub/etl.yaml"));
}

#[test]
fn params_are_declared_defaulted_and_required() {
    let text = "name: p\nparams: {n: {default: 1}, who: {}}\ntasks:\n  - {id: a, command: [echo, '{{who}}', '{{n}}']}\n";
    let e = compile_with(text, json!({}), &[]).unwrap_err().to_string();
    assert!(e.contains("parameter `who` has no default"), "{e}");
    let e = compile_with(text, json!({"who": "x", "nope": 1}), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown parameter `nope` (the workflow declares n, who)"),
        "{e}"
    );
    let c = compile_with(text, json!({"who": "ann"}), &[]).unwrap();
    assert_eq!(
        node(&c, "a").0.exec,
        Exec::Command {
            argv: vec!["echo".into(), "ann".into(), "1".into()]
        }
    );
    assert_eq!(
        c.params,
        serde_json::from_value::<Map<String, Value>>(json!({"n": 1, "who": "ann"})).unwrap()
    );
}

#[test]
fn errors_name_the_file_line_column_and_task() {
    let e = err("name: x\ntasks:\n  - id: a\n    command: [a]\n  - id: b\n    command: [b]\n    after: [nope]\n");
    assert_eq!(
        e,
        "/w/main.yaml:7:13: task `b`: after names `nope`, which is no task of main.yaml"
    );
    let e = err("name: x\ntasks:\n  - id: a\n    command: [a]\n  - id: a\n    command: [b]\n");
    assert_eq!(
        e,
        "/w/main.yaml:5:9: task `a`: the id is used twice (first at /w/main.yaml:3:9)"
    );
    let e = err("name: x\ntasks:\n  - id: a\n    command: [a]\n    python: a.py\n");
    assert!(
        e.starts_with("/w/main.yaml:3:9: task `a`: gives python and command"),
        "{e}"
    );
    let e = err("name: x\ntasks:\n  - id: a\n");
    assert!(e.contains("task `a`: says nothing to run"), "{e}");
    let e = err("name: x\ntasks:\n  - id: a\n    command: [a]\n    after: [b]\n  - id: b\n    command: [b]\n    after: [a]\n");
    assert!(e.starts_with("/w/main.yaml:"), "{e}");
    assert!(e.contains("cycle"), "a cycle is named: {e}");
    let e = err("name: x\ntasks:\n  - id: a\n    command: [a]\n    timeout: soon\n");
    assert!(e.contains("timeout: `soon` is not a duration"), "{e}");
    let e = err("name: x\ntasks:\n  - id: a\n    python_fn: nocolon\n");
    assert!(
        e.contains("python_fn `nocolon` must look like `module:function`"),
        "{e}"
    );
    let e =
        err("name: x\ntasks:\n  - id: g\n    parallel: [{id: a, command: [a]}]\n    retries: 3\n");
    assert!(
        e.contains("task `g`: `retries` does not apply to a parallel group"),
        "{e}"
    );
    let e =
        err("name: x\ntasks:\n  - id: a\n    command: [a]\n    inputs: {v: {\"$param\": nope}}\n");
    assert!(
        e.contains("`$param` names `nope`, which is no parameter"),
        "{e}"
    );
    let e = err("name: x\ntasks:\n  - id: a\n    command: [a]\n  - id: b\n    command: [b]\n    inputs: {v: {\"$output\": ghost}}\n");
    assert!(
        e.starts_with("/w/main.yaml:5:9: "),
        "the node whose input is at fault: {e}"
    );
    assert!(e.contains("ghost"), "{e}");
}

#[test]
fn syntax_and_type_errors_come_from_the_parser_with_their_place() {
    let e = err("name: x\ntasks:\n  - id: a\n    command: [a\n");
    assert!(e.starts_with("/w/main.yaml:"), "{e}");
    let e = err("name: x\ntasks:\n  - id: a\n    retries: many\n    command: [a]\n");
    assert!(e.starts_with("/w/main.yaml:4:14: "), "{e}");
    let e = err("name: x\ntask: []\n");
    assert!(e.contains("task"), "{e}");
    // JSON is YAML too.
    let c = compiled(r#"{"name": "j", "tasks": [{"id": "a", "command": ["true"]}]}"#);
    assert_eq!(c.definition.name, "j");
}

#[test]
fn includes_that_loop_or_nest_too_deep_are_refused() {
    let e = compile_with(
        "name: x\ntasks:\n  - {id: s, workflow: a.yaml}\n",
        json!({}),
        &[
            (
                "/w/a.yaml",
                "name: a\ntasks:\n  - {id: t, workflow: b.yaml}\n",
            ),
            (
                "/w/b.yaml",
                "name: b\ntasks:\n  - {id: u, workflow: a.yaml}\n",
            ),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("workflow files include each other: /w/a.yaml -> /w/b.yaml -> /w/a.yaml"),
        "{e}"
    );
    let e = compile_with(
        "name: x\ntasks:\n  - {id: s, workflow: main.yaml}\n",
        json!({}),
        &[(
            "/w/main.yaml",
            "name: x\ntasks:\n  - {id: s, workflow: main.yaml}\n",
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("include each other"), "{e}");
}

#[test]
fn deep_nesting_is_refused_with_the_limit_named() {
    let mut text = String::from("name: x\ntasks:\n");
    let mut indent = String::from("  ");
    for i in 0..40 {
        text.push_str(&format!("{indent}- id: g{i}\n{indent}  parallel:\n"));
        indent.push_str("    ");
    }
    text.push_str(&format!("{indent}- {{id: leaf, command: [a]}}\n"));
    let e = err(&text);
    assert!(
        e.contains("the document nests deeper than 64 levels (lists and maps)"),
        "{e}"
    );
    // Within the YAML limit, the tasks' own.
    let mut text = String::from("name: x\ntasks:\n  - id: g0\n    parallel:\n");
    let mut inner = String::from("{id: leaf, command: [a]}");
    for i in (1..40).rev() {
        inner = format!("{{id: g{i}, parallel: [{inner}]}}");
    }
    text.push_str(&format!("      - {inner}\n"));
    let e = err(&text);
    assert!(
        e.contains("nests deeper than") || e.contains("nest deeper than 32 levels"),
        "{e}"
    );
}

#[test]
fn promises_in_files_are_kept() {
    let c =
        compiled("name: x\npromises:\n  - {no_new_nodes: {}}\ntasks:\n  - {id: a, command: [a]}\n");
    assert!(c.definition.registration.contains(&Mutation::AddPromise {
        promise: Promise::NoNewNodes { by: None }
    }));
    let e = err("name: x\npromises:\n  - {no_such: {}}\ntasks:\n  - {id: a, command: [a]}\n");
    assert!(
        e.starts_with("/w/main.yaml:3:5: promise: unknown variant `no_such`"),
        "{e}"
    );
}

#[test]
fn command_line_params_are_json_or_text() {
    let p = parse_params(["a=[1,2]", "b=hello world", "c="]).unwrap();
    assert_eq!(
        Value::Object(p),
        json!({"a": [1, 2], "b": "hello world", "c": ""})
    );
    assert!(parse_params(["=1"]).is_err());
}

#[test]
fn the_schema_lists_every_task_field() {
    let s = schema();
    let task = &s["$defs"]["TaskDoc"]["properties"];
    for field in [
        "id",
        "python",
        "python_fn",
        "command",
        "input",
        "parallel",
        "each",
        "workflow",
        "after",
        "inputs",
        "retries",
        "timeout",
        "pre",
        "post",
    ] {
        assert!(task.get(field).is_some(), "{field} in {task}");
    }
}

#[test]
fn numbers_are_kept_exactly_or_refused_and_no_means_no() {
    let e = err(
        "name: x\ntasks:\n  - id: a\n    command: [a]\n    inputs: {n: 123456789012345678901234}\n",
    );
    assert_eq!(
        e,
        "/w/main.yaml:5:17: the integer 123456789012345678901234 does not fit in 64 bits: write it as a string (in quotes) to keep it exact"
    );
    let c = compiled(
        "name: x\ntasks:\n  - id: a\n    command: [a]\n    inputs: {big: \"123456789012345678901234\", max: 18446744073709551615, min: -9223372036854775808, f: 0.1, answer: no}\n",
    );
    let (_, inputs) = node(&c, "a");
    assert_eq!(inputs["big"], "123456789012345678901234");
    assert_eq!(inputs["max"], u64::MAX);
    assert_eq!(inputs["min"], i64::MIN);
    assert_eq!(inputs["f"], 0.1);
    assert_eq!(inputs["answer"], "no", "YAML 1.2: `no` is text");
}

#[test]
fn parameters_are_data_quoted_in_shell_lines_and_never_references() {
    let text = "name: p\nparams: {who: {default: x}}\ntasks:\n  - {id: a, command: \"echo hello {{who}}\"}\n  - {id: b, command: [sh, -c, \"echo {{who}}\"]}\n  - {id: c, command: [echo, \"{{who}}\"]}\n";
    let c = compile_with(text, json!({"who": "x'; touch pwned; echo '"}), &[]).unwrap();
    let argv = |id: &str| match &node(&c, id).0.exec {
        Exec::Command { argv } => argv.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        argv("a")[2],
        r#"echo hello 'x'\''; touch pwned; echo '\'''"#
    );
    assert_eq!(argv("b")[2], r#"echo 'x'\''; touch pwned; echo '\'''"#);
    assert_eq!(
        argv("c")[1],
        "x'; touch pwned; echo '",
        "no shell: passed as it is"
    );
    let e = compile_with(text, json!({"who": {"$output": "secret"}}), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("parameter `who`: it holds a `$output` object"),
        "{e}"
    );
    let e = err("name: x\nmax_active_runs: 0\ntasks:\n  - {id: a, command: [a]}\n");
    assert!(
        e.contains("max_active_runs: 0 would never start a run"),
        "{e}"
    );
}

#[test]
fn an_alias_bomb_is_refused_with_the_limit_named() {
    let mut text = String::from("name: lol\nparams:\n  a: {default: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]}\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        text.push_str(&format!("  {}: {{default: &{} [{refs}]}}\n", w[1], w[1]));
    }
    text.push_str("tasks:\n  - {id: t, command: [\"true\"]}\n");
    let e = err(&text);
    assert!(e.contains("the document has more than"), "{e}");
    assert!(e.contains("aliases count each time"), "{e}");
}

fn container_of(c: &Compiled, id: &str) -> crate::model::Container {
    match node(c, id).0.exec.clone() {
        Exec::Container(c) => *c,
        other => panic!("`{id}` runs {other:?}"),
    }
}

#[test]
fn container_tasks_run_a_command_python_or_the_images_own_command() {
    let c = compiled(
        r#"name: boxes
tasks:
  - id: own
    container: localhost/orch-busybox
  - id: shell
    container:
      image: localhost/orch-busybox
      env: {GREETING: hello}
      mounts:
        - {source: data, target: /data, read_only: true}
        - {source: /srv/out, target: /out}
      workdir: /data
      cpus: 0.5
      memory: 64M
      pull: never
    command: "echo {{who}}"
  - id: fn
    container: {image: localhost/orch-python, network: true}
    python_fn: stats:mean
  - id: script
    container: localhost/orch-python
    python: steps/run.py
params:
  who: {default: "it's me"}
"#,
    );
    assert_eq!(
        container_of(&c, "own"),
        crate::model::Container::new("localhost/orch-busybox")
    );
    let shell = container_of(&c, "shell");
    assert_eq!(shell.command, ["sh", "-c", "echo 'it'\\''s me'"]);
    assert_eq!(shell.env["GREETING"], "hello");
    assert_eq!(
        shell.mounts,
        [
            crate::model::Mount::bind("/w/data", "/data").read_only(),
            crate::model::Mount::bind("/srv/out", "/out"),
        ],
        "a relative source is the file's folder's"
    );
    assert_eq!(shell.workdir.as_deref(), Some("/data"));
    assert_eq!((shell.cpus, shell.memory), (Some(0.5), Some(64 << 20)));
    assert_eq!(shell.pull, crate::model::Pull::Never);
    assert!(!shell.network, "no network unless asked");
    let f = container_of(&c, "fn");
    assert_eq!(f.python_fn.as_deref(), Some("stats:mean"));
    assert!(f.network);
    assert_eq!(
        container_of(&c, "script").python.as_deref(),
        Some("steps/run.py")
    );
}

#[test]
fn bad_containers_are_refused_naming_the_task_and_the_field() {
    let e = err("name: x\ntasks:\n  - id: a\n    container: {image: \"--privileged\"}\n");
    assert!(
        e.contains("task `a`: container: image `--privileged`: it must start with a letter"),
        "{e}"
    );
    let e = err(
        "name: x\ntasks:\n  - id: a\n    container: {image: i, mounts: [{source: '/a,readonly=false', target: /b}]}\n",
    );
    assert!(e.contains("task `a`") && e.contains("comma"), "{e}");
    let e = err("name: x\ntasks:\n  - id: a\n    container: {image: i, env: {ORCH_RUN: x}}\n");
    assert!(e.contains("env `ORCH_RUN`"), "{e}");
    let e = err("name: x\ntasks:\n  - id: a\n    container: {image: i, memory: 1K}\n");
    assert!(e.contains("memory: 1024 bytes is below"), "{e}");
    let e = err("name: x\ntasks:\n  - id: a\n    container: {image: i, netwrok: true}\n");
    assert!(e.contains("netwrok"), "{e}");
    let e = err("name: x\ntasks:\n  - id: a\n    input: true\n    container: i\n");
    assert!(
        e.contains("an input task runs nothing in a container"),
        "{e}"
    );
    let e = err("name: x\ntasks:\n  - id: g\n    container: i\n    parallel:\n      - {id: a, command: [true]}\n");
    assert!(e.contains("`container` does not apply"), "{e}");
}

#[test]
fn the_schema_describes_containers() {
    let s = schema();
    assert!(s["$defs"]["TaskDoc"]["properties"]["container"].is_object());
    let spec = &s["$defs"]["ContainerSpecDoc"]["properties"];
    for field in [
        "image", "env", "mounts", "workdir", "cpus", "memory", "network", "pull",
    ] {
        assert!(spec.get(field).is_some(), "{field} in {spec}");
    }
}

#[test]
fn rules_in_files_compile_to_add_rule() {
    let c = compiled(
        "name: x\ntasks:\n  - {id: scan, python: scan.py}\nrules:\n  - id: merge\n    when: {closed: 'task:pdf'}\n    then:\n      - id: merge\n        python: merge.py\n        inputs: {pdfs: {$collect: 'task:pdf'}}\n        after: [scan]\n",
    );
    let rule = c
        .definition
        .registration
        .iter()
        .find_map(|m| match m {
            Mutation::AddRule { rule } => Some(rule),
            _ => None,
        })
        .expect("the rule");
    assert_eq!(rule.id, "merge");
    assert_eq!(rule.when.to_string(), "closed(task:pdf)");
    let body: Vec<String> = rule.then.iter().map(Mutation::describe).collect();
    assert_eq!(body, ["add_node `merge`", "add_edge `scan` -> `merge`"]);
    let Mutation::AddNode { inputs, .. } = &rule.then[0] else {
        panic!("{body:?}")
    };
    assert_eq!(inputs["pdfs"], json!({"$collect": "task:pdf"}));
    // Nothing of the body is registered.
    assert!(!c
        .definition
        .registration
        .iter()
        .any(|m| matches!(m, Mutation::AddNode { id, .. } if id == "merge")));
}

#[test]
fn bad_rules_in_files_are_named() {
    let e = err("name: x\ntasks:\n  - {id: a, command: [a]}\nrules:\n  - id: r\n    when: {opened: x}\n    then: [{id: m, command: [m]}]\n");
    assert!(
        e.starts_with("/w/main.yaml:6:11: rule `r`: when: unknown variant `opened`"),
        "{e}"
    );
    let e = err("name: x\ntasks:\n  - {id: a, command: [a]}\nrules:\n  - id: r\n    when: {closed: x}\n    then: []\n");
    assert!(
        e.starts_with("/w/main.yaml:5:9: rule `r`: then holds no task"),
        "{e}"
    );
    let e = err("name: x\ntasks:\n  - {id: a, command: [a]}\nrules:\n  - id: r\n    when: {closed: x}\n    then: [{id: m, command: [m], inputs: {all: {$collect: 3}}}]\n");
    assert!(
        e.contains("rule `r`") && e.contains("`$collect` must be a pattern string"),
        "{e}"
    );
    let e = err("name: x\ntasks:\n  - {id: a, command: [a]}\nrules:\n  - {id: r, when: {closed: x}, then: [{id: m, command: [m]}]}\n  - {id: r, when: {closed: y}, then: [{id: n, command: [n]}]}\n");
    assert!(e.contains("rule `r`: the id is used twice"), "{e}");
}
