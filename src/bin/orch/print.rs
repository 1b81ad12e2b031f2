//! How runs are printed: the list of runs, one run with its nodes and
//! attempts, its expected end, and a node's log lines (followed while the
//! node runs).

use std::io::Write;

use orch::store::{SqliteStore, Store};
use orch::RunExport;

use crate::Res;

/// `--- NODE attempt N (pid P, how it ended)`.
pub(super) fn attempt_header(node: &str, a: &orch::history::AttemptRecord) -> String {
    let how = match (&a.outcome, &a.error) {
        (Some(o), Some(e)) => format!("{o}: {e}"),
        (Some(o), None) => o.to_string(),
        (None, _) => "running".to_string(),
    };
    // Attempts a runner ran name it; the server's own show no runner.
    let on = match a.runner.as_deref() {
        Some(r) if r != orch::history::LOCAL => format!("runner {r}, "),
        _ => String::new(),
    };
    format!(
        "--- {node} attempt {} (pid {}, {on}{how})",
        a.attempt,
        a.pid.map_or("-".to_string(), |p| p.to_string())
    )
}

/// A log line as `orch logs` prints it: stderr and orch's own lines tagged.
pub(super) fn log_text(l: &orch::history::LogLine) -> String {
    let tag = match l.stream.as_str() {
        "stdout" | "log" => "",
        "stderr" => "[stderr] ",
        _ => "[orch] ",
    };
    format!("{tag}{}", l.text)
}

/// How often `orch logs --follow` looks for new lines.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// How many lines `orch logs --follow` reads at a time.
const FOLLOW_PAGE: usize = 1000;

