//! Late merge, a port of adage's late-merge workflow: PDF producers appear
//! while the run runs, from several places, and one merge runs after the
//! last one that can ever exist.
//!
//! - `cover` is a PDF producer registered up front;
//! - `plan` picks n chapters and adds `chapter_<i>` for each;
//! - each chapter adds its own PDF producer `pdf_<i>`, and some add an
//!   appendix `appendix_<i>` too (every producer runs the task `pdf`);
//! - the rule `merge` waits for `closed(task:pdf)`: no PDF producer can
//!   appear any more. It adds `merge`, whose input `{"$collect":
//!   "task:pdf"}` becomes the outputs of every producer, which implies the
//!   edges from each of them.
//!
//! The promise `no_new_nodes(by task:pdf)` (a producer adds nothing) makes
//! the rule fire as soon as the last chapter finished, while producers may
//! still be running: `merge` waits for them through its edges.
//!
//! Run: `cargo run --example late_merge`, then
//! `cargo run --bin orch -- events latest`: the batch with origin
//! `rule:merge` comes after the last chapter's. `ORCH_EXAMPLE_N` forces n;
//! `ORCH_EXAMPLE_SEED` seeds the choices.
use std::process::ExitCode;

use orch::model::collect_at;
use orch::{Mutation, Predicate, Promise, Rule, Task, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let mut wf = Workflow::new("late_merge");
    wf.dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/late_merge"));
    wf.node("plan", Task::python("plan.py"))
        .label("plan chapters");
    wf.node("cover", Task::python("pdf.py").named("pdf"))
        .input("title", "cover");
    wf.promise(Promise::NoNewNodes {
        by: Some("task:pdf".into()),
    });
    wf.rule(
        Rule::new("merge", Predicate::closed("task:pdf")).then(Mutation::AddNode {
            id: "merge".into(),
            task: Box::new(Task::python("merge.py")),
            inputs: serde_json::json!({ "pdfs": collect_at("task:pdf", "/file") }),
            attrs: [("label".to_string(), "merge all PDFs".into())]
                .into_iter()
                .collect(),
        }),
    );
    orch::workflow::report(wf.run())
}
