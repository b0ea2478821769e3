//! Dev-only fixtures for Vigil's tests, and the store conformance story.
//!
//! [`story`] holds one function per storage scenario; each takes a freshly
//! migrated store and checks the [`store::Store`] contract. Both adapters'
//! integration tests run every scenario through [`store_story_tests!`], so the
//! two backends cannot drift apart silently.
//!
//! [`policy_corpus`] loads the hand-written access-policy cases
//! (`corpus/policy/*.toml`), and [`policy_ref`] is a small plain-Rust
//! evaluator of `docs/access-policy.md` they are checked against, and that
//! the Cedar engine is compared with.
//!
//! This crate is only ever a dev-dependency; panicking on a broken fixture is
//! the right failure mode here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "dev-only test support: a panic is a test failure with a message"
)]

pub mod fixtures;
pub mod policy_corpus;
pub mod policy_ref;
pub mod story;
pub mod story_consult;
pub mod story_grants;
pub mod story_monitor;

use std::future::Future;
use std::sync::Arc;

pub use fixtures::{PgFixture, SqliteFixture, StoreFixture};
use store::Store;

/// Runs `scenario` against a fresh store from fixture `F`, then tears the
/// fixture down even when the scenario panicked, and re-raises the panic.
pub async fn run<F, S, Fut>(scenario: S)
where
    F: StoreFixture,
    S: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fixture = F::create().await;
    let outcome = tokio::spawn(scenario(fixture.store())).await;
    fixture.teardown().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("scenario task did not finish: {e}");
    }
}

/// Like [`run`] with two fresh stores (for backup round trips between
/// backends); both are torn down whatever happens.
pub async fn run_pair<A, B, S, Fut>(scenario: S)
where
    A: StoreFixture,
    B: StoreFixture,
    S: FnOnce(Arc<dyn Store>, Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (a, b) = (A::create().await, B::create().await);
    let outcome = tokio::spawn(scenario(a.store(), b.store())).await;
    a.teardown().await;
    b.teardown().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("scenario task did not finish: {e}");
    }
}

