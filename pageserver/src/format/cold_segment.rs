//! Cold log segments: a contiguous run of committed WAL records stored as one Parquet file.
//!
//! The safekeepers delete WAL once object storage holds what it carries, and delta layers are
//! sorted by key (and, once compaction and GC run, keep only what reads need). Cold segments
//! keep the *log* itself — every mutation of every commit, in commit order — in a format any
//! Parquet reader can open (pyarrow, DuckDB, Spark), so the change feed can serve old versions
//! and outside tools can audit or export the history without FerrisDB code.
//!
//! # Schema (format 1)
//!
//! One row per mutation, rows in commit order (`version`, then `seq`):
//!
//! | column               | Arrow type                    | meaning                               |
//! |----------------------|-------------------------------|---------------------------------------|
//! | `version`            | UInt64                        | the record's commit version (end LSN) |
//! | `commit_time_micros` | Timestamp(Microsecond, "UTC") | the record's commit time              |
//! | `seq`                | UInt32                        | the mutation's index in its record    |
//! | `key`                | Binary                        | the key written (range: first key)    |
//! | `op`                 | Utf8                          | `set`, `clear`, `clear_range`, `none` |
//! | `value`              | Binary, nullable              | `set`: the new value; `clear_range`: the end of the range (exclusive); otherwise null |
//!
//! The commit time is a UTC timestamp in microseconds rather than a bare UInt64 so that outside
//! readers show it as a time and can filter on it with time literals; its Parquet storage is the
//! same INT64 of Unix microseconds either way. A commit time above `i64::MAX` µs (year 294247)
//! cannot be stored and is refused when encoding.
//!
//! A record without mutations (the committer's heartbeat on an idle cluster, which ages read
//! versions) is kept as a single marker row `op = "none"`, `seq = 0`, empty key, null value, so a
//! segment always round-trips its records exactly and never hides a version it covers. Readers
//! that want mutations only filter on `op`.
//!
//! # File-level key-value metadata
//!
//! [`META_FORMAT`] = [`FORMAT_NAME`], [`META_FORMAT_VERSION`] = `1`, [`META_FIRST_VERSION`] and
//! [`META_LAST_VERSION`] (decimal), [`META_RECORDS`] and [`META_ROWS`] (counts), and
//! [`META_CONTENT_CRC32C`]: a CRC32C over the records' logical content. parquet-rs writes no page
//! checksums, and a flipped bit inside a compressed page can still decompress to plausible
//! values, so this checksum is what lets [`decode_segment`] refuse a damaged file whole, the way
//! delta layers are refused, instead of returning wrong history.
//!
//! # Layout
//!
//! zstd (level 3) compression; `version` and `commit_time_micros` are delta-encoded (monotonic,
//! so they shrink to almost nothing) with page-level statistics so readers can prune pages by
//! version or time; `key` keeps chunk statistics (truncated to 64 bytes); `value` has none (it
//! is large and never filtered on). Row groups close at [`ROW_GROUP_MAX_ROWS`] rows or about
//! [`ROW_GROUP_MAX_BYTES`] encoded bytes, whichever comes first; a record may span row groups.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow::array::{
    Array, BinaryArray, BinaryBuilder, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder, UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use ferrisdb_common::wal::{Mutation, WalRecord};
use ferrisdb_common::{Error, Result, Version};
use ferrisdb_server_common::objstore::store_error;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// The value of the [`META_FORMAT`] key in every cold segment.
pub const FORMAT_NAME: &str = "ferrisdb-cold-segment";
/// The format version this module writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Key-value metadata key: the format name, [`FORMAT_NAME`].
pub const META_FORMAT: &str = "ferrisdb.format";
/// Key-value metadata key: the format version, decimal.
pub const META_FORMAT_VERSION: &str = "ferrisdb.format_version";
/// Key-value metadata key: the first (lowest) version in the file, decimal.
pub const META_FIRST_VERSION: &str = "ferrisdb.first_version";
/// Key-value metadata key: the last (highest) version in the file, decimal.
pub const META_LAST_VERSION: &str = "ferrisdb.last_version";
/// Key-value metadata key: how many WAL records the file holds, decimal.
pub const META_RECORDS: &str = "ferrisdb.records";
/// Key-value metadata key: how many rows the file holds, decimal.
pub const META_ROWS: &str = "ferrisdb.rows";
/// Key-value metadata key: CRC32C of the records' logical content, decimal (see the module
/// documentation for why it exists).
pub const META_CONTENT_CRC32C: &str = "ferrisdb.content_crc32c";

