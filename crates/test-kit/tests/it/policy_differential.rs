//! The Cedar engine against the reference evaluator on arbitrary requests:
//! the same verdict, the reference's rule among the engine's deciding
//! policies (allowed requests: the same permit and masks).

use policy::Windows;
use proptest::prelude::*;
use test_kit::policy_ref;

use crate::policy_corpus::engine;
use crate::policy_ref_props::any_input;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn the_engine_agrees_with_the_reference(input in any_input()) {
        let engine = engine();
        let req = input.request();
        let got = engine.decide(&req);
        let want = policy_ref::decide(&req, &Windows::default());
        prop_assert_eq!(got.allow, want.allow, "verdict for {:?}: engine {:?}, reference {:?}", input, got, want);
        if want.allow {
            prop_assert!(got.policies.contains(&want.rule), "permit for {:?}: engine {:?}, reference {:?}", input, got.policies, want.rule);
            let masks: std::collections::BTreeSet<String> = got.masks.iter().cloned().collect();
            prop_assert_eq!(masks, want.masks.clone(), "masks for {:?}", input);
            prop_assert_eq!(got.purpose, want.purpose, "purpose for {:?}", input);
        }
    }
}
