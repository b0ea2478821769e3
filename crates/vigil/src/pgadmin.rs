//! Creating and dropping scratch PostgreSQL databases (benchmarks and tests).

use anyhow::{Context, bail};
use sqlx::Connection;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `admin` with its database name replaced by `name`.
pub fn database_url(admin: &str, name: &str) -> String {
    let (head, query) = admin
        .split_once('?')
        .map_or((admin, None), |(h, q)| (h, Some(q)));
    let authority = head.find("://").map_or(0, |i| i + 3);
    let base = match head.get(authority..).and_then(|rest| rest.find('/')) {
        Some(j) => head.get(..authority + j).unwrap_or(head),
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub async fn create_database(admin: &str, name: &str) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!("invalid database name");
    }
    let mut c = sqlx::PgConnection::connect(admin)
        .await
        .context("connecting to PostgreSQL")?;
    // Identifiers cannot be bound as parameters; `name` is checked above to be [a-z0-9_].
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(())
}

pub async fn drop_database(admin: &str, name: &str) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!("invalid database name");
    }
    let mut c = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_url_replaces_the_name() {
        assert_eq!(
            super::database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::database_url("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