/// The `op` of a [`Mutation::Set`] row.
pub const OP_SET: &str = "set";
/// The `op` of a [`Mutation::Clear`] row.
pub const OP_CLEAR: &str = "clear";
/// The `op` of a [`Mutation::ClearRange`] row (its `value` is the range's end).
pub const OP_CLEAR_RANGE: &str = "clear_range";
/// The `op` of the marker row standing for a record without mutations.
pub const OP_NONE: &str = "none";

/// A row group is closed once it holds this many rows.
pub const ROW_GROUP_MAX_ROWS: usize = 64 * 1024;
/// A row group is closed once its estimated encoded size reaches this many bytes. This, not the
/// row count, bounds the writer's buffered memory when values are large.
pub const ROW_GROUP_MAX_BYTES: usize = 32 << 20;

/// Arrow batches handed to the writer are cut at this many rows…
const BATCH_MAX_ROWS: usize = 8 * 1024;
/// …or this many key and value bytes, so the uncompressed copy of the rows being encoded stays
/// small however big the segment is.
const BATCH_MAX_BYTES: usize = 8 << 20;
/// zstd level 3: zstd's own default, a good ratio at a speed that keeps checkpoints cheap.
const ZSTD_LEVEL: i32 = 3;

const COL_VERSION: &str = "version";
const COL_COMMIT_TIME: &str = "commit_time_micros";
const COL_SEQ: &str = "seq";
const COL_KEY: &str = "key";
const COL_OP: &str = "op";
const COL_VALUE: &str = "value";
const UTC: &str = "UTC";

/// How rows are cut into batches and row groups. Production uses [`Layout::DEFAULT`]; the tests
/// use tiny limits so records spanning batches and row groups are exercised on small inputs.
#[derive(Debug, Clone, Copy)]
struct Layout {
    batch_rows: usize,
    batch_bytes: usize,
    row_group_rows: usize,
    row_group_bytes: usize,
}

impl Layout {
    const DEFAULT: Layout = Layout {
        batch_rows: BATCH_MAX_ROWS,
        batch_bytes: BATCH_MAX_BYTES,
        row_group_rows: ROW_GROUP_MAX_ROWS,
        row_group_bytes: ROW_GROUP_MAX_BYTES,
    };
}

/// The name of the segment object covering versions `first..=last`:
/// `"{first:016X}-{last:016X}.parquet"`, so names sort in version order.
pub fn segment_name(first: Version, last: Version) -> String {
    format!("{:016X}-{:016X}.parquet", first.0, last.0)
}

/// The Arrow schema of a format-1 segment (see the module documentation).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COL_VERSION, DataType::UInt64, false),
        Field::new(
            COL_COMMIT_TIME,
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            false,
        ),
        Field::new(COL_SEQ, DataType::UInt32, false),
        Field::new(COL_KEY, DataType::Binary, false),
        Field::new(COL_OP, DataType::Utf8, false),
        Field::new(COL_VALUE, DataType::Binary, true),
    ]))
}

/// Encodes `records` — a run of committed WAL records in increasing version order, at least
/// one — as a Parquet segment in memory.
///
/// Synchronous and CPU-bound (zstd): on an async runtime, call it from `spawn_blocking` when the
/// run is large. Memory: the returned file, plus one Arrow batch (at most 8 MiB of keys and
/// values), plus the row group being encoded (at most about [`ROW_GROUP_MAX_BYTES`]).
///
/// Fails with `invalid` for an empty run, versions that do not strictly increase, or a commit
/// time above `i64::MAX` microseconds; with `internal` if the Parquet writer fails.
pub fn encode_segment(records: &[WalRecord]) -> Result<Bytes> {
    encode_with(records, Layout::DEFAULT)
}

