//! C2SP tiles (<https://c2sp.org/tlog-tiles>): the tree stored as tiles of height 8, so that
//! a server reads O(log n) tiles to answer any proof, and appends without rereading the log.
//!
//! The tile at level `L`, index `N` holds up to 256 consecutive hashes of Merkle level `8L`:
//! `MTH(D[(N·256 + i)·256^L : (N·256 + i + 1)·256^L])`. A tile with fewer than 256 hashes is
//! partial, served at `tile/<L>/<N>.p/<W>`; level-0 tiles hold leaf hashes, and the entries
//! themselves go in bundles at `tile/entries/<N>[.p/<W>]`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use crate::hash::{Hash, node_hash, perfect_root};
use crate::proof::HashSource;

/// Merkle levels per tile.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile.
pub const FULL_WIDTH: u16 = 256;

/// A tile's coordinates: its level, its index within the level and its width (1–256;
/// 256 is a full tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// The tile level: its hashes are of Merkle level `8 · level`.
    pub level: u8,
    /// The index of the tile within its level.
    pub index: u64,
    /// The number of hashes in it.
    pub width: u16,
}

impl TileId {
    /// Whether the tile holds all 256 hashes.
    pub fn is_full(&self) -> bool {
        self.width == FULL_WIDTH
    }

    /// The resource path: `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!("tile/{}/{}", self.level, index_path(self.index, self.width))
    }

    /// The path of the entry bundle matching a level-0 tile: `tile/entries/<N>[.p/<W>]`.
    pub fn entries_path(&self) -> String {
        format!("tile/entries/{}", index_path(self.index, self.width))
    }
}

/// What a tile path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TilePath {
    /// A hash tile.
    Hashes(TileId),
    /// An entry bundle (its `level` is 0).
    Entries(TileId),
}

/// A path that is not a canonical tile path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a tile path")]
pub struct TilePathError;

/// `<N>[.p/<W>]`: N in zero-padded 3-digit elements, all but the last prefixed with `x`.
fn index_path(index: u64, width: u16) -> String {
    let mut n = index / 1000;
    let mut out = format!("{:03}", index % 1000);
    while n > 0 {
        out = format!("x{:03}/{out}", n % 1000);
        n /= 1000;
    }
    if width < FULL_WIDTH {
        out.push_str(&format!(".p/{width}"));
    }
    out
}

fn three_digits(s: &str) -> Result<u64, TilePathError> {
    if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().map_err(|_| TilePathError)
    } else {
        Err(TilePathError)
    }
}

fn small_decimal(s: &str, max: u64) -> Result<u64, TilePathError> {
    let canonical = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'));
    let v: u64 = if canonical {
        s.parse().map_err(|_| TilePathError)?
    } else {
        return Err(TilePathError);
    };
    if v > max { Err(TilePathError) } else { Ok(v) }
}

/// Parses a canonical tile or entry-bundle path (the inverse of [`TileId::path`] and
/// [`TileId::entries_path`]).
pub fn parse_tile_path(path: &str) -> Result<TilePath, TilePathError> {
    let rest = path.strip_prefix("tile/").ok_or(TilePathError)?;
    let (kind, rest) = rest.split_once('/').ok_or(TilePathError)?;
    let (index_part, width) = match rest.split_once(".p/") {
        Some((i, w)) => {
            let w = small_decimal(w, u64::from(FULL_WIDTH) - 1)?;
            if w == 0 {
                return Err(TilePathError);
            }
            (i, u16::try_from(w).map_err(|_| TilePathError)?)
        }
        None => (rest, FULL_WIDTH),
    };
    let elements: Vec<&str> = index_part.split('/').collect();
    let (last, leading) = elements.split_last().ok_or(TilePathError)?;
    let mut index: u64 = 0;
    for (i, e) in leading.iter().enumerate() {
        let v = three_digits(e.strip_prefix('x').ok_or(TilePathError)?)?;
        if i == 0 && v == 0 {
            return Err(TilePathError); // not canonical: a leading x000
        }
        index = index
            .checked_mul(1000)
            .and_then(|n| n.checked_add(v))
            .ok_or(TilePathError)?;
    }
    let v = three_digits(last)?;
    index = index
        .checked_mul(1000)
        .and_then(|n| n.checked_add(v))
        .ok_or(TilePathError)?;
    if kind == "entries" {
        return Ok(TilePath::Entries(TileId {
            level: 0,
            index,
            width,
        }));
    }
    let level = u8::try_from(small_decimal(kind, 63)?).map_err(|_| TilePathError)?;
    Ok(TilePath::Hashes(TileId {
        level,
        index,
        width,
    }))
}

