//! Which modes there are, their names, and the order they run in.

/// The modes, in the order they run and are reported.
pub const BASELINE: &str = "baseline: insert_one per row, no queue";
pub const LINEAR: &str = "linear (queue, end to end)";
pub const PARALLEL: &str = "parallel (queue, end to end)";
/// The same as [`PARALLEL`] on collections that also have a unique index on
/// the business key: the store's shape before the key became the `_id`
/// (issue 14), so the pair measures what the second index cost.
pub const PARALLEL_KEY_INDEX: &str = "parallel, plus a unique index on the business key (the store before issue 14)";
/// The same as [`PARALLEL`] with records published without versions: what
/// the importer wrote before the version guard, so the pair measures it.
pub const PARALLEL_UNVERSIONED: &str = "parallel, records without versions";
pub const PARALLEL_ONE_ROW: &str = "parallel, 1 record per message";
/// The same as [`PARALLEL`] with the importer's writes acknowledged before
/// they reach the journal (`w: 1, journal: false` in its connection string):
/// what it wrote before the durable write concern (issue 22), so the pair
/// measures what "acknowledged means journaled" costs.
pub const PARALLEL_UNJOURNALED: &str = "parallel, writes not waiting for the journal (w: 1, journal=false)";
/// The pipeline as it runs: `hpn-importer serve` already consuming when
/// the producer starts, timed from the producer's start (its first row
/// read) until the importer has written every record it published, as its
/// `/metrics` counts them. [`PARALLEL`] publishes everything first and
/// imports after, which is not how the pipeline runs.
pub const AS_IT_RUNS: &str = "as it runs (serve consuming while the producer publishes)";
pub const DIRECT_LINEAR: &str = "direct linear (no queue)";
pub const DIRECT_PARALLEL: &str = "direct parallel (no queue)";
/// What a careful script would do instead of the queue: `insert_many` of
/// 1,000 rows, one task per file, no unique index on the business key.
pub const CAREFUL: &str = "careful loader: insert_many of 1,000, a task per file, no queue, no key index";
// One change each from the careful loader towards what our write path
// sends the database, and from our write path back: the A/B candidates for
// the database's extra work, measured where its core is the limit.
/// [`CAREFUL`] with the business key as a string `_id` instead of an ObjectId.
pub const CAREFUL_KEY_ID: &str = "careful loader, the business key as _id (a string, not an ObjectId)";
/// [`CAREFUL_KEY_ID`] with a version in `_v`, as our documents have.
pub const CAREFUL_KEY_ID_VERSION: &str = "careful loader, the key as _id and a version in _v";
/// [`CAREFUL_KEY_ID_VERSION`] sent unordered, as our insert path sends.
pub const CAREFUL_UNORDERED: &str = "careful loader, key _id, _v, unordered";
/// [`CAREFUL_UNORDERED`] journaled (`j: true`): our insert path's shape,
/// but for what the importer does around it.
pub const CAREFUL_AS_OURS: &str = "careful loader, key _id, _v, unordered and journaled (our insert's shape)";
/// [`DIRECT_PARALLEL`] with two writers per collection instead of one.
pub const DIRECT_PARALLEL_TWO_WRITERS: &str = "direct parallel, 2 writers per collection";
/// [`DIRECT_PARALLEL`] with the careful loader's batches of 1,000 records
/// instead of the importer's 2,000.
pub const DIRECT_PARALLEL_BATCH_1000: &str = "direct parallel, batches of 1,000";
/// [`DIRECT_PARALLEL`] with batches of 4,000 records instead of 2,000.
pub const DIRECT_PARALLEL_BATCH_4000: &str = "direct parallel, batches of 4,000";
/// [`DIRECT_PARALLEL`] with writes acknowledged before the journal.
pub const DIRECT_PARALLEL_UNJOURNALED: &str = "direct parallel, writes not waiting for the journal";
pub const MODES: [&str; 11] = [
    BASELINE,
    CAREFUL,
    LINEAR,
    PARALLEL,
    AS_IT_RUNS,
    PARALLEL_KEY_INDEX,
    PARALLEL_UNVERSIONED,
    PARALLEL_UNJOURNALED,
    PARALLEL_ONE_ROW,
    DIRECT_LINEAR,
    DIRECT_PARALLEL,
];

/// The modes measured with the database on its own core: the comparison
/// modes, then the A/B candidates for the database's extra work.
pub const PINNED_MODES: [&str; 13] = [
    CAREFUL,
    DIRECT_PARALLEL,
    PARALLEL,
    AS_IT_RUNS,
    PARALLEL_ONE_ROW,
    CAREFUL_KEY_ID,
    CAREFUL_KEY_ID_VERSION,
    CAREFUL_UNORDERED,
    CAREFUL_AS_OURS,
    DIRECT_PARALLEL_TWO_WRITERS,
    DIRECT_PARALLEL_BATCH_1000,
    DIRECT_PARALLEL_BATCH_4000,
    DIRECT_PARALLEL_UNJOURNALED,
];

/// The modes that publish, then import through RabbitMQ.
pub(super) const THROUGH_THE_QUEUE: [&str; 6] = [
    LINEAR,
    PARALLEL,
    PARALLEL_KEY_INDEX,
    PARALLEL_UNVERSIONED,
    PARALLEL_UNJOURNALED,
    PARALLEL_ONE_ROW,
];

/// The modes by the short names `hpn-bench compare` takes.
pub const SHORT_NAMES: [(&str, &str); 19] = [
    ("baseline", BASELINE),
    ("careful", CAREFUL),
    ("careful-key-id", CAREFUL_KEY_ID),
    ("careful-key-id-version", CAREFUL_KEY_ID_VERSION),
    ("careful-unordered", CAREFUL_UNORDERED),
    ("careful-as-ours", CAREFUL_AS_OURS),
    ("linear", LINEAR),
    ("parallel", PARALLEL),
    ("as-it-runs", AS_IT_RUNS),
    ("parallel-key-index", PARALLEL_KEY_INDEX),
    ("parallel-unversioned", PARALLEL_UNVERSIONED),
    ("parallel-unjournaled", PARALLEL_UNJOURNALED),
    ("parallel-one-row", PARALLEL_ONE_ROW),
    ("direct-linear", DIRECT_LINEAR),
    ("direct-parallel", DIRECT_PARALLEL),
    ("direct-parallel-two-writers", DIRECT_PARALLEL_TWO_WRITERS),
    ("direct-parallel-batch-1000", DIRECT_PARALLEL_BATCH_1000),
    ("direct-parallel-batch-4000", DIRECT_PARALLEL_BATCH_4000),
    ("direct-parallel-unjournaled", DIRECT_PARALLEL_UNJOURNALED),
];

/// A mode by its short name (see [`SHORT_NAMES`]).
pub fn mode_named(name: &str) -> Option<&'static str> {
    SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == name)
        .map(|(_, mode)| *mode)
}

/// The order of `n` modes in round `round`: each round starts one mode
/// later. The database server here slows as runs accumulate (its data
/// folder grows though every run's database is dropped: 4.5 s for the
/// careful loader's first runs, 7 s after a dozen), so a fixed order would
/// hand the last mode of every round a slower server.
pub fn rotated(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n.max(1))
}