fn encode_with(records: &[WalRecord], layout: Layout) -> Result<Bytes> {
    let (first, last) = match (records.first(), records.last()) {
        (Some(f), Some(l)) => (f.version, l.version),
        _ => return Err(Error::invalid("a cold segment needs at least one record")),
    };
    for pair in records.windows(2) {
        if pair[1].version <= pair[0].version {
            return Err(Error::invalid(format!(
                "cold segment records out of order: version {} after {}",
                pair[1].version, pair[0].version
            )));
        }
    }
    let rows: usize = records.iter().map(|r| r.mutations.len().max(1)).sum();
    let metadata = vec![
        KeyValue::new(META_FORMAT.to_string(), FORMAT_NAME.to_string()),
        KeyValue::new(META_FORMAT_VERSION.to_string(), FORMAT_VERSION.to_string()),
        KeyValue::new(META_FIRST_VERSION.to_string(), first.0.to_string()),
        KeyValue::new(META_LAST_VERSION.to_string(), last.0.to_string()),
        KeyValue::new(META_RECORDS.to_string(), records.len().to_string()),
        KeyValue::new(META_ROWS.to_string(), rows.to_string()),
        KeyValue::new(
            META_CONTENT_CRC32C.to_string(),
            content_crc(records).to_string(),
        ),
    ];
    let props = writer_properties(layout, metadata)?;
    let schema = schema();
    let encoder_failed = |e: parquet::errors::ParquetError| {
        Error::internal(format!(
            "encoding cold segment {}: {e}",
            segment_name(first, last)
        ))
    };
    let mut writer =
        ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(encoder_failed)?;
    let mut batch = BatchBuilder::new();
    for record in records {
        let time = i64::try_from(record.commit_time_micros).map_err(|_| {
            Error::invalid(format!(
                "commit time {} µs of version {} does not fit a Parquet timestamp",
                record.commit_time_micros, record.version
            ))
        })?;
        if record.mutations.is_empty() {
            batch.push(record.version, time, 0, &[], OP_NONE, None);
        }
        for (seq, m) in record.mutations.iter().enumerate() {
            // The WAL stores the mutation count as a u32, so a record never has more.
            let seq = u32::try_from(seq).map_err(|_| {
                Error::invalid(format!("version {} has too many mutations", record.version))
            })?;
            let (op, value) = match m {
                Mutation::Set { value, .. } => (OP_SET, Some(&value[..])),
                Mutation::Clear { .. } => (OP_CLEAR, None),
                Mutation::ClearRange { end, .. } => (OP_CLEAR_RANGE, Some(&end[..])),
            };
            batch.push(record.version, time, seq, m.key(), op, value);
            // Checked per row, not per record: one record may be a 10 MB transaction.
            if batch.is_full(layout) {
                writer
                    .write(&batch.finish(&schema)?)
                    .map_err(encoder_failed)?;
            }
        }
        if batch.is_full(layout) {
            writer
                .write(&batch.finish(&schema)?)
                .map_err(encoder_failed)?;
        }
    }
    if batch.rows > 0 {
        writer
            .write(&batch.finish(&schema)?)
            .map_err(encoder_failed)?;
    }
    // `into_inner` closes the last row group and writes the footer.
    let file = writer.into_inner().map_err(encoder_failed)?;
    Ok(Bytes::from(file))
}

fn writer_properties(layout: Layout, metadata: Vec<KeyValue>) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(ZSTD_LEVEL)
        .map_err(|e| Error::internal(format!("zstd level {ZSTD_LEVEL}: {e}")))?;
    let col = |name: &str| ColumnPath::from(name);
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(layout.row_group_rows))
        .set_max_row_group_bytes(Some(layout.row_group_bytes))
        .set_key_value_metadata(Some(metadata))
        // Declared so engines that use it (DataFusion, Spark) know rows are in commit order.
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: 2,
                descending: false,
                nulls_first: false,
            },
        ]));
    // Monotonic integers: delta encoding beats a dictionary that would mostly miss.
    for name in [COL_VERSION, COL_COMMIT_TIME, COL_SEQ] {
        b = b
            .set_column_dictionary_enabled(col(name), false)
            .set_column_encoding(col(name), Encoding::DELTA_BINARY_PACKED);
    }
    // Keys and values are mostly distinct: a dictionary would be built only to be abandoned.
    for name in [COL_KEY, COL_VALUE] {
        b = b.set_column_dictionary_enabled(col(name), false);
    }
    b = b
        .set_column_statistics_enabled(col(COL_KEY), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(col(COL_VALUE), EnabledStatistics::None);
    Ok(b.build())
}

/// Accumulates rows into one Arrow batch.
struct BatchBuilder {
    version: UInt64Builder,
    time: TimestampMicrosecondBuilder,
    seq: UInt32Builder,
    key: BinaryBuilder,
    op: StringBuilder,
    value: BinaryBuilder,
    rows: usize,
    bytes: usize,
}

