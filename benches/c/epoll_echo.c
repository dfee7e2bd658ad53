/*
 * epoll_echo.c: the hand-written C yardstick for `cargo bench --bench reactor`.
 *
 * One thread, one epoll instance, edge-triggered; the same mechanisms as
 * echo-reactor's server with nothing else around them (no logging, no
 * timeouts, no modes), so the bench can tell what our abstractions cost.
 *
 *   epoll_echo [-s] [-u HOST:PORT] HOST:PORT     (IPv4 only)
 *
 *   HOST:PORT  TCP address to listen on
 *   -u ADDR    also echo UDP datagrams on ADDR; a reply that would block is
 *              dropped, as UDP allows
 *   -s         short-read shortcut: a read that did not fill the buffer means
 *              the socket queue was empty, so skip the read that would only
 *              say EAGAIN (Linux reports the next arrival as a new edge)
 *
 * What it keeps, and why:
 *   - one 64 KiB scratch buffer: read into it, write straight back; only the
 *     bytes the kernel refuses are copied into a per-connection heap block,
 *     freed once flushed, so an idle connection costs a table slot;
 *   - every socket registered once for IN|OUT|ET: an OUT edge only follows a
 *     write that hit EAGAIN, so no epoll_ctl(MOD) is ever needed;
 *   - backpressure: a connection with output pending is not read from, and
 *     TCP flow control pushes back on its sender;
 *   - fairness: at most BUDGET bytes per connection per turn; a connection
 *     with more to read goes on a ready list served after a zero-timeout
 *     epoll_wait, so one fast peer cannot starve the rest;
 *   - half-close: EOF flushes what is pending, then closes.
 *
 * Build: cc -O2 -o epoll_echo epoll_echo.c. Stops on SIGINT/SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { SCRATCH = 64 * 1024, BUDGET = 256 * 1024, EVENTS = 256 };

struct peer {
    unsigned char *rest; /* bytes the kernel refused; NULL when none */
    size_t rest_off, rest_len;
    int open, eof, queued;
};

static struct peer *peers;  /* indexed by fd */
static int *ready, nready;  /* fds with input left after their budget */
static int *carried;        /* last turn's ready list, being served */
static int max_fd, shortcut;
static unsigned char scratch[SCRATCH];

static void die(const char *what) { perror(what); exit(1); }

static int parse_addr(const char *s, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int bound_socket(int type, const char *addr) {
    struct sockaddr_in sa;
    int one = 1;
    if (parse_addr(addr, &sa) < 0) { fprintf(stderr, "bad address %s\n", addr); exit(2); }
    int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (type == SOCK_STREAM && listen(fd, 1024) < 0) die("listen");
    return fd;
}

static void drop_peer(int fd) {
    free(peers[fd].rest);
    memset(&peers[fd], 0, sizeof peers[fd]);
    close(fd); /* close also removes it from the epoll set */
}

/* Writes buf, keeping what the kernel refuses. Returns -1 on a dead peer. */
static int send_or_keep(int fd, const unsigned char *buf, size_t len) {
    struct peer *p = &peers[fd];
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) { buf += n; len -= (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        return -1;
    }
    if (len > 0) {
        p->rest = malloc(len);
        if (!p->rest) return -1;
        memcpy(p->rest, buf, len);
        p->rest_off = 0;
        p->rest_len = len;
    }
    return 0;
}

/* Flushes kept output on a writable edge. 1: all gone, 0: still kept, -1: dead. */
static int flush_rest(int fd) {
    struct peer *p = &peers[fd];
    while (p->rest && p->rest_off < p->rest_len) {
        ssize_t n = write(fd, p->rest + p->rest_off, p->rest_len - p->rest_off);
        if (n > 0) { p->rest_off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        return -1;
    }
    free(p->rest);
    p->rest = NULL;
    return 1;
}

/* Serves one connection's input within the budget; may queue it on `ready`. */
static void serve(int fd) {
    struct peer *p = &peers[fd];
    size_t served = 0;
    while (!p->rest && !p->eof) {
        if (served >= BUDGET) {
            if (!p->queued) { p->queued = 1; ready[nready++] = fd; }
            return;
        }
        ssize_t n = read(fd, scratch, SCRATCH);
        if (n > 0) {
            served += (size_t)n;
            if (send_or_keep(fd, scratch, (size_t)n) < 0) { drop_peer(fd); return; }
            if (shortcut && n < SCRATCH) return;
            continue;
        }
        if (n == 0) { p->eof = 1; break; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        drop_peer(fd);
        return;
    }
    if (p->eof && !p->rest) drop_peer(fd);
}

static void accept_all(int ep, int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return; /* EAGAIN: backlog empty; EMFILE: the bench never gets there */
        }
        if (fd >= max_fd) { close(fd); continue; }
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = fd };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { close(fd); continue; }
        peers[fd].open = 1;
    }
}

static void echo_datagrams(int udp) {
    struct sockaddr_storage from;
    for (;;) {
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(udp, scratch, SCRATCH, 0, (struct sockaddr *)&from, &len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        sendto(udp, scratch, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&from, len);
    }
}

int main(int argc, char **argv) {
    const char *udp_addr = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "su:")) != -1) {
        if (opt == 's') shortcut = 1;
        else if (opt == 'u') udp_addr = optarg;
        else { fprintf(stderr, "usage: %s [-s] [-u HOST:PORT] HOST:PORT\n", argv[0]); return 2; }
    }
    if (optind != argc - 1) { fprintf(stderr, "usage: %s [-s] [-u HOST:PORT] HOST:PORT\n", argv[0]); return 2; }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) die("getrlimit");
    max_fd = rl.rlim_cur > 1000000 ? 1000000 : (int)rl.rlim_cur;
    peers = calloc((size_t)max_fd, sizeof *peers);
    ready = calloc((size_t)max_fd, sizeof *ready);
    carried = calloc((size_t)max_fd, sizeof *carried);
    if (!peers || !ready || !carried) die("calloc");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    int listener = bound_socket(SOCK_STREAM, argv[optind]);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.fd = listener };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) < 0) die("epoll_ctl");
    int udp = -1;
    if (udp_addr) {
        udp = bound_socket(SOCK_DGRAM, udp_addr);
        ev.data.fd = udp;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, udp, &ev) < 0) die("epoll_ctl");
    }

    struct epoll_event events[EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, EVENTS, nready > 0 ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        /* Serve last turn's leftovers first; swap lists, since serve() may requeue. */
        int *swap = carried, ncarried = nready;
        carried = ready;
        ready = swap;
        nready = 0;
        for (int i = 0; i < ncarried; i++) {
            int fd = carried[i];
            peers[fd].queued = 0;
            if (peers[fd].open) serve(fd);
        }

        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) { accept_all(ep, listener); continue; }
            if (fd == udp) { echo_datagrams(udp); continue; }
            if (!peers[fd].open) continue; /* closed earlier in this batch */
            if (events[i].events & (EPOLLERR | EPOLLHUP) && !(events[i].events & EPOLLIN)) {
                drop_peer(fd);
                continue;
            }
            if (events[i].events & EPOLLOUT && peers[fd].rest) {
                int r = flush_rest(fd);
                if (r < 0) { drop_peer(fd); continue; }
                if (r == 0) continue;
                /* flushed: input held back by backpressure is still queued */
                if (peers[fd].eof) { drop_peer(fd); continue; }
                serve(fd);
                continue;
            }
            if (events[i].events & EPOLLIN) serve(fd);
        }
    }
}
