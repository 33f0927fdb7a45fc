// C++ allocation sites with known totals, built -O2 without frame pointers: every allocation
// goes through libstdc++'s operator new (which keeps no frame pointer) to glibc's malloc, so
// only CFI unwinding attributes it to the right function. Prints the same manifest as
// alloc_sites ("site NAME SIZE COUNT").
//
//   cxx_sites [--wait] [--scale N]
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace workload {

struct Order {
	char payload[200];
};

static void manifest(const char *site, unsigned long size, unsigned long count)
{
	std::printf("site %s %lu %lu\n", site, size, count);
}

template <typename T> static void keep(T *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) void new_orders(long n)
{
	for (long i = 0; i < n; i++) {
		Order *order = new Order;
		keep(order);
		delete order;
	}
	manifest("workload::new_orders(long)", sizeof(Order), n);
}

__attribute__((noinline)) void new_buffers(long n)
{
	for (long i = 0; i < n; i++) {
		char *buffer = new char[5000];
		keep(buffer);
		delete[] buffer;
	}
	manifest("workload::new_buffers(long)", 5000, n);
}

__attribute__((noinline)) void malloc_records(long n)
{
	for (long i = 0; i < n; i++) {
		void *record = std::malloc(1200);
		keep(record);
		std::free(record);
	}
	manifest("workload::malloc_records(long)", 1200, n);
}

} // namespace workload

static volatile std::sig_atomic_t started;

static void on_start(int)
{
	started = 1;
}

int main(int argc, char **argv)
{
	long scale = 1;
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
	workload::new_orders(100000 * scale);
	workload::new_buffers(20000 * scale);
	workload::malloc_records(40000 * scale);
	std::printf("done\n");
	return 0;
}
