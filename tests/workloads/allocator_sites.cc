// Allocation sites with known totals on allocators other than glibc's, for the end-to-end
// tests. One source, built once per allocator (see the Makefile):
//
//   sites_jemalloc          -ljemalloc: jemalloc's malloc in a library; also mallocx, rallocx,
//                           xallocx, and jemalloc's own operator new
//   sites_jemalloc_static   the same with jemalloc linked into the executable
//   sites_tcmalloc          -ltcmalloc_minimal: tcmalloc's malloc and operator new
//   sites_mimalloc          -lmimalloc: mimalloc's malloc and operator new; also mi_zalloc,
//                           mi_malloc_aligned, mi_realloc
//   sites_rjem              glibc's malloc and libstdc++'s operator new, plus a jemalloc
//                           renamed to Rust's _rjem_* prefix and linked in statically, called
//                           by its prefixed names, as a Rust program with tikv-jemallocator does
//
// Every site is an extern "C" function allocating through one entry point; the manifest
// ("site NAME SIZE COUNT", one line per site and size) is the truth a profile is checked
// against. The first line names the allocator build ("allocator NAME").
//
//   allocator_sites [--wait] [--scale N]
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <new>
#include <unistd.h>

#if defined(SITES_JEMALLOC)
#include <jemalloc/jemalloc.h>
#define ALLOCATOR_NAME "jemalloc"
#elif defined(SITES_TCMALLOC)
#define ALLOCATOR_NAME "tcmalloc"
#elif defined(SITES_MIMALLOC)
#include <mimalloc.h>
#define ALLOCATOR_NAME "mimalloc"
#elif defined(SITES_RJEM)
#define ALLOCATOR_NAME "glibc+_rjem_jemalloc"
extern "C" {
void *_rjem_malloc(size_t size);
void *_rjem_calloc(size_t nmemb, size_t size);
void *_rjem_realloc(void *ptr, size_t size);
void _rjem_free(void *ptr);
int _rjem_posix_memalign(void **memptr, size_t alignment, size_t size);
void *_rjem_aligned_alloc(size_t alignment, size_t size);
void *_rjem_mallocx(size_t size, int flags);
void *_rjem_rallocx(void *ptr, size_t size, int flags);
void _rjem_sdallocx(void *ptr, size_t size, int flags);
}
#else
#define ALLOCATOR_NAME "glibc"
#endif

static long scale = 1;
static volatile std::sig_atomic_t started;

// Keeps the compiler from proving an allocation dead.
template <typename T> static void touch(T *p)
{
	if (!p)
		std::abort();
	__asm__ volatile("" : : "r"(p) : "memory");
}

static void manifest(const char *site, unsigned long size, unsigned long count)
{
	std::printf("site %s %lu %lu\n", site, size, count);
}

struct Order {
	char payload[200];
};

struct alignas(64) Aligned {
	char payload[256];
};

extern "C" {

// --- through the standard names: whichever allocator owns malloc ---------------------------

__attribute__((noinline)) void site_malloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = std::malloc(100);
		touch(p);
		std::free(p);
	}
	manifest(__func__, 100, n);
}

__attribute__((noinline)) void site_calloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = std::calloc(32, 128);
		touch(p);
		std::free(p);
	}
	manifest(__func__, 4096, n);
}

// malloc(1024) then a realloc that grows it: both are this site's allocations.
__attribute__((noinline)) void site_realloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = std::malloc(1024);
		touch(p);
		p = std::realloc(p, 65536);
		touch(p);
		std::free(p);
	}
	manifest(__func__, 1024, n);
	manifest(__func__, 65536, n);
}

// realloc(NULL, n) allocates inside realloc with jemalloc, tcmalloc and mimalloc (glibc's
// jumps to malloc): counted once either way.
__attribute__((noinline)) void site_realloc_null(long n)
{
	for (long i = 0; i < n; i++) {
		void *volatile no_block = nullptr;
		void *p = std::realloc(no_block, 2048);
		touch(p);
		std::free(p);
	}
	manifest(__func__, 2048, n);
}

__attribute__((noinline)) void site_aligned_alloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = aligned_alloc(64, 8192);
		touch(p);
		std::free(p);
	}
	manifest(__func__, 8192, n);
}

__attribute__((noinline)) void site_posix_memalign(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = nullptr;
		if (posix_memalign(&p, 4096, 16384) != 0)
			std::abort();
		touch(p);
		std::free(p);
	}
	manifest(__func__, 16384, n);
}

__attribute__((noinline)) void site_valloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = valloc(4096);
		touch(p);
		std::free(p);
	}
	manifest(__func__, 4096, n);
}

__attribute__((noinline)) void site_new(long n)
{
	for (long i = 0; i < n; i++) {
		Order *order = new Order;
		touch(order);
		delete order;
	}
	manifest(__func__, sizeof(Order), n);
}

__attribute__((noinline)) void site_new_array(long n)
{
	for (long i = 0; i < n; i++) {
		char *buffer = new char[5000];
		touch(buffer);
		delete[] buffer;
	}
	manifest(__func__, 5000, n);
}

__attribute__((noinline)) void site_new_nothrow(long n)
{
	for (long i = 0; i < n; i++) {
		char *buffer = new (std::nothrow) char[3000];
		touch(buffer);
		delete[] buffer;
	}
	manifest(__func__, 3000, n);
}

