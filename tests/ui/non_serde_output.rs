// A task's return value must travel as JSON too.

#[orch::task]
fn open(path: String) -> std::fs::File {
    std::fs::File::open(path).unwrap()
}

fn main() {}
