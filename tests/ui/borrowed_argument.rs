// Inputs are deserialised from JSON: they are owned values.

#[orch::task]
fn greet(name: &str) -> String {
    format!("hello {name}")
}

fn main() {}