/// Prints the node's log lines as they are stored (engines write them
/// while attempts run), until the node ends or no engine drives the run;
/// then how the node ended.
pub(super) fn follow_logs(
    out: &mut impl Write,
    store: &SqliteStore,
    id: &str,
    node: &str,
    attempt: Option<u32>,
) -> Res {
    let mut at = match attempt {
        // After the last line of the attempt before.
        Some(a) => (a.saturating_sub(1), u32::MAX),
        None => (0, 0),
    };
    let mut shown = None;
    loop {
        // Looked at before the lines: the lines an ending attempt wrote
        // are stored by the time its node is seen ended.
        let (_, state) = store
            .node(id, node)?
            .ok_or_else(|| orch::Error::UnknownNode {
                run: id.to_string(),
                node: node.to_string(),
            })?;
        let owner = store.owner(id)?.owner;
        let driven = owner
            .as_ref()
            .is_some_and(|o| !o.proven_dead(orch::host::identity(), &orch::host::process_start));
        loop {
            let page = store.logs_after(id, node, at, FOLLOW_PAGE)?;
            for l in &page {
                at = (l.attempt, l.line);
                if attempt.is_some_and(|a| a != l.attempt) {
                    continue;
                }
                if shown != Some(l.attempt) {
                    shown = Some(l.attempt);
                    writeln!(out, "--- {node} attempt {}", l.attempt)?;
                }
                writeln!(out, "{}", log_text(l))?;
            }
            out.flush()?;
            if page.len() < FOLLOW_PAGE {
                break;
            }
        }
        if state.is_terminal() || !driven {
            let export = store.export(id)?;
            if let Some(a) = export.node(node).and_then(|n| {
                n.attempts
                    .iter()
                    .rev()
                    .find(|a| attempt.is_none_or(|x| x == a.attempt))
            }) {
                writeln!(out, "{}", attempt_header(node, a))?;
            }
            if state.is_terminal() {
                writeln!(out, "--- {node} {state}")?;
            } else if export.status.is_terminal() {
                writeln!(out, "--- {node} {state}: the run ended {}", export.status)?;
            } else {
                writeln!(
                    out,
                    "--- {node} {state}: no engine drives the run now{}; resume it to go on",
                    owner.map_or(String::new(), |o| format!(
                        " (its last owner, pid {}, is gone)",
                        o.pid
                    ))
                )?;
            }
            return Ok(());
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// `orch runs`: a table, or one JSON object per run.
pub(super) fn print_runs(
    out: &mut impl Write,
    runs: &[orch::store::RunSummary],
    json: bool,
    place: &str,
) -> Res {
    if json {
        for r in runs {
            serde_json::to_writer(&mut *out, r)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if runs.is_empty() {
        writeln!(out, "no runs in {place}")?;
    } else {
        writeln!(
            out,
            "{:<28} {:<20} {:<15} {:>6}  {:<24}  {:<24}",
            "RUN", "WORKFLOW", "STATUS", "NODES", "STARTED", "FIRE TIME"
        )?;
    }
    for r in runs {
        writeln!(
            out,
            "{:<28} {:<20} {:<15} {:>6}  {:<24}  {:<24}",
            r.id,
            r.workflow,
            r.status,
            r.nodes,
            r.created_at,
            r.fired_at.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// The expected end of a run that has not ended, from its estimate (as
/// JSON: the server's and the library's are the same).
pub(super) fn show_expected(out: &mut impl Write, e: &serde_json::Value) -> Res {
    let (Some(end), Some(now)) = (e["expected_end_ms"].as_i64(), e["now_ms"].as_i64()) else {
        return Ok(());
    };
    if e["nodes"].as_array().is_none_or(|n| n.is_empty()) {
        return Ok(());
    }
    let at = |ms: i64| orch::time::format_millis(ms.max(0) as u64);
    write!(
        out,
        "\nexpected end  {} (in {:.1} s",
        at(end),
        (end - now).max(0) as f64 / 1000.0
    )?;
    if let Some(p80) = e["expected_end_p80_ms"].as_i64() {
        write!(out, "; p80 {}", at(p80))?;
    }
    writeln!(
        out,
        "){}",
        if e["partial"] == true {
            ", partly without history"
        } else {
            ""
        }
    )?;
    Ok(())
}

pub(super) fn show(out: &mut impl Write, ex: &RunExport) -> Res {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_string());
    writeln!(out, "run       {}", ex.run)?;
    writeln!(out, "workflow  {}", ex.workflow)?;
    writeln!(out, "status    {}", ex.status)?;
    if let Some(r) = &ex.reason {
        writeln!(out, "reason    {r}")?;
    }
    if let Some(src) = &ex.source {
        writeln!(out, "commit    {}", src.commit)?;
    }
    writeln!(out, "started   {}", dash(&ex.created_at))?;
    writeln!(out, "finished  {}", dash(&ex.finished_at))?;
    writeln!(
        out,
        "pid       {}",
        ex.orchestrator_pid.map_or("-".into(), |p| p.to_string())
    )?;
    writeln!(
        out,
        "graph     {} nodes, {} edges, {} promises",
        ex.nodes.len(),
        ex.edges.len(),
        ex.promises.len()
    )?;
    writeln!(out)?;
    let w = ex
        .nodes
        .iter()
        .map(|n| n.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let tw = ex
        .nodes
        .iter()
        .map(|n| n.task.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<w$}  {:<tw$}  {:<10} {:>8}  {:<24}  {:<24}",
        "NODE", "TASK", "STATE", "ATTEMPTS", "STARTED", "FINISHED"
    )?;
    for n in &ex.nodes {
        writeln!(
            out,
            "{:<w$}  {:<tw$}  {:<10} {:>8}  {:<24}  {:<24}",
            n.id,
            n.task.name,
            n.state.as_str(),
            n.attempts.len(),
            dash(&n.started_at),
            dash(&n.finished_at)
        )?;
    }
    let failed: Vec<_> = ex
        .nodes
        .iter()
        .flat_map(|n| n.attempts.iter().map(move |a| (n, a)))
        .filter(|(_, a)| a.error.is_some())
        .collect();
    if !failed.is_empty() {
        writeln!(out, "\nfailed attempts:")?;
        for (n, a) in failed {
            writeln!(
                out,
                "  {} attempt {}: {}",
                n.id,
                a.attempt,
                a.error.as_deref().unwrap_or("")
            )?;
        }
    }
    let remote: Vec<_> = ex
        .nodes
        .iter()
        .flat_map(|n| n.attempts.iter().map(move |a| (n, a)))
        .filter_map(|(n, a)| {
            a.runner
                .as_deref()
                .filter(|r| *r != orch::history::LOCAL)
                .map(|r| (n, a, r))
        })
        .collect();
    if !remote.is_empty() {
        writeln!(out, "\nattempts run by runners:")?;
        for (n, a, r) in remote {
            writeln!(out, "  {} attempt {}: {r}", n.id, a.attempt)?;
        }
    }
    let files: Vec<_> = ex
        .nodes
        .iter()
        .flat_map(|n| n.attempts.iter().map(move |a| (n, a)))
        .flat_map(|(n, a)| a.files.iter().map(move |f| (n, f)))
        .collect();
    if !files.is_empty() {
        writeln!(out, "\nfiles produced:")?;
        for (n, f) in files {
            writeln!(out, "  {}: {} ({} bytes)", n.id, f.path, f.bytes)?;
        }
    }
    if !ex.violations.is_empty() {
        writeln!(out, "\nviolations:")?;
        for v in &ex.violations {
            let by = match (&v.node, v.attempt) {
                (Some(n), Some(a)) => format!(" (task of `{n}`, attempt {a})"),
                _ => String::new(),
            };
            writeln!(
                out,
                "  promise #{} `{}`: {}{by}: {}",
                v.promise_index, v.promise_text, v.mutation, v.message,
            )?;
        }
    }
    Ok(())
}
