//! The daemon's token socket: same-user clients ask for a token, a ping or a
//! forget, one request line and one reply line per connection.
//!
//! Owns: accepting on the socket and answering. The common request (a token
//! that is fresh in memory) is answered by one plain thread, from `accept` to
//! the reply, because the caller is a mail client waiting on `mailoauth token`:
//! a thread blocked in `accept`/`recv` is woken by the kernel directly, where
//! the runtime's path costs an epoll registration, a self-wake and two more
//! `epoll_wait` rounds per connection — about a tenth of the whole command's
//! time (BENCHMARKS.md, daemon). Whatever needs I/O (a store read, a refresh)
//! or a client that is slow to send goes to the runtime, which gives each
//! connection its own timeout.
//!
//! Must not: wait for one client longer than [`FIRST_LINE_WAIT`] on the thread
//! (a silent client would hold up the next one), or answer a peer of another
//! user.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::runtime::Handle;

use mailoauth::ipc::{self, Reply, Request};

use super::{Answer, CLIENT_TIMEOUT, Shared};

/// How long the thread waits for a connected client's request line before it
/// hands the connection to the runtime. `mailoauth token` writes its line
/// right after `connect`, so it is there within microseconds; only a slow or
/// silent peer (which can only be this user's own process) waits longer.
const FIRST_LINE_WAIT: Duration = Duration::from_millis(5);
/// A reply is a few KiB and fits the socket buffer; this only bounds a peer
/// that shrank its buffer and stopped reading.
const WRITE_WAIT: Duration = Duration::from_secs(1);

/// The running front thread; [`Front::stop`] ends it.
pub struct Front {
    thread: JoinHandle<()>,
    fd: RawFd,
    stopping: Arc<AtomicBool>,
}

impl Front {
    /// Serve `listener` on a new thread; requests that need I/O run on `rt`.
    pub(super) fn start(
        listener: UnixListener,
        shared: Arc<Shared>,
        rt: Handle,
    ) -> io::Result<Front> {
        let fd = listener.as_raw_fd();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("token-socket".into())
            .stack_size(256 * 1024)
            .spawn(move || accept_loop(&listener, &shared, &rt, &stop))?;
        Ok(Front {
            thread,
            fd,
            stopping,
        })
    }

    /// Stop accepting and wait for the thread (at most one client's
    /// [`FIRST_LINE_WAIT`] plus its write).
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes a thread blocked in accept
        // (with EINVAL); the listener itself is closed when the thread drops it.
        // SAFETY: `fd` is the listener the thread owns until it returns, which
        // is after this call (we join below).
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        let _ = self.thread.join();
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>, rt: &Handle, stopping: &AtomicBool) {
    let mut backoff = crate::proxy::limits::AcceptBackoff::new(format!(
        "token socket {}",
        shared.socket.display()
    ));
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                backoff.succeeded();
                if peer_uid(&stream) == Some(my_uid()) {
                    serve(stream, shared, rt);
                }
            }
            // Out of file descriptors every accept fails at once: pause, do not spin.
            Err(e) => std::thread::sleep(backoff.failed(&e)),
        }
    }
}

/// Answer `stream` here when its request needs no I/O; else hand it to `rt`.
fn serve(stream: UnixStream, shared: &Arc<Shared>, rt: &Handle) {
    let _ = stream.set_read_timeout(Some(FIRST_LINE_WAIT));
    let _ = stream.set_write_timeout(Some(WRITE_WAIT));
    let mut buf = Vec::with_capacity(256);
    match first_line(&stream, &mut buf) {
        Line::Complete => {}
        Line::Gone => return,
        Line::Pending => {
            let shared = shared.clone();
            rt.spawn(async move {
                let _ =
                    tokio::time::timeout(CLIENT_TIMEOUT, finish_line(shared, stream, buf)).await;
            });
            return;
        }
    }
    let request = match Request::from_line(&String::from_utf8_lossy(&buf)) {
        Ok(r) => r,
        Err(e) => return reply(&stream, Reply::Error(e)),
    };
    match super::answer_now(shared, request) {
        Answer::Now(r) => reply(&stream, to_reply(r)),
        Answer::Later(later) => {
            let shared = shared.clone();
            rt.spawn(async move {
                let r =
                    tokio::time::timeout(CLIENT_TIMEOUT, super::answer_later(&shared, later)).await;
                let r = r.unwrap_or_else(|_| Err("the daemon timed out answering".into()));
                let _ = write_async(stream, to_reply(r)).await;
            });
        }
    }
}

enum Line {
    /// `buf` ends with a newline.
    Complete,
    /// Nothing more will come (closed, error, or over the size limit).
    Gone,
    /// The peer has not sent a whole line yet.
    Pending,
}

fn first_line(mut stream: &UnixStream, buf: &mut Vec<u8>) -> Line {
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Line::Gone,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.last() == Some(&b'\n') {
                    return Line::Complete;
                }
                if buf.len() as u64 > ipc::MAX_MESSAGE {
                    return Line::Gone;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Line::Pending;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Line::Gone,
        }
    }
}

/// The runtime's side for a peer that was slow to send: read the rest of the
/// line (what came already is in `start`), then answer as the thread would.
async fn finish_line(shared: Arc<Shared>, stream: UnixStream, start: Vec<u8>) {
    let Ok(stream) = into_async(stream) else {
        return;
    };
    let (read, write) = stream.into_split();
    let mut line = start;
    let limit = ipc::MAX_MESSAGE.saturating_sub(line.len() as u64);
    if BufReader::new(read)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await
        .is_err()
        || line.last() != Some(&b'\n')
    {
        return;
    }
    let r = match Request::from_line(&String::from_utf8_lossy(&line)) {
        Ok(req) => match super::answer_now(&shared, req) {
            Answer::Now(r) => r,
            Answer::Later(later) => super::answer_later(&shared, later).await,
        },
        Err(e) => Err(e),
    };
    let mut write = write;
    let _ = write.write_all(&line_of(to_reply(r))).await;
}

fn to_reply(r: Result<String, String>) -> Reply {
    match r {
        Ok(v) => Reply::Value(v),
        Err(e) => Reply::Error(e),
    }
}

fn line_of(reply: Reply) -> Vec<u8> {
    let mut out = reply.to_line();
    out.push(b'\n');
    out
}

fn reply(mut stream: &UnixStream, reply: Reply) {
    let _ = stream.write_all(&line_of(reply));
}

async fn write_async(stream: UnixStream, reply: Reply) -> io::Result<()> {
    into_async(stream)?.write_all(&line_of(reply)).await
}

fn into_async(stream: UnixStream) -> io::Result<tokio::net::UnixStream> {
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The connecting process's uid (std's `peer_cred` is not stable yet).
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into `cred`, which is that big.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred.uid)
}
