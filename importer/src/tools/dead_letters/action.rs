//! `hpn-importer dead-letters`' actions, and what each prints.

use super::{groups_table, list, moved_table, purge, replay, show};
use anyhow::Result;
use hpn_common::{BrokerSettings, RecordKind};

/// What `hpn-importer dead-letters` does.
#[derive(clap::Subcommand)]
pub enum DeadLetterAction {
    /// Dead letters per collection, grouped by reason (numbers and quoted
    /// values folded), with counts and when the first and last arrived.
    List,
    /// A few whole dead letters, headers and body.
    Show {
        /// Only those whose reason contains this text (any case).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
    /// Put dead letters back on their queue (the records exchange, their
    /// routing key, their properties and version; the reason kept as
    /// x-hpn-last-error). Each is removed only once its copy is confirmed.
    Replay {
        /// Only those whose reason contains this text (any case).
        #[arg(long)]
        reason: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// Only count what would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Drop dead letters (asks for --yes).
    Purge {
        /// Only those whose reason contains this text (any case).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        yes: bool,
    },
}

/// Do `action` on the dead-letter queues of `kinds` (none: every one) and
/// print what was found or moved, as a table or as JSON.
pub async fn apply(action: DeadLetterAction, broker: &BrokerSettings, kinds: &[RecordKind], json: bool) -> Result<()> {
    let print = |value: serde_json::Value, table: String| {
        if json {
            println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
        } else {
            println!("{table}");
        }
    };
    match action {
        DeadLetterAction::List => {
            let groups = list(broker, kinds).await?;
            print(serde_json::to_value(&groups)?, groups_table(&groups));
        }
        DeadLetterAction::Show { reason, limit } => {
            let shown = show(broker, kinds, reason.as_deref(), limit).await?;
            let text = shown
                .iter()
                .map(|s| serde_json::to_string_pretty(s).expect("JSON"))
                .collect::<Vec<_>>()
                .join("\n");
            print(
                serde_json::to_value(&shown)?,
                if shown.is_empty() {
                    "no dead letters".into()
                } else {
                    text
                },
            );
        }
        DeadLetterAction::Replay { reason, limit, dry_run } => {
            let moved = replay(broker, kinds, reason.as_deref(), limit, dry_run).await?;
            print(serde_json::to_value(&moved)?, moved_table(&moved, dry_run));
        }
        DeadLetterAction::Purge { reason, yes } => {
            anyhow::ensure!(
                yes,
                "purge drops the {} dead letters{}: add --yes",
                broker.queue_prefix,
                reason
                    .as_deref()
                    .map(|r| format!(" whose reason contains {r:?}"))
                    .unwrap_or_default()
            );
            let moved = purge(broker, kinds, reason.as_deref()).await?;
            print(serde_json::to_value(&moved)?, moved_table(&moved, false));
        }
    }
    Ok(())
}
