//! Socket setup and error classification: listeners and UDP sockets made
//! with socket2 (backlog, `SO_REUSEADDR`, `IPV6_V6ONLY`, optional
//! `SO_REUSEPORT`), the `io::Error` predicates the IO call sites use, and
//! what the kernel knows of a socket (its queues, its receive drops).
//!
//! Decisions about what an error means for a peer stay at the call sites;
//! this file only answers questions about errors.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Options for binding a listener or UDP socket.
#[derive(Debug, Clone, Copy)]
pub struct BindOptions {
    /// The listen backlog (`listen(2)`'s second argument).
    pub backlog: i32,
    /// Set `SO_REUSEPORT`, for several loops sharing one port.
    pub reuse_port: bool,
}

/// Binding a socket failed: which socket, and the OS error.
#[derive(Debug)]
pub struct BindError {
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// The address that could not be bound.
    pub addr: SocketAddr,
    /// What the OS said.
    pub source: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot bind {}://{}: {}",
            self.proto, self.addr, self.source
        )
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn new_socket(
    addr: SocketAddr,
    ty: Type,
    proto: Protocol,
    opts: BindOptions,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // `[::]:7007` then means IPv6 only, so `0.0.0.0:7007` can be bound too.
        socket.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        // Lets a restarted server bind while old connections sit in
        // TIME_WAIT. It does not let two live listeners share a port. UDP
        // has no TIME_WAIT, and there, on Linux, SO_REUSEADDR on both
        // sockets lets a second server share a live port and take its
        // datagrams: so TCP only.
        socket.set_reuse_address(true)?;
    }
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Creates a non-blocking TCP listener on `addr` with the given backlog.
///
/// # Errors
///
/// A [`BindError`] naming the address when any step fails (address in use,
/// not available, permission denied).
pub fn tcp_listener(
    addr: SocketAddr,
    opts: BindOptions,
) -> Result<mio::net::TcpListener, BindError> {
    let make = || -> io::Result<mio::net::TcpListener> {
        let socket = new_socket(addr, Type::STREAM, Protocol::TCP, opts)?;
        socket.listen(opts.backlog)?;
        Ok(mio::net::TcpListener::from_std(socket.into()))
    };
    make().map_err(|source| BindError {
        proto: "tcp",
        addr,
        source,
    })
}

/// Creates a non-blocking UDP socket bound to `addr`.
///
/// # Errors
///
/// A [`BindError`] naming the address when any step fails.
pub fn udp_socket(addr: SocketAddr, opts: BindOptions) -> Result<mio::net::UdpSocket, BindError> {
    let make = || -> io::Result<mio::net::UdpSocket> {
        let socket = new_socket(addr, Type::DGRAM, Protocol::UDP, opts)?;
        Ok(mio::net::UdpSocket::from_std(socket.into()))
    };
    make().map_err(|source| BindError {
        proto: "udp",
        addr,
        source,
    })
}

/// The wildcard address of `peer`'s family, port 0: where a client socket
/// binds before it connects to `peer`.
pub fn unspecified_for(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

/// The one read buffer of a poll loop (the server's and the generator's):
/// large enough for the largest UDP datagram (65,507 bytes over IPv4,
/// 65,527 over IPv6) and for a healthy TCP read.
pub(crate) const SCRATCH_SIZE: usize = 64 * 1024;

/// How many readiness events one `poll` call may return, in either loop.
pub(crate) const EVENTS_CAPACITY: usize = 1024;

/// How long a listener (echo or metrics) waits before accepting again
/// after `accept` failed, as when the descriptors ran out: retrying at once
/// would spin, and edge-triggered readiness will not announce the waiting
/// backlog again.
pub(crate) const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The socket's queue is empty (read) or full (write): wait for the next edge.
pub fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// A signal interrupted the call: retry it.
pub fn is_interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// The peer is gone (reset, aborted, or our write hit a closed pipe).
pub fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A connect found no free local port (`EADDRNOTAVAIL`): every
/// ephemeral port of the source address towards that server is in use
/// or in TIME_WAIT. (A bind to an address that is not ours fails the
/// same way; the load generator checks its `--source` addresses first.)
pub fn is_out_of_ports(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}

/// The kernel gave up on the peer: our output went unacknowledged (or
/// the peer's window stayed shut) past `TCP_USER_TIMEOUT` or the
/// retransmission limit (`ETIMEDOUT`). The peer is not taking what we send.
pub fn is_output_timed_out(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ETIMEDOUT)
}

