//! Proofs from the server's tile cache: two servers on one database (the
//! one that writes, with its cache warm, and one that only reads, whose
//! cache starts empty and whose own writes move the log past the first's)
//! give proofs that verify for every size the log has had.

use std::sync::Arc;

use app::audit::{Hash, leaf_hash, open_checkpoint, verify_consistency, verify_inclusion};
use app::trail::{Action, Category};
use app::{Principal, Vigil};

async fn append(v: &Vigil, n: usize) {
    for _ in 0..n {
        v.audit_event(
            &Principal::Operator,
            Category::Rest,
            "read",
            Action::R,
            None,
            None,
        )
        .await
        .unwrap();
    }
}

async fn head(v: &Vigil) -> (u64, Hash) {
    let note = v.audit_checkpoint().await.unwrap().unwrap();
    let cp = open_checkpoint(&note, v.audit_core().verifiers()).unwrap();
    (cp.size, cp.root)
}

#[tokio::test]
async fn proofs_verify_from_a_warm_cache_and_a_cold_one_at_every_size() {
    let dir = std::env::temp_dir().join(format!("vigil-app-proofs-{}", crypto::random_token()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn store::Store> = Arc::new(
        store_sqlite::SqliteStore::open(
            &dir.join("vigil.db"),
            store_sqlite::SqliteOptions::default(),
        )
        .await
        .unwrap(),
    );
    store.migrate().await.unwrap();
    let kf = crypto::KeyFile::generate();
    let open = || async {
        Vigil::open(
            Arc::clone(&store),
            &kf,
            crypto::KeyFileSource::Inline(kf.to_toml().unwrap()),
            Arc::new(model::SystemClock),
            app::Config::default(),
        )
        .await
        .unwrap()
    };
    let writer = open().await;
    let reader = open().await;
    // Sizes on both sides of full tiles, each with its signed root.
    let mut heads = Vec::new();
    for n in [30usize, 226, 1, 511, 256, 97] {
        append(&writer, n).await;
        heads.push(head(&writer).await);
    }
    // The other server moves the log on: the writer's cache knows nothing
    // of these entries, and its own idea of the size is behind.
    append(&reader, 40).await;
    heads.push(head(&reader).await);
    let (last, _) = *heads.last().unwrap();
    assert_eq!(last, 1161);
    let leaves: Vec<Hash> = writer
        .audit_raw_entries(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|(_, b)| leaf_hash(b))
        .collect();
    assert_eq!(leaves.len() as u64, last);

    for &(size, root) in &heads {
        for index in [0, size / 3, size / 2, size - 1] {
            for v in [&writer, &reader] {
                let proof = v.audit_inclusion_proof(index, size).await.unwrap();
                verify_inclusion(&leaves[index as usize], index, size, &proof, &root)
                    .unwrap_or_else(|e| panic!("inclusion of {index} in {size}: {e}"));
            }
        }
        for &(old, old_root) in heads.iter().filter(|(o, _)| *o < size) {
            for v in [&writer, &reader] {
                let proof = v.audit_consistency_proof(old, size).await.unwrap();
                verify_consistency(old, size, &old_root, &root, &proof)
                    .unwrap_or_else(|e| panic!("consistency {old} → {size}: {e}"));
            }
        }
    }
    // A proof for a leaf or a tree the log does not have is refused by both.
    for v in [&writer, &reader] {
        assert!(v.audit_inclusion_proof(last, last).await.is_err());
        assert!(v.audit_inclusion_proof(0, last + 1).await.is_err());
        assert!(v.audit_consistency_proof(1, last + 1).await.is_err());
        assert!(v.audit_inclusion_proof(0, 0).await.is_err());
    }
    drop((writer, reader));
    let _ = std::fs::remove_dir_all(&dir);
}
