//! Where the CPU goes during a measurement: the cores each process of the
//! pipeline used, and the whole machine, from `/proc` (Linux).
//!
//! On a small machine the broker, the database, the importer and the
//! publisher share the same cores; when their sum nears the core count,
//! every hop waits for a turn and latency grows whatever the importer does.

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Cores used over an interval (1.0 = one core busy all the time).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuUse {
    pub process: String,
    pub cores: f64,
}

/// CPU time used over an interval, in seconds of one core: what a piece of
/// work costs whatever the machine, where [`CpuUse`] says how busy it was.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuTime {
    pub process: String,
    pub seconds: f64,
}

/// A reading to compare with a later one.
pub struct Sample {
    at: Instant,
    processes: Vec<(String, u64)>,
    machine: (u64, u64),
}

/// The processes to watch: a name and a process id each.
pub type Watched = Vec<(String, u32)>;

/// The servers of the pipeline on this machine (by command name), plus `more`.
pub fn pipeline_processes(more: &[(&str, u32)]) -> Watched {
    let mut watched: Watched = more.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    for (name, comms) in [(BROKER, &["beam.smp"][..]), (DATABASE, &["secantusd-rs", "mongod"][..])] {
        watched.extend(pids_named(comms).into_iter().map(|pid| (name.to_string(), pid)));
    }
    watched
}

fn pids_named(comms: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| comms.contains(&c.trim())))
        .collect()
}

/// The servers of the pipeline, plus this process as "our programs": its
/// own time and its children's (the producer and importer it runs count
/// once it has waited for them), for the CPU a run of one mode costs.
pub fn servers_and_us() -> Watched {
    pipeline_processes(&[(OUR_PROGRAMS, std::process::id())])
}

/// Wait (at most [`QUIET_PATIENCE`]) until the servers among `watched`
/// have been nearly idle for a moment: the run before (its database
/// dropped, its queues deleted) can leave them busy for a second or more
/// (the storage engine's checkpoint, the broker's queue deletion), and that
/// work would otherwise land on the next mode's clock. Gives the cores the
/// servers still used in the last window when it gave up, so the caller can
/// say so rather than measure as if they were quiet.
pub async fn wait_until_quiet(watched: &Watched) -> Result<(), f64> {
    let servers: Watched = watched
        .iter()
        .filter(|(name, _)| name == BROKER || name == DATABASE)
        .cloned()
        .collect();
    let started = Instant::now();
    loop {
        let before = sample(&servers);
        tokio::time::sleep(QUIET_WINDOW).await;
        let busy: f64 = between(&before, &sample(&servers))
            .iter()
            .filter(|u| u.process == BROKER || u.process == DATABASE)
            .map(|u| u.cores)
            .sum();
        if busy <= QUIET_CORES {
            return Ok(());
        }
        if started.elapsed() >= QUIET_PATIENCE {
            return Err(busy);
        }
    }
}

/// How long [`wait_until_quiet`] watches at a time, the most the servers
/// may use meanwhile to count as quiet, and how long it waits at most.
const QUIET_WINDOW: std::time::Duration = std::time::Duration::from_millis(300);
const QUIET_CORES: f64 = 0.1;
pub const QUIET_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// The names the servers and this process (with its children) are reported under.
pub const BROKER: &str = "RabbitMQ";
pub const DATABASE: &str = "MongoDB server";
pub const OUR_PROGRAMS: &str = "our programs";

/// User + system clock ticks a process has used, with those of the
/// children it has waited for (0 once it is gone).
fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at ")".
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after ")".
    // cutime and cstime (its waited-for children) follow as 16 and 17.
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12) + field(13) + field(14)
}

/// Clock ticks of the whole machine: (busy, stolen). Busy is user, nice,
/// system, irq and softirq time; stolen is time the hypervisor gave to
/// other guests while this one had work to do (noise from neighbours).
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (at(0) + at(1) + at(2) + at(5) + at(6), at(7))
}

pub fn sample(watched: &Watched) -> Sample {
    Sample {
        at: Instant::now(),
        processes: watched
            .iter()
            .map(|(name, pid)| (name.clone(), process_ticks(*pid)))
            .collect(),
        machine: machine_ticks(),
    }
}

/// Cores used per process name (summed over its processes) and by the
/// whole machine between two samples of the same processes.
pub fn between(before: &Sample, after: &Sample) -> Vec<CpuUse> {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    time_between(before, after)
        .into_iter()
        .map(|t| CpuUse {
            process: t.process,
            cores: t.seconds / seconds,
        })
        .collect()
}

/// CPU seconds per process name (summed over its processes), for the whole
/// machine ([`WHOLE_MACHINE`]) and stolen by the hypervisor, between two
/// samples of the same processes.
pub fn time_between(before: &Sample, after: &Sample) -> Vec<CpuTime> {
    let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
    let mut times: Vec<CpuTime> = Vec::new();
    for ((name, b), (_, a)) in before.processes.iter().zip(&after.processes) {
        let used = seconds(a.saturating_sub(*b));
        match times.iter_mut().find(|t| &t.process == name) {
            Some(t) => t.seconds += used,
            None => times.push(CpuTime {
                process: name.clone(),
                seconds: used,
            }),
        }
    }
    times.push(CpuTime {
        process: WHOLE_MACHINE.into(),
        seconds: seconds(after.machine.0.saturating_sub(before.machine.0)),
    });
    times.push(CpuTime {
        process: "stolen by the hypervisor".into(),
        seconds: seconds(after.machine.1.saturating_sub(before.machine.1)),
    });
    times
}

pub const WHOLE_MACHINE: &str = "whole machine";

/// Linux reports CPU time in clock ticks of 1/100 s (`getconf CLK_TCK`) on
/// every architecture it runs the pipeline on.
const TICKS_PER_SECOND: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_and_uses_cpu_when_it_works() {
        let watched: Watched = vec![("me".into(), std::process::id())];
        let before = sample(&watched);
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let uses = between(&before, &sample(&watched));
        let me = uses.iter().find(|u| u.process == "me").unwrap().cores;
        assert!(me > 0.2, "a busy loop shows as CPU use: {me}");
        assert!(uses.iter().any(|u| u.process == "whole machine" && u.cores >= me * 0.5));
    }

    #[test]
    fn a_child_waited_for_counts_as_ours() {
        let watched = servers_and_us();
        let before = sample(&watched);
        // The shell spins; this process only waits for it.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let times = time_between(&before, &sample(&watched));
        let ours = times.iter().find(|t| t.process == OUR_PROGRAMS).unwrap().seconds;
        assert!(ours >= 0.05, "the child's CPU shows as ours: {ours} s");
    }
}
