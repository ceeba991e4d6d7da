//! Thin wrappers over the few system calls the generator needs: epoll,
//! timerfd, non-blocking sockets bound to a chosen loopback source address,
//! CLOCK_MONOTONIC, rlimits, rusage and /proc readings of the server.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

/// CLOCK_MONOTONIC in nanoseconds (shared with the server on this machine).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub struct Epoll {
    fd: i32,
}

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;
pub const ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

pub fn empty_events(n: usize) -> Vec<libc::epoll_event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: i32, fd: i32, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev lives across the call.
        cvt(unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) }).map(|_| ())
    }

    pub fn add(&self, fd: i32, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    pub fn modify(&self, fd: i32, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Waits; EINTR counts as no events.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: buffer and length match.
        let n = unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
        if n < 0 {
            0
        } else {
            n as usize
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}

/// A periodic CLOCK_MONOTONIC timerfd (non-blocking).
pub struct Timer {
    pub fd: i32,
}

impl Timer {
    pub fn periodic(interval_ns: u64) -> io::Result<Timer> {
        // SAFETY: plain syscalls with valid pointers.
        unsafe {
            let fd = cvt(libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC))?;
            let ts = |ns: u64| libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            };
            let spec = libc::itimerspec { it_interval: ts(interval_ns), it_value: ts(interval_ns) };
            cvt(libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()))?;
            Ok(Timer { fd })
        }
    }

    /// Expirations since the last call (0 if none).
    pub fn take(&self) -> u64 {
        let mut n: u64 = 0;
        // SAFETY: 8-byte buffer as timerfd requires.
        let r = unsafe { libc::read(self.fd, &mut n as *mut u64 as *mut libc::c_void, 8) };
        if r == 8 {
            n
        } else {
            0
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: pointer to a live int of the stated size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Non-blocking TCP socket, bound to `src`:0 when given, connect started.
pub fn connect_nb(dst: SocketAddrV4, src: Option<Ipv4Addr>, rcvbuf: usize) -> io::Result<i32> {
    // SAFETY: plain syscalls; fd closed on every error path.
    unsafe {
        let fd = cvt(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0))?;
        let fail = |fd: i32| {
            let e = io::Error::last_os_error();
            libc::close(fd);
            Err(e)
        };
        if rcvbuf > 0 && setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf as i32).is_err() {
            return fail(fd);
        }
        if let Some(ip) = src {
            let sa = sockaddr(SocketAddrV4::new(ip, 0));
            if libc::bind(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) < 0
            {
                return fail(fd);
            }
        }
        let sa = sockaddr(dst);
        if libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
            && errno() != libc::EINPROGRESS
        {
            return fail(fd);
        }
        Ok(fd)
    }
}

/// Pending socket error (SO_ERROR), 0 when none.
pub fn so_error(fd: i32) -> i32 {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: out pointers are valid.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut v as *mut i32 as *mut libc::c_void, &mut len)
    };
    if r < 0 {
        errno()
    } else {
        v
    }
}

pub enum Io {
    Done(usize),
    WouldBlock,
    Eof,
    Err(i32),
}

#[inline]
pub fn read(fd: i32, buf: &mut [u8]) -> Io {
    // SAFETY: buffer and length match.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if r > 0 {
        Io::Done(r as usize)
    } else if r == 0 {
        Io::Eof
    } else {
        let e = errno();
        if e == libc::EAGAIN || e == libc::EINTR {
            Io::WouldBlock
        } else {
            Io::Err(e)
        }
    }
}

#[inline]
pub fn write(fd: i32, buf: &[u8]) -> Io {
    // SAFETY: buffer and length match; MSG_NOSIGNAL avoids SIGPIPE.
    let r = unsafe { libc::send(fd, buf.as_ptr() as *const libc::c_void, buf.len(), libc::MSG_NOSIGNAL) };
    if r >= 0 {
        Io::Done(r as usize)
    } else {
        let e = errno();
        if e == libc::EAGAIN || e == libc::EINTR {
            Io::WouldBlock
        } else {
            Io::Err(e)
        }
    }
}

pub fn close(fd: i32) {
    // SAFETY: caller owns fd.
    unsafe { libc::close(fd) };
}

/// Close with SO_LINGER 0 (RST): no TIME_WAIT left behind on our side, so
/// back-to-back runs never run out of source ports.
pub fn close_rst(fd: i32) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: pointer to a live linger struct; caller owns fd.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
        libc::close(fd);
    }
}

pub fn strerror(e: i32) -> String {
    io::Error::from_raw_os_error(e).to_string()
}

/// Raises RLIMIT_NOFILE soft to hard; returns (soft, hard) after.
pub fn raise_nofile() -> (u64, u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r = want;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    (r.rlim_cur as u64, r.rlim_max as u64)
}

/// User + system CPU seconds of this process (RUSAGE_SELF) or of its waited-for
/// children (RUSAGE_CHILDREN).
pub fn rusage_s(children: bool) -> f64 {
    // SAFETY: zeroed rusage is a valid out buffer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let who = if children { libc::RUSAGE_CHILDREN } else { libc::RUSAGE_SELF };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// User + system CPU seconds of the calling thread (RUSAGE_THREAD).
pub fn thread_cpu_s() -> f64 {
    // SAFETY: zeroed rusage is a valid out buffer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// utime + stime of a process in seconds, from /proc/PID/stat.
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name "(...)": state is field 3; utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: plain sysconf.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / tck)
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Threads of a process (from /proc/PID/status), for the report.
pub fn proc_threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The source address for client number `i`: spread over 127.0.0.2..=127.0.0.251
/// so no single source address needs more than a few hundred ephemeral ports.
pub fn source_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8)
}

/// Per-thread (run ns, runqueue wait ns) of a process, from
/// /proc/PID/task/TID/schedstat ("self" for this process).
pub fn task_schedstats(pid: &str) -> Vec<(u32, u64, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) {
            let mut f = text.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
            let (run, wait) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
            out.push((tid, run, wait));
        }
    }
    out
}

/// Runqueue wait (seconds) accumulated between two readings, over the
/// threads present in both: time a thread was runnable but another task had
/// its CPU. Large values mean the figures were taken on a contended machine.
pub fn wait_delta_s(before: &[(u32, u64, u64)], after: &[(u32, u64, u64)]) -> f64 {
    let mut sum = 0u64;
    for &(tid, _, w1) in after {
        if let Some(&(_, _, w0)) = before.iter().find(|b| b.0 == tid) {
            sum += w1.saturating_sub(w0);
        }
    }
    sum as f64 / 1e9
}

/// This thread's runqueue wait so far, in ns.
pub fn thread_wait_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1).and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}
