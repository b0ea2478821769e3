//! Measures the audit log on this machine: `cargo run --release -p audit --example bench`.
//!
//! Appends 1,000,000 leaves to a `Frontier`, builds the tiles, verifies 1,000,000 entries of
//! 300 bytes against checkpoints, and generates inclusion and consistency proofs from tiles.

use std::collections::HashMap;
use std::time::Instant;

use audit::tiles::build_tiles;
use audit::{
    Frontier, SigningKey, TileHashes, TileId, consistency_proof, inclusion_proof, leaf_hash,
    sign_checkpoint, verify_consistency, verify_inclusion, verify_log,
};

const N: u64 = 1_000_000;
const ORIGIN: &str = "vigil.example/audit";

fn entry(i: u64) -> Vec<u8> {
    let mut e = vec![0u8; 300];
    for (j, b) in e.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
    }
    if let Some(head) = e.get_mut(..8) {
        head.copy_from_slice(&i.to_be_bytes());
    }
    e
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let entries: Vec<Vec<u8>> = (0..N).map(entry).collect();

    let t = Instant::now();
    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(e)).collect();
    println!("leaf hashes of {N} entries of 300 bytes: {:?}", t.elapsed());

    let t = Instant::now();
    let mut frontier = Frontier::new();
    for leaf in &leaves {
        frontier.push(*leaf);
    }
    let root = frontier.root();
    println!("frontier: {N} appends + root: {:?}", t.elapsed());

    let t = Instant::now();
    let tiles: HashMap<TileId, Vec<u8>> = build_tiles(&leaves).into_iter().collect();
    println!("build_tiles: {} tiles in {:?}", tiles.len(), t.elapsed());

    // A checkpoint every 100,000 entries, signed.
    let key = SigningKey::from_seed(ORIGIN, &[42; 32])?;
    let mut f = Frontier::new();
    let mut checkpoints = Vec::new();
    for (i, leaf) in leaves.iter().enumerate() {
        f.push(*leaf);
        if (i + 1) % 100_000 == 0 {
            checkpoints.push((
                f.size(),
                sign_checkpoint(ORIGIN, f.size(), &f.root(), &key)?,
            ));
        }
    }

    let t = Instant::now();
    let report = verify_log(
        entries.iter().map(Vec::as_slice),
        &checkpoints,
        &[key.verifier()],
    )?;
    println!(
        "verify_log: {} entries, {} checkpoints in {:?}",
        report.entries,
        report.checkpoints,
        t.elapsed()
    );
    assert_eq!(report.root, root);

    let rounds = 1000u64;
    let t = Instant::now();
    for k in 0..rounds {
        let index = (k * 7919 + 13) % N;
        let source = TileHashes::new(&tiles, N);
        let proof = inclusion_proof(&source, index, N)?;
        let leaf = leaves.get(index as usize).ok_or("leaf")?;
        verify_inclusion(leaf, index, N, &proof, &root)?;
    }
    println!(
        "inclusion proof from tiles + verify: {:?} each",
        t.elapsed() / rounds as u32
    );

    let t = Instant::now();
    for k in 0..rounds {
        let old = (k * 7919 + 13) % N + 1;
        let source = TileHashes::new(&tiles, N);
        let proof = consistency_proof(&source, old, N)?;
        let old_root = audit::root_from(&source, old)?;
        verify_consistency(old, N, &old_root, &root, &proof)?;
    }
    println!(
        "consistency proof from tiles (+ old root from tiles) + verify: {:?} each",
        t.elapsed() / rounds as u32
    );
    Ok(())
}
