/* Every allocation entry point of the C library at alignments 8, 16, 32, 64 and 4096, one site
 * each, with known totals: the truth for the double-counting tests. glibc's memalign,
 * aligned_alloc and posix_memalign hand alignments of 16 and less to malloc, whose probe
 * fires too; each site must still come out once. Built against glibc (-O2, no frame pointers)
 * and against jemalloc, tcmalloc and mimalloc (-DNO_PVALLOC where the allocator has no pvalloc
 * of its own and glibc's would serve it outside the probed allocator).
 *
 *   aligned_sites [--wait] [--scale N]
 *
 * Prints "site NAME SIZE COUNT" per site, and "einval site_posix_memalign_einval": that site
 * calls posix_memalign with an invalid alignment, which allocates nothing and must not count. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SITE_BYTES 1000
#define SITE_CALLS 4000

static long scale = 1;
static volatile sig_atomic_t started;

static void touch(void *p)
{
	if (!p)
		abort();
	__asm__ volatile("" : : "r"(p) : "memory");
}

static void manifest(const char *site, unsigned long long size, unsigned long long count)
{
	printf("site %s %llu %llu\n", site, size, count);
}

/* The alignment travels through a volatile so the compiler cannot specialise the call. */
static size_t opaque(size_t value)
{
	volatile size_t v = value;

	return v;
}

__attribute__((noinline)) void site_malloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(opaque(SITE_BYTES));
		touch(p);
		free(p);
	}
	manifest(__func__, SITE_BYTES, n);
}

__attribute__((noinline)) void site_calloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = calloc(opaque(10), SITE_BYTES / 10);
		touch(p);
		free(p);
	}
	manifest(__func__, SITE_BYTES, n);
}

__attribute__((noinline)) void site_realloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(opaque(SITE_BYTES));
		touch(p);
		p = realloc(p, opaque(2 * SITE_BYTES));
		touch(p);
		free(p);
	}
	manifest(__func__, SITE_BYTES, n);
	manifest(__func__, 2 * SITE_BYTES, n);
}

#define ALIGNED_SITES(align)                                                                       \
	__attribute__((noinline)) void site_memalign_##align(long n)                               \
	{                                                                                          \
		for (long i = 0; i < n; i++) {                                                     \
			void *p = memalign(opaque(align), SITE_BYTES);                             \
			touch(p);                                                                  \
			free(p);                                                                   \
		}                                                                                  \
		manifest(__func__, SITE_BYTES, n);                                                 \
	}                                                                                          \
	__attribute__((noinline)) void site_aligned_alloc_##align(long n)                          \
	{                                                                                          \
		for (long i = 0; i < n; i++) {                                                     \
			/* C11 wants the size a multiple of the alignment: 4096 for 4096. */       \
			void *p = aligned_alloc(opaque(align), align > SITE_BYTES ? align          \
										  : SITE_BYTES);   \
			touch(p);                                                                  \
			free(p);                                                                   \
		}                                                                                  \
		manifest(__func__, align > SITE_BYTES ? align : SITE_BYTES, n);                    \
	}                                                                                          \
	__attribute__((noinline)) void site_posix_memalign_##align(long n)                         \
	{                                                                                          \
		for (long i = 0; i < n; i++) {                                                     \
			void *p = NULL;                                                            \
			if (posix_memalign(&p, opaque(align), SITE_BYTES) != 0)                    \
				abort();                                                           \
			touch(p);                                                                  \
			free(p);                                                                   \
		}                                                                                  \
		manifest(__func__, SITE_BYTES, n);                                                 \
	}

ALIGNED_SITES(8)
ALIGNED_SITES(16)
ALIGNED_SITES(32)
ALIGNED_SITES(64)
ALIGNED_SITES(4096)

__attribute__((noinline)) void site_valloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = valloc(opaque(SITE_BYTES));
		touch(p);
		free(p);
	}
	manifest(__func__, SITE_BYTES, n);
}

#ifndef NO_PVALLOC
/* A page's worth: pvalloc rounds the size up to pages, and glibc's pvalloc is counted at the
 * size asked while tcmalloc's and mimalloc's reach their memalign with the rounded one. */
__attribute__((noinline)) void site_pvalloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = pvalloc(opaque(4096));
		touch(p);
		free(p);
	}
	manifest(__func__, 4096, n);
}
#endif

/* 24 is not a power of two: posix_memalign fails with EINVAL and allocates nothing. */
__attribute__((noinline)) void site_posix_memalign_einval(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = NULL;

		if (posix_memalign(&p, opaque(24), SITE_BYTES) != EINVAL)
			abort();
	}
	printf("einval %s\n", __func__);
}

static void on_start(int sig)
{
	started = 1;
}

int main(int argc, char **argv)
{
	int wait = 0;
	long n;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait = 1;
		else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
			scale = atol(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--wait] [--scale N]\n", argv[0]);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (wait) {
		sigset_t block, old;

		signal(SIGUSR1, on_start);
		sigemptyset(&block);
		sigaddset(&block, SIGUSR1);
		sigprocmask(SIG_BLOCK, &block, &old);
		printf("ready %d\n", (int)getpid());
		while (!started)
			sigsuspend(&old);
		sigprocmask(SIG_SETMASK, &old, NULL);
	}
	n = SITE_CALLS * scale;
	site_malloc(n);
	site_calloc(n);
	site_realloc(n);
	site_memalign_8(n);
	site_memalign_16(n);
	site_memalign_32(n);
	site_memalign_64(n);
	site_memalign_4096(n);
	site_aligned_alloc_8(n);
	site_aligned_alloc_16(n);
	site_aligned_alloc_32(n);
	site_aligned_alloc_64(n);
	site_aligned_alloc_4096(n);
	site_posix_memalign_8(n);
	site_posix_memalign_16(n);
	site_posix_memalign_32(n);
	site_posix_memalign_64(n);
	site_posix_memalign_4096(n);
	site_valloc(n);
#ifndef NO_PVALLOC
	site_pvalloc(n);
#endif
	site_posix_memalign_einval(n);
	printf("done\n");
	return 0;
}