impl BatchBuilder {
    fn new() -> BatchBuilder {
        BatchBuilder {
            version: UInt64Builder::new(),
            time: TimestampMicrosecondBuilder::new().with_timezone(UTC),
            seq: UInt32Builder::new(),
            key: BinaryBuilder::new(),
            op: StringBuilder::new(),
            value: BinaryBuilder::new(),
            rows: 0,
            bytes: 0,
        }
    }

    fn push(
        &mut self,
        version: Version,
        time: i64,
        seq: u32,
        key: &[u8],
        op: &str,
        value: Option<&[u8]>,
    ) {
        self.version.append_value(version.0);
        self.time.append_value(time);
        self.seq.append_value(seq);
        self.key.append_value(key);
        self.op.append_value(op);
        self.value.append_option(value);
        self.rows += 1;
        self.bytes += key.len() + value.map_or(0, <[u8]>::len);
    }

    fn is_full(&self, layout: Layout) -> bool {
        self.rows >= layout.batch_rows || self.bytes >= layout.batch_bytes
    }

    /// Takes the rows pushed so far as a batch, leaving the builder empty (Arrow builders reset
    /// on `finish`).
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(self.version.finish()),
                // The builder's timezone carries into the array, matching the schema.
                Arc::new(self.time.finish()),
                Arc::new(self.seq.finish()),
                Arc::new(self.key.finish()),
                Arc::new(self.op.finish()),
                Arc::new(self.value.finish()),
            ],
        )
        .map_err(|e| Error::internal(format!("building a cold segment batch: {e}")))
    }
}

/// Encodes `records` and stores them at `path`, returning the object's size in bytes.
///
/// The file is encoded in memory and stored with one `put` rather than streamed through
/// `AsyncArrowWriter` over a multipart `BufWriter`: a single PUT appears whole or not at all
/// (no abandoned multipart uploads to clean up), its payload can be re-sent by a retry loop
/// (a streaming writer would have to re-encode), it needs neither parquet's `async` nor
/// `object_store` feature, and it is how delta layers are uploaded. The cost is holding the
/// compressed file in memory, which is smaller than the records the caller already holds.
///
/// This does not retry: callers that want retries encode once with [`encode_segment`] and retry
/// the `put` of those bytes. Object-store failures come back as `unavailable`. Segment names are
/// derived from their content's versions, so overwriting a segment left by a failed earlier
/// attempt stores the same rows.
pub async fn write_segment(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    records: &[WalRecord],
) -> Result<u64> {
    let body = encode_segment(records)?;
    let size = body.len() as u64;
    store
        .put(path, PutPayload::from(body))
        .await
        .map_err(store_error)?;
    Ok(size)
}

/// [`encode_segment`] with tiny batches and row groups (a few rows each), so that a fuzzer's
/// small inputs produce files with many row groups, pages and records spanning them.
#[doc(hidden)]
pub fn encode_small_for_fuzzing(records: &[WalRecord]) -> Result<Bytes> {
    encode_with(
        records,
        Layout {
            batch_rows: 3,
            batch_bytes: 256,
            row_group_rows: 5,
            row_group_bytes: 512,
        },
    )
}

/// Decodes a segment written by [`encode_segment`] back into its records, exactly: grouped by
/// version, mutations in their original order, clears as clears, empty values as empty values.
///
/// Anything that is not an intact format-1 segment — truncated or flipped bytes, a foreign
/// Parquet file, rows out of order, a content checksum mismatch — fails with `corruption`.
/// Memory: the input, the decoded records, and one Arrow batch at a time.
pub fn decode_segment(bytes: Bytes) -> Result<Vec<WalRecord>> {
    // parquet-rs is hardened against malformed input but not guaranteed panic-free on it; a
    // damaged object in the bucket must surface as corruption, not take down the task reading it.
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes))) {
        Ok(result) => result,
        Err(_) => Err(Error::corruption(
            "cold segment: the Parquet reader panicked on this file",
        )),
    }
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::corruption(format!("cold segment: {what}"))
}