/// Generates one `#[tokio::test]` per conformance scenario for a fixture type.
/// Use it once in each adapter's `tests/it/main.rs`:
/// `test_kit::store_story_tests!(test_kit::SqliteFixture);`
#[macro_export]
macro_rules! store_story_tests {
    ($fixture:ty) => {
        // Scenarios taking `&dyn Store`.
        $crate::store_story_tests!(@each $fixture, dyn; [
            create_read_version_history,
            migrate_is_idempotent,
            preconditions_conflict_and_leave_data_unchanged,
            multi_op_commit_is_atomic,
            delete_then_recreate,
            find_combines_clauses_tokens_ids_and_bounds,
            find_handles_long_token_and_id_lists,
            find_follows_index_replacement,
            find_narrows_to_owners,
            current_of_owner_reads_one_compartment,
            ids_sort_bytewise,
            scan_pages_through_current_resources,
            existing_and_current_many,
            keys_rotation_compare_and_swap,
            erase_patient_removes_only_that_owner,
            erase_refuses_the_organisation_key,
            stats_count_everything,
            dump_load_round_trip_same_backend,
            load_refuses_non_empty_store,
            load_is_all_or_nothing,
            keys_commit_with_their_data,
            accounts_have_unique_usernames_ignoring_case,
            deactivation_revokes_every_session,
            failure_counters_round_trip,
            sessions_create_touch_revoke_expire,
            reset_second_factors_removes_everything,
            passkeys_add_list_update_delete,
            clients_create_list_revoke,
            refresh_tokens_rotate_and_catch_reuse,
            access_token_liveness,
            outbox_enqueue_send_and_retry,
            audit_appends_get_consecutive_indexes,
            audit_entries_read_back_byte_for_byte,
            audit_failing_callback_stores_nothing,
            commit_audited_is_all_or_nothing,
            audit_tiles_widen,
            audit_checkpoint_history,
            find_audit_clauses_bounds_and_paging,
            load_checks_the_audit_log,
            audit_batch_timings,
        ]);
        // Scenarios that spawn tasks and so take `&Arc<dyn Store>`.
        $crate::store_story_tests!(@each $fixture, arc; [
            keys_put_if_absent_race,
            keys_put_many_if_absent,
            settings_round_trip,
            concurrent_updates_have_one_winner,
            concurrent_creates_have_one_winner,
            crossed_batches_have_one_winner,
            totp_step_is_compare_and_set,
            recovery_codes_are_consumed_once,
            concurrent_signups_have_one_winner,
            no_session_outlives_a_racing_deactivation,
            challenges_are_taken_once,
            concurrent_rotations_have_one_winner,
            audit_concurrent_appenders_are_gap_free,
        ]);
        // The access-policy capability's scenarios (`story_grants`).
        $crate::store_story_tests!(@each $fixture, grants; [
            grants_insert_get_round_trip,
            grants_duplicate_id_is_refused,
            grants_list_by_patient_and_account,
            grants_revoke_once,
            grants_review_once,
            grants_to_review_in_due_order,
            policy_versions_are_numbered_gap_free,
            grants_and_policies_are_dumped_last,
            load_refuses_a_store_holding_policy_versions,
        ]);
        $crate::store_story_tests!(@each $fixture, grants_arc; [
            policy_versions_concurrent_adds_are_gap_free,
        ]);
        // Privacy monitoring's scenarios (`story_monitor`).
        $crate::store_story_tests!(@each $fixture, monitor; [
            monitor_cursor_moves_by_compare_and_set,
            monitor_case_upserts_keep_opened_and_subject,
            monitor_cases_query_order_and_filters,
            open_case_for_picks_the_newest_open_or_follow_up,
            case_alerts_ordered_and_never_overwritten,
            update_case_checks_concurrency_and_numbers_notes,
            suppressions_are_revoked_once,
            explanations_are_replaced_and_fetched_in_bulk,
            monitor_foreign_keys_refuse_and_store_nothing,
            monitor_records_are_dumped_last,
            load_refuses_a_store_whose_monitor_cursor_moved,
        ]);
        $crate::store_story_tests!(@each $fixture, monitor_arc; [
            monitor_cursor_race_has_one_winner,
            update_case_race_has_one_winner,
        ]);
        // Telehealth consults' scenarios (`story_consult`).
        $crate::store_story_tests!(@each $fixture, consult; [
            consult_rooms_insert_and_read,
            consult_second_room_for_an_appointment_is_refused,
            consult_room_update_is_compare_and_set,
            consult_rooms_of_clinician_newest_first,
            consult_consultations_of_patient_are_the_started_rooms,
            consult_invites_insert_read_newest_first,
            consult_invite_checks_are_compare_and_set,
            consult_revoke_invites_counts_the_unrevoked,
            consult_erase_removes_the_patients_rooms_and_invites_only,
            consult_records_are_dumped_last,
        ]);
        $crate::store_story_tests!(@each $fixture, consult_arc; [
            consult_room_update_race_has_one_winner,
            consult_invite_check_race_has_one_winner,
        ]);
        // Round trips into a second fresh store of the same backend.
        $crate::store_story_tests!(@pairs $fixture, story_grants; [
            grants_and_policies_dump_load_round_trip,
        ]);
        $crate::store_story_tests!(@pairs $fixture, story_monitor; [
            monitor_dump_load_round_trip,
        ]);
        $crate::store_story_tests!(@pairs $fixture, story_consult; [
            consult_dump_load_round_trip,
        ]);
    };
    (@pairs $fixture:ty, $module:ident; [$($name:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::run_pair::<$fixture, $fixture, _, _>(|a, b| async move {
                    $crate::$module::$name(&*a, &*b).await
                })
                .await;
            }
        )*
    };
    (@each $fixture:ty, $kind:ident; [$($name:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::run::<$fixture, _, _>(|store| async move {
                    $crate::store_story_tests!(@call $kind, $name, store);
                })
                .await;
            }
        )*
    };
    (@call dyn, $name:ident, $store:ident) => {
        $crate::story::$name(&*$store).await
    };
    (@call arc, $name:ident, $store:ident) => {
        $crate::story::$name(&$store).await
    };
    (@call grants, $name:ident, $store:ident) => {
        $crate::story_grants::$name(&*$store).await
    };
    (@call grants_arc, $name:ident, $store:ident) => {
        $crate::story_grants::$name(&$store).await
    };
    (@call monitor, $name:ident, $store:ident) => {
        $crate::story_monitor::$name(&*$store).await
    };
    (@call monitor_arc, $name:ident, $store:ident) => {
        $crate::story_monitor::$name(&$store).await
    };
    (@call consult, $name:ident, $store:ident) => {
        $crate::story_consult::$name(&*$store).await
    };
    (@call consult_arc, $name:ident, $store:ident) => {
        $crate::story_consult::$name(&$store).await
    };
}
