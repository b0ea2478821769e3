//! Merkle hashing, the frontier and proofs.

use audit::{
    EMPTY_ROOT, Frontier, Hash, ProofError, consistency_proof, inclusion_proof, leaf_hash,
    node_hash, root, root_from, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn hs(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

/// The leaf inputs of the RFC 6962 reference tests (transparency-dev/merkle `testonly`).
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Root hashes of the trees of the first 0..=8 of those leaves.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// Leaf hashes of those leaves (level 0 of the reference tree).
const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// (index, size, proof) from the reference inclusion tests.
const INCLUSION: &[(u64, u64, &[&str])] = &[
    (0, 1, &[]),
    (
        0,
        2,
        &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
    ),
    (
        1,
        2,
        &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// (old size, new size, proof) from the reference consistency tests.
const CONSISTENCY: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn reference_leaves() -> Vec<Hash> {
    LEAVES
        .iter()
        .map(|s| leaf_hash(&hex::decode(s).unwrap()))
        .collect()
}

#[test]
fn empty_tree_root() {
    assert_eq!(root(&[]), h(ROOTS[0]));
    assert_eq!(EMPTY_ROOT, h(ROOTS[0]));
    assert_eq!(Frontier::new().root(), EMPTY_ROOT);
}

#[test]
fn reference_leaf_hashes_and_roots() {
    let leaves = reference_leaves();
    assert_eq!(leaves, hs(&LEAF_HASHES));
    let mut frontier = Frontier::new();
    for size in 0..=8 {
        assert_eq!(root(&leaves[..size]), h(ROOTS[size]), "size {size}");
        assert_eq!(frontier.root(), h(ROOTS[size]), "frontier size {size}");
        assert_eq!(
            root_from(leaves.as_slice(), size as u64).unwrap(),
            h(ROOTS[size])
        );
        if let Some(leaf) = leaves.get(size) {
            frontier.push(*leaf);
        }
    }
    // Level-1 and level-2 nodes of the reference tree.
    assert_eq!(
        node_hash(&leaves[0], &leaves[1]),
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")
    );
    assert_eq!(
        node_hash(&leaves[4], &leaves[5]),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a")
    );
}

#[test]
fn reference_inclusion_proofs() {
    let leaves = reference_leaves();
    for &(index, size, want) in INCLUSION {
        let proof = inclusion_proof(leaves.as_slice(), index, size).unwrap();
        assert_eq!(proof, hs(want), "index {index} size {size}");
        let r = h(ROOTS[size as usize]);
        verify_inclusion(&leaves[index as usize], index, size, &proof, &r).unwrap();
    }
}

#[test]
fn reference_consistency_proofs() {
    let leaves = reference_leaves();
    for &(old, new, want) in CONSISTENCY {
        let proof = consistency_proof(leaves.as_slice(), old, new).unwrap();
        assert_eq!(proof, hs(want), "{old} -> {new}");
        let (r1, r2) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
        verify_consistency(old, new, &r1, &r2, &proof).unwrap();
        if old != new {
            // The RFC's known-bad case: the wrong old root.
            assert_eq!(
                verify_consistency(old, new, &h(ROOTS[old as usize - 1]), &r2, &proof),
                Err(ProofError::RootMismatch)
            );
        }
    }
}

#[test]
fn bad_arguments_are_refused() {
    let leaves = reference_leaves();
    assert!(inclusion_proof(leaves.as_slice(), 3, 3).is_err());
    assert!(consistency_proof(leaves.as_slice(), 4, 3).is_err());
    let r = h(ROOTS[3]);
    assert!(matches!(
        verify_inclusion(&leaves[0], 3, 3, &[], &r),
        Err(ProofError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        verify_consistency(4, 3, &r, &r, &[]),
        Err(ProofError::SizesOutOfOrder { .. })
    ));
    // Equal sizes need an empty proof; the empty tree is a prefix of everything.
    assert_eq!(
        verify_consistency(3, 3, &r, &r, &[r]),
        Err(ProofError::WrongLength)
    );
    assert_eq!(verify_consistency(0, 3, &EMPTY_ROOT, &r, &[]), Ok(()));
    assert_eq!(
        verify_consistency(0, 3, &r, &r, &[]),
        Err(ProofError::RootMismatch)
    );
    // A proof that is too long or too short.
    let proof = inclusion_proof(leaves.as_slice(), 1, 5).unwrap();
    let r5 = h(ROOTS[5]);
    let mut long = proof.clone();
    long.push(r5);
    assert_eq!(
        verify_inclusion(&leaves[1], 1, 5, &long, &r5),
        Err(ProofError::WrongLength)
    );
    assert_eq!(
        verify_inclusion(&leaves[1], 1, 5, &proof[..2], &r5),
        Err(ProofError::WrongLength)
    );
}

/// The independent implementation: `ct-merkle` 0.3 over SHA-256 (through `sha2` 0.11).
type Reference = ct_merkle::mem_backed_tree::MemoryBackedTree<sha2_0_11::Sha256, Vec<u8>>;

fn entries(n: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = (i * 7 + usize::from(seed)) % 40;
            (0..len).map(|j| (i + j) as u8 ^ seed).collect()
        })
        .collect()
}

#[test]
fn agrees_with_ct_merkle() {
    let data = entries(130, 7);
    let leaves: Vec<Hash> = data.iter().map(|e| leaf_hash(e)).collect();
    let mut reference = Reference::new();
    for (i, entry) in data.iter().enumerate() {
        reference.push(entry.clone());
        let size = i as u64 + 1;
        let their_root: Hash = reference.root().as_bytes().as_slice().try_into().unwrap();
        assert_eq!(root(&leaves[..=i]), their_root, "size {size}");
        for index in [0, size / 2, size - 1] {
            let ours = inclusion_proof(leaves.as_slice(), index, size).unwrap();
            let theirs = reference.prove_inclusion(index as usize);
            assert_eq!(
                ours.concat(),
                theirs.as_bytes(),
                "inclusion {index} in {size}"
            );
        }
        for old in [1, size / 3, size / 2, size - 1] {
            if old == 0 || old >= size {
                continue;
            }
            let ours = consistency_proof(leaves.as_slice(), old, size).unwrap();
            let theirs = reference.prove_consistency((size - old) as usize);
            assert_eq!(
                ours.concat(),
                theirs.as_bytes(),
                "consistency {old} -> {size}"
            );
        }
    }
}

fn tree(size: usize) -> Vec<Hash> {
    (0..size as u32)
        .map(|i| leaf_hash(&i.to_le_bytes()))
        .collect()
}

fn flip(hash: &mut Hash, bit: usize) {
    hash[(bit / 8) % 32] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn inclusion_proofs_verify_and_tampering_fails(
        size in 1usize..=2000,
        pick in any::<prop::sample::Index>(),
        bit in 0usize..256,
        which in any::<prop::sample::Index>(),
    ) {
        let leaves = tree(size);
        let r = root(&leaves);
        let index = pick.index(size);
        let proof = inclusion_proof(leaves.as_slice(), index as u64, size as u64).unwrap();
        prop_assert_eq!(verify_inclusion(&leaves[index], index as u64, size as u64, &proof, &r), Ok(()));

        let mut bad_leaf = leaves[index];
        flip(&mut bad_leaf, bit);
        prop_assert!(verify_inclusion(&bad_leaf, index as u64, size as u64, &proof, &r).is_err());
        let mut bad_root = r;
        flip(&mut bad_root, bit);
        prop_assert!(verify_inclusion(&leaves[index], index as u64, size as u64, &proof, &bad_root).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            flip(&mut bad[which.index(proof.len())], bit);
            prop_assert!(verify_inclusion(&leaves[index], index as u64, size as u64, &bad, &r).is_err());
        }
        // The wrong index (same size) does not verify unless the leaves happen to coincide.
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert!(verify_inclusion(&leaves[index], other as u64, size as u64, &proof, &r).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_tampering_fails(
        new in 1usize..=2000,
        pick in any::<prop::sample::Index>(),
        bit in 0usize..256,
        which in any::<prop::sample::Index>(),
    ) {
        let leaves = tree(new);
        let old = pick.index(new + 1);
        let (r1, r2) = (root(&leaves[..old]), root(&leaves));
        let proof = consistency_proof(leaves.as_slice(), old as u64, new as u64).unwrap();
        prop_assert_eq!(verify_consistency(old as u64, new as u64, &r1, &r2, &proof), Ok(()));

        let (mut bad1, mut bad2) = (r1, r2);
        flip(&mut bad1, bit);
        flip(&mut bad2, bit);
        prop_assert!(verify_consistency(old as u64, new as u64, &bad1, &r2, &proof).is_err());
        if old > 0 {
            prop_assert!(verify_consistency(old as u64, new as u64, &r1, &bad2, &proof).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            flip(&mut bad[which.index(proof.len())], bit);
            prop_assert!(verify_consistency(old as u64, new as u64, &r1, &r2, &bad).is_err());
        }
    }

    #[test]
    fn frontier_root_is_batch_root_for_every_prefix(size in 0usize..=600) {
        let leaves = tree(size);
        let mut frontier = Frontier::new();
        prop_assert_eq!(frontier.root(), EMPTY_ROOT);
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            prop_assert_eq!(frontier.root(), root(&leaves[..=i]));
        }
        let restored = Frontier::from_bytes(&frontier.to_bytes()).unwrap();
        prop_assert_eq!(&restored, &frontier);
        prop_assert_eq!(Frontier::from_source(leaves.as_slice(), size as u64).unwrap(), frontier);
    }
}
