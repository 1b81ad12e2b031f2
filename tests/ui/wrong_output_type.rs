// A node that produces a `String` wired into an argument that takes a `u64`.

#[orch::task]
fn name() -> String {
    "ada".to_string()
}

#[orch::task]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let mut wf = orch::Workflow::new("w");
    let n = wf.add(name::call());
    wf.add(square::call(n.output()));
}
