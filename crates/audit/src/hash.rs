//! RFC 6962 / RFC 9162 §2.1.1 Merkle tree hashing with SHA-256.

use sha2::{Digest, Sha256};

/// A SHA-256 Merkle tree hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of a leaf: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    let (tag, rest) = buf.split_at_mut(1);
    let (l, r) = rest.split_at_mut(32);
    tag.copy_from_slice(&[0x01]);
    l.copy_from_slice(left);
    r.copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// The Merkle Tree Hash (MTH) of a list of leaf hashes, for any number of leaves.
///
/// The tree splits at the largest power of two smaller than the size, as RFC 6962 defines.
/// This rehashes every leaf: use [`crate::Frontier`] to follow a growing log,
/// and tiles to answer questions about a large one.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [only] => *only,
        _ => {
            let (left, right) = leaves.split_at(split_point(leaves.len() as u64) as usize);
            node_hash(&root(left), &root(right))
        }
    }
}

/// The largest power of two strictly smaller than `n` (for `n ≥ 2`; 0 below that).
pub(crate) fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    1 << (63 - (n - 1).leading_zeros())
}

/// The root of a power-of-two run of hashes, bottom-up (no recursion, no allocation
/// beyond one scratch vector).
pub(crate) fn perfect_root(hashes: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [l] => *l,
                _ => EMPTY_ROOT,
            })
            .collect();
    }
    level.first().copied().unwrap_or(EMPTY_ROOT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest([])));
        assert_eq!(root(&[]), EMPTY_ROOT);
    }

    #[test]
    fn split_points() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (7, 4),
            (8, 4),
            (9, 8),
            (63, 32),
            (28937, 16384),
        ] {
            assert_eq!(split_point(n), k, "n = {n}");
        }
    }

    #[test]
    fn perfect_root_agrees_with_root() {
        let leaves: Vec<Hash> = (0u8..16).map(|i| leaf_hash(&[i])).collect();
        for n in [1usize, 2, 4, 8, 16] {
            assert_eq!(perfect_root(&leaves[..n]), root(&leaves[..n]));
        }
    }
}
