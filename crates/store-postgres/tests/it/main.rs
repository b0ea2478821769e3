//! Integration tests for the PostgreSQL adapter: the shared conformance story,
//! plus what only PostgreSQL has, the schema comparison with SQLite and the
//! cross-backend backup round trips.
//!
//! These tests need a PostgreSQL server (see `test_kit::fixtures::PG_URL_ENV`)
//! and fail, never skip, without one.

mod postgres;

test_kit::store_story_tests!(test_kit::PgFixture);
