/* libFuzzer harness: SystemTap SDT notes (attach/usdt_notes.c): the note section, the
 * .stapsdt.base adjustment, semaphores through the program headers and every argument
 * string, then the BPF argument specs the attach stage would load. Notes come from the
 * target's files. The input goes to a file of its own (usdt_notes__read takes a path). */
#include "fuzz.h"
#include "attach/usdt_notes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct usdt_notes *notes = NULL;
	const char *path;
	size_t count;

	fuzz_quiet();
	path = fuzz_input_file("input.elf", data, size);
	if (usdt_notes__read(path, &notes) != 0)
		return 0;
	count = usdt_notes__count(notes);
	for (size_t i = 0; i < count; i++) {
		const struct usdt_probe *p = usdt_notes__at(notes, i);
		struct usdt_probe_spec spec;
		char message[256];

		if (!p || !p->provider || !p->name || !p->arg_text || p->arg_count > USDT_MAX_ARGS)
			abort();
		for (size_t n = 0; n <= p->arg_count + 1 && n <= USDT_PROBE_MAX_ARGS + 1; n++)
			usdt_probe__spec(p, n, &spec, message, sizeof(message));
		/* Every probe is found again by its own name. */
		if (!usdt_notes__find(notes, p->provider, p->name, NULL))
			abort();
	}
	if (usdt_notes__at(notes, count))
		abort();
	usdt_notes__free(notes);
	return 0;
}
