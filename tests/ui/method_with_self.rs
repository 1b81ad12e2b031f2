// A task is a free function: it runs in its own process, with no value to
// call it on.

struct Squarer;

impl Squarer {
    #[orch::task]
    fn square(&self, x: u64) -> u64 {
        x * x
    }
}

fn main() {}
