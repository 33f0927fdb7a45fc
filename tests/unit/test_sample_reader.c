/* The sample record's decoding (agent/collect/sample_reader.h): a record carries only the
 * sections its header names, each decoded into the agent's struct alloc_sample; a record whose
 * lengths break a bound or do not fit in it is refused whole, and nothing past it is read. */
#include <errno.h>
#include <stdlib.h>

#include "unit.h"
#include "collect/sample_reader.h"

struct built {
	unsigned char bytes[sizeof(struct alloc_record) + ALLOC_RECORD_REGS_BYTES +
			    ALLOC_MAX_STACK_DEPTH * 8 + sizeof(struct alloc_context) + 8192];
	size_t len;
};

static void append(struct built *b, const void *data, size_t len)
{
	memcpy(b->bytes + b->len, data, len);
	b->len += (len + 7) & ~(size_t)7;
}

static struct alloc_record header(void)
{
	return (struct alloc_record){ .pid = 42, .tid = 43, .size = 100, .caller_address = 0x401234,
				      .time_ns = 7, .weighted_bytes = 0, .entry = ALLOC_ENTRY_NEW };
}

static struct alloc_sample *decoded(void)
{
	struct alloc_sample *out = malloc(SAMPLE_DECODED_BYTES);

	if (out)
		memset(out, 0xa5, SAMPLE_DECODED_BYTES);
	return out;
}

/* A kernel-walk record: header, a Custom Labels context of 10 data bytes, three pcs. */
static void kernel_record(struct built *b)
{
	struct alloc_record rec = header();
	struct alloc_context context = { .kind = ALLOC_CONTEXT_CUSTOM_LABELS, .bytes = 10 };
	__u64 pcs[3] = { 0x401000, 0x402000, 0x403000 };

	memcpy(context.data, "\x03\x05keyvalue", 10);
	rec.flags = ALLOC_SAMPLE_KERNEL_FRAMES;
	rec.context_bytes = ALLOC_CONTEXT_HEAD_BYTES + 10;
	rec.stack_bytes = sizeof(pcs);
	b->len = 0;
	append(b, &rec, sizeof(rec));
	append(b, &context, rec.context_bytes);
	append(b, pcs, sizeof(pcs));
}

static void test_kernel_walk_record_is_header_context_and_pcs(void)
{
	struct alloc_sample *out = decoded();
	struct built b;
	__u64 pc;

	kernel_record(&b);
	/* 64 + 42 (padded to 48) + 24: no registers, no frame-pointer room. */
	CHECK_EQ_U64(b.len, 136);
	CHECK(sample_record__decode(b.bytes, b.len, out) == 0);
	CHECK_EQ_U64(out->pid, 42);
	CHECK_EQ_U64(out->tid, 43);
	CHECK_EQ_U64(out->size, 100);
	CHECK_EQ_U64(out->caller_address, 0x401234);
	CHECK_EQ_U64(out->entry, ALLOC_ENTRY_NEW);
	CHECK_EQ_U64(out->flags, ALLOC_SAMPLE_KERNEL_FRAMES);
	CHECK_EQ_U64(out->stack_bytes, 0);
	CHECK_EQ_U64(out->context.kind, ALLOC_CONTEXT_CUSTOM_LABELS);
	CHECK_EQ_U64(out->context.bytes, 10);
	CHECK(memcmp(out->context.data, "\x03\x05keyvalue", 10) == 0);
	CHECK_EQ_U64(out->stack_copy_bytes, 24);
	memcpy(&pc, out->stack_copy + 16, sizeof(pc));
	CHECK_EQ_U64(pc, 0x403000);
	/* The walk's first pc stands for the registers it does not send. */
	CHECK_EQ_U64(out->regs[ALLOC_REG_IP], 0x401000);
	CHECK_EQ_U64(out->regs[ALLOC_REG_SP], 0);
	free(out);
}

static void test_copy_record_may_end_with_unfilled_room(void)
{
	struct alloc_sample *out = decoded();
	struct alloc_record rec = header();
	__u64 regs[ALLOC_REG__COUNT] = { 0x401000, 0x7ffc0000, 0x7ffc0100 };
	unsigned char stack[512];
	struct built b;

	memset(stack, 0x5a, sizeof(stack));
	rec.regs_bytes = ALLOC_RECORD_REGS_BYTES;
	rec.stack_bytes = 256; /* the copy reached 256 bytes of the 512 reserved */
	b.len = 0;
	append(&b, &rec, sizeof(rec));
	append(&b, regs, sizeof(regs));
	append(&b, stack, sizeof(stack));
	CHECK(sample_record__decode(b.bytes, b.len, out) == 0);
	CHECK_EQ_U64(out->regs[ALLOC_REG_SP], 0x7ffc0000);
	CHECK_EQ_U64(out->regs[ALLOC_REG_BP], 0x7ffc0100);
	CHECK_EQ_U64(out->context.kind, ALLOC_CONTEXT_NONE);
	CHECK_EQ_U64(out->stack_copy_bytes, 256);
	CHECK(out->stack_copy[255] == 0x5a);
	free(out);
}

