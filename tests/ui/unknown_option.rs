// `retry` is not an option (`retries` is).

#[orch::task(retry = 3)]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {}