/// The process or the system ran out of file descriptors (`EMFILE`, `ENFILE`).
pub fn is_fd_exhausted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// What the kernel still holds for one TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelQueues {
    /// Bytes received that the process has not read (`FIONREAD`). Closing
    /// a socket while this is not zero makes the kernel send a reset and
    /// drop the send queue.
    pub unread: usize,
    /// Bytes written that the peer has not acknowledged yet (`SIOCOUTQ`).
    pub unsent: usize,
}

/// The kernel's receive and send queue lengths of a connected TCP socket,
/// or `None` where they cannot be read (not Linux, or the ioctl failed).
/// Two ioctls: for shutdown and rare checks, never per message.
pub fn kernel_queues(fd: std::os::fd::RawFd) -> Option<KernelQueues> {
    #[cfg(target_os = "linux")]
    {
        let (mut unread, mut unsent): (libc::c_int, libc::c_int) = (0, 0);
        // SAFETY: both ioctls write one c_int through the pointer we pass,
        // which points at a live local; a bad fd only makes them fail.
        let ok = unsafe {
            libc::ioctl(fd, libc::FIONREAD, &mut unread) == 0
                && libc::ioctl(fd, libc::TIOCOUTQ, &mut unsent) == 0
        };
        ok.then(|| KernelQueues {
            unread: usize::try_from(unread).unwrap_or(0),
            unsent: usize::try_from(unsent).unwrap_or(0),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        None
    }
}

/// The kernel's own account of one TCP connection's progress, from
/// `TCP_INFO`: what the peer acknowledged, what is still in flight, and
/// how long the path takes. One `getsockopt`; for the timeout sweep and
/// shutdown, never per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpProgress {
    /// Bytes of ours the peer acknowledged since the connection began
    /// (`tcpi_bytes_acked`; our FIN counts as one more once acknowledged).
    pub bytes_acked: u64,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked_segments: u32,
    /// Retransmission timeouts in a row without an acknowledgement
    /// (`tcpi_retransmits`): nonzero while the kernel is retrying.
    pub retransmits: u8,
    /// Segments retransmitted over the connection's life
    /// (`tcpi_total_retrans`): nonzero once the path has lost something.
    pub total_retrans: u32,
    /// Data segments sent over the connection's life, retransmissions
    /// included (`tcpi_data_segs_out`, Linux 4.6; 0 where not told).
    pub data_segs_out: u32,
    /// The smoothed round-trip time (`tcpi_rtt`).
    pub srtt: Duration,
    /// The current retransmission timeout, backoff included (`tcpi_rto`).
    pub rto: Duration,
    /// Since data last arrived from the peer (`tcpi_last_data_recv`).
    pub since_data_recv: Duration,
    /// Since the peer last acknowledged anything (`tcpi_last_ack_recv`).
    pub since_ack_recv: Duration,
    /// The connection is closed in the kernel (`TCP_CLOSE`): reset or
    /// aborted, its send queue already thrown away.
    pub is_closed: bool,
}

impl TcpProgress {
    /// The share of our data segments the path lost (retransmitted over
    /// sent): 0 while nothing was lost, 1 when losses are known but not
    /// what they are out of.
    pub fn loss_rate(&self) -> f64 {
        if self.total_retrans == 0 {
            return 0.0;
        }
        f64::from(self.total_retrans) / f64::from(self.data_segs_out.max(self.total_retrans))
    }
}

/// The kernel's progress figures for a connected TCP socket, or `None`
/// where they cannot be read (not Linux, or the call failed).
pub fn tcp_progress(fd: std::os::fd::RawFd) -> Option<TcpProgress> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: tcp_info is plain integers, so all-zero is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, a live
        // local of that size, and sets `len` to what it wrote.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // Kernels before 4.1 stop short of tcpi_bytes_acked: without it
        // progress cannot be told, so say "unknown" rather than "none".
        let needed = std::ptr::addr_of!(info.tcpi_bytes_acked) as usize
            - std::ptr::addr_of!(info) as usize
            + std::mem::size_of::<u64>();
        if rc != 0 || (len as usize) < needed {
            return None;
        }
        let data_segs_end = std::ptr::addr_of!(info.tcpi_data_segs_out) as usize
            - std::ptr::addr_of!(info) as usize
            + std::mem::size_of::<u32>();
        let micros = |us: u32| Duration::from_micros(u64::from(us));
        let millis = |ms: u32| Duration::from_millis(u64::from(ms));
        Some(TcpProgress {
            bytes_acked: info.tcpi_bytes_acked,
            unacked_segments: info.tcpi_unacked,
            retransmits: info.tcpi_retransmits,
            total_retrans: info.tcpi_total_retrans,
            data_segs_out: if (len as usize) >= data_segs_end {
                info.tcpi_data_segs_out
            } else {
                0
            },
            srtt: micros(info.tcpi_rtt),
            rto: micros(info.tcpi_rto),
            since_data_recv: millis(info.tcpi_last_data_recv),
            since_ack_recv: millis(info.tcpi_last_ack_recv),
            // TCP_CLOSE in the kernel's tcp_states.h.
            is_closed: info.tcpi_state == 7,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        None
    }
}

/// Connections waiting in a listener's accept queue, if the kernel says
/// (Linux: `TCP_INFO` on a listening socket reports them in
/// `tcpi_unacked`, as `ss` shows them in Recv-Q).
pub fn accept_queue_len(fd: std::os::fd::RawFd) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: as in tcp_progress: plain integers, written by the kernel
        // into a live local of the size we pass.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // TCP_LISTEN in the kernel's tcp_states.h; libc does not name it.
        const TCP_LISTEN: u8 = 10;
        (rc == 0 && info.tcpi_state == TCP_LISTEN).then_some(info.tcpi_unacked as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        None
    }
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard one, as
/// servers do at start, and returns the soft limit now in force. Only the
/// hard limit needs privilege; the soft one is the process's to raise.
///
/// # Errors
///
/// The OS error of `getrlimit` or `setrlimit`.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(rl.rlim_cur)
}

