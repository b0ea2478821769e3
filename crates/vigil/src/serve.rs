//! `vigil serve`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use indicatif::{ProgressBar, ProgressStyle};
use model::SystemClock;

use crate::config::{self, Settings};

/// Opens everything `serve` and the CLI verbs share: the store and the key file.
pub async fn open_vigil(
    s: &Settings,
    create_keys: bool,
) -> anyhow::Result<(Arc<app::Vigil>, bool)> {
    let store = config::open_store(s).await?;
    let (kf, created) =
        crypto::KeyFile::load(&s.key_source, create_keys).context("loading the key file")?;
    let mut vigil = app::Vigil::open(
        store,
        &kf,
        s.key_source.clone(),
        Arc::new(SystemClock),
        s.fhir.clone(),
    )
    .await
    .context("opening the record store")?;
    vigil
        .configure_identity(&kf, s.identity.clone())
        .context("[identity] settings")?;
    let mut consult = s.consult.clone();
    if consult.allowed_origins.is_empty()
        && let Some(url) = &s.public_url
        && let Some((scheme, rest)) = url.split_once("://")
    {
        let host = rest.split('/').next().unwrap_or(rest);
        consult.allowed_origins = vec![format!("{scheme}://{host}")];
    }
    vigil.configure_consult(consult);
    // The privacy officer's newest policy version, if any (validated again:
    // a version that no longer validates stops the start).
    let version = vigil
        .load_policy()
        .await
        .context("loading the access policy")?;
    if version > 0 {
        tracing::info!(version, "access policy loaded");
    }
    Ok((Arc::new(vigil), created))
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_owned());
    pb
}