__attribute__((noinline)) void site_new_aligned(long n)
{
	for (long i = 0; i < n; i++) {
		Aligned *block = new Aligned;
		touch(block);
		delete block;
	}
	manifest(__func__, sizeof(Aligned), n);
}

// --- each allocator's own API ------------------------------------------------------------

#if defined(SITES_JEMALLOC)
__attribute__((noinline)) void site_mallocx(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = mallocx(3000, 0);
		touch(p);
		dallocx(p, 0);
	}
	manifest(__func__, 3000, n);
}

// mallocx(512) grown by rallocx to 8192: both count.
__attribute__((noinline)) void site_rallocx(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = mallocx(512, 0);
		touch(p);
		p = rallocx(p, 8192, 0);
		touch(p);
		dallocx(p, 0);
	}
	manifest(__func__, 512, n);
	manifest(__func__, 8192, n);
}

// xallocx resizes in place (or not): the size it asks for counts, as for realloc.
__attribute__((noinline)) void site_xallocx(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = mallocx(4096, 0);
		touch(p);
		xallocx(p, 12288, 0, 0);
		dallocx(p, 0);
	}
	manifest(__func__, 4096, n);
	manifest(__func__, 12288, n);
}
#endif

#if defined(SITES_MIMALLOC)
__attribute__((noinline)) void site_mi_zalloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = mi_zalloc(600);
		touch(p);
		mi_free(p);
	}
	manifest(__func__, 600, n);
}

__attribute__((noinline)) void site_mi_malloc_aligned(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = mi_malloc_aligned(1000, 128);
		touch(p);
		mi_free(p);
	}
	manifest(__func__, 1000, n);
}

__attribute__((noinline)) void site_mi_realloc_null(long n)
{
	for (long i = 0; i < n; i++) {
		void *volatile no_block = nullptr;
		void *p = mi_realloc(no_block, 2500);
		touch(p);
		mi_free(p);
	}
	manifest(__func__, 2500, n);
}
#endif

#if defined(SITES_RJEM)
__attribute__((noinline)) void site_rjem_malloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = _rjem_malloc(700);
		touch(p);
		_rjem_free(p);
	}
	manifest(__func__, 700, n);
}

__attribute__((noinline)) void site_rjem_calloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = _rjem_calloc(10, 300);
		touch(p);
		_rjem_free(p);
	}
	manifest(__func__, 3000, n);
}

__attribute__((noinline)) void site_rjem_realloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *volatile no_block = nullptr;
		void *p = _rjem_realloc(no_block, 1500);
		touch(p);
		p = _rjem_realloc(p, 6000);
		touch(p);
		_rjem_free(p);
	}
	manifest(__func__, 1500, n);
	manifest(__func__, 6000, n);
}

__attribute__((noinline)) void site_rjem_mallocx(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = _rjem_mallocx(2200, 0);
		touch(p);
		p = _rjem_rallocx(p, 9000, 0);
		touch(p);
		_rjem_sdallocx(p, 9000, 0);
	}
	manifest(__func__, 2200, n);
	manifest(__func__, 9000, n);
}

__attribute__((noinline)) void site_rjem_aligned(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = _rjem_aligned_alloc(256, 4096);
		touch(p);
		_rjem_free(p);
		p = nullptr;
		if (_rjem_posix_memalign(&p, 64, 1024) != 0)
			std::abort();
		touch(p);
		_rjem_free(p);
	}
	manifest(__func__, 4096, n);
	manifest(__func__, 1024, n);
}
#endif

} // extern "C"

static void on_start(int)
{
	started = 1;
}

int main(int argc, char **argv)
{
	bool wait = false;

	for (int i = 1; i < argc; i++) {
		if (std::strcmp(argv[i], "--wait") == 0)
			wait = true;
		else if (std::strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
			scale = std::atol(argv[++i]);
		else {
			std::fprintf(stderr, "usage: %s [--wait] [--scale N]\n", argv[0]);
			return 2;
		}
	}
	setvbuf(stdout, nullptr, _IOLBF, 0);
	if (wait) {
		std::signal(SIGUSR1, on_start);
		std::printf("ready %d\n", (int)getpid());
		while (!started)
			pause();
	}
	std::printf("allocator %s\n", ALLOCATOR_NAME);
	site_malloc(100000 * scale);
	site_calloc(10000 * scale);
	site_realloc(5000 * scale);
	site_realloc_null(20000 * scale);
	site_aligned_alloc(5000 * scale);
	site_posix_memalign(3000 * scale);
	site_valloc(3000 * scale);
	site_new(50000 * scale);
	site_new_array(10000 * scale);
	site_new_nothrow(10000 * scale);
	site_new_aligned(20000 * scale);
#if defined(SITES_JEMALLOC)
	site_mallocx(10000 * scale);
	site_rallocx(5000 * scale);
	site_xallocx(5000 * scale);
#endif
#if defined(SITES_MIMALLOC)
	site_mi_zalloc(10000 * scale);
	site_mi_malloc_aligned(10000 * scale);
	site_mi_realloc_null(10000 * scale);
#endif
#if defined(SITES_RJEM)
	site_rjem_malloc(30000 * scale);
	site_rjem_calloc(10000 * scale);
	site_rjem_realloc(10000 * scale);
	site_rjem_mallocx(10000 * scale);
	site_rjem_aligned(5000 * scale);
#endif
	std::printf("done\n");
	return 0;
}
