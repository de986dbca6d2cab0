//! A level-triggered epoll reactor with a built-in waker.
//!
//! Why not mio: mio registers every source edge-triggered (`EPOLLET`), but asyncio's
//! `add_reader`/`add_writer` are level-triggered: a reader callback that consumes part of the data
//! must be called again on the next iteration, and programs rely on that. Re-arming an
//! edge-triggered registration after every event would cost an `epoll_ctl` per event, so the
//! reactor talks to epoll directly and keeps the selector's semantics (`selectors.EpollSelector`):
//! `EPOLLERR`/`EPOLLHUP` wake both the reader and the writer of an fd.
//!
//! One token per fd (the fd itself). The reactor remembers each fd's interest so that callers
//! just say what they want now and the reactor picks `EPOLL_CTL_ADD`, `MOD` or `DEL`.
//!
//! The [`Waker`] is an eventfd registered under [`WAKER_TOKEN`]; it is drained by [`Reactor::poll`]
//! itself and reported as [`Events::woken`].
//!
//! Waiting and registering are split: a [`PollHandle`] waits on the epoll fd while the
//! [`Reactor`] that made it keeps changing interests, from whichever thread owns it. The kernel
//! allows `epoll_ctl` at any time during an `epoll_wait` on the same instance (an fd added ready
//! wakes the wait at once), which is what lets asyncio's `add_reader` work from another thread
//! while the loop is blocked in `select()`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

const WAKER_TOKEN: u64 = u64::MAX;

/// Which directions an fd is watched for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    fn epoll_bits(self) -> u32 {
        let mut bits = 0;
        if self.read {
            bits |= libc::EPOLLIN as u32;
        }
        if self.write {
            bits |= libc::EPOLLOUT as u32;
        }
        bits
    }
}

/// One readiness report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub fd: RawFd,
    pub readable: bool,
    pub writable: bool,
}

/// The output buffer of [`Reactor::poll`], reused across iterations.
pub struct Events {
    raw: Vec<libc::epoll_event>,
    len: usize,
    woken: bool,
}

impl Events {
    pub fn with_capacity(cap: usize) -> Self {
        Events {
            raw: vec![libc::epoll_event { events: 0, u64: 0 }; cap.max(1)],
            len: 0,
            woken: false,
        }
    }

    /// True when the [`Waker`] fired during the last poll.
    pub fn woken(&self) -> bool {
        self.woken
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.raw[..self.len]
            .iter()
            .filter(|e| e.u64 != WAKER_TOKEN)
            .map(|e| {
                let bits = e.events;
                // As selectors.EpollSelector: any bit other than EPOLLOUT wakes the reader, any bit
                // other than EPOLLIN wakes the writer (so errors and hang-ups reach both).
                Event {
                    fd: e.u64 as RawFd,
                    readable: bits & !(libc::EPOLLOUT as u32) != 0,
                    writable: bits & !(libc::EPOLLIN as u32) != 0,
                }
            })
    }
}

/// Wakes a [`Reactor`] blocked in [`Reactor::poll`], from any thread.
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                // The counter is saturated: a wake-up is already pending, which is all we want.
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => return Err(err),
            }
        }
    }

    fn drain(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from a non-blocking eventfd we own; an
        // EAGAIN (nothing pending) is fine to ignore.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut buf as *mut u64 as *mut libc::c_void,
                8,
            );
        }
    }
}

/// A level-triggered epoll instance: the interests registered, and the way to wait for them.
pub struct Reactor {
    epoll: Arc<OwnedFd>,
    waker: Arc<Waker>,
    interests: HashMap<RawFd, Interest>,
}

/// Waits on a [`Reactor`]'s epoll instance, from any thread, while the reactor itself stays
/// usable: the epoll fd stays open for as long as a handle or the reactor holds it.
#[derive(Clone)]
pub struct PollHandle {
    epoll: Arc<OwnedFd>,
    waker: Arc<Waker>,
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Reactor {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscalls; on success each returns a new fd that we immediately own.
        let epoll = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        // SAFETY: as above.
        let efd = unsafe {
            OwnedFd::from_raw_fd(cvt(libc::eventfd(
                0,
                libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
            ))?)
        };
        let reactor = Reactor {
            epoll: Arc::new(epoll),
            waker: Arc::new(Waker { fd: efd }),
            interests: HashMap::new(),
        };
        reactor.ctl(
            libc::EPOLL_CTL_ADD,
            reactor.waker.fd.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKER_TOKEN,
        )?;
        Ok(reactor)
    }

