//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4).
//!
//! Proofs are generated from a [`HashSource`]: anything that can give the root of a perfect
//! subtree (`2^level` leaves, aligned). A slice of leaf hashes is one (it rehashes what it
//! needs, O(n)); stored tiles are another (`crate::tiles::TileHashes`, O(log n) tile reads).
//! Every hash a proof needs is either such a perfect subtree or the right edge of the tree,
//! which is folded from at most 64 of them.

use crate::hash::{Hash, node_hash, perfect_root, split_point};

/// A store of perfect-subtree roots.
pub trait HashSource {
    /// Why a hash could not be read.
    type Error;

    /// The root of the perfect subtree of `2^level` leaves that starts at leaf `index << level`.
    ///
    /// Callers only ask for subtrees that lie entirely inside the tree they prove about.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// A slice of leaf hashes lacks the leaves a subtree needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no subtree at level {level}, index {index}")]
pub struct MissingHash {
    /// The subtree's level.
    pub level: u8,
    /// The subtree's index within its level.
    pub index: u64,
}

/// Leaf hashes in memory: every subtree root is recomputed from the leaves (O(2^level)).
impl HashSource for [Hash] {
    type Error = MissingHash;

    fn node(&self, level: u8, index: u64) -> Result<Hash, MissingHash> {
        let missing = MissingHash { level, index };
        let width = 1u64.checked_shl(u32::from(level)).ok_or(missing)?;
        let start = index.checked_mul(width).ok_or(missing)?;
        let end = start.checked_add(width).ok_or(missing)?;
        let start = usize::try_from(start).map_err(|_| missing)?;
        let end = usize::try_from(end).map_err(|_| missing)?;
        self.get(start..end).map(perfect_root).ok_or(missing)
    }
}

/// Why a proof could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProveError<E> {
    /// The leaf index is not below the tree size.
    #[error("leaf {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf asked about.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The old size is larger than the new one.
    #[error("old size {old_size} is larger than new size {new_size}")]
    SizesOutOfOrder {
        /// The smaller tree, as asked.
        old_size: u64,
        /// The larger tree, as asked.
        new_size: u64,
    },
    /// The hash source failed.
    #[error("reading a subtree hash: {0}")]
    Source(E),
}

/// Why a proof did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index claimed.
        index: u64,
        /// The tree size claimed.
        size: u64,
    },
    /// The old size is larger than the new one.
    #[error("old size {old_size} is larger than new size {new_size}")]
    SizesOutOfOrder {
        /// The old size claimed.
        old_size: u64,
        /// The new size claimed.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for the sizes claimed.
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    /// The proof leads to a different root.
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// The root of `D[lo:hi]`, where `lo` is a multiple of a power of two ≥ `hi - lo`
/// (true of every range the RFC's recursions visit): at most 64 perfect subtrees, folded.
fn range_root<S: HashSource + ?Sized>(source: &S, lo: u64, hi: u64) -> Result<Hash, S::Error> {
    let len = hi - lo;
    let mut parts = Vec::with_capacity(len.count_ones() as usize);
    let mut pos = lo;
    for level in (0..64u8).rev() {
        if len & (1 << level) != 0 {
            parts.push(source.node(level, pos >> level)?);
            pos += 1 << level;
        }
    }
    let mut iter = parts.iter().rev();
    let Some(last) = iter.next() else {
        return Ok(crate::hash::EMPTY_ROOT);
    };
    Ok(iter.fold(*last, |acc, left| node_hash(left, &acc)))
}

/// The Merkle Tree Hash of the first `size` leaves, read from `source`.
pub fn root_from<S: HashSource + ?Sized>(source: &S, size: u64) -> Result<Hash, S::Error> {
    range_root(source, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves: RFC 9162 §2.1.3.1
/// `PATH(m, D[n])`, hashes ordered from the leaf up.
pub fn inclusion_proof<S: HashSource + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if index >= size {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    // Walk down from the root, collecting siblings top-down, then reverse.
    let mut proof = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        let mid = lo + k;
        if index < mid {
            proof.push(range_root(source, mid, hi).map_err(ProveError::Source)?);
            hi = mid;
        } else {
            proof.push(range_root(source, lo, mid).map_err(ProveError::Source)?);
            lo = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof from the tree of `old_size` leaves to the tree of `new_size`:
/// RFC 9162 §2.1.4.1 `PROOF(m, D[n])`. Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof<S: HashSource + ?Sized>(
    source: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if old_size > new_size {
        return Err(ProveError::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled: collected top-down, reversed at the end.
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m, mut whole_old_tree) = (0u64, new_size, old_size, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole_old_tree {
                proof.push(range_root(source, lo, hi).map_err(ProveError::Source)?);
            }
            break;
        }
        let k = split_point(n);
        let mid = lo + k;
        if m <= k {
            proof.push(range_root(source, mid, hi).map_err(ProveError::Source)?);
            hi = mid;
        } else {
            proof.push(range_root(source, lo, mid).map_err(ProveError::Source)?);
            lo = mid;
            m -= k;
            whole_old_tree = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Computes the root an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1–5).
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(r)
}

/// Verifies that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(leaf, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// As in the RFC and the Go reference, equal sizes need an empty proof and equal roots,
/// and the empty tree (whose root must be SHA-256 of nothing) is a prefix of every tree.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        let expected = if old_size == 0 {
            &crate::hash::EMPTY_ROOT
        } else {
            new_root
        };
        return if old_root == expected {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        proof.split_first().ok_or(ProofError::WrongLength)?
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{leaf_hash, root};

    fn leaves(n: u32) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn every_inclusion_proof_verifies_up_to_40() {
        let all = leaves(40);
        for size in 1..=40u64 {
            let r = root(&all[..size as usize]);
            for index in 0..size {
                let proof = inclusion_proof(all.as_slice(), index, size).unwrap_or_default();
                assert_eq!(
                    verify_inclusion(&all[index as usize], index, size, &proof, &r),
                    Ok(()),
                    "index {index} size {size}"
                );
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_up_to_40() {
        let all = leaves(40);
        for new in 1..=40u64 {
            let new_root = root(&all[..new as usize]);
            for old in 0..=new {
                let old_root = root(&all[..old as usize]);
                let proof = consistency_proof(all.as_slice(), old, new).unwrap_or_default();
                assert_eq!(
                    verify_consistency(old, new, &old_root, &new_root, &proof),
                    Ok(()),
                    "{old} -> {new}"
                );
            }
        }
    }
}
