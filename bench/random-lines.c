/* random-lines: what random cache lines cost a loop that also does work of its own, the model
 * of a jail decision at a million addresses (BENCHMARKS.md, goal 3 round six). Per iteration:
 * WORK rounds of xorshift (a dependent chain; 40 rounds take about as long as a decision at 100
 * addresses here) and LINES random 64-byte lines of an MB-megabyte table on huge pages, each
 * read and written, requested AHEAD iterations ahead with a software prefetch (0: none).
 * Decisions per thread CPU second, as `jailbench attackers` counts them.
 *
 *   cc -O2 -o random-lines bench/random-lines.c && ./random-lines MB AHEAD LINES WORK
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: random-lines MB AHEAD LINES WORK\n");
        return 2;
    }
    size_t mb = atoi(argv[1]), ahead = atoi(argv[2]), lines = atoi(argv[3]);
    int work = atoi(argv[4]);
    size_t bytes = mb << 20, n = bytes / 64, iterations = 5000000;
    const size_t huge = 2 << 20;
    char *t = mmap(0, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    t = (char *)(((uintptr_t)t + huge - 1) & ~(uintptr_t)(huge - 1));
    madvise(t, bytes, MADV_HUGEPAGE);
    memset(t, 1, bytes);
    uint32_t *idx = malloc(iterations * (lines ? lines : 1) * 4);
    uint64_t x = 88172645463325252ull, s = 0;
    for (size_t i = 0; i < iterations * lines; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        idx[i] = x % n;
    }
    double a = now();
    for (size_t i = 0; i < iterations; i++) {
        if (ahead && i + ahead < iterations)
            for (size_t l = 0; l < lines; l++)
                __builtin_prefetch(t + (size_t)idx[(i + ahead) * lines + l] * 64);
        for (int k = 0; k < work; k++)
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        s += x & 1;
        for (size_t l = 0; l < lines; l++) {
            volatile uint64_t *p = (uint64_t *)(t + (size_t)idx[i * lines + l] * 64);
            s += *p;
            *p = s;
        }
    }
    double b = now();
    printf("%zu MB, %zu lines, %zu ahead, work %d: %.1f ns an iteration\n", mb, lines, ahead, work,
           (b - a) / iterations * 1e9);
    return s == 42;
}