fn decode_inner(bytes: Bytes) -> Result<Vec<WalRecord>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(corrupt)?;
    let meta: HashMap<&str, &str> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| kv.value.as_deref().map(|v| (kv.key.as_str(), v)))
                .collect()
        })
        .unwrap_or_default();
    let text = |key: &str| {
        meta.get(key)
            .copied()
            .ok_or_else(|| corrupt(format!("metadata {key} is missing")))
    };
    let number = |key: &str| {
        text(key)?
            .parse::<u64>()
            .map_err(|_| corrupt(format!("metadata {key} is not a number")))
    };
    if text(META_FORMAT)? != FORMAT_NAME {
        return Err(corrupt(format!("not a {FORMAT_NAME} file")));
    }
    let format = number(META_FORMAT_VERSION)?;
    if format != u64::from(FORMAT_VERSION) {
        return Err(corrupt(format!("unknown format version {format}")));
    }
    let first = Version(number(META_FIRST_VERSION)?);
    let last = Version(number(META_LAST_VERSION)?);
    let want_records = number(META_RECORDS)?;
    let want_rows = number(META_ROWS)?;
    let want_crc = number(META_CONTENT_CRC32C)?;
    if builder.schema().fields() != schema().fields() {
        return Err(corrupt(format!(
            "unexpected schema {:?}",
            builder.schema().fields()
        )));
    }
    let reader = builder
        .with_batch_size(BATCH_MAX_ROWS)
        .build()
        .map_err(corrupt)?;

    let mut records: Vec<WalRecord> = Vec::new();
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(corrupt)?;
        let cols = Columns::of(&batch)?;
        for i in 0..batch.num_rows() {
            add_row(&mut records, &cols, i)?;
        }
        rows += batch.num_rows() as u64;
    }

    if rows != want_rows || records.len() as u64 != want_records {
        return Err(corrupt(format!(
            "{rows} rows in {} records, metadata says {want_rows} in {want_records}",
            records.len()
        )));
    }
    let (got_first, got_last) = match (records.first(), records.last()) {
        (Some(f), Some(l)) => (f.version, l.version),
        _ => return Err(corrupt("no rows")),
    };
    if (got_first, got_last) != (first, last) {
        return Err(corrupt(format!(
            "rows cover versions {got_first}..={got_last}, metadata says {first}..={last}"
        )));
    }
    let crc = content_crc(&records);
    if u64::from(crc) != want_crc {
        return Err(corrupt(format!(
            "content checksum {crc:#010x}, expected {want_crc:#010x}"
        )));
    }
    Ok(records)
}

/// The six columns of one decoded batch, type-checked.
struct Columns<'a> {
    version: &'a UInt64Array,
    time: &'a TimestampMicrosecondArray,
    seq: &'a UInt32Array,
    key: &'a BinaryArray,
    op: &'a StringArray,
    value: &'a BinaryArray,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Columns<'a>> {
        fn column<'b, T: 'static>(
            batch: &'b RecordBatch,
            name: &str,
            nullable: bool,
        ) -> Result<&'b T> {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| corrupt(format!("column {name} is missing")))?;
            if !nullable && array.null_count() > 0 {
                return Err(corrupt(format!("column {name} has nulls")));
            }
            array
                .as_any()
                .downcast_ref::<T>()
                .ok_or_else(|| corrupt(format!("column {name} has the wrong type")))
        }
        Ok(Columns {
            version: column(batch, COL_VERSION, false)?,
            time: column(batch, COL_COMMIT_TIME, false)?,
            seq: column(batch, COL_SEQ, false)?,
            key: column(batch, COL_KEY, false)?,
            op: column(batch, COL_OP, false)?,
            value: column(batch, COL_VALUE, true)?,
        })
    }
}

