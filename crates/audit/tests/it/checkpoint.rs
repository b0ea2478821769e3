//! Signed notes and checkpoints.

use audit::{
    Checkpoint, CheckpointError, KeyError, NoteError, SigningKey, VerifierKey, leaf_hash,
    open_checkpoint, open_note, sign_checkpoint, sign_note,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use proptest::prelude::*;

// The example key pair and note of the Go reference implementation (golang.org/x/mod/sumdb/note).
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const GO_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

const ORIGIN: &str = "vigil.example/audit";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(ORIGIN, &[seed; 32]).unwrap()
}

#[test]
fn go_reference_note_byte_for_byte() {
    let signer = SigningKey::parse(GO_SKEY).unwrap();
    let verifier = VerifierKey::parse(GO_VKEY).unwrap();
    assert_eq!(signer.verifier(), verifier);
    assert_eq!(verifier.to_vkey(), GO_VKEY);
    assert_eq!(signer.to_skey().as_str(), GO_SKEY);
    assert_eq!(verifier.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
    let note = sign_note(GO_TEXT, &[&signer]).unwrap();
    assert_eq!(note, format!("{GO_TEXT}\n{GO_SIG}"));
    let opened = open_note(&note, std::slice::from_ref(&verifier)).unwrap();
    assert_eq!(opened.text, GO_TEXT);
    assert_eq!(opened.verified_by, vec!["PeterNeumann".to_owned()]);
    let tampered = note.replace("cryptography", "cryptographY");
    assert!(matches!(
        open_note(&tampered, &[verifier]),
        Err(NoteError::InvalidSignature { .. })
    ));
}

#[test]
fn verifier_key_manglings_are_refused() {
    assert!(VerifierKey::parse(GO_VKEY).is_ok());
    let bytes = GO_VKEY.as_bytes();
    for i in 0..bytes.len() {
        for j in i + 1..=bytes.len() {
            if (i, j) != (0, bytes.len()) {
                let part = std::str::from_utf8(&bytes[i..j]).unwrap();
                assert!(VerifierKey::parse(part).is_err(), "{part}");
            }
        }
    }
    for i in 0..bytes.len() {
        let mut b = bytes.to_vec();
        b[i] = b[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&b) {
            assert!(VerifierKey::parse(s).is_err(), "{s}");
        }
    }
    assert_eq!(
        VerifierKey::parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(KeyError::KeyIdMismatch)
    );
    assert_eq!(
        VerifierKey::parse("PeterNeumann+c74f20a3+AhpC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .err(),
        Some(KeyError::UnsupportedAlgorithm)
    );
}

#[test]
fn checkpoint_round_trip() {
    let k = key(1);
    let root = leaf_hash(b"x");
    let note = sign_checkpoint(ORIGIN, 20_852_163, &root, &k).unwrap();
    let (text, sig) = note.split_once("\n\n").unwrap();
    assert_eq!(text, format!("{ORIGIN}\n20852163\n{}", B64.encode(root)));
    assert!(sig.starts_with(&format!("\u{2014} {ORIGIN} ")));
    assert_eq!(
        open_checkpoint(&note, &[k.verifier()]),
        Ok(Checkpoint {
            origin: ORIGIN.to_owned(),
            size: 20_852_163,
            root
        })
    );
    // The verifier key survives its string form.
    let v = VerifierKey::parse(&k.verifier().to_string()).unwrap();
    assert!(open_checkpoint(&note, &[v]).is_ok());
}

#[test]
fn wrong_key_and_unknown_keys() {
    let (k1, k2) = (key(1), key(2));
    let note = sign_checkpoint(ORIGIN, 5, &[9; 32], &k1).unwrap();
    // Same name, other key: a different key id, so ignored, and nothing known signed.
    assert_eq!(
        open_checkpoint(&note, &[k2.verifier()]),
        Err(CheckpointError::Note(NoteError::NoKnownSignature))
    );
    assert_eq!(
        open_checkpoint(&note, &[]),
        Err(CheckpointError::Note(NoteError::NoKnownSignature))
    );
    // Unknown signatures beside a known one are ignored (witness cosignatures, rotation).
    let other = SigningKey::from_seed("witness.example", &[3; 32]).unwrap();
    let text = audit::checkpoint_text(ORIGIN, 5, &[9; 32]).unwrap();
    let both = sign_note(&text, &[&other, &k1]).unwrap();
    let opened = open_note(&both, &[k1.verifier(), k2.verifier()]).unwrap();
    assert_eq!(opened.verified_by, vec![ORIGIN.to_owned()]);
    assert_eq!(open_checkpoint(&both, &[k1.verifier()]).unwrap().size, 5);
    // A known key's signature that fails refuses the whole note, even beside a good one.
    let six = sign_checkpoint(ORIGIN, 6, &[9; 32], &k1).unwrap();
    let bad_line = six.split("\n\n").nth(1).unwrap();
    let forged = format!("{note}{bad_line}");
    assert_eq!(
        open_checkpoint(&forged, &[k1.verifier()]),
        Err(CheckpointError::Note(NoteError::InvalidSignature {
            key_name: ORIGIN.to_owned()
        }))
    );
}

#[test]
fn malformed_notes_are_refused() {
    let k = key(1);
    let good = sign_checkpoint(ORIGIN, 5, &[9; 32], &k).unwrap();
    let v = [k.verifier()];
    let cases: Vec<(String, &str)> = vec![
        (good.replacen("\n\n", "\n", 1), "no blank line"),
        (
            good.split("\n\n").next().unwrap().to_owned() + "\n\n",
            "no signatures",
        ),
        (good.trim_end_matches('\n').to_owned(), "no final newline"),
        (good.clone() + "junk\n", "junk after signatures"),
        (good.clone() + "\n", "trailing blank line"),
        (format!("junk\n{good}"), "junk before origin"),
        (good.replace('\u{2014}', "-"), "hyphen instead of em dash"),
        (good.replace("\u{2014} ", "\u{2014}  "), "double space"),
        (good.replace("\n5\n", "\n05\n"), "leading zero"),
        (good.replace("\n5\n", "\n5\next\n"), "extension line"),
        (good.replacen('\n', "\r\n", 1), "carriage return"),
        (good.replace('=', ""), "unpadded signature"),
    ];
    for (note, why) in cases {
        assert!(open_checkpoint(&note, &v).is_err(), "{why}: {note:?}");
    }
    assert!(matches!(
        sign_checkpoint("", 1, &[0; 32], &k),
        Err(CheckpointError::BadOrigin)
    ));
    assert!(sign_checkpoint("a\nb", 1, &[0; 32], &k).is_err());
    let many = good.clone() + &good.split("\n\n").nth(1).unwrap().repeat(100);
    assert_eq!(
        open_checkpoint(&many, &v),
        Err(CheckpointError::Note(NoteError::TooManySignatures))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_flipped_byte_is_refused(size in any::<u64>(), root in any::<[u8; 32]>(), pos in any::<prop::sample::Index>(), delta in 1u8..=255) {
        let k = key(4);
        let note = sign_checkpoint(ORIGIN, size, &root, &k).unwrap();
        prop_assert_eq!(open_checkpoint(&note, &[k.verifier()]), Ok(Checkpoint { origin: ORIGIN.to_owned(), size, root }));
        let mut bytes = note.into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = bytes[i].wrapping_add(delta);
        if let Ok(s) = String::from_utf8(bytes) {
            prop_assert!(open_checkpoint(&s, &[k.verifier()]).is_err());
        }
    }
}
