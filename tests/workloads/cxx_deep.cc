// C++ allocation sites under deep template recursion and on exception paths, with known
// totals; built -O2 without frame pointers (as distributions build), so only CFI unwinding
// walks them. Prints the same manifest as alloc_sites ("site NAME SIZE COUNT"), NAME being the
// demangled function that allocates.
//
//   leaf_node        new (200 B) 150 template frames of 512 B below main: 75 KiB of stack,
//                    past any stack copy
//   Guard::~Guard    new[] (1000 B) in destructors run while an exception thrown 60 frames
//                    down unwinds through them (landing pads), 6 per throw
//   rethrow_note     new[] (2000 B) in a catch (...) 30 frames down that rethrows
//   handle_error     new[] (3000 B) in the outer catch handler
//
//   cxx_deep [--wait] [--scale N]
//     --wait     print "ready PID" and wait for SIGUSR1 before allocating (attach first)
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace workload {

struct Node {
	char payload[200];
};

struct DeepError {
	long depth;
};

static void manifest(const char *site, unsigned long size, unsigned long count)
{
	std::printf("site %s %lu %lu\n", site, size, count);
}

template <typename T> static void keep(T *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) long leaf_node(long i)
{
	Node *node = new Node;
	keep(node);
	node->payload[0] = (char)i;
	long value = node->payload[0];
	delete node;
	return value;
}

struct Guard {
	long depth;
	__attribute__((noinline)) ~Guard()
	{
		char *record = new char[1000];
		keep(record);
		delete[] record;
	}
};

__attribute__((noinline)) void rethrow_note(long depth)
{
	char *note = new char[2000];
	keep(note);
	note[0] = (char)depth;
	delete[] note;
}

__attribute__((noinline)) long handle_error(const DeepError &error)
{
	char *report = new char[3000];
	keep(report);
	report[0] = (char)error.depth;
	long value = report[0];
	delete[] report;
	return value;
}

__attribute__((noinline)) void raise_error(long depth)
{
	throw DeepError{depth};
}

// Each level is its own function (a template instance) with its own frame; the work after the
// call keeps it from being a tail call.
template <int N> struct Level {
	__attribute__((noinline)) static long build(long i)
	{
		char frame[512];
		keep(frame);
		long value = Level<N - 1>::build(i + 1);
		keep(frame);
		return value + frame[N % sizeof(frame)];
	}

	__attribute__((noinline)) static long fail(long i)
	{
		char frame[256];
		keep(frame);
		if constexpr (N % 10 == 0) {
			Guard guard{N};
			long value = Level<N - 1>::fail(i + 1);
			keep(&guard);
			return value + frame[0];
		} else if constexpr (N == 35) {
			try {
				long value = Level<N - 1>::fail(i + 1);
				keep(frame);
				return value;
			} catch (...) {
				rethrow_note(N);
				throw;
			}
		} else {
			long value = Level<N - 1>::fail(i + 1);
			keep(frame);
			return value + frame[1];
		}
	}
};

template <> struct Level<0> {
	static long build(long i)
	{
		return leaf_node(i);
	}

	static long fail(long i)
	{
		raise_error(i);
		return 0;
	}
};

__attribute__((noinline)) void deep_nodes(long n)
{
	long sum = 0;
	for (long i = 0; i < n; i++)
		sum += Level<150>::build(i);
	keep(&sum);
	manifest("workload::leaf_node(long)", sizeof(Node), n);
}

__attribute__((noinline)) void failures(long n)
{
	long sum = 0;
	for (long i = 0; i < n; i++) {
		try {
			sum += Level<60>::fail(i);
		} catch (const DeepError &error) {
			sum += handle_error(error);
		}
	}
	keep(&sum);
	manifest("workload::Guard::~Guard()", 1000, n * 6);
	manifest("workload::rethrow_note(long)", 2000, n);
	manifest("workload::handle_error(workload::DeepError const&)", 3000, n);
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
		sigset_t block, old;

		std::signal(SIGUSR1, on_start);
		sigemptyset(&block);
		sigaddset(&block, SIGUSR1);
		sigprocmask(SIG_BLOCK, &block, &old);
		std::printf("ready %d\n", (int)getpid());
		while (!started)
			sigsuspend(&old);
		sigprocmask(SIG_SETMASK, &old, nullptr);
	}
	workload::deep_nodes(20000 * scale);
	workload::failures(2000 * scale);
	std::printf("done\n");
	return 0;
}