/// The number of hashes of tile level `level` in a tree of `size` leaves.
fn hashes_at(level: u8, size: u64) -> u64 {
    size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
        .unwrap_or(0)
}

/// The width of tile `(level, index)` in a tree of `size` leaves, if it exists there.
pub fn tile_width(level: u8, index: u64, size: u64) -> Option<u16> {
    let count = hashes_at(level, size);
    let start = index.checked_mul(u64::from(FULL_WIDTH))?;
    let width = count.checked_sub(start)?.min(u64::from(FULL_WIDTH));
    if width == 0 {
        None
    } else {
        u16::try_from(width).ok()
    }
}

/// Every tile of a tree of `size` leaves: the full ones and the partial one of each level.
pub fn tiles_for_size(size: u64) -> Vec<TileId> {
    new_tiles(0, size)
}

/// The tiles a tree of `new_size` leaves has and a tree of `old_size` leaves has not
/// (new tiles, and the wider versions of old partial tiles): what to store after appending.
pub fn new_tiles(old_size: u64, new_size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    for level in 0..=7u8 {
        let (old, new) = (hashes_at(level, old_size), hashes_at(level, new_size));
        if new <= old {
            continue;
        }
        for index in old / u64::from(FULL_WIDTH)..new.div_ceil(u64::from(FULL_WIDTH)) {
            if let Some(width) = tile_width(level, index, new_size) {
                out.push(TileId {
                    level,
                    index,
                    width,
                });
            }
        }
    }
    out
}

/// A tile's bytes: its hashes concatenated.
pub fn tile_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

/// Tile bytes that are not `width` hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tile has {got} bytes, expected {expected}")]
pub struct TileLengthError {
    /// Bytes expected.
    pub expected: usize,
    /// Bytes read.
    pub got: usize,
}

/// Reads a tile of `width` hashes. A wider version of the tile (up to the full one) is
/// accepted and its first `width` hashes returned: tiles only grow to the right, and the spec
/// lets logs delete a partial tile once a wider one exists.
pub fn parse_tile(bytes: &[u8], width: u16) -> Result<Vec<Hash>, TileLengthError> {
    let expected = usize::from(width) * 32;
    let full = usize::from(FULL_WIDTH) * 32;
    let (hashes, tail) = bytes.as_chunks::<32>();
    if width == 0
        || width > FULL_WIDTH
        || bytes.len() < expected
        || bytes.len() > full
        || !tail.is_empty()
    {
        return Err(TileLengthError {
            expected,
            got: bytes.len(),
        });
    }
    Ok(hashes.iter().take(usize::from(width)).copied().collect())
}

/// Where tiles are stored.
pub trait TileReader {
    /// Why a tile could not be read.
    type Error;

    /// The bytes of tile `(level, index)` at `width` hashes (256 for a full tile).
    fn tile(&self, level: u8, index: u64, width: u16) -> Result<Vec<u8>, Self::Error>;
}

/// A tile that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("missing tile {0:?}")]
pub struct MissingTile(pub TileId);

/// Tiles in memory, keyed by id (tests, tools, the benchmark). A missing partial tile
/// falls back to a wider tile of the same index.
impl TileReader for HashMap<TileId, Vec<u8>> {
    type Error = MissingTile;

    fn tile(&self, level: u8, index: u64, width: u16) -> Result<Vec<u8>, MissingTile> {
        let id = TileId {
            level,
            index,
            width,
        };
        (width..=FULL_WIDTH)
            .find_map(|width| self.get(&TileId { width, ..id }))
            .cloned()
            .ok_or(MissingTile(id))
    }
}

/// Why a hash could not be read from tiles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError<E> {
    /// The reader failed.
    #[error("reading tile {tile:?}: {error}")]
    Read {
        /// The tile asked for.
        tile: TileId,
        /// The reader's error.
        error: E,
    },
    /// The tile has the wrong length.
    #[error("tile {tile:?}: {error}")]
    Length {
        /// The tile read.
        tile: TileId,
        /// What was wrong.
        error: TileLengthError,
    },
    /// The subtree asked for is not complete in the tree.
    #[error("subtree at level {level}, index {index} is outside the tree")]
    OutsideTree {
        /// Merkle level.
        level: u8,
        /// Index within the level.
        index: u64,
    },
}

