//! Integration tests for the SQLite adapter: the shared conformance story,
//! plus what only SQLite has (pragmas, WAL files, the reader pool).

mod sqlite;

test_kit::store_story_tests!(test_kit::SqliteFixture);
