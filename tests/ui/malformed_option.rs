// A timeout is a duration string with a unit.

#[orch::task(timeout = 30)]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {}
