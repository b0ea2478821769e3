//! The SQLite schema, as an ordered list of embedded migrations.
//!
//! INVARIANT: the tables and columns here match `store-postgres`'s
//! migrations one for one (a test in `store-postgres` compares them by
//! introspection); only the column types differ.

/// One schema step: applied once, in order, recorded in `schema_migrations`.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: r#"
CREATE TABLE settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE data_keys (
    owner   TEXT NOT NULL PRIMARY KEY,
    kek_id  TEXT NOT NULL,
    wrapped BLOB NOT NULL
) STRICT;
CREATE INDEX data_keys_kek_id ON data_keys (kek_id);

-- Every version ever written, delete markers included (empty ciphertext).
CREATE TABLE resource_versions (
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1),
    last_updated INTEGER NOT NULL,
    deleted      INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    key_owner    TEXT    NOT NULL,
    ciphertext   BLOB    NOT NULL,
    PRIMARY KEY (rtype, id, version)
) STRICT;
CREATE INDEX resource_versions_key_owner ON resource_versions (key_owner);

-- A pointer to the newest version of each id, so that a read by id is one
-- primary-key lookup here plus one in resource_versions.
CREATE TABLE resource_current (
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted      INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    key_owner    TEXT    NOT NULL,
    PRIMARY KEY (rtype, id),
    FOREIGN KEY (rtype, id, version) REFERENCES resource_versions (rtype, id, version)
) STRICT;
CREATE INDEX resource_current_key_owner ON resource_current (key_owner);
CREATE INDEX resource_current_last_updated ON resource_current (rtype, last_updated);

-- Blind-index rows of current, non-deleted resources.
CREATE TABLE search_index (
    rtype TEXT NOT NULL,
    id    TEXT NOT NULL,
    param TEXT NOT NULL,
    token BLOB NOT NULL,
    PRIMARY KEY (rtype, param, token, id),
    FOREIGN KEY (rtype, id) REFERENCES resource_current (rtype, id)
) STRICT, WITHOUT ROWID;
CREATE INDEX search_index_resource ON search_index (rtype, id);
"#,
}];
