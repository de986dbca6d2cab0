//! Load generator for ferroloop's network benchmarks (bench/net.py).
//!
//! Opens C connections (TCP or Unix socket) to a server and keeps exactly one request in
//! flight on each, back to back, for a warm-up of W seconds and then a measured window of D
//! seconds. Prints one JSON line with requests/s, latency percentiles (µs), bytes and errors.
//!
//! Modes:
//!
//! - `echo` (default): each request is a message of S bytes; the response is the same S bytes
//!   echoed back. Every received byte is compared with what was sent (the first 8 bytes of each
//!   message carry the request's sequence number, so a stale or reordered echo is caught too);
//!   a mismatch counts as an error.
//! - `http`: each request is `GET PATH HTTP/1.1` on a keep-alive connection; the response must
//!   be `200` with a `Content-Length` body (and equal `--expect-body` when given). A fallback
//!   for machines without `wrk`.
//!
//! Design: one mio (epoll) event loop per thread, each driving its share of the connections, so
//! the load generator costs one core by default (`--threads 1`) however many connections it
//! holds; on a 2-core machine the other core is left to the server under test. Sockets are
//! non-blocking and every connection reads while it writes, so a large echo cannot deadlock
//! on full socket buffers. Only requests that *start* after the warm-up and *finish* before the
//! end count; requests still in flight at the end are dropped (one per connection at most).
//!
//! An error (I/O error, EOF, wrong bytes, bad HTTP response) is counted, its first few
//! messages are kept in `error_samples`, and the connection is closed and reopened (up to
//! `MAX_RECONNECTS` times per thread, so a dead server does not spin). A request still waiting
//! for its response after more than a second at the end counts as `stalled` (a hung server).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

const USAGE: &str = "\
usage: loadgen --addr ADDR [options]

  -a, --addr ADDR         tcp:HOST:PORT, HOST:PORT or unix:PATH (required)
  -m, --mode MODE         echo (default) or http
  -c, --connections N     concurrent connections, one request in flight each (default 10)
  -s, --size BYTES        echo message size (default 1024; ignored in http mode)
  -d, --duration SECS     measured window (default 5)
  -w, --warmup SECS       untimed warm-up before the window (default 1)
  -t, --threads N         event-loop threads sharing the connections (default 1)
      --path PATH         http request path (default /)
      --expect-body TEXT  http: the body every response must have
  -h, --help              this text

Prints one JSON line on stdout: requests, rps, mean_us/p50_us/p90_us/p99_us/max_us,
bytes_sent/bytes_received (measured requests only), errors, stalled, reconnects,
error_samples. Exit code 1 if the connections could not be opened, 2 on bad arguments.";

