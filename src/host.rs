//! Facts about this host's processes, read from `/proc`: enough to prove
//! that the process that owned a run is gone (its pid *and* its start
//! time), so that a recycled pid never passes for a live owner.

use std::sync::OnceLock;

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), `None` when there is no such process.
///
/// ```
/// let me = std::process::id();
/// assert!(orch::host::process_start(me).is_some());
/// ```
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are
/// counted after the last `)`.
fn parse_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the `)`: field 3 (state) is the first; field 22 the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True while a process with this pid exists (zombies included): the
/// fast check when no start time was recorded.
pub fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// What names this host in a lease: the host name, the kernel's boot id
/// and the pid namespace, so that the same name after a reboot, another
/// machine, or another container on the same kernel is never mistaken for
/// this one (pids mean nothing across any of them).
///
/// ```
/// assert!(orch::host::identity().contains('/'));
/// ```
pub fn identity() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let name = read("/proc/sys/kernel/hostname");
        let boot = read("/proc/sys/kernel/random/boot_id");
        // Containers that share the host name and the kernel (boot id)
        // still see different processes: a pid means something only in
        // the same pid namespace.
        let pids = std::fs::read_link("/proc/self/ns/pid")
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        format!(
            "{}/{}/{}",
            if name.is_empty() { "localhost" } else { &name },
            if boot.is_empty() {
                "unknown-boot"
            } else {
                &boot
            },
            if pids.is_empty() {
                "unknown-pid-ns"
            } else {
                &pids
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_counted_after_the_last_parenthesis() {
        let line = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start(line), Some(98765));
        assert_eq!(parse_start("garbage"), None);
        assert_eq!(parse_start("1 (x) S 1"), None);
    }

    #[test]
    fn this_process_has_a_stable_start_time() {
        let me = std::process::id();
        assert_eq!(process_start(me), process_start(me));
        assert!(process_alive(me));
        assert_eq!(process_start(u32::MAX), None);
    }
}
