//! [`AccountStore`] for PostgreSQL: accounts, credentials, throttling counters
//! and sessions (migration 2). Compare-and-set updates are single UPDATE
//! statements: a concurrent writer waits on the row lock, then re-checks the
//! condition against the new row, so exactly one wins.

use async_trait::async_trait;
use model::{ResourceId, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use store::{
    Account, AccountId, AccountStore, BackupRecord, Credentials, FailureCounter, Result, Role,
    Session, StoreError, username_key,
};

use crate::{DUMP_PAGE, PgStore, db, limit_i64, parse_id, to_i64};

/// [`DUMP_PAGE`] as a length, to tell a full page from the last one.
const PAGE_LEN: usize = DUMP_PAGE.unsigned_abs() as usize;

const ACCOUNT_COLUMNS: &str =
    "id, username, role, practitioner, patient, active, created, deactivated, profile";

const SESSION_COLUMNS: &str = "id_hash, account, created, last_seen, absolute_expiry, \
     idle_timeout_secs, csrf_hash, revoked";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("invalid stored {what}"))
}

fn parse_account_id(s: String) -> Result<AccountId> {
    AccountId::new(s).ok_or_else(|| corrupt("account id"))
}

fn opt_id(s: Option<String>) -> Result<Option<ResourceId>> {
    s.map(parse_id).transpose()
}

fn opt_step(s: Option<i64>) -> Result<Option<u64>> {
    s.map(|s| u64::try_from(s).map_err(|_| corrupt("totp step")))
        .transpose()
}

fn account_from_row(row: &PgRow) -> Result<Account> {
    Ok(Account {
        id: parse_account_id(row.try_get(0).map_err(db)?)?,
        username: row.try_get(1).map_err(db)?,
        role: Role::parse(&row.try_get::<String, _>(2).map_err(db)?)
            .ok_or_else(|| corrupt("role"))?,
        practitioner: opt_id(row.try_get(3).map_err(db)?)?,
        patient: opt_id(row.try_get(4).map_err(db)?)?,
        active: row.try_get(5).map_err(db)?,
        created: Timestamp(row.try_get(6).map_err(db)?),
        deactivated: row.try_get::<Option<i64>, _>(7).map_err(db)?.map(Timestamp),
        profile: row.try_get(8).map_err(db)?,
    })
}

fn session_from_row(row: &PgRow) -> Result<Session> {
    let id_hash: Vec<u8> = row.try_get(0).map_err(db)?;
    Ok(Session {
        id_hash: id_hash.try_into().map_err(|_| corrupt("session id hash"))?,
        account: parse_account_id(row.try_get(1).map_err(db)?)?,
        created: Timestamp(row.try_get(2).map_err(db)?),
        last_seen: Timestamp(row.try_get(3).map_err(db)?),
        absolute_expiry: Timestamp(row.try_get(4).map_err(db)?),
        idle_timeout_secs: u32::try_from(row.try_get::<i64, _>(5).map_err(db)?)
            .map_err(|_| corrupt("idle timeout"))?,
        csrf_hash: row.try_get(6).map_err(db)?,
        revoked: row.try_get(7).map_err(db)?,
    })
}

fn counter_from_row(row: Option<&PgRow>) -> Result<FailureCounter> {
    let Some(row) = row else {
        return Ok(FailureCounter::default());
    };
    Ok(FailureCounter {
        failures: u32::try_from(row.try_get::<i64, _>(0).map_err(db)?)
            .map_err(|_| corrupt("failure count"))?,
        next_allowed_at: row.try_get::<Option<i64>, _>(1).map_err(db)?.map(Timestamp),
        disabled: row.try_get(2).map_err(db)?,
    })
}

