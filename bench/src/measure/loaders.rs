//! The loaders measured in this process, without the queue: the old
//! loader rebuilt, and the careful loader a Python programmer would write.

use super::{CAREFUL, CAREFUL_AS_OURS, CAREFUL_KEY_ID, CAREFUL_UNORDERED};
use anyhow::{Context, Result};
use hpn_common::csv_source::CsvSource;
use hpn_common::ConnectionSettings;
use hpn_importer::{ImportStats, Store};
use mongodb::bson::RawDocumentBuf;
use std::path::PathBuf;
use std::time::Instant;

/// The old loaders, rebuilt faithfully: read each CSV file and `insert_one`
/// every row, one file after the other, no queue and no batching (and, as
/// in the old store, no unique indexes to maintain).
pub(super) async fn baseline(settings: &ConnectionSettings, files: &[PathBuf]) -> Result<Vec<ImportStats>> {
    let store = Store::connect_to(settings).await?;
    let mut stats = Vec::new();
    for file in files {
        let source = CsvSource::open(file)?;
        let kind = source.kind();
        let collection = store.collection(kind);
        let count_before = store.count(kind).await?;
        let started = Instant::now();
        let (mut inserted, mut rejected) = (0, 0);
        for row in source {
            match row {
                Ok(row) => {
                    collection
                        .insert_one(hpn_importer::document::to_document(&row.record))
                        .await?;
                    inserted += 1;
                }
                Err(_) => rejected += 1,
            }
        }
        let elapsed = started.elapsed();
        let count_after = store.count(kind).await?;
        stats.push(inserts_only(
            kind,
            (count_before, count_after),
            elapsed,
            inserted,
            rejected,
        ));
    }
    Ok(stats)
}

/// Rows per `insert_many` of the careful loader.
const CAREFUL_BATCH: usize = 1000;

/// The careful loader a Python programmer would write with pymongo, as the
/// bar the queue must clear: each file read by its own task and written
/// with `insert_many` of [`CAREFUL_BATCH`] rows (ordered, the driver's
/// default), into collections with only MongoDB's own `_id` index: no
/// unique key, so no versions, no idempotence, no dead letters. Its
/// documents are built the importer's way (straight into BSON bytes), so
/// the bar is not lowered by a slower client.
///
/// Its variants ([`Careful`]) each change one thing towards the documents
/// and the writes our insert path sends.
///
/// Returns the figures and the seconds from `run_started` to the last record
/// written (the count after each collection comes later).
pub(super) async fn careful(
    settings: &ConnectionSettings,
    files: &[PathBuf],
    shape: Careful,
    run_started: Instant,
) -> Result<(Vec<ImportStats>, f64)> {
    let store = Store::connect_to(settings).await?;
    let tasks = files.iter().map(|file| {
        let store = store.clone();
        let file = file.clone();
        tokio::spawn(async move {
            let source = CsvSource::open(&file)?;
            let kind = source.kind();
            let mut options = mongodb::options::CollectionOptions::default();
            if shape.journaled {
                options.write_concern = Some(mongodb::options::WriteConcern::builder().journal(true).build());
            }
            let collection = store
                .database()
                .collection_with_options::<RawDocumentBuf>(kind.collection(), options);
            let count_before = store.count(kind).await?;
            let started = Instant::now();
            let (mut inserted, mut rejected) = (0u64, 0u64);
            let mut batch = Vec::with_capacity(CAREFUL_BATCH);
            let mut rows = source.into_iter();
            loop {
                let row = rows.next();
                match row {
                    Some(Ok(ref row)) => batch.push(shape.document(&row.record, inserted + batch.len() as u64)),
                    Some(Err(_)) => rejected += 1,
                    None => {}
                }
                if batch.len() == CAREFUL_BATCH || (row.is_none() && !batch.is_empty()) {
                    inserted += batch.len() as u64;
                    collection
                        .insert_many(std::mem::take(&mut batch))
                        .ordered(!shape.unordered)
                        .await?;
                }
                if row.is_none() {
                    break;
                }
            }
            let written = run_started.elapsed().as_secs_f64();
            // Its seconds hold the count after, as findings.md says.
            let count_after = store.count(kind).await?;
            let elapsed = started.elapsed();
            let stats = inserts_only(kind, (count_before, count_after), elapsed, inserted, rejected);
            anyhow::Ok((stats, written))
        })
    });
    let (mut stats, mut last_write) = (Vec::new(), 0.0f64);
    for done in futures::future::join_all(tasks).await {
        let (collection, written) = done.context("a careful loader task")??;
        stats.push(collection);
        last_write = last_write.max(written);
    }
    Ok((stats, last_write))
}

/// What a careful loader's variant sends (see [`CAREFUL`] and the modes after it).
#[derive(Clone, Copy, Default)]
pub(super) struct Careful {
    /// The business key as `_id` (else the driver's ObjectId).
    key_id: bool,
    /// A version in `_v`.
    version: bool,
    /// `insert_many` unordered (else ordered, the driver's default).
    unordered: bool,
    /// Write concern `j: true` (else the server's default, `w: 1`).
    journaled: bool,
}

impl Careful {
    pub(super) fn of(mode: &str) -> Careful {
        let key_id = mode != CAREFUL;
        let version = key_id && mode != CAREFUL_KEY_ID;
        let unordered = mode == CAREFUL_UNORDERED || mode == CAREFUL_AS_OURS;
        Careful {
            key_id,
            version,
            unordered,
            journaled: mode == CAREFUL_AS_OURS,
        }
    }

    /// The document for `record`, the `n`th of its file.
    fn document(self, record: &hpn_common::Record, n: u64) -> RawDocumentBuf {
        match (self.key_id, self.version) {
            (false, _) => hpn_importer::document::fields_raw(record),
            (true, false) => hpn_importer::document::stored_raw(record),
            (true, true) => hpn_importer::document::stored_raw(&record.clone().with_version(n as i64 + 1)),
        }
    }
}

/// The figures of a loader that only inserts: `inserted` rows written,
/// `rejected` not read, the collection's counts before and after.
fn inserts_only(
    kind: hpn_common::RecordKind,
    (count_before, count_after): (u64, u64),
    elapsed: std::time::Duration,
    inserted: u64,
    rejected: u64,
) -> ImportStats {
    ImportStats {
        collection: kind.collection().to_string(),
        processed: inserted + rejected,
        count_before,
        count_after,
        elapsed,
        inserted,
        updated: 0,
        deleted: 0,
        stale: 0,
        rejected,
        messages_left: Some(0),
    }
}
