//! What `hpn-bench run` and the recording subcommands print: HP Norton's
//! tuples, the ratio table, serve's latency and the targets.

use crate::measure::{self, LINEAR};
use crate::results::Results;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

pub fn print_summary(results: &Results) {
    println!("HP Norton tuples (processed, count before, count after, seconds), median run:");
    let mut tuples = Table::new();
    tuples.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "records/file",
        "mode",
        "customers",
        "products",
        "rentals",
    ]);
    for size in &results.sizes {
        for m in &size.modes {
            let mut row = vec![size.records_per_file.to_string(), m.mode.clone()];
            for c in &m.collections {
                let (p, b, a, s) = c.tuple();
                row.push(format!("({p}, {b}, {a}, {s:.3})"));
            }
            tuples.add_row(row);
        }
    }
    println!("{tuples}");
    println!(
        "Medians of {} runs each; spread = fastest..slowest total.",
        results.settings.repeats
    );
    let mut ratios = Table::new();
    ratios.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "records/file",
        "mode",
        "records/s",
        "spread (s)",
        "× baseline",
        "× raw insert_many",
        "× linear",
    ]);
    for size in &results.sizes {
        let base = size
            .modes
            .iter()
            .find(|m| m.mode == measure::BASELINE)
            .map(|m| m.records_per_s);
        let linear = size.modes.iter().find(|m| m.mode == LINEAR).map(|m| m.records_per_s);
        for m in &size.modes {
            ratios.add_row(vec![
                size.records_per_file.to_string(),
                m.mode.clone(),
                format!("{:.0}", m.records_per_s),
                format!("{:.2}..{:.2}", m.min_seconds, m.max_seconds),
                base.map(|b| format!("{:.2}", m.records_per_s / b)).unwrap_or_default(),
                format!("{:.2}", m.records_per_s / results.limits.insert_many_per_s),
                linear
                    .map(|l| format!("{:.2}", m.records_per_s / l))
                    .unwrap_or_default(),
            ]);
        }
    }
    println!("{ratios}");
    if let Some(latency) = &results.latency {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
            "serve: msg/s asked",
            "reached",
            "p50 (ms)",
            "p99 (ms)",
            "drained after last publish (s)",
            "sustained",
        ]);
        for s in &latency.steps {
            table.add_row(vec![
                s.target_rate.to_string(),
                format!("{:.0}", s.achieved_rate),
                format!("{:.1}", s.p50_ms),
                format!("{:.1}", s.p99_ms),
                format!("{:.2}", s.drain_seconds),
                if s.sustained { "yes".into() } else { "no".into() },
            ]);
        }
        println!("{table}");
    }
    let mut targets = Table::new();
    targets
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["target", "measured", "bar", "met"]);
    for t in &results.targets {
        targets.add_row(vec![
            t.description.clone(),
            t.measured
                .map(|m| format!("{m:.2}"))
                .unwrap_or_else(|| "not measured".into()),
            t.bar.clone(),
            match t.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
        ]);
    }
    println!("{targets}");
}
