/* Workload for liballocscope-sampler.so (tests/unit/test_sampler.c, docs/cooperative.md):
 * allocates a known number of bytes through a chosen allocator entry point from several
 * threads, optionally forking or dlopening a library mid-run, then prints the sampler's
 * statistics next to the truth so that a test can compare them:
 *
 *   sampled N weighted_bytes W allocated_bytes B     this process (absent: "sampler absent")
 *   sample_rate R
 *   child sampled N weighted_bytes W allocated_bytes B   with -f, from the forked child
 *   child_exit S                                          with -f, the child's exit status
 *
 * Options:
 *   -t N     threads (default 1)              -n N    allocations per thread (default 100000)
 *   -s LIST  sizes, comma-separated, used in turn (default 64)
 *   -a API   malloc (default), calloc, realloc, reallocarray, posix_memalign, aligned_alloc,
 *            memalign, valloc, pvalloc, or mix (each in turn). calloc and reallocarray split
 *            a size divisible by 8 into size/8 elements of 8 bytes; realloc keeps resizing one
 *            block and finally calls realloc(p, 0), which must count nothing
 *   -f       fork when half the work is done; the child does one thread's work and reports
 *   -d LIB   dlopen LIB mid-run (for libz: compress a buffer), then dlclose it
 *   -S PATH  dlopen PATH before starting (the sampler itself: what happens when a program
 *            dlopens it instead of preloading it)
 *   -P       stop (SIGSTOP) once loaded, before any work: a tracing test inserts its
 *            breakpoint on the probe while the process waits
 *   -B N     benchmark instead: N malloc(64)+free pairs, five rounds, prints
 *            "ns_per_pair MEDIAN min MIN"
 *   -K N     keep one block in N alive to the end instead of freeing it (not the realloc
 *            APIs); adds "kept_blocks K kept_bytes B" and the sampler's in-use line
 *            "live_tracked T live_overflow O frees_fired F" (same prefix as the statistics)
 *   -H MIB   before -B, hold MIB mebibytes alive in 4 KiB blocks (a heap with tracked
 *            samples, so that free's filter is consulted as in a real service)
 * Exit status: 0, or 2 when an allocation or a requested dlopen failed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "../../sampler/allocscope_sampler.h"

#define MAX_SIZES   64
#define MAX_THREADS 64

enum api {
	API_MALLOC,
	API_CALLOC,
	API_REALLOC,
	API_REALLOCARRAY,
	API_POSIX_MEMALIGN,
	API_ALIGNED_ALLOC,
	API_MEMALIGN,
	API_VALLOC,
	API_PVALLOC,
	API_COUNT,
	API_MIX = API_COUNT
};

static const char *const api_names[] = {
    "malloc",	     "calloc",	 "realloc", "reallocarray", "posix_memalign",
    "aligned_alloc", "memalign", "valloc",  "pvalloc",	    "mix"};

static struct {
	int threads;
	long per_thread;
	size_t sizes[MAX_SIZES];
	int size_count;
	enum api api;
	int fork_midway;
	int stop_first;
	const char *dlopen_lib;
	const char *dlopen_first;
	long bench;
	long keep_every;
	long hold_mib;
} opt = {.threads = 1, .per_thread = 100000, .sizes = {64}, .size_count = 1};

static long progress; /* allocations done by all threads, updated every 1024 */
static int threads_done;
static int failures;				  /* allocations that failed */
static void *volatile sink;			  /* keeps the compiler from removing allocations */
static __thread void *kept_head;		  /* -K: kept blocks, linked through themselves */
static __thread long kept_countdown;
static uint64_t kept_blocks, kept_bytes;
static volatile size_t huge_count = SIZE_MAX / 2; /* hidden from the compiler's size checks */

/* Allocates size bytes through api; *block is the realloc chain's current block. Returns
 * the bytes that the sampler should count. */
static size_t allocate_once(enum api api, size_t size, void **block)
{
	void *ptr = NULL;
	int err;

	switch (api) {
	case API_MALLOC:
		ptr = malloc(size);
		break;
	case API_CALLOC:
		ptr = size % 8 == 0 ? calloc(size / 8, 8) : calloc(1, size);
		break;
	case API_REALLOC:
		ptr = realloc(*block, size);
		if (ptr || !size)
			*block = ptr;
		sink = ptr;
		return ptr ? size : 0;
	case API_REALLOCARRAY:
		ptr = size % 8 == 0 ? reallocarray(*block, size / 8, 8)
				    : reallocarray(*block, 1, size);
		if (ptr || !size)
			*block = ptr;
		sink = ptr;
		return ptr ? size : 0;
	case API_POSIX_MEMALIGN:
		err = posix_memalign(&ptr, 64, size);
		if (err)
			ptr = NULL;
		break;
	case API_ALIGNED_ALLOC:
		ptr = aligned_alloc(64, (size + 63) & ~(size_t)63);
		size = (size + 63) & ~(size_t)63;
		break;
	case API_MEMALIGN:
		ptr = memalign(64, size);
		break;
	case API_VALLOC:
		ptr = valloc(size);
		break;
	default:
		ptr = pvalloc(size);
		break;
	}
	if (!ptr) {
		__atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
		return 0;
	}
	sink = ptr;
	if (opt.keep_every && size >= sizeof(void *) && ++kept_countdown == opt.keep_every) {
		kept_countdown = 0;
		*(void **)ptr = kept_head;
		kept_head = ptr;
		__atomic_fetch_add(&kept_blocks, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&kept_bytes, size, __ATOMIC_RELAXED);
		return size;
	}
	free(ptr);
	return size;
}

