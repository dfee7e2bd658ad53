/*
 * crr_client.c: the C yardstick for the load generator's connects per second
 * in `cargo bench --bench churn`; neper's tcp_crr loop, written out small.
 *
 *   crr_client HOST PORT SECONDS THREADS [SOURCE_PREFIX]    (IPv4 only)
 *
 * Each of THREADS threads repeats, for SECONDS: connect (blocking), send one
 * 64-byte message, read its echo and check every byte, shutdown(SHUT_WR)
 * (our FIN first, as `load --churn 1` does), read to the server's EOF, close.
 * With SOURCE_PREFIX (like 127.0.9), connections are bound in turn to
 * PREFIX.1 to PREFIX.8 with IP_BIND_ADDRESS_NO_PORT, as `load --source`
 * spreads them, so TIME_WAIT ports do not run out.
 *
 * Prints one line: `connects N errors E seconds S`. What it leaves out on
 * purpose: latency figures, pipelining, TLS; it is a rate yardstick only.
 *
 * Build: cc -O2 -pthread -o crr_client crr_client.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SIZE 64
#define SOURCES 8

static struct sockaddr_in target;
static double deadline;
static const char *prefix;

struct counts { long connects, errors; int index; };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* One connection's life; 0 when every byte came back and the server closed. */
static int one(int index, long n) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int on = 1;
    if (prefix) {
        struct sockaddr_in src = { .sin_family = AF_INET };
        char ip[32];
        snprintf(ip, sizeof ip, "%s.%ld", prefix, 1 + (n + index) % SOURCES);
        inet_pton(AF_INET, ip, &src.sin_addr);
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) { close(fd); return -1; }
    }
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) { close(fd); return -1; }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    char msg[SIZE], got[SIZE];
    for (int i = 0; i < SIZE; i++) msg[i] = 'a' + (char)((n * 31 + i + index) % 26);
    int bad = write(fd, msg, SIZE) != SIZE;
    size_t have = 0;
    while (!bad && have < SIZE) {
        ssize_t r = read(fd, got + have, SIZE - have);
        if (r <= 0) bad = 1; else have += (size_t)r;
    }
    bad = bad || memcmp(msg, got, SIZE) != 0;
    if (!bad) {
        shutdown(fd, SHUT_WR);
        char rest[16];
        /* The server's EOF, with nothing before it. */
        bad = read(fd, rest, sizeof rest) != 0;
    }
    close(fd);
    return bad ? -1 : 0;
}

static void *run(void *arg) {
    struct counts *c = arg;
    for (long n = 0; now() < deadline; n++) {
        if (one(c->index, n) == 0) c->connects++; else c->errors++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: crr_client HOST PORT SECONDS THREADS [SOURCE_PREFIX]\n");
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1) {
        fprintf(stderr, "crr_client: bad IPv4 address %s\n", argv[1]);
        return 2;
    }
    double seconds = atof(argv[3]);
    int threads = atoi(argv[4]);
    if (seconds <= 0 || threads < 1 || threads > 1024) {
        fprintf(stderr, "crr_client: SECONDS > 0, THREADS 1 to 1024\n");
        return 2;
    }
    prefix = argc > 5 ? argv[5] : NULL;
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    struct counts *counts = calloc((size_t)threads, sizeof *counts);
    if (!ids || !counts) return 1;
    double start = now();
    deadline = start + seconds;
    for (int i = 0; i < threads; i++) {
        counts[i].index = i;
        pthread_create(&ids[i], NULL, run, &counts[i]);
    }
    long connects = 0, errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        connects += counts[i].connects;
        errors += counts[i].errors;
    }
    printf("connects %ld errors %ld seconds %.3f\n", connects, errors, now() - start);
    return 0;
}