/// Reconnections allowed per thread after errors before a connection is given up.
const MAX_RECONNECTS: u32 = 100;
/// Error messages kept verbatim in the output.
const MAX_ERROR_SAMPLES: usize = 5;
/// Read buffer per thread; responses are verified/parsed straight out of it.
const READ_BUF: usize = 256 * 1024;
/// Upper bound of one poll() so the end of the window is noticed even when idle.
const POLL_SLICE: Duration = Duration::from_millis(50);
/// A request waiting longer than this at the end counts as stalled.
const STALL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Target {
    fn parse(s: &str) -> Result<Target, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let hostport = s.strip_prefix("tcp:").unwrap_or(s);
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {hostport:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{hostport:?} resolves to no address"))?;
        Ok(Target::Tcp(addr))
    }

    fn describe(&self) -> String {
        match self {
            Target::Tcp(a) => format!("tcp:{a}"),
            Target::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// Blocking connect, then switched to non-blocking for the event loop.
    fn connect(&self) -> io::Result<Stream> {
        match self {
            Target::Tcp(addr) => {
                let s = StdTcpStream::connect_timeout(addr, Duration::from_secs(5))?;
                // Small requests must go out at once, not wait for Nagle.
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(Stream::Tcp(TcpStream::from_std(s)))
            }
            Target::Unix(path) => {
                let s = StdUnixStream::connect(path)?;
                s.set_nonblocking(true)?;
                Ok(Stream::Unix(UnixStream::from_std(s)))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Echo,
    Http,
}

#[derive(Clone, Debug)]
struct Config {
    target: Target,
    mode: Mode,
    connections: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
    threads: usize,
    path: String,
    expect_body: Option<Vec<u8>>,
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut target = None;
    let mut mode = Mode::Echo;
    let mut connections = 10usize;
    let mut size = 1024usize;
    let mut duration = 5.0f64;
    let mut warmup = 1.0f64;
    let mut threads = 1usize;
    let mut path = String::from("/");
    let mut expect_body = None;

    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        let bad = |e: &dyn std::fmt::Display| format!("bad value {value:?} for {flag}: {e}");
        match flag.as_str() {
            "-a" | "--addr" => target = Some(Target::parse(value)?),
            "-m" | "--mode" => {
                mode = match value {
                    "echo" => Mode::Echo,
                    "http" => Mode::Http,
                    _ => return Err(bad(&"expected echo or http")),
                }
            }
            "-c" | "--connections" => connections = value.parse().map_err(|e| bad(&e))?,
            "-s" | "--size" => size = value.parse().map_err(|e| bad(&e))?,
            "-d" | "--duration" => duration = value.parse().map_err(|e| bad(&e))?,
            "-w" | "--warmup" => warmup = value.parse().map_err(|e| bad(&e))?,
            "-t" | "--threads" => threads = value.parse().map_err(|e| bad(&e))?,
            "--path" => path = value.to_string(),
            "--expect-body" => expect_body = Some(value.as_bytes().to_vec()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let target = target.ok_or("--addr is required")?;
    if connections == 0 || threads == 0 || (mode == Mode::Echo && size == 0) {
        return Err("--connections, --threads and --size must be > 0".into());
    }
    if !(duration > 0.0 && duration.is_finite() && warmup >= 0.0 && warmup.is_finite()) {
        return Err("--duration must be > 0 and --warmup >= 0".into());
    }
    Ok(Config {
        target,
        mode,
        connections,
        size,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        threads: threads.min(connections),
        path,
        expect_body,
    })
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// xorshift64*: a cheap deterministic byte pattern, different for every connection.
fn fill_pattern(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// One connection with (at most) one request in flight.
struct Conn {
    stream: Stream,
    /// The bytes of the current request (echo: the message; http: the GET).
    request: Vec<u8>,
    seq: u64,
    sent: usize,
    /// Echo: bytes of the echo verified so far.
    recvd: usize,
    /// Http: the response so far, and (head length, total length) once the head is parsed.
    resp: Vec<u8>,
    resp_total: Option<(usize, usize)>,
    started: Instant,
    /// No request in flight: the window has ended.
    idle: bool,
}

impl Conn {
    fn new(stream: Stream, cfg: &Config, id: usize) -> Conn {
        let request = match cfg.mode {
            Mode::Echo => {
                let mut m = vec![0u8; cfg.size];
                fill_pattern(&mut m, id as u64 + 1);
                m
            }
            Mode::Http => {
                let host = match &cfg.target {
                    Target::Tcp(a) => a.to_string(),
                    Target::Unix(_) => "localhost".to_string(),
                };
                format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", cfg.path).into_bytes()
            }
        };
        Conn {
            stream,
            request,
            seq: 0,
            sent: 0,
            recvd: 0,
            resp: Vec::new(),
            resp_total: None,
            started: Instant::now(),
            idle: true,
        }
    }

    fn begin(&mut self, mode: Mode, now: Instant) {
        self.seq += 1;
        if mode == Mode::Echo {
            // Stamp the sequence number so an echo of an earlier message cannot pass.
            let n = self.request.len().min(8);
            self.request[..n].copy_from_slice(&self.seq.to_le_bytes()[..n]);
        }
        self.sent = 0;
        self.recvd = 0;
        self.resp.clear();
        self.resp_total = None;
        self.started = now;
        self.idle = false;
    }
}

#[derive(Default)]
struct Stats {
    requests: u64,
    latencies_ns: Vec<u64>,
    bytes_sent: u64,
    bytes_received: u64,
    errors: u64,
    stalled: u64,
    reconnects: u64,
    error_samples: Vec<String>,
}

impl Stats {
    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(&msg) {
            self.error_samples.push(msg);
        }
    }

    fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        self.latencies_ns.extend(other.latencies_ns);
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.errors += other.errors;
        self.stalled += other.stalled;
        self.reconnects += other.reconnects;
        for m in other.error_samples {
            if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(&m) {
                self.error_samples.push(m);
            }
        }
    }
}

/// The measurement window shared by all threads.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parse a response head; returns (status, content-length).
fn parse_head(head: &[u8]) -> Result<(u16, usize), String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked responses are not supported".into());
            }
        }
    }
    let length = length.ok_or("response without Content-Length")?;
    Ok((status, length))
}

/// Push the connection as far as the socket allows: write what is left of the request, read
/// and check what has arrived, start the next request when one completes. Returns when both
/// directions would block (mio is edge-triggered, so each must be drained to WouldBlock) or
/// the window has ended. Err means the connection is broken.
fn drive(
    conn: &mut Conn,
    cfg: &Config,
    buf: &mut [u8],
    stats: &mut Stats,
    win: Window,
) -> Result<(), String> {
    // Edge-triggered: each direction is done once it has returned WouldBlock, until the
    // next event. Stopping exactly then (not after a pass without progress) saves a wasted
    // read() per request, which matters: the load generator must stay faster than the server.
    let mut write_blocked = false;
    let mut read_blocked = false;
    loop {
        if conn.idle {
            return Ok(());
        }
        let must_write = conn.sent < conn.request.len();
        if read_blocked && (write_blocked || !must_write) {
            return Ok(());
        }

        if must_write && !write_blocked {
            match conn.stream.write(&conn.request[conn.sent..]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => write_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if read_blocked {
            continue;
        }

        // Read even while the request is not fully written: the server echoes as it goes,
        // and not reading could fill both socket buffers and deadlock a large message.
        let want = match cfg.mode {
            Mode::Echo => (conn.request.len() - conn.recvd).min(buf.len()),
            Mode::Http => buf.len(),
        };
        let n = match conn.stream.read(&mut buf[..want]) {
            Ok(0) => return Err("connection closed by the server (EOF)".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                read_blocked = true;
                0
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n > 0 {
            let done = match cfg.mode {
                Mode::Echo => {
                    let expected = &conn.request[conn.recvd..conn.recvd + n];
                    if expected != &buf[..n] {
                        let at = expected.iter().zip(&buf[..n]).position(|(a, b)| a != b);
                        return Err(format!(
                            "echo mismatch in request {} at byte {} of {}",
                            conn.seq,
                            conn.recvd + at.unwrap_or(0),
                            conn.request.len()
                        ));
                    }
                    if conn.recvd + n > conn.sent {
                        return Err("echo received before it was sent".into());
                    }
                    conn.recvd += n;
                    conn.recvd == conn.request.len()
                }
                Mode::Http => {
                    let before = conn.resp.len();
                    conn.resp.extend_from_slice(&buf[..n]);
                    if conn.resp_total.is_none() {
                        let from = before.saturating_sub(3);
                        if let Some(i) = find(&conn.resp[from..], b"\r\n\r\n") {
                            let head_len = from + i + 4;
                            let (status, length) = parse_head(&conn.resp[..head_len - 4])?;
                            if status != 200 {
                                return Err(format!("HTTP status {status}"));
                            }
                            conn.resp_total = Some((head_len, head_len + length));
                        }
                    }
                    match conn.resp_total {
                        Some((_, total)) if conn.resp.len() > total => {
                            return Err("bytes after the response (none were requested)".into())
                        }
                        Some((head_len, total)) if conn.resp.len() == total => {
                            if let Some(body) = &cfg.expect_body {
                                if conn.resp[head_len..] != body[..] {
                                    return Err("unexpected response body".into());
                                }
                            }
                            true
                        }
                        _ => false,
                    }
                }
            };
            if done {
                let now = Instant::now();
                if conn.started >= win.measure_from && now <= win.end {
                    stats.requests += 1;
                    stats
                        .latencies_ns
                        .push((now - conn.started).as_nanos() as u64);
                    stats.bytes_sent += conn.request.len() as u64;
                    stats.bytes_received += match cfg.mode {
                        Mode::Echo => conn.recvd as u64,
                        Mode::Http => conn.resp.len() as u64,
                    };
                }
                if now < win.end {
                    conn.begin(cfg.mode, now);
                } else {
                    conn.idle = true;
                }
            }
        }
    }
}

fn register(poll: &Poll, conn: &mut Conn, i: usize) -> io::Result<()> {
    poll.registry().register(
        conn.stream.source(),
        Token(i),
        Interest::READABLE | Interest::WRITABLE,
    )
}

/// One event-loop thread driving `conns` until the window ends.
fn run_thread(cfg: &Config, conns: Vec<(usize, Stream)>, win: Window) -> Stats {
    let mut stats = Stats::default();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            stats.error(format!("epoll: {e}"));
            return stats;
        }
    };
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Events::with_capacity(1024);
    let now = Instant::now();
    let mut slots: Vec<Option<(usize, Conn)>> = Vec::with_capacity(conns.len());
    for (i, (id, stream)) in conns.into_iter().enumerate() {
        let mut conn = Conn::new(stream, cfg, id);
        if let Err(e) = register(&poll, &mut conn, i) {
            stats.error(format!("register: {e}"));
            slots.push(None);
            continue;
        }
        conn.begin(cfg.mode, now);
        slots.push(Some((id, conn)));
    }
    let mut reconnects_left = MAX_RECONNECTS;
    // The first drive of each connection is done via its initial WRITABLE event.
    loop {
        let now = Instant::now();
        if now >= win.end || slots.iter().all(Option::is_none) {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some((win.end - now).min(POLL_SLICE))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            stats.error(format!("poll: {e}"));
            break;
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some((id, conn)) = slots[i].as_mut() else {
                continue;
            };
            let id = *id;
            if let Err(msg) = drive(conn, cfg, &mut buf, &mut stats, win) {
                stats.error(msg);
                let (_, mut old) = slots[i].take().expect("slot is occupied");
                let _ = poll.registry().deregister(old.stream.source());
                drop(old);
                if reconnects_left == 0 || Instant::now() >= win.end {
                    continue;
                }
                reconnects_left -= 1;
                stats.reconnects += 1;
                match cfg.target.connect() {
                    Ok(stream) => {
                        let mut conn = Conn::new(stream, cfg, id);
                        match register(&poll, &mut conn, i) {
                            Ok(()) => {
                                conn.begin(cfg.mode, Instant::now());
                                slots[i] = Some((id, conn));
                            }
                            Err(e) => stats.error(format!("register: {e}")),
                        }
                    }
                    Err(e) => stats.error(format!("reconnect: {e}")),
                }
            }
        }
    }
    let now = Instant::now();
    stats.stalled = slots
        .iter()
        .flatten()
        .filter(|(_, c)| !c.idle && now.duration_since(c.started) > STALL)
        .count() as u64;
    stats
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("loadgen: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    // All connections are open before the clock starts, so connection setup is not measured.
    let mut per_thread: Vec<Vec<(usize, Stream)>> = (0..cfg.threads).map(|_| Vec::new()).collect();
    for id in 0..cfg.connections {
        match cfg.target.connect() {
            Ok(s) => per_thread[id % cfg.threads].push((id, s)),
            Err(e) => {
                println!(
                    "{{\"fatal\": {}}}",
                    json_str(&format!("connect to {}: {e}", cfg.target.describe()))
                );
                return ExitCode::from(1);
            }
        }
    }

    let start = Instant::now();
    let win = Window {
        measure_from: start + cfg.warmup,
        end: start + cfg.warmup + cfg.duration,
    };
    let mut total = Stats::default();
    thread::scope(|scope| {
        let handles: Vec<_> = per_thread
            .into_iter()
            .map(|conns| {
                let cfg = &cfg;
                scope.spawn(move || run_thread(cfg, conns, win))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(s) => total.merge(s),
                Err(_) => total.error("a load thread panicked".into()),
            }
        }
    });

    let mut lat = std::mem::take(&mut total.latencies_ns);
    lat.sort_unstable();
    let secs = cfg.duration.as_secs_f64();
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&v| v as f64).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    let samples: Vec<String> = total.error_samples.iter().map(|m| json_str(m)).collect();
    println!(
        "{{\"mode\": {}, \"target\": {}, \"connections\": {}, \"threads\": {}, \"size\": {}, \
         \"warmup_s\": {}, \"duration_s\": {}, \"requests\": {}, \"rps\": {:.1}, \
         \"mean_us\": {:.1}, \"p50_us\": {:.1}, \"p90_us\": {:.1}, \"p99_us\": {:.1}, \
         \"max_us\": {:.1}, \"bytes_sent\": {}, \"bytes_received\": {}, \"errors\": {}, \
         \"stalled\": {}, \"reconnects\": {}, \"error_samples\": [{}]}}",
        json_str(match cfg.mode {
            Mode::Echo => "echo",
            Mode::Http => "http",
        }),
        json_str(&cfg.target.describe()),
        cfg.connections,
        cfg.threads,
        if cfg.mode == Mode::Echo { cfg.size } else { 0 },
        cfg.warmup.as_secs_f64(),
        secs,
        total.requests,
        total.requests as f64 / secs,
        mean,
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        total.bytes_sent,
        total.bytes_received,
        total.errors,
        total.stalled,
        total.reconnects,
        samples.join(", "),
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_response_heads() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 13";
        assert_eq!(parse_head(head), Ok((200, 13)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK").is_err());
        assert!(parse_head(b"garbage").is_err());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn patterns_differ_per_connection() {
        let (mut a, mut b) = (vec![0u8; 100], vec![0u8; 100]);
        fill_pattern(&mut a, 1);
        fill_pattern(&mut b, 2);
        assert_ne!(a, b);
    }

    #[test]
    fn parses_targets() {
        assert!(matches!(
            Target::parse("tcp:127.0.0.1:80"),
            Ok(Target::Tcp(_))
        ));
        assert!(matches!(Target::parse("127.0.0.1:80"), Ok(Target::Tcp(_))));
        assert!(matches!(Target::parse("unix:/tmp/x"), Ok(Target::Unix(_))));
    }
}
