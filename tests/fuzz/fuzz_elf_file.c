/* libFuzzer harness: ELF files as the symbolizer and the attach stage read them
 * (symbolize/elf_file.c): headers, the build id note, .gnu_debuglink, .dynsym and .symtab
 * with their versions, the address table and the fallback names (demangled) of lines_at. A
 * target's executables and libraries are the target's to write, so every byte is hostile.
 * The input goes to a file alone in a private directory (elf_file__open takes a path); the
 * build-id roots are switched off, so only a debug link can name another file, and it finds
 * nothing there but the input itself. */
#include <stdbool.h>

#include "fuzz.h"
#include "symbolize/elf_file.h"

static const char *const wanted[] = {"malloc", "free", "calloc", "realloc", "main", "_start"};

static void look_around(struct elf_file *f, uint64_t vaddr)
{
	const struct source_line *lines;
	uint64_t start;
	size_t count;
	unsigned char bytes[16];

	elf_file__function_at(f, vaddr, &start);
	elf_file__lines_at(f, vaddr, &lines, &count, &start);
	elf_file__read_vaddr(f, vaddr, bytes, sizeof(bytes));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const no_roots[] = {NULL};
	static bool ready;
	struct elf_file *f = NULL;
	const char *path;

	if (!ready) {
		fuzz_quiet();
		if (elf_file__set_debug_roots(no_roots) != 0)
			abort();
		ready = true;
	}
	path = fuzz_input_file("input.elf", data, size);
	if (elf_file__open(path, &f) != 0)
		return 0;
	elf_file__build_id(f);
	elf_file__is_shared_object(f);
	elf_file__debug_file_path(f);
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
		struct elf_symbol sym;

		if (elf_file__find_function(f, wanted[i], &sym) != 0)
			continue;
		look_around(f, sym.vaddr);
		look_around(f, sym.vaddr + (sym.size ? sym.size - 1 : 0));
		look_around(f, sym.vaddr + sym.size);
	}
	/* Addresses through the program headers: where each page of the file lands. */
	for (uint64_t offset = 0; offset < size; offset += 4096) {
		uint64_t vaddr;

		if (elf_file__offset_to_vaddr(f, offset + 64, &vaddr) == 0)
			look_around(f, vaddr);
	}
	elf_file__has_dwarf(f);
	elf_file__missing_alt_build_id(f);
	elf_file__free(f);
	return 0;
}
