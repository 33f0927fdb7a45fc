/* The ELF seeds of tests/fuzz/corpus/elf_file and usdt_notes (built by tests/fuzz/make-seeds):
 * a few functions named as the attach stage looks for them, a C++-mangled one, and SDT notes
 * in the layout of sys/sdt.h (a .stapsdt.base section, a semaphore in .probes) with the
 * argument forms the agent reads. No C library: the files stay small. */
#define SDT_SITE(provider, name, sem, args, ...)                                              \
	__asm__ __volatile__("990: nop\n"                                                     \
			     ".pushsection .note.stapsdt,\"\",\"note\"\n"                     \
			     ".balign 4\n"                                                    \
			     ".4byte 992f-991f, 994f-993f, 3\n"                               \
			     "991: .asciz \"stapsdt\"\n"                                      \
			     "992: .balign 4\n"                                               \
			     "993: .8byte 990b\n"                                             \
			     ".8byte _.stapsdt.base\n"                                        \
			     ".8byte " sem "\n"                                               \
			     ".asciz \"" provider "\"\n"                                      \
			     ".asciz \"" name "\"\n"                                          \
			     ".asciz \"" args "\"\n"                                          \
			     "994: .balign 4\n"                                               \
			     ".popsection\n"                                                  \
			     ".ifndef _.stapsdt.base\n"                                       \
			     ".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n" \
			     ".weak _.stapsdt.base\n"                                         \
			     ".hidden _.stapsdt.base\n"                                       \
			     "_.stapsdt.base: .space 1\n"                                     \
			     ".size _.stapsdt.base, 1\n"                                      \
			     ".popsection\n"                                                  \
			     ".endif\n" ::__VA_ARGS__)

unsigned short otel_memory_alloc_semaphore __attribute__((section(".probes")));
static long counter = 7;
static char arena[4096];
static unsigned long used;

void *malloc(unsigned long size)
{
	void *p = arena + used;

	SDT_SITE("otel_memory", "alloc", "otel_memory_alloc_semaphore", "8@%%rdi 8@%%rsi -8@%%rdx",
		 "i"(0));
	used += size;
	return p;
}

void free(void *p)
{
	SDT_SITE("seed", "globals", "0", "8@%0 -4@-20(%%rbp) -4@$-5 8@counter(%%rip)",
		 "m"(counter));
	(void)p;
}

/* ns::resize(int) */
long cxx_resize(int n) __asm__("_ZN2ns6resizeEi");
long cxx_resize(int n)
{
	return counter += n;
}

void _start(void)
{
	free(malloc(16));
	cxx_resize(3);
	__asm__ __volatile__("mov $60, %eax\nxor %edi, %edi\nsyscall");
}