static void test_frame_pointer_record_is_header_and_walk(void)
{
	struct alloc_sample *out = decoded();
	struct alloc_record rec = header();
	__u64 pcs[2] = { 0x401000, 0x402000 };
	struct built b;

	rec.fp_status = sizeof(pcs);
	rec.fp_bytes = sizeof(pcs);
	b.len = 0;
	append(&b, &rec, sizeof(rec));
	append(&b, pcs, sizeof(pcs));
	CHECK_EQ_U64(b.len, 80);
	CHECK(sample_record__decode(b.bytes, b.len, out) == 0);
	CHECK_EQ_U64(out->stack_bytes, 16);
	CHECK_EQ_U64(out->stack[1], 0x402000);
	CHECK_EQ_U64(out->stack_copy_bytes, 0);

	/* A failed walk: its errno and no frames. */
	rec.fp_status = -EFAULT;
	rec.fp_bytes = 0;
	CHECK(sample_record__decode(&rec, sizeof(rec), out) == 0);
	CHECK(out->stack_bytes == -EFAULT);
	free(out);
}

/* Every way the lengths can lie: the record is refused and the output left as it was. */
static void test_lengths_that_break_a_bound_are_refused(void)
{
	struct alloc_sample *out = decoded();
	struct alloc_record *rec;
	struct built b;

	kernel_record(&b);
	rec = (struct alloc_record *)b.bytes;
	for (size_t len = 0; len < b.len; len++)
		CHECK(sample_record__decode(b.bytes, len, out) == -EBADMSG);
#define REFUSED(field, value)                                                                  \
	do {                                                                                   \
		kernel_record(&b);                                                             \
		rec->field = (value);                                                          \
		CHECK(sample_record__decode(b.bytes, sizeof(b.bytes), out) == -EBADMSG);       \
	} while (0)
	REFUSED(regs_bytes, 8);
	REFUSED(fp_bytes, ALLOC_MAX_STACK_DEPTH * 8 + 8);
	REFUSED(fp_bytes, 12);
	REFUSED(fp_status, 16); /* says 16 bytes walked, carries none */
	REFUSED(context_bytes, ALLOC_CONTEXT_HEAD_BYTES - 1);
	REFUSED(context_bytes, sizeof(struct alloc_context) + 1);
	REFUSED(stack_bytes, UNWIND_MAX_FRAMES * 8 + 8);
	REFUSED(stack_bytes, 20);
	REFUSED(stack_bytes, 0xffffffffu);
	REFUSED(flags, ALLOC_SAMPLE_DROPPED);
	kernel_record(&b);
	rec->flags = 0;
	rec->stack_bytes = ALLOC_MAX_STACK_COPY + 1;
	CHECK(sample_record__decode(b.bytes, sizeof(b.bytes), out) == -EBADMSG);
	/* Untouched by every refusal. */
	CHECK(((unsigned char *)out)[0] == 0xa5 && out->stack_copy[0] == 0xa5);
	free(out);
}

/* A context whose head claims more data than its section carries keeps only the section's. */
static void test_context_head_cannot_claim_past_its_section(void)
{
	struct alloc_sample *out = decoded();
	struct alloc_context *context;
	struct built b;

	kernel_record(&b);
	context = (struct alloc_context *)(b.bytes + sizeof(struct alloc_record));
	context->bytes = 200;
	CHECK(sample_record__decode(b.bytes, b.len, out) == 0);
	CHECK_EQ_U64(out->context.bytes, 10);
	free(out);
}

int main(void)
{
	RUN(test_kernel_walk_record_is_header_context_and_pcs);
	RUN(test_copy_record_may_end_with_unfilled_room);
	RUN(test_frame_pointer_record_is_header_and_walk);
	RUN(test_lengths_that_break_a_bound_are_refused);
	RUN(test_context_head_cannot_claim_past_its_section);
	return unit_summary("sample_reader");
}
