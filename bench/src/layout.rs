//! Which cores each server and our programs run on while a mode is timed.
//!
//! On this 2-core machine the database, the broker and our programs share
//! both cores ([`Layout::Shared`]): every figure then also measures how
//! they crowd each other. In production the database runs on a host of its
//! own, so [`Layout::DatabaseOwnCore`] approximates that: the database
//! server's threads on core 0, and the broker's, this process's and so its
//! children's (the producer, the importer, and the careful loader, which
//! runs in here) on core 1. There the database's core is the limit, so its
//! wall time is its work, and two write paths that differ only in what they
//! ask of it can be told apart.
//!
//! Pinning is done with `taskset -a -p` (every thread of a process; threads
//! made later inherit their creator's cores) and checked from each thread's
//! `Cpus_allowed_list` in `/proc/PID/task/TID/status`: a layout that did not
//! take is an error, not a figure.

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// Where the processes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// Every process may run on every core (the machine as it is).
    Shared,
    /// The database server on core 0; the broker and our programs on core 1.
    DatabaseOwnCore,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Shared => "shared cores",
            Layout::DatabaseOwnCore => "database on its own core",
        }
    }
}

/// A layout as applied: what was asked and what each process's threads
/// were found on afterwards.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pinning {
    pub layout: String,
    /// How it was done, in words.
    pub how: String,
    /// One line per process: name, pid, threads and the cores they may use.
    pub checked: Vec<String>,
    /// What was pinned where: name, pid, cores.
    #[serde(skip)]
    targets: Vec<(String, u32, String)>,
}

/// Put the database, the broker and this process where `layout` says, and
/// check that every thread of each went there.
pub fn apply(layout: Layout) -> Result<Pinning> {
    // Not this process's own count: once pinned, it sees one core.
    let cores = online_cores()?;
    let all = format!("0-{}", cores.saturating_sub(1));
    let (database, rest, how) = match layout {
        Layout::Shared => (all.clone(), all.clone(), format!("every process on cores {all}")),
        Layout::DatabaseOwnCore => {
            ensure!(
                cores >= 2,
                "the database-on-its-own-core layout needs 2 cores; this machine has {cores}"
            );
            (
                "0".to_string(),
                "1".to_string(),
                "the database server's threads on core 0 (taskset -a -cp 0 PID); RabbitMQ's and hpn-bench's \
                 on core 1 (taskset -a -cp 1 PID), so the producer, the importer and the careful loader run \
                 on core 1 too"
                    .to_string(),
            )
        }
    };
    let mut targets: Vec<(String, u32, String)> = Vec::new();
    for (name, pid) in crate::cpu::pipeline_processes(&[]) {
        let cores = if name == crate::cpu::DATABASE { &database } else { &rest };
        targets.push((name, pid, cores.clone()));
    }
    ensure!(
        targets.iter().any(|(name, _, _)| name == crate::cpu::DATABASE),
        "no database server process (secantusd-rs or mongod) runs on this machine to pin: the layouts need a local one"
    );
    targets.push((crate::cpu::OUR_PROGRAMS.into(), std::process::id(), rest.clone()));
    let mut checked = Vec::new();
    for (name, pid, cores) in &targets {
        pin(*pid, cores).with_context(|| format!("pinning {name} (pid {pid}) to cores {cores}"))?;
        checked.push(check(name, *pid, cores)?);
    }
    Ok(Pinning {
        layout: layout.as_str().into(),
        how,
        checked,
        targets,
    })
}

/// A layout held until dropped: then every process may use every core
/// again, so a bench that fails midway leaves no server pinned.
pub struct Held {
    pub pinning: Pinning,
    layout: Layout,
}

pub fn hold(layout: Layout) -> Result<Held> {
    Ok(Held {
        pinning: apply(layout)?,
        layout,
    })
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.layout != Layout::Shared {
            if let Err(e) = apply(Layout::Shared) {
                eprintln!("hpn-bench: could not give the servers every core back: {e:#}");
            }
        }
    }
}

impl Pinning {
    /// Check, after the measurements, that every pinned process is still
    /// there and still where it was put (a server restarted in between
    /// would be on every core again, and its figures would not be this
    /// layout's).
    pub fn still_holds(&self) -> Result<()> {
        for (name, pid, cores) in &self.targets {
            check(name, *pid, cores).with_context(|| format!("after measuring the {} layout", self.layout))?;
        }
        Ok(())
    }
}

fn online_cores() -> Result<usize> {
    // "0-1" or "0,2-3": the highest core plus one.
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").context("reading the online cores")?;
    let highest = online
        .trim()
        .split([',', '-'])
        .filter_map(|n| n.parse::<usize>().ok())
        .max()
        .context("no core in /sys/devices/system/cpu/online")?;
    Ok(highest + 1)
}

fn pin(pid: u32, cores: &str) -> Result<()> {
    let output = std::process::Command::new("taskset")
        .args(["-a", "-cp", cores, &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    ensure!(
        output.status.success(),
        "taskset failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Every thread of `pid` may run on `cores` and nowhere else.
fn check(name: &str, pid: u32, cores: &str) -> Result<String> {
    let tasks =
        std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("{name} (pid {pid}) is gone"))?;
    let mut threads = 0;
    for task in tasks {
        // A thread may end between the listing and the reading: it runs nowhere.
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        let allowed = allowed_list(&status).with_context(|| format!("no Cpus_allowed_list for {name}"))?;
        ensure!(
            same_cores(allowed, cores),
            "a thread of {name} (pid {pid}) may run on cores {allowed}, not {cores}: the pinning did not take"
        );
        threads += 1;
    }
    Ok(format!("{name} (pid {pid}): {threads} threads, all on cores {cores}"))
}

fn allowed_list(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
}

/// The same set of cores, whether written "0-1" or "0,1".
fn same_cores(a: &str, b: &str) -> bool {
    expand(a) == expand(b)
}

fn expand(list: &str) -> Vec<usize> {
    let mut cores: Vec<usize> = list
        .split(',')
        .filter_map(|part| match part.trim().split_once('-') {
            Some((lo, hi)) => Some((lo.parse().ok()?..=hi.parse().ok()?).collect::<Vec<_>>()),
            None => part.trim().parse().ok().map(|c| vec![c]),
        })
        .flatten()
        .collect();
    cores.sort_unstable();
    cores.dedup();
    cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_compare_by_their_cores() {
        assert!(same_cores("0-1", "0,1"));
        assert!(same_cores("1", "1"));
        assert!(!same_cores("0-1", "1"));
        assert!(!same_cores("0", "1"));
        assert_eq!(expand("0,2-4"), vec![0, 2, 3, 4]);
    }

    #[test]
    fn the_allowed_list_is_read_from_a_status_file() {
        let status = "Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed:\t1\n";
        assert_eq!(allowed_list(status), Some("0-1"));
        assert_eq!(allowed_list("Name: x\n"), None);
    }

    /// This process pinned to one core is found there, thread by thread,
    /// and a check for another core fails.
    #[test]
    fn a_pinned_process_is_found_on_its_core_and_nowhere_else() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        pin(pid, "0").unwrap();
        let line = check("sleep", pid, "0").unwrap();
        assert!(line.contains("all on cores 0"), "{line}");
        if online_cores().unwrap() >= 2 {
            assert!(check("sleep", pid, "1").is_err(), "a thread on core 0 is not on core 1");
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
