//! `mailoauth daemon`: background refresher and token server on a unix socket.
//!
//! Owns: the process lifecycle (single instance per runtime dir, SIGHUP reload,
//! SIGTERM/SIGINT shutdown), the socket server (same-uid peers only, a timeout
//! per connection so a silent client stalls nobody), an in-memory cache of fresh
//! tokens, and the refreshers ([`refresher`]: one per account, each sleeping
//! until its own deadline, so one stuck account delays no other). Must not:
//! refresh by itself — every refresh goes through the broker, so the daemon and
//! standalone `mailoauth token` callers share the store and the cross-process
//! lock and never refresh twice.
//!
//! Runs on one current-thread tokio runtime plus the token socket's own thread
//! (see [`socket`] for why); blocking work (store reads, HTTP) goes to the
//! blocking pool, whose idle threads exit after a few seconds, so an idle
//! daemon has no thread that wakes up (the socket's thread sleeps in `accept`).

mod refresher;
pub mod schedule;
mod socket;
pub mod timer;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};

use mailoauth::Broker;
use mailoauth::clock::now;
use mailoauth::error::{Error, Result};
use mailoauth::ipc::{self, Op, Request};
use mailoauth::providers::MAIL_RESOURCE;
use mailoauth::store::AccessToken;
use mailoauth::{Client, paths, sasl};

/// How long one client may take for its whole request/response.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// On SIGTERM, how long relayed proxy sessions may go on before the daemon exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Shared {
    config_path: PathBuf,
    /// The token socket's path, for log lines.
    socket: PathBuf,
    config_key: String,
    client: Mutex<Arc<Client>>,
    /// Fresh tokens by (account, resource).
    cache: Mutex<HashMap<(String, String), AccessToken>>,
    /// Bumped to make every account's refresher recompute its schedule (a
    /// watch, not a Notify: a refresher busy refreshing must not miss it).
    reschedule: watch::Sender<u64>,
    /// Wakes the refresher's supervisor after a reload (new set of accounts).
    reloaded: Notify,
    /// Failure counts for backoff: account → (failures, last failure time).
    failures: Mutex<HashMap<String, (u32, i64)>>,
}

/// Run the daemon in the foreground until SIGTERM/SIGINT.
pub fn run(config_path: &Path) -> Result<()> {
    let client = Client::with_config_file(config_path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(Duration::from_secs(3))
        .build()
        .map_err(|e| Error::io("cannot start the runtime", e))?;
    rt.block_on(serve(config_path, client))
}

async fn serve(config_path: &Path, client: Client) -> Result<()> {
    let dir = paths::runtime_dir();
    paths::ensure_private_dir(&dir)?;
    // One daemon per runtime dir: the lock is held for the process lifetime and
    // released by the kernel whatever way we die.
    let lock_path = dir.join("daemon.lock");
    let lock = paths::open_lock_file(&lock_path)?;
    if lock.try_lock().is_err() {
        return Err(Error::Usage(format!(
            "another mailoauth daemon is already running (it holds {}); stop it first",
            lock_path.display()
        )));
    }
    // Before the socket exists: whoever sees it may signal us, and an unhandled
    // SIGHUP would end the daemon instead of reloading it.
    let sig = |k| signal(k).map_err(|e| Error::io("cannot install signal handlers", e));
    let (mut hup, mut term, mut int) = (
        sig(SignalKind::hangup())?,
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
    );
    let sock = ipc::socket_path();
    // We hold the lock, so a socket file left here is from a dead daemon.
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .map_err(|e| Error::io(format!("cannot listen on {}", sock.display()), e))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("cannot chmod {}", sock.display()), e))?;

    let shared = Arc::new(Shared {
        config_key: ipc::config_key(config_path),
        config_path: config_path.to_owned(),
        socket: sock.clone(),
        client: Mutex::new(Arc::new(client)),
        cache: Mutex::new(HashMap::new()),
        reschedule: watch::Sender::new(0),
        reloaded: Notify::new(),
        failures: Mutex::new(HashMap::new()),
    });
    // Secret commands (a pinentry, `pass`) run once per daemon and reload,
    // not on every planning round.
    mailoauth::config::remember_secret_commands(true);
    // Fail at start, not later in a task, if this kernel has no timerfd.
    drop(timer::WallTimer::new().map_err(|e| Error::io("cannot create the refresh timer", e))?);
    let refresher = tokio::spawn(refresher::supervise(shared.clone()));
    // Proxy listeners live on the same runtime; a bad proxy config stops the start.
    let client = shared.client.lock().unwrap().clone();
    // The proxy's logins take tokens from the same memory cache as the socket.
    let tokens: crate::proxy::TokenSource = {
        let shared = shared.clone();
        Arc::new(move |name: String| {
            let shared = shared.clone();
            Box::pin(async move { cached_token(&shared, name, None).await.map(|(t, _)| t) })
        })
    };
    raise_nofile(crate::proxy::fds_wanted(&client));
    let mut proxies = crate::proxy::Proxies::new(tokens);
    proxies.start(client).await?;
    // Normal start-up, reload and stop are info: only what needs a person is a warning.
    log::info!(
        "daemon serving {} on {}",
        config_path.display(),
        sock.display()
    );

    let front = socket::Front::start(listener, shared.clone(), tokio::runtime::Handle::current())
        .map_err(|e| Error::io("cannot start the token socket's thread", e))?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let previous = shared.client.lock().unwrap().clone();
                reload(&shared);
                let client = shared.client.lock().unwrap().clone();
                raise_nofile(crate::proxy::fds_wanted(&client));
                if let Err(e) = proxies.restart(client, previous).await {
                    log::error!("proxy listeners not changed: {e}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    refresher.abort();
    // No new clients (token or proxy) from here on; relayed sessions get a moment to finish.
    let _ = std::fs::remove_file(&sock);
    front.stop();
    proxies.shutdown(SHUTDOWN_GRACE).await;
    log::info!("daemon stopped");
    drop(lock);
    Ok(())
}

/// Raise the soft open-file limit to `wanted` (the proxy's caps and a reserve),
/// as far as the hard limit allows; the proxy fits its caps to what it got.
fn raise_nofile(wanted: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= wanted {
        return;
    }
    let target = wanted.min(lim.rlim_max);
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        log::info!("open-file limit raised from {} to {target}", lim.rlim_cur);
    }
}