/// The per-process open-file limit (`RLIMIT_NOFILE`, soft), if it can be read.
pub fn open_file_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc == 0 && rl.rlim_cur != libc::RLIM_INFINITY {
        Some(rl.rlim_cur)
    } else {
        None
    }
}

/// Asks the kernel to attach to each datagram received on `fd` how many
/// datagrams it has dropped at that socket so far, mostly because its
/// receive buffer was full (`SO_RXQ_OVFL`); [`recv_counting_drops`] reads
/// it. Elsewhere than Linux, nothing.
///
/// # Errors
///
/// The `setsockopt` failed.
pub fn count_drops(fd: std::os::fd::RawFd) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int from a live local; a bad fd
        // only makes it fail.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RXQ_OVFL,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
    Ok(())
}

/// `recv` on the connected socket `fd` that also returns the count
/// [`count_drops`] asked for: datagrams the kernel dropped at this socket
/// before this one was queued (`None` while it dropped none, or elsewhere
/// than Linux).
///
/// # Errors
///
/// As `recv(2)`: `WouldBlock` when nothing is queued, and so on.
pub fn recv_counting_drops(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<u32>)> {
    #[cfg(target_os = "linux")]
    {
        // Room for one control message of one u32, aligned for cmsghdr.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; zeroed is its empty value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: the iovec points at `buf` and the control buffer at a
        // live local, both with their true lengths; recvmsg writes only
        // within them.
        let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        let mut drops = None;
        // SAFETY: the CMSG macros walk the control buffer recvmsg filled,
        // within the length it set; the data is read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL
                {
                    drops = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u32>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok((n, drops))
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        Ok((n, None))
    }
}

/// How many datagrams the kernel has dropped at socket `fd` since it was
/// made, mostly because its receive buffer was full: `SO_MEMINFO`'s
/// drop count, the counter `SO_RXQ_OVFL` attaches to datagrams, read
/// when asked instead of per datagram. `None` where it cannot be read.
pub fn socket_drops(fd: std::os::fd::RawFd) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // Not in libc; the asm-generic value, which every architecture
        // Rust targets uses but SPARC.
        #[cfg(target_arch = "sparc64")]
        const SO_MEMINFO: libc::c_int = 0x39;
        #[cfg(not(target_arch = "sparc64"))]
        const SO_MEMINFO: libc::c_int = 55;
        let drops = libc::SK_MEMINFO_DROPS as usize;
        let mut info = [0u32; 9];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, a live
        // local of that size, and sets `len` to what it wrote.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        (rc == 0 && len as usize > drops * 4).then(|| u64::from(info[drops]))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn receive_drops_are_counted_per_socket_both_ways() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // The smallest buffer the kernel allows holds a few datagrams.
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(1)
            .expect("SO_RCVBUF");
        count_drops(rx.as_raw_fd()).expect("SO_RXQ_OVFL");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.connect(rx.local_addr().expect("addr")).expect("connect");
        for _ in 0..100 {
            tx.send(&[7u8; 64]).expect("send");
        }
        let dropped = socket_drops(rx.as_raw_fd()).expect("SO_MEMINFO");
        assert!((90..100).contains(&dropped), "{dropped}");
        rx.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 128];
        let mut kept = 0;
        // What was queued went in before any drop: no count with it.
        while let Ok((n, drops)) = recv_counting_drops(rx.as_raw_fd(), &mut buf) {
            assert_eq!((n, drops), (64, None));
            kept += 1;
        }
        assert_eq!(kept + dropped, 100);
        tx.send(&[7u8; 64]).expect("send");
        let (_, drops) = recv_counting_drops(rx.as_raw_fd(), &mut buf).expect("one more");
        assert_eq!(drops.map(u64::from), Some(dropped));
    }

    #[test]
    fn predicates_classify_errors() {
        let wb = io::Error::from(io::ErrorKind::WouldBlock);
        assert!(is_would_block(&wb) && !is_peer_gone(&wb));
        assert!(is_interrupted(&io::Error::from(io::ErrorKind::Interrupted)));
        for k in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
        ] {
            assert!(is_peer_gone(&io::Error::from(k)));
        }
        assert!(is_fd_exhausted(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_fd_exhausted(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_fd_exhausted(&io::Error::from_raw_os_error(
            libc::ENOMEM
        )));
    }

    #[test]
    fn second_listener_on_a_used_port_fails_with_its_address() {
        let opts = BindOptions {
            backlog: 16,
            reuse_port: false,
        };
        let first = tcp_listener("127.0.0.1:0".parse().unwrap(), opts).unwrap();
        let addr = first.local_addr().unwrap();
        let err = tcp_listener(addr, opts).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&format!("tcp://{addr}")), "{err}");
    }

    #[test]
    fn a_second_udp_socket_on_a_used_port_fails_with_its_address() {
        let opts = BindOptions {
            backlog: 16,
            reuse_port: false,
        };
        let first = udp_socket("127.0.0.1:0".parse().unwrap(), opts).unwrap();
        let addr = first.local_addr().unwrap();
        let err = udp_socket(addr, opts).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&format!("udp://{addr}")), "{err}");
    }

    #[test]
    fn open_file_limit_is_known() {
        assert!(open_file_limit().unwrap_or(1) > 0);
    }
}
