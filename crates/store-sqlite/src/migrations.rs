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

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        name: "identity",
        sql: r#"
-- One row per person; usernames are unique by their lowercase key.
CREATE TABLE accounts (
    id           TEXT    NOT NULL PRIMARY KEY,
    username     TEXT    NOT NULL,
    username_key TEXT    NOT NULL UNIQUE,
    role         TEXT    NOT NULL,
    practitioner TEXT,
    patient      TEXT,
    active       INTEGER NOT NULL CHECK (active IN (0, 1)),
    created      INTEGER NOT NULL,
    deactivated  INTEGER,
    profile      BLOB    NOT NULL
) STRICT;

-- Opaque secrets: a PHC password hash, a sealed TOTP secret.
CREATE TABLE credentials (
    account        TEXT NOT NULL PRIMARY KEY REFERENCES accounts (id),
    password_hash  BLOB,
    totp_secret    BLOB,
    totp_last_step INTEGER
) STRICT;

CREATE TABLE recovery_codes (
    account   TEXT NOT NULL REFERENCES accounts (id),
    code_hash BLOB NOT NULL,
    PRIMARY KEY (account, code_hash)
) STRICT;

-- WebAuthn credentials (not used yet).
CREATE TABLE passkeys (
    credential_id BLOB NOT NULL PRIMARY KEY,
    account       TEXT NOT NULL REFERENCES accounts (id),
    data          BLOB NOT NULL
) STRICT;
CREATE INDEX passkeys_account ON passkeys (account);

CREATE TABLE factor_failures (
    account         TEXT    NOT NULL REFERENCES accounts (id),
    factor          TEXT    NOT NULL,
    failures        INTEGER NOT NULL,
    next_allowed_at INTEGER,
    disabled        INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    PRIMARY KEY (account, factor)
) STRICT;

CREATE TABLE address_failures (
    address         TEXT    NOT NULL PRIMARY KEY,
    failures        INTEGER NOT NULL,
    next_allowed_at INTEGER,
    disabled        INTEGER NOT NULL CHECK (disabled IN (0, 1))
) STRICT;

