//! What this machine offers a task that declares requirements
//! ([`Resources`]): its cores, its memory, its GPUs and the labels
//! `ORCH_LABELS` gives it. The process executor refuses, before it starts
//! anything, a task that asks for more; runners on other machines match
//! the same declaration.

use crate::model::Resources;

/// What this machine offers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    /// Cores.
    pub cpu: f64,
    /// Memory, in bytes (`None`: unknown, not checked).
    pub memory: Option<u64>,
    /// GPUs (NVIDIA device files).
    pub gpu: u32,
    /// Labels (`ORCH_LABELS`, comma-separated).
    pub labels: Vec<String>,
}

impl Offer {
    /// This machine's offer.
    pub fn here() -> Offer {
        let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        });
        let gpu = std::fs::read_dir("/dev").map_or(0, |d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.strip_prefix("nvidia").is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .count() as u32
        });
        let labels = std::env::var("ORCH_LABELS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        Offer {
            cpu,
            memory,
            gpu,
            labels,
        }
    }

    /// Why `need` does not fit this offer, if it does not.
    ///
    /// ```
    /// use orch::exec::resources::Offer;
    /// use orch::model::Resources;
    /// let here = Offer { cpu: 2.0, memory: Some(4 << 30), gpu: 0, labels: vec!["ssd".into()] };
    /// assert!(here.refuses(&Resources { cpu: Some(2.0), labels: vec!["ssd".into()], ..Default::default() }).is_none());
    /// let gpu = Resources { gpu: Some(1), ..Default::default() };
    /// assert_eq!(here.refuses(&gpu).unwrap(), "the task requires gpu: 1, and this machine offers 0");
    /// ```
    pub fn refuses(&self, need: &Resources) -> Option<String> {
        let mut short = Vec::new();
        if let Some(cpu) = need.cpu.filter(|c| *c > self.cpu) {
            short.push(format!("cpu: {cpu}, and this machine offers {}", self.cpu));
        }
        if let (Some(mem), Some(have)) = (need.memory, self.memory) {
            if mem > have {
                short.push(format!(
                    "memory: {mem} bytes, and this machine offers {have}"
                ));
            }
        }
        if let Some(gpu) = need.gpu.filter(|g| *g > self.gpu) {
            short.push(format!("gpu: {gpu}, and this machine offers {}", self.gpu));
        }
        let missing: Vec<&str> = need
            .labels
            .iter()
            .filter(|l| !self.labels.contains(l))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            short.push(format!(
                "the labels {}, which this machine lacks (ORCH_LABELS gives a machine labels)",
                missing.join(", ")
            ));
        }
        (!short.is_empty()).then(|| format!("the task requires {}", short.join("; ")))
    }
}
