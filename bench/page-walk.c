/* What a random load costs once the pages it lands on outnumber the TLB's reach (BENCHMARKS.md,
 * "Issue 16, stop 32"): a pointer chase through LINES cache lines (512 KB at 8192: they fit
 * in L2 wherever they are) spread over SPAN_MB of memory, one line at a random offset in each
 * SPAN/LINES stretch, so only the number of pages they sit on changes with the span. HUGE=1
 * asks for transparent huge pages on the buffer (madvise), 0 refuses them; SPREAD=0 packs the
 * lines next to each other instead (the cache-only figure).
 *
 *   cc -O2 -o bench/out/page-walk bench/page-walk.c
 *   for mb in 4 8 12 16 32 64; do bench/out/page-walk 8192 1 1 $mb; done
 *
 * On a VM whose host backs guest memory with 4 KB pages, guest huge pages shorten the walk but
 * the TLB still holds 4 KB translations: the time a load takes grows once the span passes what
 * the TLB covers (3,072 entries x 4 KB = 12 MB on Zen 4), as the jail's 16 MB index does. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Where line `n` of the chase sits: one per stride, at an offset that differs from line to
 * line (lines all at a stride's start would fall into a few cache sets). */
static char *line_at(char *base, size_t n, size_t stride, int spread) {
    if (!spread)
        return base + n * 64;
    return base + n * stride + ((n * 2654435761u) % (stride / 64)) * 64;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s LINES SPREAD(0|1) HUGE(0|1) SPAN_MB\n", argv[0]);
        return 2;
    }
    size_t lines = strtoul(argv[1], 0, 10);
    int spread = atoi(argv[2]), huge = atoi(argv[3]);
    size_t span = strtoul(argv[4], 0, 10) << 20, align = 2u << 20;
    if (lines < 2 || (spread && span / lines < 64) || (!spread && lines * 64 > span)) {
        fprintf(stderr, "%zu lines do not fit %zu MB\n", lines, span >> 20);
        return 2;
    }
    char *raw = mmap(0, span + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    char *base = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    madvise(base, span, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (size_t i = 0; i < span; i += 4096)
        base[i] = 1;
    size_t stride = span / lines;
    size_t *order = malloc(lines * sizeof *order);
    for (size_t i = 0; i < lines; i++)
        order[i] = i;
    srand(1);
    for (size_t i = lines - 1; i > 0; i--) {
        size_t j = (size_t)rand() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < lines; i++)
        *(char **)line_at(base, order[i], stride, spread) =
            line_at(base, order[(i + 1) % lines], stride, spread);
    char *p = line_at(base, order[0], stride, spread);
    for (size_t i = 0; i < lines * 4; i++)
        p = *(char **)p;
    size_t loads = 20000000;
    double t0 = now();
    for (size_t i = 0; i < loads; i++)
        p = *(char **)p;
    double t1 = now();
    printf("lines=%zu spread=%d huge=%d span=%zu MB: %.2f ns a load (%p)\n", lines, spread, huge,
           span >> 20, (t1 - t0) / loads * 1e9, (void *)p);
    return 0;
}
