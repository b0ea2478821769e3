//! [`AccountStore`] for PostgreSQL: accounts, credentials, throttling counters
//! and sessions (migration 2); passkeys, challenges, OAuth clients, tokens
//! and the outbox (migration 3). Compare-and-set updates are single UPDATE
//! statements: a concurrent writer waits on the row lock, then re-checks the
//! condition against the new row, so exactly one wins.

use async_trait::async_trait;
use model::{ResourceId, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use store::{
    Account, AccountId, AccountStore, BackupRecord, Challenge, Credentials, FailureCounter,
    OAuthClient, OutboxMessage, RefreshOutcome, RefreshToken, Result, Role, Session, StoreError,
    StoredPasskey, username_key,
};

use crate::{DUMP_PAGE, PgStore, db, limit_i64, parse_id, to_i64};

/// [`DUMP_PAGE`] as a length, to tell a full page from the last one.
const PAGE_LEN: usize = DUMP_PAGE.unsigned_abs() as usize;

const ACCOUNT_COLUMNS: &str =
    "id, username, role, practitioner, patient, active, created, deactivated, profile";

const SESSION_COLUMNS: &str = "id_hash, account, created, last_seen, absolute_expiry, \
     idle_timeout_secs, csrf_hash, revoked";

const PASSKEY_COLUMNS: &str = "credential_id, account, name, created, last_used, data";

const CHALLENGE_COLUMNS: &str = "purpose, account, payload, expires";

const CLIENT_COLUMNS: &str = "client_id, name, active, created, revoked, data";

const TOKEN_COLUMNS: &str = "hash, family, account, client_id, payload, created, expires";

const MESSAGE_COLUMNS: &str = "id, created, account, kind, payload, sent_at, attempts, last_error";

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

fn opt_account(s: Option<String>) -> Result<Option<AccountId>> {
    s.map(parse_account_id).transpose()
}

fn hash32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| corrupt(what))
}

fn passkey_from_row(row: &PgRow) -> Result<StoredPasskey> {
    Ok(StoredPasskey {
        credential_id: row.try_get(0).map_err(db)?,
        account: parse_account_id(row.try_get(1).map_err(db)?)?,
        name: row.try_get(2).map_err(db)?,
        created: Timestamp(row.try_get(3).map_err(db)?),
        last_used: row.try_get::<Option<i64>, _>(4).map_err(db)?.map(Timestamp),
        data: row.try_get(5).map_err(db)?,
    })
}

fn challenge_from_row(row: &PgRow) -> Result<Challenge> {
    Ok(Challenge {
        purpose: row.try_get(0).map_err(db)?,
        account: opt_account(row.try_get(1).map_err(db)?)?,
        payload: row.try_get(2).map_err(db)?,
        expires: Timestamp(row.try_get(3).map_err(db)?),
    })
}

fn client_from_row(row: &PgRow) -> Result<OAuthClient> {
    Ok(OAuthClient {
        client_id: row.try_get(0).map_err(db)?,
        name: row.try_get(1).map_err(db)?,
        active: row.try_get(2).map_err(db)?,
        created: Timestamp(row.try_get(3).map_err(db)?),
        revoked: row.try_get::<Option<i64>, _>(4).map_err(db)?.map(Timestamp),
        data: row.try_get(5).map_err(db)?,
    })
}

fn token_from_row(row: &PgRow) -> Result<RefreshToken> {
    Ok(RefreshToken {
        hash: hash32(row.try_get(0).map_err(db)?, "refresh token hash")?,
        family: row.try_get(1).map_err(db)?,
        account: parse_account_id(row.try_get(2).map_err(db)?)?,
        client_id: row.try_get(3).map_err(db)?,
        payload: row.try_get(4).map_err(db)?,
        created: Timestamp(row.try_get(5).map_err(db)?),
        expires: Timestamp(row.try_get(6).map_err(db)?),
    })
}

