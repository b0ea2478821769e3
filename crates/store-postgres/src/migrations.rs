//! The PostgreSQL schema, as an ordered list of embedded migrations.
//!
//! INVARIANT: the tables and columns here match `store-sqlite`'s migrations
//! one for one (a test compares them by introspection); only the column
//! types differ. Text columns use the "C" collation so that ids sort by
//! bytes, exactly as SQLite sorts them: paging by id and the backup order
//! are then the same on both backends.

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
    name  text COLLATE "C" NOT NULL PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE data_keys (
    owner   text COLLATE "C" NOT NULL PRIMARY KEY,
    kek_id  text COLLATE "C" NOT NULL,
    wrapped bytea NOT NULL
);
CREATE INDEX data_keys_kek_id ON data_keys (kek_id);

-- Every version ever written, delete markers included (empty ciphertext).
CREATE TABLE resource_versions (
    rtype        text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    version      bigint NOT NULL CHECK (version >= 1),
    last_updated bigint NOT NULL,
    deleted      boolean NOT NULL,
    key_owner    text COLLATE "C" NOT NULL,
    ciphertext   bytea NOT NULL,
    PRIMARY KEY (rtype, id, version)
);
CREATE INDEX resource_versions_key_owner ON resource_versions (key_owner);

-- A pointer to the newest version of each id; writers lock this row
-- (SELECT ... FOR UPDATE) to serialise writes to one resource.
CREATE TABLE resource_current (
    rtype        text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    version      bigint NOT NULL,
    last_updated bigint NOT NULL,
    deleted      boolean NOT NULL,
    key_owner    text COLLATE "C" NOT NULL,
    PRIMARY KEY (rtype, id),
    FOREIGN KEY (rtype, id, version) REFERENCES resource_versions (rtype, id, version)
);
CREATE INDEX resource_current_key_owner ON resource_current (key_owner);
CREATE INDEX resource_current_last_updated ON resource_current (rtype, last_updated);