/// Appends row `i` to `records`, starting a new record when the version changes, and checks the
/// row is where an intact segment would put it.
fn add_row(records: &mut Vec<WalRecord>, cols: &Columns<'_>, i: usize) -> Result<()> {
    let version = Version(cols.version.value(i));
    let time = u64::try_from(cols.time.value(i))
        .map_err(|_| corrupt(format!("negative commit time at version {version}")))?;
    let seq = cols.seq.value(i);
    let key = cols.key.value(i);
    let op = cols.op.value(i);
    let value = (!cols.value.is_null(i)).then(|| cols.value.value(i));

    let continues = records.last().is_some_and(|r| r.version == version);
    if !continues {
        if records.last().is_some_and(|r| r.version > version) {
            return Err(corrupt(format!("version {version} is out of order")));
        }
        if seq != 0 {
            return Err(corrupt(format!(
                "version {version} starts at mutation {seq}"
            )));
        }
        records.push(WalRecord {
            version,
            commit_time_micros: time,
            mutations: Vec::new(),
        });
    }
    let record = records
        .last_mut()
        .ok_or_else(|| corrupt("no record to add a row to"))?;
    if record.commit_time_micros != time {
        return Err(corrupt(format!("version {version} has two commit times")));
    }
    // A marker row is its record's only row, so a record that continues can never be one.
    let marker = continues && record.mutations.is_empty();
    if marker || (continues && seq as usize != record.mutations.len()) {
        return Err(corrupt(format!(
            "version {version}: mutation {seq} is out of order"
        )));
    }
    let mutation = match (op, value) {
        (OP_SET, Some(v)) => Mutation::Set {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(v),
        },
        (OP_CLEAR, None) => Mutation::Clear {
            key: Bytes::copy_from_slice(key),
        },
        (OP_CLEAR_RANGE, Some(end)) => Mutation::ClearRange {
            begin: Bytes::copy_from_slice(key),
            end: Bytes::copy_from_slice(end),
        },
        // The marker of a record without mutations, which must be its record's first (and,
        // checked above, only) row: nothing to add.
        (OP_NONE, None) if !continues && key.is_empty() => return Ok(()),
        (op, value) => {
            return Err(corrupt(format!(
                "version {version}: op {op:?} with {} value",
                if value.is_some() { "a" } else { "no" }
            )));
        }
    };
    record.mutations.push(mutation);
    Ok(())
}