/// Every perfect subtree root inside one tile: level `k` holds the roots of
/// the runs of `2^k` of the tile's hashes, left to right (level 0 is the tile
/// itself; a partial tile's ragged right edge has no roots above it). Built
/// once with about `width` hashings, after which any node a proof asks of the
/// tile is a lookup, so a server can keep the pyramids of full tiles (which
/// never change) between proofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pyramid {
    levels: Vec<Vec<Hash>>,
}

impl Pyramid {
    /// The pyramid over a tile's hashes.
    pub fn new(hashes: Vec<Hash>) -> Pyramid {
        let mut levels = vec![hashes];
        while let Some(last) = levels.last().filter(|l| l.len() >= 2) {
            let next = last
                .chunks_exact(2)
                .filter_map(|pair| match pair {
                    [l, r] => Some(node_hash(l, r)),
                    _ => None,
                })
                .collect();
            levels.push(next);
        }
        Pyramid { levels }
    }

    /// The number of hashes in the tile.
    pub fn width(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// The tile's hashes.
    pub fn hashes(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// The root of the `2^below` hashes starting at position `offset` of the
    /// tile (a multiple of `2^below`), if they are all in it.
    pub fn node(&self, below: u32, offset: usize) -> Option<Hash> {
        let level = self.levels.get(usize::try_from(below).ok()?)?;
        level.get(offset.checked_shr(below)?).copied()
    }
}

/// The subtree hashes of a tree of `size` leaves, read from tiles: a [`HashSource`] for
/// proofs. Each tile is read at most once per `TileHashes` (make one per request), and
/// its [`Pyramid`] built once; a caller that keeps pyramids between requests hands them
/// in with [`TileHashes::with_pyramids`].
pub struct TileHashes<'a, R: TileReader + ?Sized> {
    reader: &'a R,
    size: u64,
    cache: RefCell<HashMap<(u8, u64), Arc<Pyramid>>>,
}

impl<'a, R: TileReader + ?Sized> TileHashes<'a, R> {
    /// The tree of `size` leaves whose tiles `reader` holds.
    pub fn new(reader: &'a R, size: u64) -> Self {
        Self::with_pyramids(reader, size, HashMap::new())
    }

    /// Like [`TileHashes::new`], with pyramids of tiles already at hand, by
    /// `(level, index)`. A pyramid is used when it is at least as wide as the
    /// tile is in this tree (the tree's own bounds keep a wider one's extra
    /// hashes out of every answer).
    pub fn with_pyramids(
        reader: &'a R,
        size: u64,
        pyramids: HashMap<(u8, u64), Arc<Pyramid>>,
    ) -> Self {
        Self {
            reader,
            size,
            cache: RefCell::new(pyramids),
        }
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The pyramids this source holds (those handed in and those it built).
    pub fn into_pyramids(self) -> HashMap<(u8, u64), Arc<Pyramid>> {
        self.cache.into_inner()
    }

    /// The hashes of tile `(level, index)` at its width in this tree.
    pub fn tile_hashes(&self, level: u8, index: u64) -> Result<Vec<Hash>, TileError<R::Error>> {
        let (pyramid, width) = self.pyramid(level, index)?;
        Ok(pyramid
            .hashes()
            .iter()
            .take(usize::from(width))
            .copied()
            .collect())
    }

    /// The pyramid of tile `(level, index)` (perhaps wider than the tile is
    /// in this tree) and the tile's width in this tree.
    fn pyramid(&self, level: u8, index: u64) -> Result<(Arc<Pyramid>, u16), TileError<R::Error>> {
        let width = tile_width(level, index, self.size).ok_or(TileError::OutsideTree {
            level: level.saturating_mul(TILE_HEIGHT),
            index: index.saturating_mul(u64::from(FULL_WIDTH)),
        })?;
        if let Some(p) = self
            .cache
            .borrow()
            .get(&(level, index))
            .filter(|p| p.width() >= usize::from(width))
        {
            return Ok((Arc::clone(p), width));
        }
        let tile = TileId {
            level,
            index,
            width,
        };
        let bytes = self
            .reader
            .tile(level, index, width)
            .map_err(|error| TileError::Read { tile, error })?;
        let hashes =
            parse_tile(&bytes, width).map_err(|error| TileError::Length { tile, error })?;
        let pyramid = Arc::new(Pyramid::new(hashes));
        self.cache
            .borrow_mut()
            .insert((level, index), Arc::clone(&pyramid));
        Ok((pyramid, width))
    }
}

impl<R: TileReader + ?Sized> HashSource for TileHashes<'_, R> {
    type Error = TileError<R::Error>;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        let outside = || TileError::OutsideTree { level, index };
        let tile_level = level / TILE_HEIGHT;
        let below = u32::from(level % TILE_HEIGHT);
        // The 2^below stored hashes of Merkle level 8·tile_level under this node.
        let first = index
            .checked_shl(below)
            .filter(|f| f >> below == index)
            .ok_or_else(outside)?;
        let count = 1u64 << below;
        let end = first.checked_add(count).ok_or_else(outside)?;
        if end > hashes_at(tile_level, self.size) || tile_level > 7 {
            return Err(outside());
        }
        let (pyramid, _) = self.pyramid(tile_level, first / u64::from(FULL_WIDTH))?;
        let offset = usize::try_from(first % u64::from(FULL_WIDTH)).map_err(|_| outside())?;
        pyramid.node(below, offset).ok_or_else(outside)
    }
}