-- Sessions by the SHA-256 of their cookie value.
CREATE TABLE sessions (
    id_hash           BLOB    NOT NULL PRIMARY KEY,
    account           TEXT    NOT NULL REFERENCES accounts (id),
    created           INTEGER NOT NULL,
    last_seen         INTEGER NOT NULL,
    absolute_expiry   INTEGER NOT NULL,
    idle_timeout_secs INTEGER NOT NULL,
    csrf_hash         BLOB,
    revoked           INTEGER NOT NULL CHECK (revoked IN (0, 1))
) STRICT;
CREATE INDEX sessions_account ON sessions (account);
CREATE INDEX sessions_absolute_expiry ON sessions (absolute_expiry);
"#,
    },
    Migration {
        version: 3,
        name: "identity-2",
        sql: r#"
-- Passkeys gain a label and their use times (rows from migration 2 get an
-- empty label and time 0).
ALTER TABLE passkeys ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE passkeys ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
ALTER TABLE passkeys ADD COLUMN last_used INTEGER;

-- Single-use secrets by the SHA-256 of their value.
CREATE TABLE challenges (
    key_hash BLOB    NOT NULL PRIMARY KEY,
    purpose  TEXT    NOT NULL,
    account  TEXT    REFERENCES accounts (id),
    payload  BLOB    NOT NULL,
    expires  INTEGER NOT NULL
) STRICT;
CREATE INDEX challenges_expires ON challenges (expires);
CREATE INDEX challenges_account ON challenges (account, purpose);

CREATE TABLE oauth_clients (
    client_id TEXT    NOT NULL PRIMARY KEY,
    name      TEXT    NOT NULL,
    active    INTEGER NOT NULL CHECK (active IN (0, 1)),
    created   INTEGER NOT NULL,
    revoked   INTEGER,
    data      BLOB    NOT NULL
) STRICT;

-- Refresh tokens by the SHA-256 of their value. Used tokens are kept until
-- they expire: presenting one again is how a stolen token is caught.
CREATE TABLE refresh_tokens (
    hash      BLOB    NOT NULL PRIMARY KEY,
    family    TEXT    NOT NULL,
    account   TEXT    NOT NULL REFERENCES accounts (id),
    client_id TEXT    NOT NULL REFERENCES oauth_clients (client_id),
    payload   BLOB    NOT NULL,
    created   INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    used      INTEGER NOT NULL CHECK (used IN (0, 1)),
    revoked   INTEGER NOT NULL CHECK (revoked IN (0, 1))
) STRICT;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_account ON refresh_tokens (account);
CREATE INDEX refresh_tokens_client_id ON refresh_tokens (client_id);

-- Revoked access tokens, kept until the token would have expired anyway.
CREATE TABLE revoked_jtis (
    jti     TEXT    NOT NULL PRIMARY KEY,
    expires INTEGER NOT NULL
) STRICT;

-- Mail waiting to be relayed (and a record of what was sent).
CREATE TABLE outbox (
    id         TEXT    NOT NULL PRIMARY KEY,
    created    INTEGER NOT NULL,
    account    TEXT    REFERENCES accounts (id),
    kind       TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    sent_at    INTEGER,
    attempts   INTEGER NOT NULL,
    last_error TEXT
) STRICT;
CREATE INDEX outbox_unsent ON outbox (sent_at, created);
"#,
    },
    Migration {
        version: 4,
        name: "audit",
        sql: r#"
-- The audit log. Architecture Invariant: append only. The only updates are
-- the head row and widening a partial tile, both inside an append; nothing
-- here is ever deleted (patient erasure leaves it alone: entries are sealed
-- by the app and terms are keyed tokens).
CREATE TABLE audit_entries (
    idx      INTEGER NOT NULL PRIMARY KEY CHECK (idx >= 0),
    recorded INTEGER NOT NULL,
    bytes    BLOB    NOT NULL
) STRICT;

-- Keyed search terms, by entry index. No foreign key and no second index:
-- nothing is ever deleted, an append writes an entry and its terms in one
-- transaction, and every extra B-tree is paid on the append path.
CREATE TABLE audit_terms (
    param TEXT    NOT NULL,
    token BLOB    NOT NULL,
    idx   INTEGER NOT NULL,
    PRIMARY KEY (param, token, idx)
) STRICT, WITHOUT ROWID;

-- C2SP tlog-tiles: a partial tile is replaced by wider versions of itself.
CREATE TABLE audit_tiles (
    level INTEGER NOT NULL CHECK (level >= 0),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    width INTEGER NOT NULL CHECK (width BETWEEN 1 AND 256),
    data  BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) STRICT;

-- Signed checkpoints kept in the history, by tree size.
CREATE TABLE audit_checkpoints (
    size INTEGER NOT NULL PRIMARY KEY,
    note TEXT    NOT NULL
) STRICT;

-- The end of the log: one row, updated by every append.
CREATE TABLE audit_head (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    size       INTEGER NOT NULL CHECK (size >= 0),
    state      BLOB    NOT NULL,
    checkpoint TEXT
) STRICT;
INSERT INTO audit_head (id, size, state, checkpoint) VALUES (1, 0, X'', NULL);
"#,
    },
    Migration {
        version: 5,
        name: "access-policy",
        sql: r#"
-- Break-the-glass grants. Architecture Invariant: never deleted (patient
-- erasure leaves them alone); the only updates set `revoked` once and the
-- review columns once. The justification and review note are sealed by the app.
CREATE TABLE emergency_grants (
    id              TEXT    NOT NULL PRIMARY KEY,
    account         TEXT    NOT NULL REFERENCES accounts (id),
    patient         TEXT    NOT NULL,
    start           INTEGER NOT NULL,
    expires         INTEGER NOT NULL,
    revoked         INTEGER,
    reason          TEXT    NOT NULL,
    justification   BLOB    NOT NULL,
    review_due      INTEGER NOT NULL,
    review_reviewer TEXT    REFERENCES accounts (id),
    review_at       INTEGER,
    review_outcome  TEXT,
    review_note     BLOB,
    -- A review is recorded whole or not at all.
    CHECK ((review_at IS NULL) = (review_reviewer IS NULL)
       AND (review_at IS NULL) = (review_outcome IS NULL)
       AND (review_at IS NULL) = (review_note IS NULL))
) STRICT;
CREATE INDEX emergency_grants_patient ON emergency_grants (patient, start);
CREATE INDEX emergency_grants_account ON emergency_grants (account, start);
CREATE INDEX emergency_grants_unreviewed ON emergency_grants (review_due) WHERE review_at IS NULL;

-- The access policy's versions, append only, numbered gap-free from 1.
CREATE TABLE policy_versions (
    version     INTEGER NOT NULL PRIMARY KEY CHECK (version >= 1),
    policy_text TEXT    NOT NULL,
    author      TEXT    REFERENCES accounts (id),
    created     INTEGER NOT NULL,
    comment     TEXT    NOT NULL
) STRICT;
"#,
    },
    Migration {
        version: 6,
        name: "monitoring",
        sql: r#"
-- Privacy monitoring. Architecture Invariant: everything that names a
-- person or says why is sealed by the app with the audit key (the `sealed`
-- columns); nothing here is ever deleted (case notes are append only), and
-- patient erasure leaves these tables alone.

-- How far monitoring has read the audit log: one row, moved only by a
-- compare-and-set inside the transaction that stores a batch's results.
CREATE TABLE monitor_state (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    processed INTEGER NOT NULL CHECK (processed >= 0)
) STRICT;
INSERT INTO monitor_state (id, processed) VALUES (1, 0);

-- The explanation of each audited access, by audit index (replaced when an
-- access is explained again).
CREATE TABLE monitor_explanations (
    idx    INTEGER NOT NULL PRIMARY KEY CHECK (idx >= 0),
    sealed BLOB    NOT NULL
) STRICT;

-- Cases: `subject` is a keyed token of the monitored user.
CREATE TABLE monitor_cases (
    id       TEXT    NOT NULL PRIMARY KEY,
    subject  BLOB    NOT NULL,
    status   TEXT    NOT NULL,
    score    REAL    NOT NULL,
    assignee TEXT    REFERENCES accounts (id),
    opened   INTEGER NOT NULL,
    updated  INTEGER NOT NULL,
    alerts   INTEGER NOT NULL CHECK (alerts >= 0),
    sealed   BLOB    NOT NULL
) STRICT;
CREATE INDEX monitor_cases_queue ON monitor_cases (status, score, updated);
CREATE INDEX monitor_cases_ranked ON monitor_cases (score, updated);
CREATE INDEX monitor_cases_subject ON monitor_cases (subject, opened);
CREATE INDEX monitor_cases_assignee ON monitor_cases (assignee, score);

CREATE TABLE monitor_alerts (
    id      TEXT    NOT NULL PRIMARY KEY,
    case_id TEXT    NOT NULL REFERENCES monitor_cases (id),
    kind    TEXT    NOT NULL,
    score   REAL    NOT NULL,
    created INTEGER NOT NULL,
    sealed  BLOB    NOT NULL
) STRICT;
CREATE INDEX monitor_alerts_case ON monitor_alerts (case_id, score);

-- An officer's notes, numbered gap-free from 1 per case.
CREATE TABLE monitor_case_notes (
    case_id TEXT    NOT NULL REFERENCES monitor_cases (id),
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    author  TEXT    NOT NULL REFERENCES accounts (id),
    at      INTEGER NOT NULL,
    sealed  BLOB    NOT NULL,
    PRIMARY KEY (case_id, seq)
) STRICT;
CREATE INDEX monitor_case_notes_author ON monitor_case_notes (author);

-- Patterns an officer confirmed as legitimate; revoked at most once.
CREATE TABLE monitor_suppressions (
    id      TEXT    NOT NULL PRIMARY KEY,
    author  TEXT    NOT NULL REFERENCES accounts (id),
    created INTEGER NOT NULL,
    revoked INTEGER,
    sealed  BLOB    NOT NULL
) STRICT;
CREATE INDEX monitor_suppressions_created ON monitor_suppressions (created);
"#,
    },
    Migration {
        version: 7,
        name: "consult",
        sql: r#"
-- Telehealth consults. The room's state and the invite's secret are sealed
-- by the app; rooms and invites name a patient, so erasing the patient
-- deletes them (invites first).

-- One room per appointment; updated only by compare-and-set on `version`.
CREATE TABLE consult_rooms (
    id            TEXT    NOT NULL PRIMARY KEY,
    appointment   TEXT    NOT NULL UNIQUE,
    patient       TEXT    NOT NULL,
    clinician     TEXT    NOT NULL REFERENCES accounts (id),
    practitioner  TEXT,
    created       INTEGER NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    status        TEXT    NOT NULL,
    state         BLOB    NOT NULL,
    consult_start INTEGER,
    consult_end   INTEGER
) STRICT;
CREATE INDEX consult_rooms_clinician ON consult_rooms (clinician, created);
CREATE INDEX consult_rooms_patient ON consult_rooms (patient, consult_start);

-- An identity check is recorded only by compare-and-set on `failures`.
CREATE TABLE consult_invites (
    id          TEXT    NOT NULL PRIMARY KEY,
    room        TEXT    NOT NULL REFERENCES consult_rooms (id),
    created     INTEGER NOT NULL,
    expires     INTEGER NOT NULL,
    method      TEXT    NOT NULL,
    failures    INTEGER NOT NULL CHECK (failures >= 0),
    locked      INTEGER NOT NULL CHECK (locked IN (0, 1)),
    verified_at INTEGER,
    revoked     INTEGER NOT NULL CHECK (revoked IN (0, 1)),
    secret      BLOB    NOT NULL
) STRICT;
CREATE INDEX consult_invites_room ON consult_invites (room, created);
"#,
    },
];
