/* libFuzzer harness: a sample record as the agent reads it from the samples ring
 * (sample_record__decode, agent/collect/sample_reader.c): a header and the sections it names.
 * The BPF program writes these, but the reader trusts nothing: a refused record leaves the
 * output untouched, and an accepted one stays within every section's bound and never takes
 * more bytes than the record has (the input is exactly sized: AddressSanitizer sees any read
 * past it). */
#include "fuzz.h"
#include "collect/sample_reader.h"

static struct alloc_sample *out;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *copy;
	size_t used;
	int ret;

	if (!out) {
		out = malloc(SAMPLE_DECODED_BYTES);
		if (!out)
			return 0;
	}
	/* A copy of exactly size bytes, so a read past the record is a heap overflow. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	memset(out, 0xa5, sizeof(*out));
	ret = sample_record__decode(copy, size, out);
	if (ret != 0) {
		if (ret != -EBADMSG || ((unsigned char *)out)[0] != 0xa5)
			abort(); /* refusals are -EBADMSG and leave out untouched */
		free(copy);
		return 0;
	}
	used = sizeof(struct alloc_record) + (out->stack_bytes > 0 ? (size_t)out->stack_bytes : 0) +
	       out->stack_copy_bytes;
	if (out->stack_copy_bytes > ALLOC_MAX_STACK_COPY ||
	    out->stack_bytes > (__s32)sizeof(out->stack) ||
	    out->context.bytes > ALLOC_CONTEXT_MAX_BYTES || used > size ||
	    out->flags & ALLOC_SAMPLE_DROPPED)
		abort();
	if (out->flags & ALLOC_SAMPLE_KERNEL_FRAMES &&
	    out->stack_copy_bytes > UNWIND_MAX_FRAMES * sizeof(__u64))
		abort();
	free(copy);
	return 0;
}