    /// The waker of this reactor; clone the `Arc` to hand it to other threads.
    pub fn waker(&self) -> &Arc<Waker> {
        &self.waker
    }

    /// A handle to wait for this reactor's events with, while it is being changed (see the
    /// module docs).
    pub fn poll_handle(&self) -> PollHandle {
        PollHandle {
            epoll: Arc::clone(&self.epoll),
            waker: Arc::clone(&self.waker),
        }
    }

    /// The epoll fd itself (for `fileno()`-style introspection).
    pub fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call; epoll_ctl validates
        // the fds itself and reports bad ones as errors.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    /// The interest currently registered for `fd`.
    pub fn interest(&self, fd: RawFd) -> Interest {
        self.interests.get(&fd).copied().unwrap_or_default()
    }

    /// Watches `fd` for exactly `want` from now on (nothing at all removes it).
    ///
    /// An fd closed while registered silently leaves the epoll set, and its number may come back
    /// as a new file; so a `MOD` that finds no entry falls back to `ADD`, and a `DEL` that finds
    /// none (or a closed fd) is not an error, as with selectors' `unregister`.
    pub fn set_interest(&mut self, fd: RawFd, want: Interest) -> io::Result<()> {
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let had = self.interests.contains_key(&fd);
        if want == Interest::default() {
            if had {
                self.interests.remove(&fd);
                match self.ctl(libc::EPOLL_CTL_DEL, fd, 0, fd as u64) {
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBADF)) => {}
                    other => other?,
                }
            }
            return Ok(());
        }
        let bits = want.epoll_bits();
        if had {
            match self.ctl(libc::EPOLL_CTL_MOD, fd, bits, fd as u64) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    self.ctl(libc::EPOLL_CTL_ADD, fd, bits, fd as u64)?
                }
                other => other?,
            }
        } else {
            match self.ctl(libc::EPOLL_CTL_ADD, fd, bits, fd as u64) {
                // Registered behind our back (e.g. a dup'ed fd number reused): take it over.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.ctl(libc::EPOLL_CTL_MOD, fd, bits, fd as u64)?
                }
                other => other?,
            }
        }
        self.interests.insert(fd, want);
        Ok(())
    }

    /// Waits for readiness: see [`PollHandle::poll`].
    pub fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        self.poll_handle().poll(events, timeout)
    }
}