pub async fn serve(s: Settings, demo: bool) -> anyhow::Result<()> {
    let (vigil, created) = open_vigil(&s, true).await?;
    if created && let crypto::KeyFileSource::Path(p) = &s.key_source {
        eprintln!(
            "Created a new key file at {} (mode 0600). Keep it safe and apart from backups.",
            p.display()
        );
    }
    let env_token = std::env::var("VIGIL_BOOTSTRAP_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let new_token = vigil
        .init_bootstrap_token(env_token.as_deref())
        .await
        .context("setting up the bootstrap token")?;
    if demo {
        let pb = bar(300, "demo clinic");
        let seeded = vigil
            .seed_demo(300, 2021, &|done, _| pb.set_position(done))
            .await
            .context("seeding the demo clinic")?;
        pb.finish_and_clear();
        match seeded {
            Some(sum) => eprintln!(
                "Seeded the demo clinic: {} resources ({} patients, {} practitioners).",
                sum.resources, sum.patients, sum.practitioners
            ),
            None => eprintln!("Demo clinic already present."),
        }
    }
    let demo_password = if demo {
        let password = crypto::random_token();
        vigil
            .seed_demo_accounts(&password)
            .await
            .context("creating the demo accounts")?
            .then_some(password)
    } else {
        None
    };
    // Work done by other processes and nodes: erasures by `vigil patient
    // erase` (drop cached keys and name terms derived from erased data) and
    // writes on other nodes (their names enter this node's in-memory index).
    let watcher = {
        let vigil = Arc::clone(&vigil);
        tokio::spawn(async move {
            let mut seen = vigil.sync_erasures(None).await.ok().flatten();
            let mut names_since = vigil.now();
            let mut ticks: u64 = 0;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                ticks += 1;
                // Every five minutes: expired sessions, sign-in steps, codes,
                // refresh tokens and revocation records go.
                if ticks.is_multiple_of(150) {
                    match vigil.delete_expired_identity_data().await {
                        Ok(n) if n > 0 => {
                            tracing::info!(deleted = n, "expired identity data removed")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "could not remove expired identity data")
                        }
                    }
                }
                match vigil.sync_erasures(seen.clone()).await {
                    Ok(now) => seen = now,
                    Err(e) => tracing::warn!(error = %e, "could not check for erasures"),
                }
                match vigil.sync_names(names_since).await {
                    Ok(now) => names_since = now,
                    Err(e) => tracing::warn!(error = %e, "could not refresh the name index"),
                }
            }
        })
    };
    // Consultations: participants whose connection dropped longer ago than
    // the reconnect grace go back to the waiting room.
    let consult_sweep = {
        let vigil = Arc::clone(&vigil);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                if let Err(e) = vigil.consult_sweep().await {
                    tracing::warn!(error = %e, "consultation sweep failed");
                }
            }
        })
    };
    // Privacy monitoring follows the audit trail: every second, the entries
    // recorded since the last pass are explained and alerts stored (a pass
    // that finds a full batch runs again at once).
    let monitor = {
        let vigil = Arc::clone(&vigil);
        tokio::spawn(async move {
            loop {
                match vigil.monitor_step().await {
                    Ok(r) if r.entries >= 5_000 => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "monitoring pass failed"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    };
    // The outbox goes out through the SMTP relay when one is configured;
    // without one (demo mode), messages stay in the outbox for its page.
    let mailer = s
        .smtp
        .as_ref()
        .map(crate::mail::SmtpMailer::new)
        .transpose()?;
    let postman = mailer.map(|mailer| {
        let vigil = Arc::clone(&vigil);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                match vigil.deliver_outbox(&mailer, 50).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sent = n, "outbox delivered"),
                    Err(e) => tracing::warn!(error = %e, "could not deliver the outbox"),
                }
            }
        })
    });
    if let Some(smtp) = &s.smtp {
        tracing::info!(relay = %smtp.relay, "outbox delivered by SMTP");
    } else {
        tracing::info!("no [smtp] relay: messages stay in the outbox");
    }
    // Read the certificate before binding: a bad file fails the start at once.
    let tls = s.tls.as_ref().map(crate::tls::server_config).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(&s.listen)
        .await
        .with_context(|| format!("binding {}", s.listen))?;
    let addr = listener.local_addr()?;
    let router = web::router(web::WebState {
        vigil: Arc::clone(&vigil),
        public_base: s.public_url.clone(),
        proxies: Arc::new(s.proxies.clone()),
    })
    // Bodies are limited per route by the configured limit; axum's own
    // default is turned off so the configured value is the only one in force.
    .layer(axum::extract::DefaultBodyLimit::disable())
    // Bounds the requests in flight: overload queues instead of exhausting memory.
    .layer(tower::limit::ConcurrencyLimitLayer::new(
        s.max_concurrent_requests,
    ));
    println!("Vigil is listening on {scheme}://{addr}/ (FHIR base {scheme}://{addr}/fhir)");
    let site = s
        .public_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').trim_end_matches("/fhir").to_owned())
        .unwrap_or_else(|| {
            // Browsers treat `localhost` as a secure context, which the
            // `__Host-` cookie and passkeys need; passkeys refuse IP addresses.
            if addr.ip().is_loopback() {
                format!("{scheme}://localhost:{}", addr.port())
            } else {
                format!("{scheme}://{addr}")
            }
        });
    if let Some(pw) = &demo_password {
        println!("Demo accounts (shown once), all with the password {pw}:");
        for (username, role, _, _) in app::demo::DEMO_ACCOUNTS {
            println!("  {username:<12} {role}");
        }
        println!(
            "Sign in at {site}/signin; workforce accounts enrol a second factor (an authenticator app or a passkey) at first sign-in. Messages land in {site}/admin/outbox."
        );
    }
    if !vigil.has_administrator().await? {
        match (&new_token, &env_token) {
            (Some(t), _) => {
                println!(
                    "Set up the first administrator at {site}/setup with this bootstrap token (shown once; only its hash is stored):"
                );
                println!("  {t}");
                println!(
                    "  or run: vigil user add --username NAME --role administrator --password-stdin"
                );
            }
            (None, Some(_)) => println!(
                "Set up the first administrator at {site}/setup with the bootstrap token from VIGIL_BOOTSTRAP_TOKEN."
            ),
            (None, None) => println!(
                "Set up the first administrator at {site}/setup with the bootstrap token printed at first start, or with `vigil user add`."
            ),
        }
    }
    tracing::info!(%addr, backend = vigil.store().backend(), "ready");
    // The TCP peer reaches handlers as `ConnectInfo` (see `web::ClientAddr`).
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        Some(config) => {
            // `tap_io` also gives axum's generic `ConnectInfo<SocketAddr>`
            // implementation a listener type to use. No Nagle delay: signaling
            // and chat are small messages that must not wait for an ACK.
            let listener = crate::tls::TlsListener::new(listener, config)?.tap_io(|s| {
                let _ = s.get_ref().0.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown())
                .await
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown())
                .await
        }
    }
    .context("serving");
    watcher.abort();
    monitor.abort();
    consult_sweep.abort();
    if let Some(p) = postman {
        p.abort();
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
