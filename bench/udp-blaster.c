/* udp-blaster: an independent UDP syslog sender for bench/live-udp.sh, so jailsink's loss is
 * measured against a sender that is not our own generator.
 *
 *   udp-blaster HOST PORT FILE RATE COUNT [BATCH]
 *
 * Sends COUNT datagrams, the lines of FILE cycled (one line a datagram, without its newline),
 * to HOST:PORT (IPv4) at RATE a second with sendmmsg(2) in batches of BATCH (default 256):
 * each batch leaves at once, as fast as the kernel takes it, and the next waits until the
 * schedule allows it. Bursts of BATCH datagrams back to back are harder on the receiver than
 * an even trickle; that is the point. Prints "sent=N seconds=S" on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT FILE RATE COUNT [BATCH]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    double rate = atof(argv[4]);
    long count = atol(argv[5]);
    int batch = argc > 6 ? atoi(argv[6]) : 256;
    if (port <= 0 || port > 65535 || rate <= 0 || count <= 0 || batch <= 0 || batch > 1024) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }

    /* The file, split into lines in place. */
    FILE *f = fopen(argv[3], "rb");
    if (!f) die(argv[3]);
    struct stat st;
    if (fstat(fileno(f), &st) < 0) die("fstat");
    char *text = malloc(st.st_size + 1);
    if (!text || fread(text, 1, st.st_size, f) != (size_t)st.st_size) die("read");
    fclose(f);
    size_t nlines = 0;
    for (off_t i = 0; i < st.st_size; i++)
        if (text[i] == '\n') nlines++;
    if (st.st_size > 0 && text[st.st_size - 1] != '\n') nlines++;
    if (nlines == 0) {
        fprintf(stderr, "%s: no lines\n", argv[3]);
        return 1;
    }
    struct iovec *lines = calloc(nlines, sizeof *lines);
    if (!lines) die("calloc");
    size_t n = 0;
    char *start = text;
    for (off_t i = 0; i <= st.st_size; i++) {
        if (i == st.st_size || text[i] == '\n') {
            if (text + i > start || i < st.st_size) {
                lines[n].iov_base = start;
                lines[n].iov_len = text + i - start;
                n++;
            }
            start = text + i + 1;
            if (n == nlines) break;
        }
    }
    nlines = n;

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    int sndbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) {
        fprintf(stderr, "%s: not an IPv4 address\n", host);
        return 2;
    }
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) die("connect");

    struct mmsghdr *msgs = calloc(batch, sizeof *msgs);
    if (!msgs) die("calloc");
    double begin = now();
    long sent = 0;
    size_t next = 0;
    while (sent < count) {
        int want = count - sent < batch ? (int)(count - sent) : batch;
        for (int i = 0; i < want; i++) {
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_iov = &lines[(next + i) % nlines];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(fd, msgs, want, 0);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ENOBUFS) continue;
            die("sendmmsg");
        }
        sent += r;
        next = (next + r) % nlines;
        /* Wait until the schedule has room for the next batch. */
        double due = begin + sent / rate;
        double wait = due - now();
        if (wait > 0) {
            struct timespec t = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            while (nanosleep(&t, &t) < 0 && errno == EINTR) {
            }
        }
    }
    printf("sent=%ld seconds=%.3f\n", sent, now() - begin);
    return 0;
}