fn message_from_row(row: &PgRow) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: row.try_get(0).map_err(db)?,
        created: Timestamp(row.try_get(1).map_err(db)?),
        account: opt_account(row.try_get(2).map_err(db)?)?,
        kind: row.try_get(3).map_err(db)?,
        payload: row.try_get(4).map_err(db)?,
        sent_at: row.try_get::<Option<i64>, _>(5).map_err(db)?.map(Timestamp),
        attempts: u32::try_from(row.try_get::<i64, _>(6).map_err(db)?)
            .map_err(|_| corrupt("delivery attempts"))?,
        last_error: row.try_get(7).map_err(db)?,
    })
}

/// Revokes every token of a family (a used token came back).
async fn revoke_family(tx: &mut Transaction<'static, Postgres>, family: &str) -> Result<()> {
    sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1 AND NOT revoked")
        .bind(family)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Inserts a refresh token, unused and not revoked, into `family`.
async fn insert_token(
    tx: &mut Transaction<'static, Postgres>,
    token: &RefreshToken,
    family: &str,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO refresh_tokens ({TOKEN_COLUMNS}, used, revoked) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, FALSE)"
    ))
    .bind(&token.hash[..])
    .bind(family)
    .bind(token.account.as_str())
    .bind(&token.client_id)
    .bind(&token.payload)
    .bind(token.created.0)
    .bind(token.expires.0)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
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
        for sql in [
            "UPDATE sessions SET revoked = TRUE WHERE account = $1 AND NOT revoked",
            "UPDATE refresh_tokens SET revoked = TRUE WHERE account = $1 AND NOT revoked",
        ] {
            sqlx::query(sql)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
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

    async fn reset_second_factors(&self, id: &AccountId) -> Result<()> {
        let mut tx = self.begin().await?;
        for sql in [
            "UPDATE credentials SET totp_secret = NULL, totp_last_step = NULL WHERE account = $1",
            "DELETE FROM passkeys WHERE account = $1",
            "DELETE FROM recovery_codes WHERE account = $1",
            "DELETE FROM factor_failures WHERE account = $1",
            "UPDATE sessions SET revoked = TRUE WHERE account = $1 AND NOT revoked",
            "UPDATE refresh_tokens SET revoked = TRUE WHERE account = $1 AND NOT revoked",
        ] {
            sqlx::query(sql)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn add_passkey(&self, passkey: &StoredPasskey) -> Result<bool> {
        let n = sqlx::query(&format!(
            "INSERT INTO passkeys ({PASSKEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (credential_id) DO NOTHING"
        ))
        .bind(&passkey.credential_id)
        .bind(passkey.account.as_str())
        .bind(&passkey.name)
        .bind(passkey.created.0)
        .bind(passkey.last_used.map(|t| t.0))
        .bind(&passkey.data)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn passkeys(&self, id: &AccountId) -> Result<Vec<StoredPasskey>> {
        let rows = sqlx::query(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE account = $1 \
             ORDER BY created, credential_id"
        ))
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(passkey_from_row).collect()
    }

    async fn update_passkey(
        &self,
        credential_id: &[u8],
        data: &[u8],
        used: Timestamp,
    ) -> Result<bool> {
        let n =
            sqlx::query("UPDATE passkeys SET data = $2, last_used = $3 WHERE credential_id = $1")
                .bind(credential_id)
                .bind(data)
                .bind(used.0)
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
        Ok(n == 1)
    }

    async fn delete_passkey(&self, id: &AccountId, credential_id: &[u8]) -> Result<bool> {
        let n = sqlx::query("DELETE FROM passkeys WHERE account = $1 AND credential_id = $2")
            .bind(id.as_str())
            .bind(credential_id)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(n == 1)
    }

    async fn put_challenge(&self, key_hash: &[u8; 32], challenge: &Challenge) -> Result<bool> {
        let n = sqlx::query(&format!(
            "INSERT INTO challenges (key_hash, {CHALLENGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key_hash) DO NOTHING"
        ))
        .bind(&key_hash[..])
        .bind(&challenge.purpose)
        .bind(challenge.account.as_ref().map(AccountId::as_str))
        .bind(&challenge.payload)
        .bind(challenge.expires.0)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn challenge(
        &self,
        key_hash: &[u8; 32],
        purpose: &str,
        now: Timestamp,
    ) -> Result<Option<Challenge>> {
        let row = sqlx::query(&format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges \
             WHERE key_hash = $1 AND purpose = $2 AND expires > $3"
        ))
        .bind(&key_hash[..])
        .bind(purpose)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(challenge_from_row).transpose()
    }

    async fn take_challenge(
        &self,
        key_hash: &[u8; 32],
        purpose: &str,
        now: Timestamp,
    ) -> Result<Option<Challenge>> {
        // One statement: the row is gone for everyone once one caller has it.
        let row = sqlx::query(&format!(
            "DELETE FROM challenges WHERE key_hash = $1 AND purpose = $2 AND expires > $3 \
             RETURNING {CHALLENGE_COLUMNS}"
        ))
        .bind(&key_hash[..])
        .bind(purpose)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(challenge_from_row).transpose()
    }

    async fn delete_challenges_of(&self, id: &AccountId, purpose: &str) -> Result<u64> {
        let n = sqlx::query("DELETE FROM challenges WHERE account = $1 AND purpose = $2")
            .bind(id.as_str())
            .bind(purpose)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(n)
    }

    async fn delete_expired_challenges(&self, now: Timestamp) -> Result<u64> {
        let n = sqlx::query("DELETE FROM challenges WHERE expires <= $1")
            .bind(now.0)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(n)
    }

    async fn create_client(&self, client: &OAuthClient) -> Result<bool> {
        let n = sqlx::query(&format!(
            "INSERT INTO oauth_clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (client_id) DO NOTHING"
        ))
        .bind(&client.client_id)
        .bind(&client.name)
        .bind(client.active)
        .bind(client.created.0)
        .bind(client.revoked.map(|t| t.0))
        .bind(&client.data)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn clients(&self) -> Result<Vec<OAuthClient>> {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY client_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn revoke_client(&self, client_id: &str, at: Timestamp) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE oauth_clients SET active = FALSE, revoked = $2 WHERE client_id = $1 AND active",
        )
        .bind(client_id)
        .bind(at.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        sqlx::query(
            "UPDATE refresh_tokens SET revoked = TRUE WHERE client_id = $1 AND NOT revoked",
        )
        .bind(client_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(changed == 1)
    }

    async fn put_refresh_token(&self, token: &RefreshToken) -> Result<bool> {
        // FOR SHARE, as in create_session: a racing deactivation or client
        // revocation either sees (and revokes) this token or is seen here.
        let mut tx = self.begin().await?;
        let account_active =
            sqlx::query("SELECT 1 FROM accounts WHERE id = $1 AND active FOR SHARE")
                .bind(token.account.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
        let client_active =
            sqlx::query("SELECT 1 FROM oauth_clients WHERE client_id = $1 AND active FOR SHARE")
                .bind(&token.client_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
        if !(account_active && client_active) {
            return Ok(false);
        }
        insert_token(&mut tx, token, &token.family).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8; 32],
        new: &RefreshToken,
        now: Timestamp,
    ) -> Result<RefreshOutcome> {
        // Locks in the order deactivation and client revocation take them
        // (the account or client row, then its tokens), so none deadlock:
        // FOR SHARE on the account and client makes a racing deactivation
        // or revocation either wait for this rotation (and then revoke the
        // new token too) or be seen here; FOR UPDATE on the token makes
        // concurrent rotations of it take turns, and the later ones see it used.
        let mut tx = self.begin().await?;
        let owner = sqlx::query("SELECT account, client_id FROM refresh_tokens WHERE hash = $1")
            .bind(&old_hash[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(owner) = owner else {
            return Ok(RefreshOutcome::Invalid);
        };
        let account: String = owner.try_get(0).map_err(db)?;
        let client_id: String = owner.try_get(1).map_err(db)?;
        let account_active =
            sqlx::query("SELECT 1 FROM accounts WHERE id = $1 AND active FOR SHARE")
                .bind(&account)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
        let client_active =
            sqlx::query("SELECT 1 FROM oauth_clients WHERE client_id = $1 AND active FOR SHARE")
                .bind(&client_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS}, used, revoked FROM refresh_tokens WHERE hash = $1 FOR UPDATE"
        ))
        .bind(&old_hash[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        let old = token_from_row(&row)?;
        let used: bool = row.try_get(7).map_err(db)?;
        let revoked: bool = row.try_get(8).map_err(db)?;
        // Deactivation and client revocation also revoke the tokens: those
        // are invalid, not replays.
        if !(account_active && client_active) {
            return Ok(RefreshOutcome::Invalid);
        }
        if used || revoked {
            revoke_family(&mut tx, &old.family).await?;
            tx.commit().await.map_err(db)?;
            return Ok(RefreshOutcome::Reused);
        }
        // A token presented for another account or client is not this grant's.
        if old.expires <= now || new.account != old.account || new.client_id != old.client_id {
            return Ok(RefreshOutcome::Invalid);
        }
        let n = sqlx::query(
            "UPDATE refresh_tokens SET used = TRUE WHERE hash = $1 AND NOT used AND NOT revoked",
        )
        .bind(&old_hash[..])
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n != 1 {
            revoke_family(&mut tx, &old.family).await?;
            tx.commit().await.map_err(db)?;
            return Ok(RefreshOutcome::Reused);
        }
        insert_token(&mut tx, new, &old.family).await?;
        tx.commit().await.map_err(db)?;
        Ok(RefreshOutcome::Rotated(old))
    }

    async fn live_refresh_token(
        &self,
        hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<RefreshToken>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM refresh_tokens \
             WHERE hash = $1 AND NOT used AND NOT revoked AND expires > $2 \
             AND EXISTS (SELECT 1 FROM accounts a WHERE a.id = refresh_tokens.account AND a.active) \
             AND EXISTS (SELECT 1 FROM oauth_clients c \
                         WHERE c.client_id = refresh_tokens.client_id AND c.active)"
        ))
        .bind(&hash[..])
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn revoke_refresh_token(&self, hash: &[u8; 32]) -> Result<bool> {
        let mut tx = self.begin().await?;
        let family: Option<String> =
            sqlx::query("SELECT family FROM refresh_tokens WHERE hash = $1")
                .bind(&hash[..])
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(db)?;
        let Some(family) = family else {
            return Ok(false);
        };
        revoke_family(&mut tx, &family).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn revoke_access_token(&self, jti: &str, expires: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO revoked_jtis (jti, expires) VALUES ($1, $2) ON CONFLICT (jti) \
             DO UPDATE SET expires = GREATEST(revoked_jtis.expires, excluded.expires)",
        )
        .bind(jti)
        .bind(expires.0)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn access_token_live(
        &self,
        account: Option<&AccountId>,
        client_id: Option<&str>,
        jti: &str,
    ) -> Result<bool> {
        // One query: this runs on every API request.
        sqlx::query(
            "SELECT ($1::text IS NULL \
                     OR EXISTS (SELECT 1 FROM accounts WHERE id = $1::text AND active)) \
             AND ($2::text IS NULL \
                  OR EXISTS (SELECT 1 FROM oauth_clients WHERE client_id = $2::text AND active)) \
             AND NOT EXISTS (SELECT 1 FROM revoked_jtis WHERE jti = $3)",
        )
        .bind(account.map(AccountId::as_str))
        .bind(client_id)
        .bind(jti)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
    }

    async fn live_token_account(
        &self,
        account: &AccountId,
        client_id: Option<&str>,
        jti: &str,
    ) -> Result<Option<Account>> {
        // One query: this runs on every API request of a person.
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1 AND active \
             AND ($2::text IS NULL \
                  OR EXISTS (SELECT 1 FROM oauth_clients WHERE client_id = $2::text AND active)) \
             AND NOT EXISTS (SELECT 1 FROM revoked_jtis WHERE jti = $3)"
        ))
        .bind(account.as_str())
        .bind(client_id)
        .bind(jti)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn delete_expired_tokens(&self, now: Timestamp) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut n = 0;
        for sql in [
            "DELETE FROM refresh_tokens WHERE expires <= $1",
            "DELETE FROM revoked_jtis WHERE expires <= $1",
        ] {
            n += sqlx::query(sql)
                .bind(now.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        }
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    async fn enqueue_message(&self, message: &OutboxMessage) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO outbox ({MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&message.id)
        .bind(message.created.0)
        .bind(message.account.as_ref().map(AccountId::as_str))
        .bind(&message.kind)
        .bind(&message.payload)
        .bind(message.sent_at.map(|t| t.0))
        .bind(i64::from(message.attempts))
        .bind(message.last_error.as_deref())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn unsent_messages(&self, max_attempts: u32, limit: usize) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE sent_at IS NULL AND attempts < $1 \
             ORDER BY created, id LIMIT $2"
        ))
        .bind(i64::from(max_attempts))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(message_from_row).collect()
    }

    async fn mark_message_sent(&self, id: &str, at: Timestamp) -> Result<()> {
        sqlx::query("UPDATE outbox SET sent_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at.0)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn mark_message_failed(&self, id: &str, error: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1")
            .bind(id)
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn messages(
        &self,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE ($1::bigint IS NULL OR created < $1) \
             ORDER BY created DESC, id DESC LIMIT $2"
        ))
        .bind(before.map(|t| t.0))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(message_from_row).collect()
    }
}

// ---- backup ----

/// Dumps the identity tables (not sessions, per-address counters,
/// challenges, tokens or the outbox: see [`BackupRecord`]) in the snapshot
/// of `tx`, each paged by its primary key.
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
        let rows = sqlx::query(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id > $1 \
             ORDER BY credential_id LIMIT $2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let passkey = passkey_from_row(r)?;
            after.clone_from(&passkey.credential_id);
            sink(BackupRecord::Passkey(passkey))?;
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

    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id > $1 \
             ORDER BY client_id LIMIT $2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let client = client_from_row(r)?;
            after.clone_from(&client.client_id);
            sink(BackupRecord::Client(client))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }
    Ok(())
}

/// Whether the store holds any account or OAuth client (a restore needs an
/// empty store).
pub(crate) async fn has_identity(tx: &mut Transaction<'static, Postgres>) -> Result<bool> {
    sqlx::query("SELECT EXISTS (SELECT 1 FROM accounts) OR EXISTS (SELECT 1 FROM oauth_clients)")
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
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
        BackupRecord::Passkey(p) => {
            sqlx::query(&format!(
                "INSERT INTO passkeys ({PASSKEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .bind(&p.credential_id)
            .bind(p.account.as_str())
            .bind(&p.name)
            .bind(p.created.0)
            .bind(p.last_used.map(|t| t.0))
            .bind(&p.data)
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
        BackupRecord::Client(c) => {
            sqlx::query(&format!(
                "INSERT INTO oauth_clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .bind(&c.client_id)
            .bind(&c.name)
            .bind(c.active)
            .bind(c.created.0)
            .bind(c.revoked.map(|t| t.0))
            .bind(&c.data)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        BackupRecord::Setting { .. }
        | BackupRecord::Key(_)
        | BackupRecord::Version(_)
        | BackupRecord::Index { .. }
        | BackupRecord::AuditEntry { .. }
        | BackupRecord::AuditTile(_)
        | BackupRecord::AuditCheckpoint { .. }
        | BackupRecord::AuditHead(_)
        | BackupRecord::PolicyVersion(_)
        | BackupRecord::Grant(_)
        | BackupRecord::MonitorCursor(_)
        | BackupRecord::AccessExplanation(_)
        | BackupRecord::MonitorCase(_)
        | BackupRecord::MonitorAlert(_)
        | BackupRecord::CaseNote(_)
        | BackupRecord::Suppression(_)
        | BackupRecord::ConsultRoom(_)
        | BackupRecord::ConsultInvite(_) => {}
    }
    Ok(())
}
