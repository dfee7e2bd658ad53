//! Linux only: UDP datagrams received and answered in batches with
//! `recvmmsg` and `sendmmsg`, one syscall each way per batch instead of one
//! per datagram.
//!
//! `UdpBatch` owns the slots the kernel fills: one 64 KiB buffer and one
//! source address per datagram. The caller asks the service for each
//! reply in place, in the slot its request arrived in, then hands the list
//! of replies back to be sent to the addresses they came from. Nothing here
//! decides what to answer; `server::udp` does.
//!
//! The `mmsghdr`/`iovec` arrays point into the slots, so they are built on
//! the stack for each call rather than stored: the struct then holds no
//! raw pointers and stays `Send`, which `--threads` needs.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Datagrams per `recvmmsg` call.
pub const BATCH: usize = 32;
/// One slot holds the largest datagram (65,507 B over IPv4, 65,527 over IPv6).
pub const SLOT_SIZE: usize = 64 * 1024;

/// The outcome of sending a batch of replies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Replies the kernel took.
    pub sent: u64,
    /// Replies dropped because the socket buffer was full.
    pub dropped: u64,
    /// Replies that failed for another reason (each skipped, the rest sent).
    pub errors: u64,
}

/// Receive slots for one batch.
pub struct UdpBatch {
    /// `BATCH` slots of `SLOT_SIZE` bytes; pages no datagram reached cost no RSS.
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    addr_lens: [libc::socklen_t; BATCH],
    lens: [usize; BATCH],
}

impl Default for UdpBatch {
    fn default() -> Self {
        UdpBatch::new()
    }
}

impl UdpBatch {
    /// Empty slots.
    pub fn new() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
        let zero_addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
        UdpBatch {
            bufs: vec![0u8; BATCH * SLOT_SIZE].into_boxed_slice(),
            addrs: vec![zero_addr; BATCH].into_boxed_slice(),
            addr_lens: [0; BATCH],
            lens: [0; BATCH],
        }
    }

    /// Receives up to `BATCH` datagrams without blocking; returns how many.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when none was waiting, `Interrupted`, or what the OS
    /// reports for the socket.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); BATCH];
        // SAFETY: mmsghdr is plain old data; all zeroes is a valid value.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, (iov, hdr)) in iovs.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            let slot = &mut self.bufs[i * SLOT_SIZE..(i + 1) * SLOT_SIZE];
            let iov = iov.write(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: SLOT_SIZE,
            });
            hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live slot and address of this
        // struct, sized as declared; the kernel writes at most that much.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = hdr.msg_len as usize;
            self.addr_lens[i] = hdr.msg_hdr.msg_namelen;
        }
        Ok(n)
    }

    /// Datagram `i` of the last `recv`: its slot (the request is
    /// `slot[..len]`; a reply is written over it) and its length.
    pub fn slot(&mut self, i: usize) -> (&mut [u8], usize) {
        let slot = &mut self.bufs[i * SLOT_SIZE..(i + 1) * SLOT_SIZE];
        (slot, self.lens[i])
    }

    /// Where datagram `i` came from, or `None` for an address family we
    /// do not speak.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        // SAFETY: the storage and length are what the kernel filled in.
        let addr = unsafe { SockAddr::new(self.addrs[i], self.addr_lens[i]) };
        addr.as_socket()
    }

    /// Sends `replies` (slot index, reply length) back to their sources,
    /// in as few `sendmmsg` calls as the kernel allows. A full socket drops
    /// the rest of the batch (UDP promises nothing); another error skips
    /// just that reply.
    pub fn send(&mut self, fd: RawFd, replies: &[(usize, usize)]) -> Sent {
        let count = replies.len().min(BATCH);
        let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); BATCH];
        // SAFETY: mmsghdr is plain old data; all zeroes is a valid value.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (k, &(slot, len)) in replies.iter().take(count).enumerate() {
            let buf = &mut self.bufs[slot * SLOT_SIZE..slot * SLOT_SIZE + len.min(SLOT_SIZE)];
            let iov = iovs[k].write(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            let hdr = &mut hdrs[k].msg_hdr;
            hdr.msg_name = (&mut self.addrs[slot] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = self.addr_lens[slot];
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
        }
        let mut outcome = Sent::default();
        let mut start = 0;
        while start < count {
            // SAFETY: headers start..count point at live slots and addresses.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[start..].as_mut_ptr(),
                    (count - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                outcome.sent += r as u64;
                start += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted if r < 0 => continue,
                // Socket buffer full (or, r == 0, nothing taken): drop the rest.
                io::ErrorKind::WouldBlock => {
                    outcome.dropped += (count - start) as u64;
                    break;
                }
                _ if r == 0 => {
                    outcome.dropped += (count - start) as u64;
                    break;
                }
                // This reply cannot go (e.g. unreachable): skip just it.
                _ => {
                    outcome.errors += 1;
                    start += 1;
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn a_batch_is_received_and_answered_to_each_source() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..5)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.send_to(format!("msg-{i}").as_bytes(), addr).unwrap();
        }
        // Sent on loopback: all five are queued by now.
        let mut batch = UdpBatch::new();
        let mut got = 0;
        let mut replies = Vec::new();
        while got < 5 {
            let n = batch.recv(server.as_raw_fd()).unwrap();
            replies.clear();
            for i in 0..n {
                let (slot, len) = batch.slot(i);
                slot[..len].make_ascii_uppercase();
                replies.push((i, len));
            }
            assert_eq!(batch.send(server.as_raw_fd(), &replies).sent, n as u64);
            got += n;
        }
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 32];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr);
            assert_eq!(&buf[..n], format!("MSG-{i}").as_bytes());
        }
    }

    #[test]
    fn empty_socket_says_would_block_and_sources_are_known() {
        let server = UdpSocket::bind("[::1]:0").unwrap();
        let mut batch = UdpBatch::new();
        let err = batch.recv(server.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client.send_to(b"", server.local_addr().unwrap()).unwrap();
        wait_readable(&server);
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 1);
        assert_eq!(batch.slot(0).1, 0, "a zero-length datagram is a datagram");
        assert_eq!(batch.source(0), Some(client.local_addr().unwrap()));
    }

    #[test]
    fn largest_datagram_fits_a_slot() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(&vec![b'q'; 65_507], server.local_addr().unwrap())
            .unwrap();
        wait_readable(&server);
        let mut batch = UdpBatch::new();
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 1);
        let (slot, len) = batch.slot(0);
        assert_eq!(len, 65_507);
        assert!(slot[..len].iter().all(|&b| b == b'q'));
    }

    /// Blocks until `socket` has a datagram queued (poll(2), 5 s at most),
    /// instead of guessing how long delivery takes.
    fn wait_readable(socket: &UdpSocket) {
        let mut pfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 5_000) };
        assert_eq!(n, 1, "no datagram within 5 s");
    }
}
