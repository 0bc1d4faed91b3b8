//! The integration suite's shared parts. [`conformance`] states the store's
//! contract as async functions over a [`nexus_core::Store`], runnable
//! wherever a store lives (in memory, in a file; later PostgreSQL and the
//! browser). The integration binary (`integration/main.rs`) instantiates
//! them once per backend with [`conformance_tests!`].

pub mod conformance;
#[cfg(not(target_family = "wasm"))]
pub mod crash;
pub mod persistence;
#[cfg(not(target_family = "wasm"))]
pub mod pg;
#[cfg(not(target_family = "wasm"))]
pub mod serve;

/// Every case of the conformance suite: invokes `$m!(args; case, case, ...)`.
#[macro_export]
macro_rules! for_each_conformance_case {
    ($m:ident, $($args:tt)*) => {
        $crate::$m!($($args)*;
            put_and_get_round_trip,
            get_missing_is_none,
            update_overwrites_and_keeps_identity,
            exists_before_and_after,
            delete_is_soft_and_says_when_missing,
            list_empty_all_prefix_sorted,
            list_prefix_is_raw_and_case_sensitive,
            list_prefix_percent_and_underscore_are_literal,
            list_non_recursive_gives_direct_children,
            pagination_walks_every_file_once,
            pagination_rejects_bad_and_foreign_cursors,
            pagination_non_recursive_across_pages,
            duplicate_put_keeps_one_row,
            soft_deleted_not_listed,
            reput_after_delete_is_new_identity,
            metadata_round_trip,
            metadata_on_missing_file,
            metadata_batch_is_all_or_nothing,
            metadata_find_by_key_and_value,
            versions_new_file_and_updates,
            versions_list_get_rollback_diff,
            versions_errors,
            conditional_put,
            batches,
            put_batch_is_all_or_nothing,
            rename_file_keeps_identity_metadata_versions,
            rename_directory_moves_children,
            rename_errors,
            implicit_directories,
            chunks_reference_counting_and_gc,
            tenants_are_isolated,
            validation_rejects_before_writing,
            timestamps_created_kept_modified_advances,
            sql_lookalikes_and_unicode_stored_literally,
            every_write_advances_change_seq,
            stats_sum_sizes_past_2_to_the_63,
            a_change_is_stamped_after_what_it_changes,
            many_tasks_at_once
        );
    };
}

/// Generates one `#[test]` per conformance case; `$make` is an async
/// expression evaluating to a fixture whose `dyn_store()` is a fresh store.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::for_each_conformance_case!(__conformance_case_tests, $make);
    };
}

/// Generates one `#[wasm_bindgen_test]` per conformance case, for the
/// browser; `$make` is an async expression evaluating to a fresh `DynStore`.
/// The calling crate depends on `wasm-bindgen-test`.
#[macro_export]
macro_rules! browser_conformance_tests {
    ($make:expr) => {
        $crate::for_each_conformance_case!(__conformance_case_browser_tests, $make);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_browser_tests {
    ($make:expr; $($case:ident),*) => {
        $(
            #[wasm_bindgen_test::wasm_bindgen_test]
            async fn $case() {
                let store = $make(stringify!($case)).await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_tests {
    ($make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                pollster::block_on(async {
                    let fixture = $make.await;
                    $crate::conformance::$case(fixture.dyn_store()).await;
                });
            }
        )*
    };
}