fn reload(shared: &Shared) {
    match Client::with_config_file(&shared.config_path) {
        Ok(c) => {
            *shared.client.lock().unwrap() = Arc::new(c);
            shared.cache.lock().unwrap().clear();
            shared.failures.lock().unwrap().clear();
            // A changed command, or a secret rotated behind it, is run afresh.
            mailoauth::config::remember_secret_commands(true);
            shared.reloaded.notify_one();
            log::info!("config reloaded");
        }
        Err(e) => log::error!("config reload failed, keeping the old one: {e}"),
    }
}

/// What the token socket can answer without I/O, or what it must wait for.
enum Answer {
    /// The reply, at once.
    Now(std::result::Result<String, String>),
    /// A token that is not fresh in memory: the broker must be asked.
    Later(Later),
}

/// A token request that needs the broker (store read, maybe a refresh).
struct Later {
    account: String,
    resource: Option<String>,
    sasl: Option<sasl::Mechanism>,
}

/// Answer `req` from memory when it needs no I/O (called on the socket's
/// thread as well as on the runtime).
fn answer_now(shared: &Shared, req: Request) -> Answer {
    if req.config != shared.config_key {
        return Answer::Now(Err(format!("this daemon serves {}", shared.config_key)));
    }
    match req.op {
        Op::Ping => Answer::Now(Ok("pong".into())),
        Op::Forget { account } => {
            shared
                .cache
                .lock()
                .unwrap()
                .retain(|(a, _), _| *a != account);
            shared.failures.lock().unwrap().remove(&account);
            shared.reschedule.send_modify(|g| *g += 1);
            Answer::Now(Ok("forgotten".into()))
        }
        Op::Token {
            account,
            resource,
            sasl,
        } => match fresh(shared, &account, resource.as_deref()) {
            Err(e) => Answer::Now(Err(e)),
            Ok(Some((token, acct))) => Answer::Now(Ok(hand_out(token, &acct, sasl))),
            Ok(None) => Answer::Later(Later {
                account,
                resource,
                sasl,
            }),
        },
    }
}

/// Answer a token request [`answer_now`] could not (on the runtime).
async fn answer_later(shared: &Arc<Shared>, l: Later) -> std::result::Result<String, String> {
    let (token, account) = cached_token(shared, l.account, l.resource).await?;
    Ok(hand_out(token, &account, l.sasl))
}

fn hand_out(
    token: String,
    account: &mailoauth::providers::Account,
    sasl: Option<sasl::Mechanism>,
) -> String {
    match sasl {
        None => token,
        Some(m) => sasl::initial_response(m, account, None, &token),
    }
}

/// The account, and its token for `resource` when memory holds a fresh one.
fn fresh(
    shared: &Shared,
    name: &str,
    resource: Option<&str>,
) -> std::result::Result<Option<(String, mailoauth::providers::Account)>, String> {
    let client = shared.client.lock().unwrap().clone();
    let account = client.account(name).map_err(|e| e.to_string())?;
    let key = (
        name.to_owned(),
        resource.unwrap_or(MAIL_RESOURCE).to_owned(),
    );
    let cached = shared.cache.lock().unwrap().get(&key).cloned();
    Ok(cached
        .filter(|at| at.is_fresh(account.min_validity, now()))
        .map(|at| (at.token, account)))
}

/// An account's token from memory when fresh, else from the broker (store,
/// refresh when due), remembered for the next caller. Serves the socket and
/// the proxy's logins.
async fn cached_token(
    shared: &Arc<Shared>,
    name: String,
    resource: Option<String>,
) -> std::result::Result<(String, mailoauth::providers::Account), String> {
    let client = shared.client.lock().unwrap().clone();
    if let Some(hit) = fresh(shared, &name, resource.as_deref())? {
        return Ok(hit);
    }
    let account = client.account(&name).map_err(|e| e.to_string())?;
    let key = (
        name.clone(),
        resource.clone().unwrap_or_else(|| MAIL_RESOURCE.to_owned()),
    );
    let acct = account.clone();
    let (token, at) =
        tokio::task::spawn_blocking(move || -> Result<(String, Option<AccessToken>)> {
            let b = Broker::new(acct)?;
            let t = b.token(resource.as_deref())?;
            let at = b.record()?.and_then(|r| {
                r.access
                    .get(resource.as_deref().unwrap_or(MAIL_RESOURCE))
                    .cloned()
            });
            Ok((t, at))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if let Some(at) = at.filter(|at| at.token == token) {
        shared.cache.lock().unwrap().insert(key, at);
    }
    shared.reschedule.send_modify(|g| *g += 1);
    Ok((token, account))
}