/// No tiles at all: for building the tiles of a new log.
struct NoTiles;

impl TileReader for NoTiles {
    type Error = Infallible;

    fn tile(&self, _: u8, _: u64, _: u16) -> Result<Vec<u8>, Infallible> {
        Ok(Vec::new())
    }
}

/// Tiles with their bytes, ready to store.
pub type Tiles = Vec<(TileId, Vec<u8>)>;

/// The tiles of a new log holding `leaves`: every tile of [`tiles_for_size`], with its bytes.
pub fn build_tiles(leaves: &[Hash]) -> Tiles {
    match append_tiles(&NoTiles, 0, leaves) {
        Ok(tiles) => tiles,
        Err(never) => match never {
            TileError::Read { error, .. } => match error {},
            // Unreachable: with an old size of 0 nothing is read.
            TileError::Length { .. } | TileError::OutsideTree { .. } => Vec::new(),
        },
    }
}

/// The tiles to store after appending `new_leaves` to a log of `old_size` leaves whose tiles
/// `reader` holds: exactly [`new_tiles`]`(old_size, old_size + new_leaves.len())`, with bytes.
///
/// Only the old partial tile of each level is read (at most one per level): every new hash
/// at a level above 0 is the root of a full tile of the level below that this batch completes.
pub fn append_tiles<R: TileReader + ?Sized>(
    reader: &R,
    old_size: u64,
    new_leaves: &[Hash],
) -> Result<Tiles, TileError<R::Error>> {
    let mut out = Vec::new();
    let mut new_hashes: Vec<Hash> = new_leaves.to_vec();
    for level in 0..=7u8 {
        if new_hashes.is_empty() {
            break;
        }
        let old_count = hashes_at(level, old_size);
        let first_tile = old_count / u64::from(FULL_WIDTH);
        let old_width = u16::try_from(old_count % u64::from(FULL_WIDTH)).unwrap_or(0);
        let mut hashes = if old_width > 0 {
            let tile = TileId {
                level,
                index: first_tile,
                width: old_width,
            };
            let bytes = reader
                .tile(level, first_tile, old_width)
                .map_err(|error| TileError::Read { tile, error })?;
            parse_tile(&bytes, old_width).map_err(|error| TileError::Length { tile, error })?
        } else {
            Vec::new()
        };
        hashes.append(&mut new_hashes);
        for (index, chunk) in (first_tile..).zip(hashes.chunks(usize::from(FULL_WIDTH))) {
            let width = u16::try_from(chunk.len()).unwrap_or(FULL_WIDTH);
            if width == FULL_WIDTH {
                new_hashes.push(perfect_root(chunk));
            }
            out.push((
                TileId {
                    level,
                    index,
                    width,
                },
                tile_bytes(chunk),
            ));
        }
    }
    Ok(out)
}

/// An entry longer than an entry bundle can hold (65,535 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// An entry does not fit a 16-bit length.
    #[error("entry {index} is longer than 65535 bytes")]
    EntryTooLong {
        /// Its position in the bundle.
        index: usize,
    },
    /// The bundle ends inside an entry.
    #[error("truncated entry bundle")]
    Truncated,
}

/// An entry bundle: each entry prefixed by its length as a big-endian u16.
pub fn entry_bundle<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let len = u16::try_from(entry.len()).map_err(|_| BundleError::EntryTooLong { index })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// The entries of a bundle.
pub fn parse_entry_bundle(mut bytes: &[u8]) -> Result<Vec<&[u8]>, BundleError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or(BundleError::Truncated)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return Err(BundleError::Truncated);
        }
        let (entry, rest) = rest.split_at(len);
        out.push(entry);
        bytes = rest;
    }
    Ok(out)
}
