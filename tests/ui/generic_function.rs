// A task's types must be concrete so the orchestrator can check them.

#[orch::task]
fn identity<T: serde::Serialize>(x: T) -> T {
    x
}

fn main() {}