impl PollHandle {
    /// Waits for readiness. `None` blocks until an event or a wake-up; a timeout is rounded up to
    /// the next millisecond so a timer is never reported early (which would spin the loop).
    ///
    /// An event may name an fd whose interest was removed (or changed) meanwhile: the caller
    /// checks it against what it watches now.
    ///
    /// `EINTR` is returned as an [`io::ErrorKind::Interrupted`] error so the caller can run the
    /// interpreter's signal handlers (Ctrl-C must interrupt a blocked loop at once).
    pub fn poll(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ms: libc::c_int = match timeout {
            None => -1,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        events.len = 0;
        events.woken = false;
        // SAFETY: the buffer holds `raw.len()` initialised epoll_events and the kernel writes at
        // most that many.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.raw.as_mut_ptr(),
                events.raw.len() as libc::c_int,
                ms,
            )
        };
        let n = cvt(n)? as usize;
        events.len = n;
        if events.raw[..n].iter().any(|e| e.u64 == WAKER_TOKEN) {
            self.waker.drain();
            events.woken = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn collect(ev: &Events) -> Vec<Event> {
        ev.iter().collect()
    }

    #[test]
    fn reports_readable_level_triggered() {
        let mut r = Reactor::new().unwrap();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        r.set_interest(
            b.as_raw_fd(),
            Interest {
                read: true,
                write: false,
            },
        )
        .unwrap();
        let mut ev = Events::with_capacity(8);
        r.poll(&mut ev, Some(Duration::ZERO)).unwrap();
        assert!(ev.is_empty());
        a.write_all(b"xy").unwrap();
        // Level-triggered: until the data is consumed, every poll reports it.
        for _ in 0..3 {
            r.poll(&mut ev, Some(Duration::from_secs(1))).unwrap();
            let got = collect(&ev);
            assert_eq!(
                got,
                vec![Event {
                    fd: b.as_raw_fd(),
                    readable: true,
                    writable: false
                }]
            );
        }
        let mut buf = [0u8; 2];
        b.read_exact(&mut buf).unwrap();
        r.poll(&mut ev, Some(Duration::ZERO)).unwrap();
        assert!(ev.is_empty());
    }

    #[test]
    fn hangup_wakes_reader_and_writer() {
        let mut r = Reactor::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        r.set_interest(
            b.as_raw_fd(),
            Interest {
                read: true,
                write: false,
            },
        )
        .unwrap();
        drop(a);
        let mut ev = Events::with_capacity(8);
        r.poll(&mut ev, Some(Duration::from_secs(1))).unwrap();
        let got = collect(&ev);
        assert_eq!(got.len(), 1);
        assert!(got[0].readable && got[0].writable);
    }

    #[test]
    fn interest_changes_and_removal() {
        let mut r = Reactor::new().unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        r.set_interest(
            fd,
            Interest {
                read: true,
                write: false,
            },
        )
        .unwrap();
        r.set_interest(
            fd,
            Interest {
                read: true,
                write: true,
            },
        )
        .unwrap();
        assert_eq!(
            r.interest(fd),
            Interest {
                read: true,
                write: true
            }
        );
        let mut ev = Events::with_capacity(8);
        r.poll(&mut ev, Some(Duration::from_secs(1))).unwrap();
        assert_eq!(
            collect(&ev),
            vec![Event {
                fd,
                readable: false,
                writable: true
            }]
        );
        r.set_interest(fd, Interest::default()).unwrap();
        r.poll(&mut ev, Some(Duration::ZERO)).unwrap();
        assert!(ev.is_empty());
        // Removing twice is harmless.
        r.set_interest(fd, Interest::default()).unwrap();
    }

    #[test]
    fn bad_fd_is_an_error() {
        let mut r = Reactor::new().unwrap();
        let e = r
            .set_interest(
                -1,
                Interest {
                    read: true,
                    write: false,
                },
            )
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        let e = r
            .set_interest(
                987_654,
                Interest {
                    read: true,
                    write: false,
                },
            )
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        assert_eq!(r.interest(987_654), Interest::default());
    }

    #[test]
    fn closed_and_reused_fd_can_be_registered_again() {
        let mut r = Reactor::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        r.set_interest(
            fd,
            Interest {
                read: true,
                write: false,
            },
        )
        .unwrap();
        drop(b);
        drop(a);
        let (_c, d) = UnixStream::pair().unwrap();
        // Whatever number the new socket got, registering it must work.
        r.set_interest(
            d.as_raw_fd(),
            Interest {
                read: false,
                write: true,
            },
        )
        .unwrap();
        let mut ev = Events::with_capacity(8);
        r.poll(&mut ev, Some(Duration::from_secs(1))).unwrap();
        assert!(collect(&ev)
            .iter()
            .any(|e| e.fd == d.as_raw_fd() && e.writable));
    }

    #[test]
    fn an_fd_added_ready_during_a_blocking_poll_wakes_it() {
        let mut r = Reactor::new().unwrap();
        let handle = r.poll_handle();
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        let fd = b.as_raw_fd();
        let t = std::thread::spawn(move || {
            let mut ev = Events::with_capacity(8);
            handle.poll(&mut ev, Some(Duration::from_secs(10))).unwrap();
            collect(&ev)
        });
        std::thread::sleep(Duration::from_millis(50));
        r.set_interest(
            fd,
            Interest {
                read: true,
                write: false,
            },
        )
        .unwrap();
        let got = t.join().unwrap();
        assert_eq!(
            got,
            vec![Event {
                fd,
                readable: true,
                writable: false
            }]
        );
    }

    #[test]
    fn waker_interrupts_a_blocking_poll() {
        let mut r = Reactor::new().unwrap();
        let waker = r.waker().clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake().unwrap();
        });
        let mut ev = Events::with_capacity(8);
        r.poll(&mut ev, None).unwrap();
        assert!(ev.woken());
        assert!(collect(&ev).is_empty());
        t.join().unwrap();
        // The wake-up was consumed: the next poll times out.
        r.poll(&mut ev, Some(Duration::from_millis(1))).unwrap();
        assert!(!ev.woken());
    }
}
