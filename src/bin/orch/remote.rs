//! `orch --server URL …`: the same commands, through the server's API
//! (token from `ORCH_TOKEN`), with the same output as against a database.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use orch::client::{encode, Client};
use orch::RunExport;
use serde_json::{json, Value};

use super::{Command, EventCommand, Format};

type Res = Result<ExitCode, Box<dyn std::error::Error>>;

/// Runs `command` against the server at `url`.
pub fn run(url: &str, command: Command) -> Res {
    let token = std::env::var("ORCH_TOKEN").ok().filter(|t| !t.is_empty());
    let c = Client::new(url, token);
    let mut out = std::io::stdout().lock();
    match command {
        Command::Runs {
            limit,
            workflow,
            status,
            json,
        } => {
            let mut q = format!("limit={}", limit.clamp(1, 500));
            if let Some(w) = workflow {
                q += &format!("&workflow={}", encode(&w));
            }
            if let Some(s) = status {
                q += &format!("&status={}", encode(&s));
            }
            let page = c.get(&format!("/api/v1/runs?{q}"))?;
            let runs: Vec<orch::store::RunSummary> = serde_json::from_value(page["runs"].clone())?;
            super::print_runs(&mut out, &runs, json, url)?;
        }
        Command::Show { run, json } => {
            let export: RunExport =
                serde_json::from_value(c.get(&format!("/api/v1/runs/{}/export", encode(&run)))?)?;
            if json {
                serde_json::to_writer(&mut out, &export)?;
                writeln!(out)?;
            } else {
                super::show(&mut out, &export)?;
                let status = c.get(&format!("/api/v1/runs/{}", encode(&export.run)))?;
                super::show_expected(&mut out, &status["expected"])?;
            }
        }
        Command::Logs {
            run,
            node,
            attempt,
            follow,
        } => {
            let mut path = format!(
                "/api/v1/runs/{}/nodes/{}/logs?follow={follow}",
                encode(&run),
                encode(&node)
            );
            if let Some(a) = attempt {
                path += &format!("&attempt={a}");
            }
            let mut last_attempt = None;
            let mut print = |line: &Value| -> Res {
                let a = line["attempt"].as_u64().unwrap_or(0);
                if last_attempt != Some(a) {
                    writeln!(out, "--- {node} attempt {a}")?;
                    last_attempt = Some(a);
                }
                let l = orch::history::LogLine {
                    node: node.clone(),
                    attempt: a as u32,
                    line: line["line"].as_u64().unwrap_or(0) as u32,
                    stream: line["stream"].as_str().unwrap_or("").to_string(),
                    text: line["text"].as_str().unwrap_or("").to_string(),
                };
                writeln!(out, "{}", super::log_text(&l))?;
                out.flush()?;
                Ok(ExitCode::SUCCESS)
            };
            if follow {
                c.lines(&path, |text| {
                    serde_json::from_str::<Value>(text)
                        .map_err(|e| e.to_string())
                        .and_then(|v| print(&v).map(|_| ()).map_err(|e| e.to_string()))
                })?;
            } else {
                for line in c.get(&path)?.as_array().into_iter().flatten() {
                    print(line)?;
                }
            }
        }
        Command::Export {
            run,
            format,
            registered,
            at,
            expand,
            output,
        } => {
            if registered {
                return Err("--registered works on a database; with --server, use --at 2".into());
            }
            let run = encode(&run);
            let mut q = format!("expand={expand}");
            if let Some(at) = at {
                q += &format!("&at={at}");
            }
            let text = match format {
                Format::Json if at.is_none() => {
                    serde_json::to_string_pretty(&c.get(&format!("/api/v1/runs/{run}/export"))?)?
                }
                Format::Json => {
                    return Err("--at with --format json works on a database; with --server, use --format outlook".into())
                }
                Format::Outlook => serde_json::to_string_pretty(
                    &c.get(&format!("/api/v1/runs/{run}/outlook?{q}"))?,
                )?,
                Format::Svg => {
                    let r = c.call("GET", &format!("/api/v1/runs/{run}/picture?{q}"), None)?;
                    if r.status != 200 {
                        c.json("GET", &format!("/api/v1/runs/{run}/picture?{q}"), None)?;
                    }
                    r.body
                }
                Format::Dot => {
                    return Err("--format dot works on a database; with --server, use svg or outlook".into())
                }
            };
            match output {
                Some(path) => std::fs::write(&path, text + "\n")
                    .map_err(|e| format!("writing {}: {e}", path.display()))?,
                None => writeln!(out, "{text}")?,
            }
        }
        Command::Pause { run } => signal(&c, &mut out, &run, "pause")?,
        Command::Unpause { run } => signal(&c, &mut out, &run, "unpause")?,
        Command::Cancel { run } => signal(&c, &mut out, &run, "cancel")?,
        Command::Input { run, node, value } => {
            orch::limits::check_json(&value)
                .map_err(|e| format!("the value for `{node}` is refused: {e}"))?;
            let value: Value = serde_json::from_str(&value)
                .map_err(|e| format!("the value for `{node}` is not JSON: {e}"))?;
            let r = c.post(
                &format!("/api/v1/runs/{}/nodes/{}/input", encode(&run), encode(&node)),
                &json!({ "value": value }),
            )?;
            writeln!(out, "delivered to `{node}` of run {}", r["run"].as_str().unwrap_or(""))?;
        }
        Command::Restart { run, node, force } => {
            if force {
                return Err("--force works on a database, not with --server".into());
            }
            let r = c.post(
                &format!("/api/v1/runs/{}/nodes/{}/restart", encode(&run), encode(&node)),
                &json!({}),
            )?;
            return wait_end(&c, r["run"].as_str().unwrap_or(""));
        }
        Command::Run { file, params } => {
            let params = orch::file::parse_params(params.iter().map(String::as_str))?;
            let compiled = orch::file::load(&file, &params)?;
            let def = serde_json::to_value(&compiled.definition)?;
            let r = c.post(
                "/api/v1/runs",
                &json!({"definition": def, "params": compiled.params}),
            )?;
            return wait_end(&c, r["run"].as_str().unwrap_or(""));
        }
        Command::Publish {
            file,
            name,
            message,
            with,
        } => {
            let body = publish_body(&file, &with, message)?;
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .ok_or("name the workflow with --name")?
                    .to_string(),
            };
            let r = c.json("PUT", &format!("/api/v1/workflows/{}", encode(&name)), Some(&body))?;
            if r["changed"] == true {
                writeln!(out, "published `{name}` as {}", r["version"]["commit"].as_str().unwrap_or(""))?;
            } else {
                writeln!(out, "`{name}` is unchanged at {}", r["version"]["commit"].as_str().unwrap_or(""))?;
            }
        }
        Command::History { name, json } => {
            let h = c.get(&format!("/api/v1/workflows/{}/history", encode(&name)))?;
            for v in h["versions"].as_array().into_iter().flatten() {
                if json {
                    serde_json::to_writer(&mut out, v)?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "{}  {}  {:<16} {}{}",
                        v["commit"].as_str().unwrap_or(""),
                        v["time"].as_str().unwrap_or(""),
                        v["author"].as_str().unwrap_or(""),
                        v["message"].as_str().unwrap_or(""),
                        if v["deleted"] == true { "  (deleted)" } else { "" }
                    )?;
                }
            }
        }
        Command::Event(EventCommand::Push { key, payload }) => {
            let payload: Value = match payload {
                Some(text) => {
                    orch::limits::check_json(&text).map_err(|e| format!("the payload: {e}"))?;
                    serde_json::from_str(&text).map_err(|e| format!("the payload is not JSON: {e}"))?
                }
                None => json!({}),
            };
            let r = c.post("/api/v1/events", &json!({"key": key, "payload": payload}))?;
            writeln!(out, "pushed event {} under `{key}`", r["id"])?;
            for d in r["delivered"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "delivered to node `{}` of run {}",
                    d["node"].as_str().unwrap_or(""),
                    d["run"].as_str().unwrap_or("")
                )?;
            }
        }
        _ => {
            return Err(
                "this command works on a database, not with --server (runs, show, logs, export, pause, unpause, cancel, restart, input, run, publish, history and event push go through a server)"
                    .into(),
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn signal(
    c: &Client,
    out: &mut impl Write,
    run: &str,
    what: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let r = c.post(&format!("/api/v1/runs/{}/{what}", encode(run)), &json!({}))?;
    writeln!(
        out,
        "asked run {} to {what}",
        r["run"].as_str().unwrap_or(run)
    )?;
    Ok(())
}

/// Waits for a run to end and reports it like a local run: the exit code
/// is the run's.
fn wait_end(c: &Client, run: &str) -> Res {
    loop {
        let w = c.get(&format!("/api/v1/runs/{}/wait?timeout=60", encode(run)))?;
        if w["ended"] == true {
            let s = &w["status"];
            println!("run {run} {}", s["status"].as_str().unwrap_or(""));
            if let Some(r) = s["reason"].as_str() {
                println!("reason: {r}");
            }
            println!("server: {}", c.base());
            return Ok(if s["status"] == "succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
}

/// The publish body: the file as the workflow's main file, plus the
/// files given with `--with` (paths relative to the file's folder).
fn publish_body(
    file: &Path,
    with: &[String],
    message: Option<String>,
) -> Result<Value, Box<dyn std::error::Error>> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| ["yaml", "yml", "json", "py"].contains(e))
        .ok_or_else(|| {
            format!(
                "{}: a workflow file ends in .yaml, .yml, .json or .py",
                file.display()
            )
        })?;
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let mut files = vec![json!({"path": format!("workflow.{ext}"), "content": read(file)?})];
    let dir = file.parent().unwrap_or(Path::new("."));
    for w in with {
        files.push(json!({"path": w, "content": read(&dir.join(w))?}));
    }
    let message = message.unwrap_or_else(|| format!("publish {}", file.display()));
    Ok(json!({"message": message, "files": files}))
}

/// Streams a newline-delimited body line by line.
trait Lines {
    fn lines(
        &self,
        path: &str,
        each: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<(), Box<dyn std::error::Error>>;
}

impl Lines for Client {
    fn lines(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let reader = self.reader(path)?;
        for line in std::io::BufReader::new(reader).lines() {
            let line = line?;
            if !line.trim().is_empty() {
                each(&line)?;
            }
        }
        Ok(())
    }
}