-- Blind-index rows of current, non-deleted resources.
CREATE TABLE search_index (
    rtype text COLLATE "C" NOT NULL,
    id    text COLLATE "C" NOT NULL,
    param text COLLATE "C" NOT NULL,
    token bytea NOT NULL,
    PRIMARY KEY (rtype, param, token, id),
    FOREIGN KEY (rtype, id) REFERENCES resource_current (rtype, id)
);
CREATE INDEX search_index_resource ON search_index (rtype, id);
"#,
    },
    Migration {
        version: 2,
        name: "identity",
        sql: r#"
-- One row per person; usernames are unique by their lowercase key.
CREATE TABLE accounts (
    id           text COLLATE "C"    NOT NULL PRIMARY KEY,
    username     text COLLATE "C"    NOT NULL,
    username_key text COLLATE "C"    NOT NULL UNIQUE,
    role         text COLLATE "C"    NOT NULL,
    practitioner text COLLATE "C",
    patient      text COLLATE "C",
    active       boolean NOT NULL,
    created      bigint NOT NULL,
    deactivated  bigint,
    profile      bytea    NOT NULL
);

-- Opaque secrets: a PHC password hash, a sealed TOTP secret.
CREATE TABLE credentials (
    account        text COLLATE "C" NOT NULL PRIMARY KEY REFERENCES accounts (id),
    password_hash  bytea,
    totp_secret    bytea,
    totp_last_step bigint
);

CREATE TABLE recovery_codes (
    account   text COLLATE "C" NOT NULL REFERENCES accounts (id),
    code_hash bytea NOT NULL,
    PRIMARY KEY (account, code_hash)
);

-- WebAuthn credentials (not used yet).
CREATE TABLE passkeys (
    credential_id bytea NOT NULL PRIMARY KEY,
    account       text COLLATE "C" NOT NULL REFERENCES accounts (id),
    data          bytea NOT NULL
);
CREATE INDEX passkeys_account ON passkeys (account);

CREATE TABLE factor_failures (
    account         text COLLATE "C"    NOT NULL REFERENCES accounts (id),
    factor          text COLLATE "C"    NOT NULL,
    failures        bigint NOT NULL,
    next_allowed_at bigint,
    disabled        boolean NOT NULL,
    PRIMARY KEY (account, factor)
);

CREATE TABLE address_failures (
    address         text COLLATE "C"    NOT NULL PRIMARY KEY,
    failures        bigint NOT NULL,
    next_allowed_at bigint,
    disabled        boolean NOT NULL
);

-- Sessions by the SHA-256 of their cookie value.
CREATE TABLE sessions (
    id_hash           bytea    NOT NULL PRIMARY KEY,
    account           text COLLATE "C"    NOT NULL REFERENCES accounts (id),
    created           bigint NOT NULL,
    last_seen         bigint NOT NULL,
    absolute_expiry   bigint NOT NULL,
    idle_timeout_secs bigint NOT NULL,
    csrf_hash         bytea,
    revoked           boolean NOT NULL
);
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
ALTER TABLE passkeys ADD COLUMN name text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE passkeys ADD COLUMN created bigint NOT NULL DEFAULT 0;
ALTER TABLE passkeys ADD COLUMN last_used bigint;

-- Single-use secrets by the SHA-256 of their value.
CREATE TABLE challenges (
    key_hash bytea NOT NULL PRIMARY KEY,
    purpose  text COLLATE "C" NOT NULL,
    account  text COLLATE "C" REFERENCES accounts (id),
    payload  bytea NOT NULL,
    expires  bigint NOT NULL
);
CREATE INDEX challenges_expires ON challenges (expires);
CREATE INDEX challenges_account ON challenges (account, purpose);

CREATE TABLE oauth_clients (
    client_id text COLLATE "C" NOT NULL PRIMARY KEY,
    name      text COLLATE "C" NOT NULL,
    active    boolean NOT NULL,
    created   bigint NOT NULL,
    revoked   bigint,
    data      bytea NOT NULL
);

-- Refresh tokens by the SHA-256 of their value. Used tokens are kept until
-- they expire: presenting one again is how a stolen token is caught.
CREATE TABLE refresh_tokens (
    hash      bytea NOT NULL PRIMARY KEY,
    family    text COLLATE "C" NOT NULL,
    account   text COLLATE "C" NOT NULL REFERENCES accounts (id),
    client_id text COLLATE "C" NOT NULL REFERENCES oauth_clients (client_id),
    payload   bytea NOT NULL,
    created   bigint NOT NULL,
    expires   bigint NOT NULL,
    used      boolean NOT NULL,
    revoked   boolean NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_account ON refresh_tokens (account);
CREATE INDEX refresh_tokens_client_id ON refresh_tokens (client_id);

-- Revoked access tokens, kept until the token would have expired anyway.
CREATE TABLE revoked_jtis (
    jti     text COLLATE "C" NOT NULL PRIMARY KEY,
    expires bigint NOT NULL
);

-- Mail waiting to be relayed (and a record of what was sent).
CREATE TABLE outbox (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    created    bigint NOT NULL,
    account    text COLLATE "C" REFERENCES accounts (id),
    kind       text COLLATE "C" NOT NULL,
    payload    bytea NOT NULL,
    sent_at    bigint,
    attempts   bigint NOT NULL,
    last_error text COLLATE "C"
);
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
    idx      bigint NOT NULL PRIMARY KEY CHECK (idx >= 0),
    recorded bigint NOT NULL,
    bytes    bytea  NOT NULL
);

-- Keyed search terms, by entry index. No foreign key and no second index:
-- nothing is ever deleted, an append writes an entry and its terms in one
-- transaction, and every extra B-tree is paid on the append path.
CREATE TABLE audit_terms (
    param text COLLATE "C" NOT NULL,
    token bytea  NOT NULL,
    idx   bigint NOT NULL,
    PRIMARY KEY (param, token, idx)
);

-- C2SP tlog-tiles: a partial tile is replaced by wider versions of itself.
CREATE TABLE audit_tiles (
    level integer NOT NULL CHECK (level >= 0),
    idx   bigint  NOT NULL CHECK (idx >= 0),
    width integer NOT NULL CHECK (width BETWEEN 1 AND 256),
    data  bytea   NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints kept in the history, by tree size.
CREATE TABLE audit_checkpoints (
    size bigint NOT NULL PRIMARY KEY,
    note text   NOT NULL
);

-- The end of the log: one row, updated (under `SELECT … FOR UPDATE`, the
-- log's single-writer lock across every node) by every append.
CREATE TABLE audit_head (
    id         integer NOT NULL PRIMARY KEY CHECK (id = 1),
    size       bigint  NOT NULL CHECK (size >= 0),
    state      bytea   NOT NULL,
    checkpoint text
);
INSERT INTO audit_head (id, size, state, checkpoint) VALUES (1, 0, ''::bytea, NULL);
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
    id              text COLLATE "C" NOT NULL PRIMARY KEY,
    account         text COLLATE "C" NOT NULL REFERENCES accounts (id),
    patient         text COLLATE "C" NOT NULL,
    start           bigint NOT NULL,
    expires         bigint NOT NULL,
    revoked         bigint,
    reason          text COLLATE "C" NOT NULL,
    justification   bytea  NOT NULL,
    review_due      bigint NOT NULL,
    review_reviewer text COLLATE "C" REFERENCES accounts (id),
    review_at       bigint,
    review_outcome  text COLLATE "C",
    review_note     bytea,
    -- A review is recorded whole or not at all.
    CHECK ((review_at IS NULL) = (review_reviewer IS NULL)
       AND (review_at IS NULL) = (review_outcome IS NULL)
       AND (review_at IS NULL) = (review_note IS NULL))
);
CREATE INDEX emergency_grants_patient ON emergency_grants (patient, start);
CREATE INDEX emergency_grants_account ON emergency_grants (account, start);
CREATE INDEX emergency_grants_unreviewed ON emergency_grants (review_due) WHERE review_at IS NULL;

-- The access policy's versions, append only, numbered gap-free from 1.
-- `add_policy_version` takes `LOCK TABLE … IN SHARE ROW EXCLUSIVE MODE`, so
-- concurrent appends from any node queue instead of racing for a number.
CREATE TABLE policy_versions (
    version     bigint NOT NULL PRIMARY KEY CHECK (version >= 1),
    policy_text text   NOT NULL,
    author      text COLLATE "C" REFERENCES accounts (id),
    created     bigint NOT NULL,
    comment     text   NOT NULL
);
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

-- How far monitoring has read the audit log: one row, moved only by
-- `UPDATE … WHERE processed = $from` inside the transaction that stores a
-- batch's results. The row lock makes that compare-and-set have one winner
-- across every node: a second updater waits, then finds the cursor moved.
CREATE TABLE monitor_state (
    id        integer NOT NULL PRIMARY KEY CHECK (id = 1),
    processed bigint  NOT NULL CHECK (processed >= 0)
);
INSERT INTO monitor_state (id, processed) VALUES (1, 0);

-- The explanation of each audited access, by audit index (replaced when an
-- access is explained again).
CREATE TABLE monitor_explanations (
    idx    bigint NOT NULL PRIMARY KEY CHECK (idx >= 0),
    sealed bytea  NOT NULL
);

-- Cases: `subject` is a keyed token of the monitored user.
CREATE TABLE monitor_cases (
    id       text COLLATE "C" NOT NULL PRIMARY KEY,
    subject  bytea            NOT NULL,
    status   text COLLATE "C" NOT NULL,
    score    double precision NOT NULL,
    assignee text COLLATE "C" REFERENCES accounts (id),
    opened   bigint           NOT NULL,
    updated  bigint           NOT NULL,
    alerts   bigint           NOT NULL CHECK (alerts >= 0),
    sealed   bytea            NOT NULL
);
CREATE INDEX monitor_cases_queue ON monitor_cases (status, score DESC, updated DESC);
CREATE INDEX monitor_cases_ranked ON monitor_cases (score DESC, updated DESC);
CREATE INDEX monitor_cases_subject ON monitor_cases (subject, opened);
CREATE INDEX monitor_cases_assignee ON monitor_cases (assignee, score DESC);

CREATE TABLE monitor_alerts (
    id      text COLLATE "C" NOT NULL PRIMARY KEY,
    case_id text COLLATE "C" NOT NULL REFERENCES monitor_cases (id),
    kind    text COLLATE "C" NOT NULL,
    score   double precision NOT NULL,
    created bigint           NOT NULL,
    sealed  bytea            NOT NULL
);
CREATE INDEX monitor_alerts_case ON monitor_alerts (case_id, score DESC);

-- An officer's notes, numbered gap-free from 1 per case (under the case's
-- row lock, taken by the update that adds the note).
CREATE TABLE monitor_case_notes (
    case_id text COLLATE "C" NOT NULL REFERENCES monitor_cases (id),
    seq     bigint NOT NULL CHECK (seq >= 1),
    author  text COLLATE "C" NOT NULL REFERENCES accounts (id),
    at      bigint NOT NULL,
    sealed  bytea  NOT NULL,
    PRIMARY KEY (case_id, seq)
);
CREATE INDEX monitor_case_notes_author ON monitor_case_notes (author);

-- Patterns an officer confirmed as legitimate; revoked at most once.
CREATE TABLE monitor_suppressions (
    id      text COLLATE "C" NOT NULL PRIMARY KEY,
    author  text COLLATE "C" NOT NULL REFERENCES accounts (id),
    created bigint NOT NULL,
    revoked bigint,
    sealed  bytea  NOT NULL
);
CREATE INDEX monitor_suppressions_created ON monitor_suppressions (created);
"#,
    },
    Migration {
        version: 7,
        name: "consult",
        sql: r#"
-- Telehealth consults. The room's state and the invite's secret are sealed
-- by the app; rooms and invites name a patient, so erasing the patient
-- deletes them (invites first, under the rooms' row locks).

-- One room per appointment; updated only by `UPDATE … WHERE version =
-- $expected`, whose row lock gives the compare-and-set one winner across
-- every node.
CREATE TABLE consult_rooms (
    id            text COLLATE "C" NOT NULL PRIMARY KEY,
    appointment   text COLLATE "C" NOT NULL UNIQUE,
    patient       text COLLATE "C" NOT NULL,
    clinician     text COLLATE "C" NOT NULL REFERENCES accounts (id),
    practitioner  text COLLATE "C",
    created       bigint  NOT NULL,
    version       bigint  NOT NULL CHECK (version >= 1),
    status        text COLLATE "C" NOT NULL,
    state         bytea   NOT NULL,
    consult_start bigint,
    consult_end   bigint
);
CREATE INDEX consult_rooms_clinician ON consult_rooms (clinician, created DESC);
CREATE INDEX consult_rooms_patient ON consult_rooms (patient, consult_start DESC);

-- An identity check is recorded only by `UPDATE … WHERE failures =
-- $expected`: a concurrent check waits on the row lock, then finds the
-- count moved.
CREATE TABLE consult_invites (
    id          text COLLATE "C" NOT NULL PRIMARY KEY,
    room        text COLLATE "C" NOT NULL REFERENCES consult_rooms (id),
    created     bigint  NOT NULL,
    expires     bigint  NOT NULL,
    method      text COLLATE "C" NOT NULL,
    failures    bigint  NOT NULL CHECK (failures >= 0),
    locked      boolean NOT NULL,
    verified_at bigint,
    revoked     boolean NOT NULL,
    secret      bytea   NOT NULL
);
CREATE INDEX consult_invites_room ON consult_invites (room, created DESC);
"#,
    },
];
