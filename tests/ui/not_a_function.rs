// `#[task]` goes on functions only.

#[orch::task]
struct Square {
    x: u64,
}

fn main() {}
