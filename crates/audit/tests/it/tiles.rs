//! Tiles: paths, which tiles a tree has, building and appending, and proofs from tiles.

use std::collections::HashMap;

use audit::tiles::{
    FULL_WIDTH, TilePath, append_tiles, build_tiles, entry_bundle, new_tiles, parse_entry_bundle,
    parse_tile, parse_tile_path, tiles_for_size,
};
use audit::{
    Frontier, Hash, TileHashes, TileId, consistency_proof, inclusion_proof, leaf_hash, root,
    root_from,
};
use proptest::prelude::*;

fn id(level: u8, index: u64, width: u16) -> TileId {
    TileId {
        level,
        index,
        width,
    }
}

#[test]
fn paths_from_the_spec() {
    let check = |tile: TileId, want: &str| {
        assert_eq!(tile.path(), want);
        assert_eq!(parse_tile_path(want), Ok(TilePath::Hashes(tile)), "{want}");
    };
    check(id(0, 1_234_067, 256), "tile/0/x001/x234/067");
    check(id(0, 0, 256), "tile/0/000");
    check(id(1, 999, 256), "tile/1/999");
    check(id(1, 1000, 256), "tile/1/x001/000");
    check(id(2, 5, 17), "tile/2/005.p/17");
    check(id(63, 1_234_067, 255), "tile/63/x001/x234/067.p/255");
    let bundle = id(0, 1_234_067, 112);
    assert_eq!(bundle.entries_path(), "tile/entries/x001/x234/067.p/112");
    assert_eq!(
        parse_tile_path("tile/entries/x001/x234/067.p/112"),
        Ok(TilePath::Entries(bundle))
    );
    for bad in [
        "tile/0/1",
        "tile/0/0001",
        "tile/00/000",
        "tile/64/000",
        "tile/0/x000/001",
        "tile/0/001/002",
        "tile/0/x001",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/0/000.p/",
        "tile/0/000/",
        "tiles/0/000",
        "tile/0/x001/x234/067.p/1/",
    ] {
        assert!(parse_tile_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn tiles_of_a_tree_of_70000_as_in_the_spec() {
    let tiles = tiles_for_size(70_000);
    let count = |level: u8, full: bool| {
        tiles
            .iter()
            .filter(|t| t.level == level && t.is_full() == full)
            .count()
    };
    assert_eq!(count(0, true), 273);
    assert_eq!(count(0, false), 1);
    assert_eq!(count(1, true), 1);
    assert_eq!(count(1, false), 1);
    assert_eq!(count(2, false), 1);
    assert_eq!(tiles.len(), 277);
    assert!(tiles.contains(&id(0, 273, 112)));
    assert!(tiles.contains(&id(1, 1, 17)));
    assert!(tiles.contains(&id(2, 0, 1)));
    assert_eq!(tiles_for_size(256), vec![id(0, 0, 256), id(1, 0, 1)]);
    assert_eq!(tiles_for_size(0), vec![]);
    assert_eq!(new_tiles(300, 300), vec![]);
    assert_eq!(
        new_tiles(300, 513),
        vec![id(0, 1, 256), id(0, 2, 1), id(1, 0, 2)]
    );
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u32).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn store(tiles: Vec<(TileId, Vec<u8>)>) -> HashMap<TileId, Vec<u8>> {
    tiles.into_iter().collect()
}

#[test]
fn tile_contents_follow_the_definition() {
    let all = leaves(70_000);
    let tiles = store(build_tiles(&all));
    assert_eq!(tiles.len(), 277);
    // Level 1, index 0, hash i: MTH(D[i·256 : (i+1)·256]).
    let level1 = parse_tile(&tiles[&id(1, 0, 256)], 256).unwrap();
    assert_eq!(level1[3], root(&all[3 * 256..4 * 256]));
    // Level 2, index 0, hash 0: MTH(D[0 : 65536]).
    let level2 = parse_tile(&tiles[&id(2, 0, 1)], 1).unwrap();
    assert_eq!(level2, vec![root(&all[..65_536])]);
    let partial = parse_tile(&tiles[&id(0, 273, 112)], 112).unwrap();
    assert_eq!(partial[..], all[273 * 256..]);
    assert!(parse_tile(&[0; 33], 1).is_err());
    assert!(parse_tile(&[0; 32], 2).is_err());
    assert!(parse_tile(&[0; 64], 1).is_ok());
}

#[test]
fn entry_bundles_round_trip() {
    let entries: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![], vec![7; 300]];
    let bundle = entry_bundle(entries.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(&bundle[..5], &[0, 1, b'a', 0, 0]);
    let back = parse_entry_bundle(&bundle).unwrap();
    assert_eq!(back, entries.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert!(parse_entry_bundle(&bundle[..bundle.len() - 1]).is_err());
    assert!(entry_bundle([vec![0u8; 65_536].as_slice()]).is_err());
}

#[test]
fn proofs_from_tiles_read_few_tiles() {
    use std::cell::Cell;
    struct Counting<'a>(&'a HashMap<TileId, Vec<u8>>, Cell<usize>);
    impl audit::TileReader for Counting<'_> {
        type Error = audit::tiles::MissingTile;
        fn tile(&self, l: u8, i: u64, w: u16) -> Result<Vec<u8>, Self::Error> {
            self.1.set(self.1.get() + 1);
            audit::TileReader::tile(self.0, l, i, w)
        }
    }
    let all = leaves(70_000);
    let tiles = store(build_tiles(&all));
    let reader = Counting(&tiles, Cell::new(0));
    let source = TileHashes::new(&reader, 70_000);
    assert_eq!(root_from(&source, 70_000).unwrap(), root(&all));
    for index in [0u64, 255, 256, 65_535, 65_536, 69_999] {
        let reader = Counting(&tiles, Cell::new(0));
        let source = TileHashes::new(&reader, 70_000);
        let proof = inclusion_proof(&source, index, 70_000).unwrap();
        assert_eq!(
            proof,
            inclusion_proof(all.as_slice(), index, 70_000).unwrap()
        );
        assert!(reader.1.get() <= 6, "{} reads", reader.1.get());
    }
    for old in [1u64, 256, 1000, 65_536, 69_999] {
        let source = TileHashes::new(&tiles, 70_000);
        assert_eq!(
            consistency_proof(&source, old, 70_000).unwrap(),
            consistency_proof(all.as_slice(), old, 70_000).unwrap()
        );
    }
    // A subtree beyond the tree is refused, not invented.
    assert!(audit::HashSource::node(&TileHashes::new(&tiles, 70_000), 8, 273).is_err());
    // The frontier can be rebuilt from tiles.
    let mut frontier = Frontier::new();
    all.iter().for_each(|l| frontier.push(*l));
    assert_eq!(
        Frontier::from_source(&TileHashes::new(&tiles, 70_000), 70_000).unwrap(),
        frontier
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn appending_gives_the_same_tiles_as_building(sizes in prop::collection::vec(0usize..700, 1..5)) {
        let total: usize = sizes.iter().sum();
        let all = leaves(total);
        let mut stored: HashMap<TileId, Vec<u8>> = HashMap::new();
        let mut size = 0usize;
        for add in sizes {
            let new = append_tiles(&stored, size as u64, &all[size..size + add]).unwrap();
            let ids: Vec<TileId> = new.iter().map(|(t, _)| *t).collect();
            let mut want = new_tiles(size as u64, (size + add) as u64);
            want.sort();
            let mut got = ids.clone();
            got.sort();
            prop_assert_eq!(got, want);
            stored.extend(new);
            size += add;
            let built = store(build_tiles(&all[..size]));
            for tile in tiles_for_size(size as u64) {
                prop_assert_eq!(&stored[&tile], &built[&tile]);
            }
            let source = TileHashes::new(&stored, size as u64);
            prop_assert_eq!(root_from(&source, size as u64).unwrap(), root(&all[..size]));
        }
        prop_assert!(FULL_WIDTH == 256);
    }

    #[test]
    fn tile_proofs_equal_slice_proofs(size in 1usize..=2000, pick in any::<prop::sample::Index>(), old in any::<prop::sample::Index>()) {
        let all = leaves(size);
        let tiles = store(build_tiles(&all));
        let source = TileHashes::new(&tiles, size as u64);
        let index = pick.index(size) as u64;
        prop_assert_eq!(
            inclusion_proof(&source, index, size as u64).unwrap(),
            inclusion_proof(all.as_slice(), index, size as u64).unwrap()
        );
        let old = old.index(size + 1) as u64;
        prop_assert_eq!(
            consistency_proof(&source, old, size as u64).unwrap(),
            consistency_proof(all.as_slice(), old, size as u64).unwrap()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every node a pyramid answers is the root of the hashes under it, and
    /// it answers nothing past the tile's ragged edge.
    #[test]
    fn pyramid_nodes_are_subtree_roots(width in 1usize..=256, seed in any::<u8>()) {
        let hashes: Vec<Hash> = (0..width).map(|i| leaf_hash(&[seed, (i % 256) as u8, (i / 256) as u8])).collect();
        let pyramid = audit::Pyramid::new(hashes.clone());
        prop_assert_eq!(pyramid.width(), width);
        prop_assert_eq!(pyramid.hashes(), hashes.as_slice());
        for below in 0..=8u32 {
            let run = 1usize << below;
            for offset in (0..=256usize).step_by(run) {
                let want = hashes.get(offset..offset + run).map(root);
                prop_assert_eq!(pyramid.node(below, offset), want, "below {} offset {}", below, offset);
            }
        }
        prop_assert_eq!(pyramid.node(9, 0), None);
    }

    /// Proofs come out the same whether pyramids are handed in (as wide as,
    /// or wider than, the tree needs) or built from tiles, and the source
    /// hands back what it holds.
    #[test]
    fn handed_in_pyramids_give_the_same_proofs(size in 1u64..1500, later in 0u64..600, index_seed in any::<u64>()) {
        let all = leaves(usize::try_from(size + later).unwrap());
        let tiles = store(build_tiles(&all));
        let index = index_seed % size;
        let plain = TileHashes::new(&tiles, size);
        let want_inc = inclusion_proof(&plain, index, size).unwrap();
        let want_cons = consistency_proof(&plain, 1 + index_seed % size, size).unwrap();
        prop_assert_eq!(&want_inc, &inclusion_proof(&all[..usize::try_from(size).unwrap()], index, size).unwrap());
        // Pyramids of the bigger tree's tiles (wider at the right edge).
        let bigger = TileHashes::new(&tiles, size + later);
        let _ = inclusion_proof(&bigger, (size + later) - 1, size + later).unwrap();
        let _ = inclusion_proof(&bigger, index, size + later).unwrap();
        let pyramids = bigger.into_pyramids();
        prop_assert!(!pyramids.is_empty());
        // No tiles to read: whatever the pyramids lack fails, never guessed.
        let empty: HashMap<TileId, Vec<u8>> = HashMap::new();
        let handed = TileHashes::with_pyramids(&empty, size, pyramids.clone());
        if let Ok(p) = inclusion_proof(&handed, index, size) {
            prop_assert_eq!(&p, &want_inc);
        }
        // With the tiles too, always the same answers.
        let both = TileHashes::with_pyramids(&tiles, size, pyramids);
        prop_assert_eq!(&inclusion_proof(&both, index, size).unwrap(), &want_inc);
        prop_assert_eq!(&consistency_proof(&both, 1 + index_seed % size, size).unwrap(), &want_cons);
    }
}

/// A pyramid narrower than the tree needs is not used: the tile is read.
#[test]
fn a_narrower_pyramid_is_read_again() {
    let all = leaves(300);
    let tiles = store(build_tiles(&all));
    let small = TileHashes::new(&tiles, 100);
    let _ = inclusion_proof(&small, 5, 100).unwrap();
    let narrow = small.into_pyramids();
    assert_eq!(narrow.get(&(0, 0)).map(|p| p.width()), Some(100));
    let empty: HashMap<TileId, Vec<u8>> = HashMap::new();
    let source = TileHashes::with_pyramids(&empty, 300, narrow.clone());
    assert!(inclusion_proof(&source, 5, 300).is_err());
    let source = TileHashes::with_pyramids(&tiles, 300, narrow);
    assert_eq!(
        inclusion_proof(&source, 5, 300).unwrap(),
        inclusion_proof(all.as_slice(), 5, 300).unwrap()
    );
}
