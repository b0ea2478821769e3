//! Offline verification of a whole log.

use std::collections::HashMap;

use audit::tiles::build_tiles;
use audit::{
    CheckpointError, Frontier, NoteError, SigningKey, TileId, VerifyError, leaf_hash,
    sign_checkpoint, verify_log, verify_log_with_tiles,
};

const ORIGIN: &str = "vigil.example/audit";

fn entries(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("entry {i} {}", "x".repeat(i % 50)).into_bytes())
        .collect()
}

/// Checkpoints signed at `sizes` over `entries`, as the writer would have produced them.
fn checkpoints(entries: &[Vec<u8>], sizes: &[u64], key: &SigningKey) -> Vec<(u64, String)> {
    let mut frontier = Frontier::new();
    let mut out = Vec::new();
    for (i, e) in std::iter::once(None)
        .chain(entries.iter().map(Some))
        .enumerate()
    {
        if let Some(e) = e {
            frontier.push(leaf_hash(e));
        }
        if sizes.contains(&(i as u64)) {
            out.push((
                i as u64,
                sign_checkpoint(ORIGIN, i as u64, &frontier.root(), key).unwrap(),
            ));
        }
    }
    out
}

fn key() -> SigningKey {
    SigningKey::from_seed(ORIGIN, &[5; 32]).unwrap()
}

fn refs(entries: &[Vec<u8>]) -> impl Iterator<Item = &[u8]> {
    entries.iter().map(Vec::as_slice)
}

#[test]
fn an_honest_log_verifies() {
    let k = key();
    let log = entries(1000);
    let cps = checkpoints(&log, &[0, 1, 300, 999, 1000], &k);
    let report = verify_log(refs(&log), &cps, &[k.verifier()]).unwrap();
    assert_eq!(report.entries, 1000);
    assert_eq!(report.checkpoints, 5);
    assert_eq!(report.unsigned_entries(), 0);
    // More entries than the last checkpoint: fine, reported as unsigned.
    let report = verify_log(refs(&log), &cps[..3], &[k.verifier()]).unwrap();
    assert_eq!((report.signed_size, report.unsigned_entries()), (300, 700));
    // No checkpoints at all: nothing signed, but the root is computed.
    assert_eq!(
        verify_log(refs(&log), &[], &[k.verifier()])
            .unwrap()
            .signed_size,
        0
    );
}

#[test]
fn a_changed_entry_is_located() {
    let k = key();
    let log = entries(1000);
    let cps = checkpoints(&log, &[100, 600, 1000], &k);
    let mut tampered = log.clone();
    tampered[437][0] ^= 1;
    // Without tiles: between the checkpoints around it.
    assert_eq!(
        verify_log(refs(&tampered), &cps, &[k.verifier()]),
        Err(VerifyError::RootMismatch {
            checkpoint_size: 600,
            last_good_size: 100,
            first_bad_index: None
        })
    );
    // With tiles: exactly.
    let leaves: Vec<_> = log.iter().map(|e| leaf_hash(e)).collect();
    let tiles: HashMap<TileId, Vec<u8>> = build_tiles(&leaves).into_iter().collect();
    assert_eq!(
        verify_log_with_tiles(refs(&tampered), &cps, &[k.verifier()], &tiles),
        Err(VerifyError::RootMismatch {
            checkpoint_size: 600,
            last_good_size: 100,
            first_bad_index: Some(437)
        })
    );
    // Tiles that were tampered with as well are no evidence.
    let bad_leaves: Vec<_> = tampered.iter().map(|e| leaf_hash(e)).collect();
    let bad_tiles: HashMap<TileId, Vec<u8>> = build_tiles(&bad_leaves).into_iter().collect();
    assert!(matches!(
        verify_log_with_tiles(refs(&tampered), &cps, &[k.verifier()], &bad_tiles),
        Err(VerifyError::RootMismatch {
            first_bad_index: None,
            ..
        })
    ));
    // A checkpoint right after the change pins it down without tiles.
    let cps = checkpoints(&log, &[437, 438], &k);
    assert!(matches!(
        verify_log(refs(&tampered), &cps, &[k.verifier()]),
        Err(VerifyError::RootMismatch {
            checkpoint_size: 438,
            first_bad_index: Some(437),
            ..
        })
    ));
}

#[test]
fn removed_inserted_and_truncated_entries() {
    let k = key();
    let log = entries(500);
    let cps = checkpoints(&log, &[200, 500], &k);
    let mut removed = log.clone();
    removed.remove(300);
    removed.push(b"padding".to_vec());
    assert!(matches!(
        verify_log(refs(&removed), &cps, &[k.verifier()]),
        Err(VerifyError::RootMismatch {
            checkpoint_size: 500,
            last_good_size: 200,
            ..
        })
    ));
    assert_eq!(
        verify_log(refs(&log[..499]), &cps, &[k.verifier()]),
        Err(VerifyError::MissingEntries {
            checkpoint_size: 500,
            entries: 499
        })
    );
}

#[test]
fn bad_checkpoints_are_named() {
    let k = key();
    let log = entries(50);
    let mut cps = checkpoints(&log, &[10, 20, 30], &k);
    // Stored beside the wrong size.
    let mut moved = cps.clone();
    moved[1].0 = 21;
    assert_eq!(
        verify_log(refs(&log), &moved, &[k.verifier()]),
        Err(VerifyError::SizeMismatch {
            stored: 21,
            signed: 20
        })
    );
    // A signature that does not verify.
    cps[2].1 = cps[2].1.replacen("30", "31", 1);
    assert!(matches!(
        verify_log(refs(&log), &cps, &[k.verifier()]),
        Err(VerifyError::Checkpoint {
            checkpoint_size: 30,
            error: CheckpointError::Note(NoteError::InvalidSignature { .. })
        })
    ));
    // Another key.
    let other = SigningKey::from_seed(ORIGIN, &[6; 32]).unwrap();
    assert!(matches!(
        verify_log(
            refs(&log),
            &checkpoints(&log, &[10], &k),
            &[other.verifier()]
        ),
        Err(VerifyError::Checkpoint {
            checkpoint_size: 10,
            ..
        })
    ));
    // A fork: two checkpoints of the same size with different roots.
    let mut forked = log.clone();
    forked[5] = b"other".to_vec();
    let mut both = checkpoints(&log, &[10], &k);
    both.extend(checkpoints(&forked, &[10], &k));
    assert!(matches!(
        verify_log(refs(&log), &both, &[k.verifier()]),
        Err(VerifyError::RootMismatch {
            checkpoint_size: 10,
            ..
        })
    ));
}
