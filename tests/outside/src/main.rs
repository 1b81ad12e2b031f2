//! A user's program: typed native tasks defined in this crate, a typed
//! workflow, run by orch as a library dependency.
//!
//! Usage: `orch-outside <folder>`: the database and the picture go there.

use serde::{Deserialize, Serialize};

/// A record this crate defines.
#[derive(Debug, Serialize, Deserialize)]
struct Word {
    text: String,
    letters: usize,
}

#[orch::task]
fn split(sentence: String) -> Vec<String> {
    sentence.split_whitespace().map(str::to_string).collect()
}

#[orch::task]
fn measure(word: String) -> Word {
    Word {
        letters: word.chars().count(),
        text: word,
    }
}

#[orch::task]
fn longest(words: Vec<Word>) -> String {
    words
        .into_iter()
        .max_by_key(|w| w.letters)
        .map(|w| w.text)
        .unwrap_or_default()
}

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: orch-outside <folder>");
        return std::process::ExitCode::from(2);
    };
    let mut wf = orch::Workflow::new("outside");
    wf.dir(&dir).db(std::path::Path::new(&dir).join("orch.db"));
    let words = wf.add(split::call("typed workflows from another crate"));
    let measured = wf.map(&words, measure::call);
    wf.add(longest::call(measured.output()));
    orch::workflow::report(wf.run())
}
