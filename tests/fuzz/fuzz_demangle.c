/* libFuzzer harness: C++ symbol names as the symbolizer demangles them (symbolize/demangle.c,
 * libstdc++'s __cxa_demangle): names come from a target's symbol tables and DWARF, so they
 * are the target's to choose. The fuzz_elf_file harness reaches the same code only through
 * whole ELF files; this one mutates the names themselves. */
#include "fuzz.h"
#include "symbolize/demangle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *name = fuzz_text(data, size);
	char *readable = demangle__cxx(name);

	if (readable && !demangle__is_mangled(name))
		abort();
	free(readable);
	free(name);
	return 0;
}
