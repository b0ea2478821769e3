//! The right edge of a growing tree (a "compact range" starting at 0).

use crate::hash::{EMPTY_ROOT, Hash, node_hash};
use crate::proof::HashSource;

/// The roots of the perfect subtrees that make up a tree of `size` leaves, largest first:
/// one per set bit of `size`, so at most 64.
///
/// A writer keeps a `Frontier` to append a leaf in O(log n) hashes and to compute the root
/// without rereading the log, and persists it (`to_bytes`) with each checkpoint.
///
/// INVARIANT: `subtrees.len() == size.count_ones()`, and `subtrees[i]` is the root of the
/// i-th perfect subtree from the left in the decomposition of `[0, size)` by the bits of `size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    subtrees: Vec<Hash>,
}

/// Bytes that are not a serialised [`Frontier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frontier: {0}")]
pub struct FrontierError(&'static str);

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from stored subtree hashes
    /// (for example tiles), reading one hash per set bit of `size`.
    pub fn from_source<S: HashSource + ?Sized>(source: &S, size: u64) -> Result<Self, S::Error> {
        let mut subtrees = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1 << level) != 0 {
                subtrees.push(source.node(level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Self { size, subtrees })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree roots, largest (leftmost) first.
    pub fn subtrees(&self) -> &[Hash] {
        &self.subtrees
    }

    /// Appends one leaf hash: O(log n) node hashes, amortised O(1).
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        // Each trailing 1-bit of the old size is a perfect subtree the new leaf completes.
        while size & 1 == 1 {
            let Some(left) = self.subtrees.pop() else {
                break;
            };
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.subtrees.push(hash);
        self.size += 1;
    }

    /// The Merkle Tree Hash of the tree: the subtree roots folded from the right.
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(last) = iter.next() else {
            return EMPTY_ROOT;
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// `size` as 8 big-endian bytes, then the subtree roots, largest first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.subtrees.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for h in &self.subtrees {
            out.extend_from_slice(h);
        }
        out
    }

    /// Reads what [`Frontier::to_bytes`] wrote, checking the number of hashes against the size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FrontierError> {
        let (size, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or(FrontierError("too short"))?;
        let size = u64::from_be_bytes(*size);
        let (hashes, tail) = rest.as_chunks::<32>();
        if !tail.is_empty() {
            return Err(FrontierError("trailing bytes"));
        }
        if hashes.len() != size.count_ones() as usize {
            return Err(FrontierError("hash count does not match the size"));
        }
        Ok(Self {
            size,
            subtrees: hashes.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{leaf_hash, root};

    #[test]
    fn frontier_matches_batch_root_for_every_prefix() {
        let leaves: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        assert_eq!(f.root(), EMPTY_ROOT);
        for (i, leaf) in leaves.iter().enumerate() {
            f.push(*leaf);
            assert_eq!(f.size(), i as u64 + 1);
            assert_eq!(f.root(), root(&leaves[..=i]), "size {}", i + 1);
            assert_eq!(Frontier::from_bytes(&f.to_bytes()).as_ref(), Ok(&f));
        }
    }

    #[test]
    fn from_bytes_rejects_bad_lengths() {
        let mut f = Frontier::new();
        f.push(leaf_hash(b"a"));
        f.push(leaf_hash(b"b"));
        f.push(leaf_hash(b"c"));
        let bytes = f.to_bytes();
        assert!(Frontier::from_bytes(&bytes[..7]).is_err());
        assert!(Frontier::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Frontier::from_bytes(&bytes[..bytes.len() - 32]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 32]);
        assert!(Frontier::from_bytes(&longer).is_err());
    }
}