/* One thread's work: per_thread allocations; returns the bytes allocated. */
static uint64_t run_allocations(long count)
{
	void *block = NULL, *ptr;
	uint64_t allocated = 0;

	for (long i = 0; i < count; i++) {
		enum api api = opt.api == API_MIX ? (enum api)(i % API_COUNT) : opt.api;

		allocated += allocate_once(api, opt.sizes[i % opt.size_count], &block);
		if ((i & 1023) == 1023)
			__atomic_fetch_add(&progress, 1024, __ATOMIC_RELAXED);
	}
	/* Ends the realloc chain: realloc(p, 0) frees and must not be counted. */
	if (block) {
		ptr = realloc(block, 0);
		free(ptr); /* allocators that return a minimal block for size 0 */
	}
	/* Edge cases the sampler must not count: a calloc whose size overflows, an invalid
	 * alignment; both fail without allocating. */
	sink = calloc(huge_count, 4); /* through sink: compilers may assume allocations succeed */
	if (sink != NULL || posix_memalign(&ptr, 3, 64) != EINVAL)
		__atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
	return allocated;
}

static void *worker(void *arg)
{
	uint64_t *allocated = arg;

	*allocated = run_allocations(opt.per_thread);
	__atomic_fetch_add(&threads_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static allocscope_sampler_stats_fn sampler_stats(void)
{
	return (allocscope_sampler_stats_fn)dlsym(RTLD_DEFAULT, "allocscope_sampler_stats");
}

static void print_stats(const char *prefix, uint64_t allocated)
{
	allocscope_sampler_stats_fn stats_fn = sampler_stats();
	struct allocscope_sampler_stats stats;

	if (!stats_fn) {
		printf("%ssampler absent allocated_bytes %llu\n", prefix,
		       (unsigned long long)allocated);
		return;
	}
	stats_fn(&stats);
	printf("%ssampled %llu weighted_bytes %llu allocated_bytes %llu\n", prefix,
	       (unsigned long long)stats.sampled, (unsigned long long)stats.weighted_bytes,
	       (unsigned long long)allocated);
	printf("%ssample_rate %llu\n", prefix, (unsigned long long)stats.sample_rate);
	if (opt.keep_every)
		printf("%skept_blocks %llu kept_bytes %llu\n", prefix,
		       (unsigned long long)kept_blocks, (unsigned long long)kept_bytes);
	printf("%slive_tracked %llu live_overflow %llu frees_fired %llu\n", prefix,
	       (unsigned long long)stats.live_tracked, (unsigned long long)stats.live_overflow,
	       (unsigned long long)stats.frees_fired);
}

/* The child of -f: one thread's work, its own report, exit. */
static void run_child(void)
{
	kept_blocks = 0;
	kept_bytes = 0;
	uint64_t allocated = run_allocations(opt.per_thread);

	print_stats("child ", allocated);
	fflush(stdout);
	_exit(failures ? 2 : 0);
}

typedef int compress_fn(unsigned char *dest, unsigned long *dest_len, const unsigned char *src,
			unsigned long src_len);

static int exercise_dlopen(const char *lib)
{
	void *handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	compress_fn *compress;

	if (!handle) {
		printf("dlopen %s failed: %s\n", lib, dlerror());
		return -1;
	}
	compress = (compress_fn *)dlsym(handle, "compress");
	if (compress) {
		static unsigned char input[65536], output[70000];
		unsigned long out_len = sizeof(output);

		for (size_t i = 0; i < sizeof(input); i++)
			input[i] = (unsigned char)(i * 7 / 13);
		printf("dlopen %s ok compress %d\n", lib,
		       compress(output, &out_len, input, sizeof(input)));
	} else {
		printf("dlopen %s ok\n", lib);
	}
	dlclose(handle);
	return 0;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int run_bench(long pairs)
{
	double rounds[5];

	for (long i = 0; i < opt.hold_mib * 256; i++) {
		void **block = malloc(4096);

		if (!block)
			return 2;
		*block = kept_head;
		kept_head = block;
	}
	for (long i = 0; i < 100000; i++) {
		sink = malloc(64);
		free(sink);
	}
	for (int r = 0; r < 5; r++) {
		double start = now_ns();

		for (long i = 0; i < pairs; i++) {
			sink = malloc(64);
			free(sink);
		}
		rounds[r] = (now_ns() - start) / (double)pairs;
	}
	qsort(rounds, 5, sizeof(rounds[0]), compare_double);
	printf("ns_per_pair %.2f min %.2f\n", rounds[2], rounds[0]);
	return 0;
}

static int parse_sizes(char *list)
{
	char *save = NULL;

	opt.size_count = 0;
	for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		if (opt.size_count == MAX_SIZES)
			return -1;
		opt.sizes[opt.size_count++] = strtoull(item, NULL, 10);
	}
	return opt.size_count ? 0 : -1;
}

static int parse_api(const char *name)
{
	for (int i = 0; i <= API_MIX; i++) {
		if (strcmp(name, api_names[i]) == 0) {
			opt.api = (enum api)i;
			return 0;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	pthread_t threads[MAX_THREADS];
	uint64_t allocated[MAX_THREADS] = {0}, total = 0;
	int c, status = 0, exit_code = 0;
	pid_t child = -1;

	while ((c = getopt(argc, argv, "t:n:s:a:fd:S:PB:K:H:")) != -1) {
		switch (c) {
		case 't':
			opt.threads = atoi(optarg);
			break;
		case 'n':
			opt.per_thread = atol(optarg);
			break;
		case 's':
			if (parse_sizes(optarg)) {
				fprintf(stderr, "bad size list\n");
				return 64;
			}
			break;
		case 'a':
			if (parse_api(optarg)) {
				fprintf(stderr, "unknown api %s\n", optarg);
				return 64;
			}
			break;
		case 'f':
			opt.fork_midway = 1;
			break;
		case 'd':
			opt.dlopen_lib = optarg;
			break;
		case 'S':
			opt.dlopen_first = optarg;
			break;
		case 'P':
			opt.stop_first = 1;
			break;
		case 'B':
			opt.bench = atol(optarg);
			break;
		case 'K':
			opt.keep_every = atol(optarg);
			break;
		case 'H':
			opt.hold_mib = atol(optarg);
			break;
		default:
			fprintf(stderr,
				"usage: %s [-t N] [-n N] [-s LIST] [-a API] [-f] [-d LIB] "
				"[-S PATH] [-P] [-B N] [-K N] [-H MIB]\n",
				argv[0]);
			return 64;
		}
	}
	if (opt.threads < 1 || opt.threads > MAX_THREADS || opt.per_thread < 0) {
		fprintf(stderr, "threads: 1 to %d\n", MAX_THREADS);
		return 64;
	}
	/* A static buffer: stdio would otherwise allocate one at the first printf, after the
	 * statistics were read (a sample the report would miss). */
	static char stdout_buffer[8192];

	setvbuf(stdout, stdout_buffer, _IOLBF, sizeof(stdout_buffer));
	if (opt.stop_first)
		raise(SIGSTOP);
	if (opt.bench)
		return run_bench(opt.bench);
	if (opt.dlopen_first) {
		void *handle = dlopen(opt.dlopen_first, RTLD_NOW | RTLD_LOCAL);

		printf("sampler_dlopen %s\n", handle ? "ok" : dlerror());
		sink = malloc(100);
		free(sink);
	}

	for (int i = 0; i < opt.threads; i++) {
		if (pthread_create(&threads[i], NULL, worker, &allocated[i]) != 0) {
			fprintf(stderr, "pthread_create failed\n");
			return 1;
		}
	}
	if (opt.dlopen_lib && exercise_dlopen(opt.dlopen_lib) != 0)
		exit_code = 2;
	if (opt.fork_midway) {
		long half = (long)opt.threads * opt.per_thread / 2;

		while (__atomic_load_n(&progress, __ATOMIC_RELAXED) < half &&
		       __atomic_load_n(&threads_done, __ATOMIC_ACQUIRE) < opt.threads)
			usleep(200);
		fflush(stdout);
		child = fork();
		if (child == 0)
			run_child();
		if (child < 0)
			exit_code = 2;
	}
	for (int i = 0; i < opt.threads; i++) {
		pthread_join(threads[i], NULL);
		total += allocated[i];
	}
	if (child > 0) {
		waitpid(child, &status, 0);
		printf("child_exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128);
	}
	print_stats("", total);
	if (failures) {
		printf("failures %d\n", failures);
		exit_code = 2;
	}
	return exit_code;
}
