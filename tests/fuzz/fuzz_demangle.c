/* libFuzzer harness: C++ and Rust symbol names as the symbolizer demangles them
 * (symbolize/demangle.c: libiberty's rust_demangle, then libstdc++'s __cxa_demangle; only the
 * former is instrumented, being linked statically): names come from a target's symbol tables and DWARF, so they
 * are the target's to choose. The fuzz_elf_file harness reaches the same code only through
 * whole ELF files; this one mutates the names themselves. */
#include "fuzz.h"
#include "symbolize/demangle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *name = fuzz_text(data, size);
	char *readable = demangle__readable(name);

	if (readable && !demangle__is_mangled(name))
		abort();
	free(readable);
	free(name);
	return 0;
}