/// CRC32C over the logical content of `records`: per record its version, commit time and
/// mutation count, then per mutation its op, key and value, lengths first so no two different
/// contents hash the same bytes. Computed from the records, so encoder and decoder agree no
/// matter how the rows were laid out in the file.
fn content_crc(records: &[WalRecord]) -> u32 {
    let mut crc = 0u32;
    for r in records {
        crc = crc32c::crc32c_append(crc, &r.version.0.to_le_bytes());
        crc = crc32c::crc32c_append(crc, &r.commit_time_micros.to_le_bytes());
        crc = crc32c::crc32c_append(crc, &(r.mutations.len() as u64).to_le_bytes());
        for m in &r.mutations {
            let (op, value): (u8, &[u8]) = match m {
                Mutation::Set { value, .. } => (1, value),
                Mutation::Clear { .. } => (2, &[]),
                Mutation::ClearRange { end, .. } => (3, end),
            };
            crc = crc32c::crc32c_append(crc, &[op]);
            crc = crc32c::crc32c_append(crc, &(m.key().len() as u64).to_le_bytes());
            crc = crc32c::crc32c_append(crc, m.key());
            crc = crc32c::crc32c_append(crc, &(value.len() as u64).to_le_bytes());
            crc = crc32c::crc32c_append(crc, value);
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_common::ErrorKind;

    fn set(key: &[u8], value: &[u8]) -> Mutation {
        Mutation::Set {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        }
    }

    fn clear(key: &[u8]) -> Mutation {
        Mutation::Clear {
            key: Bytes::copy_from_slice(key),
        }
    }

    fn record(version: u64, time: u64, mutations: Vec<Mutation>) -> WalRecord {
        WalRecord {
            version: Version(version),
            commit_time_micros: time,
            mutations,
        }
    }

    /// Sets, clears, empty keys and values, every byte value in keys, several mutations per
    /// record (including the same key twice), a record without mutations.
    fn varied() -> Vec<WalRecord> {
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        vec![
            record(
                100,
                1_700_000_000_000_000,
                vec![
                    set(b"a", b"1"),
                    clear(b"b"),
                    set(b"", b""),
                    Mutation::ClearRange {
                        begin: Bytes::from_static(b"c"),
                        end: Bytes::from_static(b"f"),
                    },
                ],
            ),
            record(
                250,
                1_700_000_000_000_001,
                vec![
                    set(&all_bytes, &all_bytes),
                    set(&[0x00], &[0xFF; 3]),
                    set(&[0xFF, 0x00], b""),
                    clear(&all_bytes),
                    set(b"a", b"2"),
                    set(b"a", b"3"),
                ],
            ),
            record(300, 1_700_000_000_000_001, vec![]),
            record(u64::MAX - 1, i64::MAX as u64, vec![clear(b"")]),
        ]
    }

    fn many(records: usize) -> Vec<WalRecord> {
        (0..records as u64)
            .map(|i| {
                let mutations = (0..(i % 5))
                    .map(|j| {
                        let key = format!("key-{:05}", (i * 7 + j) % 1000).into_bytes();
                        if (i + j) % 4 == 0 {
                            clear(&key)
                        } else {
                            set(&key, &vec![(i % 251) as u8; ((i * 13 + j) % 300) as usize])
                        }
                    })
                    .collect();
                record(1000 + i * 64, 5_000_000 + i * 3, mutations)
            })
            .collect()
    }

    #[test]
    fn round_trips_varied_records() {
        let records = varied();
        let file = encode_segment(&records).unwrap();
        assert_eq!(decode_segment(file).unwrap(), records);
    }

    #[test]
    fn round_trips_one_record() {
        let records = vec![record(7, 0, vec![set(b"k", b"v")])];
        assert_eq!(
            decode_segment(encode_segment(&records).unwrap()).unwrap(),
            records
        );
    }

    #[test]
    fn round_trips_many_records_across_batches_and_row_groups() {
        let records = many(3000);
        let file = encode_segment(&records).unwrap();
        assert_eq!(decode_segment(file).unwrap(), records);

        // Tiny limits so records straddle batch and row-group boundaries.
        let layout = Layout {
            batch_rows: 7,
            batch_bytes: 500,
            row_group_rows: 50,
            row_group_bytes: 4096,
        };
        let file = encode_with(&records, layout).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone()).unwrap();
        assert!(reader.metadata().num_row_groups() > 10);
        assert_eq!(decode_segment(file).unwrap(), records);
    }

    #[test]
    fn metadata_names_its_versions() {
        let records = varied();
        let file = encode_segment(&records).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let kv: HashMap<String, String> = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap()))
            .collect();
        assert_eq!(kv[META_FORMAT], FORMAT_NAME);
        assert_eq!(kv[META_FORMAT_VERSION], "1");
        assert_eq!(kv[META_FIRST_VERSION], "100");
        assert_eq!(kv[META_LAST_VERSION], (u64::MAX - 1).to_string());
        assert_eq!(kv[META_RECORDS], "4");
        assert_eq!(kv[META_ROWS], "12");
        assert_eq!(
            reader.metadata().file_metadata().num_rows(),
            12,
            "one row per mutation, one marker row"
        );
    }

    #[test]
    fn name_is_fixed_width_hex() {
        assert_eq!(
            segment_name(Version(0xA00), Version(u64::MAX)),
            "0000000000000A00-FFFFFFFFFFFFFFFF.parquet"
        );
    }

    #[test]
    fn refuses_bad_input_runs() {
        assert_eq!(
            encode_segment(&[]).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let unordered = vec![record(20, 1, vec![]), record(20, 2, vec![])];
        assert_eq!(
            encode_segment(&unordered).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let too_late = vec![record(20, u64::MAX, vec![])];
        assert_eq!(
            encode_segment(&too_late).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn corruption_is_refused_never_misread() {
        let records = varied();
        let file = encode_segment(&records).unwrap();

        for bad in [
            Bytes::new(),
            Bytes::from_static(b"PAR1"),
            Bytes::from_static(b"not a parquet file at all"),
            file.slice(..file.len() - 1),
            file.slice(..file.len() / 2),
            file.slice(8..),
        ] {
            let e = decode_segment(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        }

        // Every single flipped byte either is refused as corruption or leaves the records
        // exactly as written (a byte the reader ignores, such as one of the `created_by`
        // string's); it never yields different records or another kind of error.
        let mut refused = 0;
        for i in 0..file.len() {
            let mut bad = file.to_vec();
            bad[i] ^= 0x5A;
            match decode_segment(Bytes::from(bad)) {
                Ok(got) => assert_eq!(got, records, "flip at {i} changed the records"),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corruption, "flip at {i}: {e}");
                    refused += 1;
                }
            }
        }
        assert!(refused > file.len() / 2, "{refused} of {}", file.len());
    }

    #[test]
    fn refuses_a_foreign_parquet_file() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::UInt64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(UInt64Array::from(vec![1u64, 2, 3]))],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
        w.write(&batch).unwrap();
        let file = Bytes::from(w.into_inner().unwrap());
        let e = decode_segment(file).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    }

    #[tokio::test]
    async fn write_segment_puts_the_encoded_file() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let records = many(50);
        let name = segment_name(records[0].version, records[49].version);
        let path = Path::from(format!("databases/db/segments/{name}"));
        let size = write_segment(&store, &path, &records).await.unwrap();
        let body = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(body.len() as u64, size);
        assert_eq!(decode_segment(body).unwrap(), records);
    }
}