#[async_trait]
impl AccountStore for PgStore {
    async fn create_account(&self, account: &Account) -> Result<()> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, username, username_key, role, practitioner, patient, \
             active, created, deactivated, profile) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(account.id.as_str())
        .bind(&account.username)
        .bind(username_key(&account.username))
        .bind(account.role.as_str())
        .bind(account.practitioner.as_ref().map(ResourceId::as_str))
        .bind(account.patient.as_ref().map(ResourceId::as_str))
        .bind(account.active)
        .bind(account.created.0)
        .bind(account.deactivated.map(|t| t.0))
        .bind(&account.profile)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 1 {
            return tx.commit().await.map_err(db);
        }
        let id_taken = sqlx::query("SELECT 1 FROM accounts WHERE id = $1")
            .bind(account.id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        Err(if id_taken {
            StoreError::AccountExists
        } else {
            StoreError::UsernameTaken
        })
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username_key = $1"
        ))
        .bind(username_key(username))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn accounts(&self, after: Option<&AccountId>, limit: usize) -> Result<Vec<Account>> {
        let rows = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map_or("", AccountId::as_str))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn deactivate_account(&self, id: &AccountId, at: Timestamp) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE accounts SET active = FALSE, deactivated = $2 WHERE id = $1 AND active",
        )
        .bind(id.as_str())
        .bind(at.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        sqlx::query("UPDATE sessions SET revoked = TRUE WHERE account = $1 AND NOT revoked")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(changed == 1)
    }

    async fn credentials(&self, id: &AccountId) -> Result<Credentials> {
        let row = sqlx::query(
            "SELECT password_hash, totp_secret, totp_last_step FROM credentials WHERE account = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(Credentials::default());
        };
        Ok(Credentials {
            password_hash: row.try_get(0).map_err(db)?,
            totp_secret: row.try_get(1).map_err(db)?,
            totp_last_step: opt_step(row.try_get(2).map_err(db)?)?,
        })
    }

    async fn set_password_hash(&self, id: &AccountId, phc: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO credentials (account, password_hash) VALUES ($1, $2) \
             ON CONFLICT (account) DO UPDATE SET password_hash = excluded.password_hash",
        )
        .bind(id.as_str())
        .bind(phc)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn set_totp_secret(&self, id: &AccountId, sealed: Option<&[u8]>) -> Result<()> {
        sqlx::query(
            "INSERT INTO credentials (account, totp_secret, totp_last_step) VALUES ($1, $2, NULL) \
             ON CONFLICT (account) DO UPDATE SET totp_secret = excluded.totp_secret, \
             totp_last_step = NULL",
        )
        .bind(id.as_str())
        .bind(sealed)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn advance_totp_step(
        &self,
        id: &AccountId,
        expected_last: Option<u64>,
        new: u64,
    ) -> Result<bool> {
        if expected_last.is_some_and(|e| new <= e) {
            return Ok(false);
        }
        let expected = expected_last.map_or(Ok(-1), |e| to_i64(e, "totp step"))?;
        let n = sqlx::query(
            "UPDATE credentials SET totp_last_step = $2 WHERE account = $1 \
             AND totp_secret IS NOT NULL AND COALESCE(totp_last_step, -1) = $3",
        )
        .bind(id.as_str())
        .bind(to_i64(new, "totp step")?)
        .bind(expected)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn set_recovery_codes(&self, id: &AccountId, hashes: &[Vec<u8>]) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE account = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for h in hashes {
            sqlx::query(
                "INSERT INTO recovery_codes (account, code_hash) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.as_str())
            .bind(h)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn recovery_codes(&self, id: &AccountId) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query(
            "SELECT code_hash FROM recovery_codes WHERE account = $1 ORDER BY code_hash",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
    }

    async fn consume_recovery_code(&self, id: &AccountId, hash: &[u8]) -> Result<bool> {
        let n = sqlx::query("DELETE FROM recovery_codes WHERE account = $1 AND code_hash = $2")
            .bind(id.as_str())
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(n == 1)
    }

    async fn factor_failures(&self, id: &AccountId, factor: &str) -> Result<FailureCounter> {
        let row = sqlx::query(
            "SELECT failures, next_allowed_at, disabled FROM factor_failures \
             WHERE account = $1 AND factor = $2",
        )
        .bind(id.as_str())
        .bind(factor)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        counter_from_row(row.as_ref())
    }

    async fn put_factor_failures(
        &self,
        id: &AccountId,
        factor: &str,
        counter: &FailureCounter,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO factor_failures (account, factor, failures, next_allowed_at, disabled) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, factor) DO UPDATE SET \
             failures = excluded.failures, next_allowed_at = excluded.next_allowed_at, \
             disabled = excluded.disabled",
        )
        .bind(id.as_str())
        .bind(factor)
        .bind(i64::from(counter.failures))
        .bind(counter.next_allowed_at.map(|t| t.0))
        .bind(counter.disabled)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn address_failures(&self, address: &str) -> Result<FailureCounter> {
        let row = sqlx::query(
            "SELECT failures, next_allowed_at, disabled FROM address_failures WHERE address = $1",
        )
        .bind(address)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        counter_from_row(row.as_ref())
    }

    async fn put_address_failures(&self, address: &str, counter: &FailureCounter) -> Result<()> {
        sqlx::query(
            "INSERT INTO address_failures (address, failures, next_allowed_at, disabled) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (address) DO UPDATE SET \
             failures = excluded.failures, next_allowed_at = excluded.next_allowed_at, \
             disabled = excluded.disabled",
        )
        .bind(address)
        .bind(i64::from(counter.failures))
        .bind(counter.next_allowed_at.map(|t| t.0))
        .bind(counter.disabled)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn create_session(&self, session: &Session) -> Result<bool> {
        // FOR SHARE conflicts with a deactivation's UPDATE of the account
        // row: either the deactivation sees (and revokes) this session, or
        // this check sees the account inactive.
        let mut tx = self.begin().await?;
        let active = sqlx::query("SELECT 1 FROM accounts WHERE id = $1 AND active FOR SHARE")
            .bind(session.account.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        if !active {
            return Ok(false);
        }
        sqlx::query(&format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&session.id_hash[..])
        .bind(session.account.as_str())
        .bind(session.created.0)
        .bind(session.last_seen.0)
        .bind(session.absolute_expiry.0)
        .bind(i64::from(session.idle_timeout_secs))
        .bind(session.csrf_hash.as_deref())
        .bind(session.revoked)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn session(&self, id_hash: &[u8; 32]) -> Result<Option<Session>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1"
        ))
        .bind(&id_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn touch_session(&self, id_hash: &[u8; 32], at: Timestamp) -> Result<bool> {
        let n =
            sqlx::query("UPDATE sessions SET last_seen = $2 WHERE id_hash = $1 AND NOT revoked")
                .bind(&id_hash[..])
                .bind(at.0)
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
        Ok(n == 1)
    }

    async fn revoke_session(&self, id_hash: &[u8; 32]) -> Result<bool> {
        let n =
            sqlx::query("UPDATE sessions SET revoked = TRUE WHERE id_hash = $1 AND NOT revoked")
                .bind(&id_hash[..])
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
        Ok(n == 1)
    }

    async fn revoke_sessions_of(&self, id: &AccountId) -> Result<u64> {
        let n =
            sqlx::query("UPDATE sessions SET revoked = TRUE WHERE account = $1 AND NOT revoked")
                .bind(id.as_str())
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
        Ok(n)
    }

    async fn delete_expired_sessions(&self, now: Timestamp) -> Result<u64> {
        let n = sqlx::query(
            "DELETE FROM sessions WHERE revoked OR absolute_expiry <= $1 \
             OR last_seen + idle_timeout_secs * 1000000 <= $1",
        )
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n)
    }
}

// ---- backup ----

/// Dumps the identity tables (not sessions, not per-address counters) in
/// the snapshot of `tx`, each paged by its primary key.
pub(crate) async fn dump_identity(
    tx: &mut Transaction<'static, Postgres>,
    sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send),
) -> Result<()> {
    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let account = account_from_row(r)?;
            after = account.id.as_str().to_owned();
            sink(BackupRecord::Account(account))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = String::new();
    loop {
        let rows = sqlx::query(
            "SELECT account, password_hash, totp_secret, totp_last_step FROM credentials \
             WHERE account > $1 ORDER BY account LIMIT $2",
        )
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let account = parse_account_id(r.try_get(0).map_err(db)?)?;
            after = account.as_str().to_owned();
            let credentials = Credentials {
                password_hash: r.try_get(1).map_err(db)?,
                totp_secret: r.try_get(2).map_err(db)?,
                totp_last_step: opt_step(r.try_get(3).map_err(db)?)?,
            };
            sink(BackupRecord::Credentials {
                account,
                credentials,
            })?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = (String::new(), Vec::<u8>::new());
    loop {
        let rows = sqlx::query(
            "SELECT account, code_hash FROM recovery_codes WHERE (account, code_hash) > ($1, $2) \
             ORDER BY account, code_hash LIMIT $3",
        )
        .bind(&after.0)
        .bind(&after.1)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let account = parse_account_id(r.try_get(0).map_err(db)?)?;
            let hash: Vec<u8> = r.try_get(1).map_err(db)?;
            after = (account.as_str().to_owned(), hash.clone());
            sink(BackupRecord::RecoveryCode { account, hash })?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = Vec::<u8>::new();
    loop {
        let rows = sqlx::query(
            "SELECT account, credential_id, data FROM passkeys WHERE credential_id > $1 \
             ORDER BY credential_id LIMIT $2",
        )
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let account = parse_account_id(r.try_get(0).map_err(db)?)?;
            let credential_id: Vec<u8> = r.try_get(1).map_err(db)?;
            after.clone_from(&credential_id);
            sink(BackupRecord::Passkey {
                account,
                credential_id,
                data: r.try_get(2).map_err(db)?,
            })?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = (String::new(), String::new());
    loop {
        let rows = sqlx::query(
            "SELECT failures, next_allowed_at, disabled, account, factor FROM factor_failures \
             WHERE (account, factor) > ($1, $2) ORDER BY account, factor LIMIT $3",
        )
        .bind(&after.0)
        .bind(&after.1)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let counter = counter_from_row(Some(r))?;
            let account = parse_account_id(r.try_get(3).map_err(db)?)?;
            let factor: String = r.try_get(4).map_err(db)?;
            after = (account.as_str().to_owned(), factor.clone());
            sink(BackupRecord::FactorFailures {
                account,
                factor,
                counter,
            })?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }
    Ok(())
}

/// Whether the store holds any account (a restore needs an empty store).
pub(crate) async fn has_accounts(tx: &mut Transaction<'static, Postgres>) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM accounts LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?
        .is_some())
}

/// Inserts one identity record during a restore; other records are not
/// this module's and are ignored.
pub(crate) async fn load_identity(
    tx: &mut Transaction<'static, Postgres>,
    record: &BackupRecord,
) -> Result<()> {
    match record {
        BackupRecord::Account(a) => {
            sqlx::query(
                "INSERT INTO accounts (id, username, username_key, role, practitioner, patient, \
                 active, created, deactivated, profile) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(a.id.as_str())
            .bind(&a.username)
            .bind(username_key(&a.username))
            .bind(a.role.as_str())
            .bind(a.practitioner.as_ref().map(ResourceId::as_str))
            .bind(a.patient.as_ref().map(ResourceId::as_str))
            .bind(a.active)
            .bind(a.created.0)
            .bind(a.deactivated.map(|t| t.0))
            .bind(&a.profile)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        BackupRecord::Credentials {
            account,
            credentials: c,
        } => {
            sqlx::query(
                "INSERT INTO credentials (account, password_hash, totp_secret, totp_last_step) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(account.as_str())
            .bind(c.password_hash.as_deref())
            .bind(c.totp_secret.as_deref())
            .bind(
                c.totp_last_step
                    .map(|s| to_i64(s, "totp step"))
                    .transpose()?,
            )
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        BackupRecord::RecoveryCode { account, hash } => {
            sqlx::query("INSERT INTO recovery_codes (account, code_hash) VALUES ($1, $2)")
                .bind(account.as_str())
                .bind(hash)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        BackupRecord::Passkey {
            account,
            credential_id,
            data,
        } => {
            sqlx::query("INSERT INTO passkeys (credential_id, account, data) VALUES ($1, $2, $3)")
                .bind(credential_id)
                .bind(account.as_str())
                .bind(data)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        BackupRecord::FactorFailures {
            account,
            factor,
            counter,
        } => {
            sqlx::query(
                "INSERT INTO factor_failures (account, factor, failures, next_allowed_at, disabled) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(account.as_str())
            .bind(factor)
            .bind(i64::from(counter.failures))
            .bind(counter.next_allowed_at.map(|t| t.0))
            .bind(counter.disabled)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        BackupRecord::Setting { .. }
        | BackupRecord::Key(_)
        | BackupRecord::Version(_)
        | BackupRecord::Index { .. } => {}
    }
    Ok(())
}
