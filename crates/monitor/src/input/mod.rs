//! Parsing hospitals' exports into a [`World`]: a directory of six CSV files
//! (`staff.csv`, `patients.csv`, `encounters.csv`, `care_team.csv`,
//! `orders.csv`, `access_log.csv`) or of FHIR Bulk Data NDJSON files.
//!
//! Both paths share one policy for malformed input. A bad row (or NDJSON
//! line) is reported as a [`BadRow`] naming the file, the line and the
//! column, never the value (values are PHI). By default every bad row is
//! collected and the whole input refused ([`InputError::BadRows`]); with
//! [`ReadOptions::skip_bad_rows`] each bad row is skipped and reported in
//! [`Loaded::skipped`]. Nothing is dropped silently: a row that refers to a
//! skipped row is itself bad.
//!
//! Files are streamed (buffered reads, bounded fields and lines); only the
//! `World` itself is held in memory.

mod csv;
mod fhir;
mod time;

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use crate::model::World;

pub use csv::{CsvSources, MAX_FIELD, read_csv_dir, read_csv_sources};
pub use fhir::{MAX_LINE, read_fhir_dir, read_fhir_sources};

/// How to treat malformed input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Skip malformed rows (each is reported in [`Loaded::skipped`]) instead
    /// of refusing the whole input.
    pub skip_bad_rows: bool,
}

/// A malformed row (CSV record or NDJSON line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    /// The file name, e.g. `access_log.csv`.
    pub file: String,
    /// The 1-based physical line where the record starts.
    pub line: u64,
    /// The column and the problem. Never contains a field's value.
    pub message: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// A parsed input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub world: World,
    /// The rows skipped (only with [`ReadOptions::skip_bad_rows`]).
    pub skipped: Vec<BadRow>,
    /// Bytes read, over all files.
    pub bytes: u64,
    /// Data rows read (CSV records after the header, or non-blank NDJSON
    /// lines), skipped ones included.
    pub rows: u64,
}

/// How many bad rows [`InputError::BadRows`] lists; the rest are counted.
pub const MAX_REPORTED_BAD_ROWS: usize = 1_000;

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: missing")]
    MissingFile { file: String },
    #[error("{dir}: neither staff.csv nor any *.ndjson file")]
    UnknownLayout { dir: String },
    /// The header is not exactly the expected one. `found` lists the header
    /// as read, with any name that is not a column name of one of the six
    /// files shown as `?` (a file without a header would otherwise put a
    /// row of data here).
    #[error("{file}: header must be `{expected}`, found `{found}`")]
    Header {
        file: String,
        expected: String,
        found: String,
    },
    /// Malformed rows (without `skip_bad_rows`): the first
    /// [`MAX_REPORTED_BAD_ROWS`] of them, and how many there were in all.
    /// No world is returned.
    #[error("{total} malformed row{s}: the input was refused", s = if *total == 1 { "" } else { "s" })]
    BadRows { rows: Vec<BadRow>, total: u64 },
}

/// Reads a directory of either kind: `staff.csv` present means CSV, else any
/// `*.ndjson` file means FHIR Bulk Data.
pub fn read_dir(
    dir: &Path,
    opts: &ReadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Loaded, InputError> {
    if dir.join("staff.csv").is_file() {
        return read_csv_dir(dir, opts, progress);
    }
    if !fhir::ndjson_files(dir)?.is_empty() {
        return read_fhir_dir(dir, opts, progress);
    }
    Err(InputError::UnknownLayout {
        dir: dir.display().to_string(),
    })
}

/// Opens a file for buffered reading, with its size.
fn open(dir: &Path, name: &str) -> Result<(BufReader<File>, u64), InputError> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(InputError::MissingFile {
                file: name.to_owned(),
            });
        }
        Err(source) => {
            return Err(InputError::Io {
                file: name.to_owned(),
                source,
            });
        }
    };
    let len = file
        .metadata()
        .map_err(|source| InputError::Io {
            file: name.to_owned(),
            source,
        })?
        .len();
    Ok((BufReader::with_capacity(256 * 1024, file), len))
}

/// Reports progress at most every [`Progress::STEP`] bytes.
struct Progress<'a> {
    f: &'a mut dyn FnMut(u64, u64),
    total: u64,
    next: u64,
}

impl<'a> Progress<'a> {
    const STEP: u64 = 64 * 1024;

    fn new(f: &'a mut dyn FnMut(u64, u64), total: u64) -> Self {
        Progress {
            f,
            total,
            next: Self::STEP,
        }
    }

    /// `done` bytes of all files are read.
    #[inline]
    fn at(&mut self, done: u64) {
        if done >= self.next {
            // A file that grew while read must not report more than 100%.
            self.total = self.total.max(done);
            (self.f)(done, self.total);
            self.next = done.saturating_add(Self::STEP);
        }
    }

    fn finish(&mut self, done: u64) {
        self.total = self.total.max(done);
        (self.f)(done, self.total);
    }
}

/// Bad rows found so far, and what to do with them.
struct Bad {
    skip: bool,
    rows: Vec<BadRow>,
    total: u64,
}

impl Bad {
    fn new(opts: &ReadOptions) -> Self {
        Bad {
            skip: opts.skip_bad_rows,
            rows: Vec::new(),
            total: 0,
        }
    }

    fn push(&mut self, file: &str, line: u64, message: String) {
        self.total += 1;
        if self.skip || self.rows.len() < MAX_REPORTED_BAD_ROWS {
            self.rows.push(BadRow {
                file: file.to_owned(),
                line,
                message,
            });
        }
    }

    /// The result: the world, or every bad row when they refuse the input.
    fn finish(self, world: World, bytes: u64, rows: u64) -> Result<Loaded, InputError> {
        if !self.skip && self.total > 0 {
            return Err(InputError::BadRows {
                rows: self.rows,
                total: self.total,
            });
        }
        Ok(Loaded {
            world,
            skipped: self.rows,
            bytes,
            rows,
        })
    }
}

/// What is wrong with a row: a column (or element) and a problem. Neither
/// holds a value from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowError {
    column: &'static str,
    problem: std::borrow::Cow<'static, str>,
}

impl RowError {
    fn new(column: &'static str, problem: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        RowError {
            column,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.column, self.problem)
        }
    }
}

/// An index that stands for a row that was bad, when bad rows refuse the
/// input: references to it resolve (so that one bad row is reported once,
/// not again at every row that refers to it), and the world holding it is
/// never returned.
const BAD_ROW_INDEX: u32 = u32::MAX;

/// A hash map keyed by ids from the input, with a fast non-cryptographic
/// hash (FxHash's construction, as in rustc): every row looks up two or
/// three ids, and SipHash cost a quarter of the parse. An export comes from
/// the hospital's own record system, so flooding a table with crafted
/// collisions is not a threat worth SipHash's price here.
type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

#[derive(Default, Clone, Copy)]
struct FastHasher {
    hash: u64,
}

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            for (d, s) in w.iter_mut().zip(rest) {
                *d = *s;
            }
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiplication leaves its best bits high; hash tables use
        // the low ones.
        self.hash.rotate_left(26)
    }
}

/// A `u32` index for the next element of a vector.
fn next_index<T>(v: &[T]) -> u32 {
    // Four billion rows of one kind do not fit in memory anyway.
    u32::try_from(v.len()).unwrap_or(BAD_ROW_INDEX)
}
