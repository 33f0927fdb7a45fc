/* usdt_notes: SDT argument strings of every operand form, and probes read from files this
 * test compiles with cc at run time: a small program that writes its own stapsdt notes
 * (the layout of sys/sdt.h, with a .stapsdt.base section and semaphores in .probes), built as
 * a PIE, a shared library, a -no-pie executable and a PIE whose notes are allocated. The
 * probe offsets must land on the marker instructions the program put at its probe sites,
 * semaphore offsets on the semaphores' initial values, and rip-relative arguments, applied
 * to a loaded copy of the library, on the variables they name. System libraries that carry
 * notes are compared with readelf -n. */
#include <asm/ptrace.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "attach/usdt_notes.h"
#include "unit.h"

/* The fixture program. SITE puts a 7-byte nop (nopl tag(%rax): 0f 1f 80 + the tag, little
 * endian) at the probe site and describes it in a note: "delta" pretends prelink moved the
 * file (the note's addresses are delta below where the file has them, .stapsdt.base says
 * by how much). NOTE_FLAGS is "" (not loaded, as sys/sdt.h writes them) or "aw" (gas
 * warns that a note should not be writable: hence --no-warn). */
/* clang-format off */
static const char fixture_source[] =
    "#define STR_(x) #x\n"
    "#define STR(x) STR_(x)\n"
    "#define SITE(tag, provider, name, sem, delta, args, ...) \\\n"
    "	__asm__ __volatile__(\"990: .byte 0x0f, 0x1f, 0x80\\n\" \\\n"
    "		\".4byte \" #tag \"\\n\" \\\n"
    "		\".pushsection .note.stapsdt,\\\"\" STR(NOTE_FLAGS) \"\\\",\\\"note\\\"\\n\" \\\n"
    "		\".balign 4\\n\" \\\n"
    "		\".4byte 992f-991f, 994f-993f, 3\\n\" \\\n"
    "		\"991: .asciz \\\"stapsdt\\\"\\n\" \\\n"
    "		\"992: .balign 4\\n\" \\\n"
    "		\"993: .8byte 990b - \" #delta \"\\n\" \\\n"
    "		\".8byte _.stapsdt.base - \" #delta \"\\n\" \\\n"
    "		\".8byte \" sem \"\\n\" \\\n"
    "		\".asciz \\\"\" provider \"\\\"\\n\" \\\n"
    "		\".asciz \\\"\" name \"\\\"\\n\" \\\n"
    "		\".asciz \\\"\" args \"\\\"\\n\" \\\n"
    "		\"994: .balign 4\\n\" \\\n"
    "		\".popsection\\n\" \\\n"
    "		\".ifndef _.stapsdt.base\\n\" \\\n"
    "		\".pushsection .stapsdt.base,\\\"aG\\\",\\\"progbits\\\",.stapsdt.base,comdat\\n\" \\\n"
    "		\".weak _.stapsdt.base\\n\" \\\n"
    "		\".hidden _.stapsdt.base\\n\" \\\n"
    "		\"_.stapsdt.base: .space 1\\n\" \\\n"
    "		\".size _.stapsdt.base, 1\\n\" \\\n"
    "		\".popsection\\n\" \\\n"
    "		\".endif\\n\" :: __VA_ARGS__)\n"
    "\n"
    "unsigned short otel_memory_alloc_semaphore __attribute__((section(\".probes\"))) = 0x5a17;\n"
    "unsigned short fixture_moved_semaphore __attribute__((section(\".probes\"))) = 0x3c4b;\n"
    "static long fixture_counter = 7;\n"
    "static int fixture_array[4] = {1, 2, 3, 4};\n"
    "\n"
    "void *fixture_counter_address(void)\n"
    "{\n"
    "	return &fixture_counter;\n"
    "}\n"
    "\n"
    "void fixture_sites(void)\n"
    "{\n"
    "	SITE(0x44332211, \"otel_memory\", \"alloc\", \"otel_memory_alloc_semaphore\", 0,\n"
    "	     \"8@%%rdi 8@%%rsi -8@%%rdx\", \"i\"(0));\n"
    "	SITE(0x88776655, \"fixture\", \"globals\", \"0\", 0, \"8@%0 -4@%1 -4@$-5\",\n"
    "	     \"m\"(fixture_counter), \"m\"(fixture_array[2]));\n"
    "	SITE(0xccbbaa99, \"fixture\", \"moved\", \"fixture_moved_semaphore - 0x1000\", 0x1000,\n"
    "	     \"2@%%ax  1@%%ah\", \"i\"(0));\n"
    "	SITE(0x10fedcba, \"otel_memory\", \"alloc\", \"otel_memory_alloc_semaphore\", 0,\n"
    "	     \"8@%%rbx 8@%%r12 8@$4096\", \"i\"(0));\n"
    "	SITE(0x5e5e5e5e, \"fixture\", \"indexed\", \"0\", 0, \"8@%%rdi 8@(%%rax,%%rbx,8)\",\n"
    "	     \"i\"(0));\n"
    "	SITE(0x6f6f6f6f, \"fixture\", \"nosymbol\", \"0\", 0, \"8@fixture_nowhere(%%rip)\",\n"
    "	     \"i\"(0));\n"
    "}\n"
    "\n"
    "int main(void)\n"
    "{\n"
    "	fixture_sites();\n"
    "	return 0;\n"
    "}\n";
/* clang-format on */

#define FIXTURE_PROBES 6

enum variant { VARIANT_PIE, VARIANT_SHARED, VARIANT_NOPIE, VARIANT_ALLOCATED, VARIANT__COUNT };

static const struct {
	const char *file;
	const char *flags;
} variants[VARIANT__COUNT] = {
    [VARIANT_PIE] = {"usdt_pie", "-fPIE -pie -DNOTE_FLAGS="},
    [VARIANT_SHARED] = {"libusdt.so", "-fPIC -shared -DNOTE_FLAGS="},
    [VARIANT_NOPIE] = {"usdt_nopie", "-fno-pie -no-pie -DNOTE_FLAGS="},
    [VARIANT_ALLOCATED] = {"usdt_allocated", "-fPIE -pie -DNOTE_FLAGS=aw -Wa,--no-warn"},
};

static char work_dir[] = "/tmp/allocscope-usdt-XXXXXX";
static bool fixtures_built;

static const char *variant_path(enum variant v)
{
	/* work_dir is short: these fit. */
	static char paths[VARIANT__COUNT][128];

	snprintf(paths[v], sizeof(paths[v]), "%s/%s", work_dir, variants[v].file);
	return paths[v];
}

static bool build_fixtures(void)
{
	char source[128], cmd[1024];
	FILE *out;
	int v;

	snprintf(source, sizeof(source), "%s/usdt_fixture.c", work_dir);
	out = fopen(source, "w");
	if (!out)
		return false;
	fputs(fixture_source, out);
	if (fclose(out) != 0)
		return false;
	for (v = 0; v < VARIANT__COUNT; v++) {
		snprintf(cmd, sizeof(cmd), "cc -O1 -Wall -Werror %s '%s' -o '%s'",
			 variants[v].flags, source, variant_path(v));
		if (system(cmd) != 0) {
			fprintf(stderr, "  cannot build the fixture: %s\n", cmd);
			return false;
		}
	}
	return true;
}

/* Runs cmd and hands each output line to fn. false when cmd failed. */
static bool each_output_line(const char *cmd, void (*fn)(const char *line, void *arg), void *arg)
{
	char line[1024];
	FILE *pipe = popen(cmd, "r");

	if (!pipe)
		return false;
	while (fgets(line, sizeof(line), pipe))
		fn(line, arg);
	return pclose(pipe) == 0;
}

/* readelf's view of a file's probes. */
struct readelf_probe {
	char provider[64], name[64], args[512];
	uint64_t location, base, semaphore;
};

struct readelf_notes {
	struct readelf_probe probes[256];
	int count;
	bool overflow;
	uint64_t base_section; /* address of .stapsdt.base; 0 when absent */
	uint64_t load_offset[16], load_vaddr[16], load_filesz[16];
	int load_count;
};

static void copy_rest(char *dst, size_t size, const char *src)
{
	size_t len = strcspn(src, "\n");

	snprintf(dst, size, "%.*s", (int)len, src);
}

static void readelf_note_line(const char *line, void *arg)
{
	struct readelf_notes *n = arg;
	struct readelf_probe *p = n->count > 0 ? &n->probes[n->count - 1] : NULL;
	unsigned long long location, base, semaphore;
	const char *field;

	if ((field = strstr(line, "Provider: ")) != NULL) {
		if (n->count == 256) {
			n->overflow = true;
			return;
		}
		p = &n->probes[n->count++];
		memset(p, 0, sizeof(*p));
		copy_rest(p->provider, sizeof(p->provider), field + strlen("Provider: "));
	} else if (!p || n->overflow) {
		return;
	} else if ((field = strstr(line, "Name: ")) != NULL) {
		copy_rest(p->name, sizeof(p->name), field + strlen("Name: "));
	} else if ((field = strstr(line, "Arguments: ")) != NULL) {
		copy_rest(p->args, sizeof(p->args), field + strlen("Arguments: "));
	} else if ((field = strstr(line, "Location: ")) != NULL &&
		   sscanf(field, "Location: %llx, Base: %llx, Semaphore: %llx", &location, &base,
			  &semaphore) == 3) {
		p->location = location;
		p->base = base;
		p->semaphore = semaphore;
	}
}

static void readelf_section_line(const char *line, void *arg)
{
	struct readelf_notes *n = arg;
	const char *field = strstr(line, " .stapsdt.base ");
	unsigned long long addr;

	if (field && sscanf(field, " .stapsdt.base PROGBITS %llx", &addr) == 1)
		n->base_section = addr;
}

static void readelf_load_line(const char *line, void *arg)
{
	struct readelf_notes *n = arg;
	unsigned long long offset, vaddr, paddr, filesz;

	if (n->load_count < 16 && sscanf(line, " LOAD 0x%llx 0x%llx 0x%llx 0x%llx", &offset, &vaddr,
					 &paddr, &filesz) == 4) {
		n->load_offset[n->load_count] = offset;
		n->load_vaddr[n->load_count] = vaddr;
		n->load_filesz[n->load_count] = filesz;
		n->load_count++;
	}
}

static bool readelf_notes(const char *path, struct readelf_notes *n)
{
	char cmd[PATH_MAX + 64];

	memset(n, 0, sizeof(*n));
	snprintf(cmd, sizeof(cmd), "readelf -nW '%s'", path);
	if (!each_output_line(cmd, readelf_note_line, n) || n->overflow)
		return false;
	snprintf(cmd, sizeof(cmd), "readelf -SW '%s'", path);
	if (!each_output_line(cmd, readelf_section_line, n))
		return false;
	snprintf(cmd, sizeof(cmd), "readelf -lW '%s'", path);
	return each_output_line(cmd, readelf_load_line, n) && n->load_count > 0;
}

/* The file offset of vaddr by readelf's program headers; UINT64_MAX when in none. */
static uint64_t readelf_offset(const struct readelf_notes *n, uint64_t vaddr)
{
	int i;

	for (i = 0; i < n->load_count; i++) {
		if (vaddr >= n->load_vaddr[i] && vaddr < n->load_vaddr[i] + n->load_filesz[i])
			return n->load_offset[i] + (vaddr - n->load_vaddr[i]);
	}
	return UINT64_MAX;
}

/* nm's value of symbol in path; UINT64_MAX when absent. */
static uint64_t nm_value(const char *path, const char *symbol)
{
	char cmd[PATH_MAX + 128], line[512];
	unsigned long long value;
	uint64_t found = UINT64_MAX;
	char type, name[256];
	FILE *pipe;

	snprintf(cmd, sizeof(cmd), "nm --defined-only '%s'", path);
	pipe = popen(cmd, "r");
	if (!pipe)
		return UINT64_MAX;
	while (fgets(line, sizeof(line), pipe)) {
		if (sscanf(line, "%llx %c %255s", &value, &type, name) == 3 &&
		    strcmp(name, symbol) == 0)
			found = value;
	}
	pclose(pipe);
	return found;
}

static bool read_file_at(const char *path, uint64_t offset, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t got;

	if (fd < 0)
		return false;
	got = pread(fd, buf, len, (off_t)offset);
	close(fd);
	return got == (ssize_t)len;
}

/* The bytes SITE(tag, ...) put at a probe site. */
static void site_marker(uint32_t tag, uint8_t marker[7])
{
	marker[0] = 0x0f;
	marker[1] = 0x1f;
	marker[2] = 0x80;
	memcpy(marker + 3, &tag, 4);
}

static bool file_has_marker(const char *path, uint64_t offset, uint32_t tag)
{
	uint8_t expected[7], actual[7];

	site_marker(tag, expected);
	return read_file_at(path, offset, actual, sizeof(actual)) &&
	       memcmp(expected, actual, sizeof(actual)) == 0;
}

static uint16_t file_u16(const char *path, uint64_t offset)
{
	uint16_t value = 0;

	if (!read_file_at(path, offset, &value, sizeof(value)))
		return 0;
	return value;
}

static struct usdt_arg parse_single(const char *text, int *ret)
{
	struct usdt_arg arg;
	size_t count = 99;

	memset(&arg, 0xee, sizeof(arg));
	*ret = usdt_arg_parse(text, &arg, 1, &count);
	if (*ret == 0 && count != 1) {
		fprintf(stderr, "  '%s' gave %zu arguments\n", text, count);
		unit_case_failures++;
	}
	if (*ret != 0 && count != 0) {
		fprintf(stderr, "  '%s' failed but left count %zu\n", text, count);
		unit_case_failures++;
	}
	return arg;
}

static void test_parse_registers(void)
{
	static const struct {
		const char *text;
		size_t offset;
		unsigned size;
		bool is_signed;
	} cases[] = {
	    {"8@%rax", offsetof(struct pt_regs, rax), 8, false},
	    {"4@%eax", offsetof(struct pt_regs, rax), 4, false},
	    {"2@%ax", offsetof(struct pt_regs, rax), 2, false},
	    {"1@%al", offsetof(struct pt_regs, rax), 1, false},
	    {"1@%ah", offsetof(struct pt_regs, rax) + 1, 1, false},
	    {"8@%rbx", offsetof(struct pt_regs, rbx), 8, false},
	    {"-4@%ebx", offsetof(struct pt_regs, rbx), 4, true},
	    {"1@%bh", offsetof(struct pt_regs, rbx) + 1, 1, false},
	    {"8@%rcx", offsetof(struct pt_regs, rcx), 8, false},
	    {"-1@%cl", offsetof(struct pt_regs, rcx), 1, true},
	    {"8@%rdx", offsetof(struct pt_regs, rdx), 8, false},
	    {"2@%dx", offsetof(struct pt_regs, rdx), 2, false},
	    {"8@%rsi", offsetof(struct pt_regs, rsi), 8, false},
	    {"4@%esi", offsetof(struct pt_regs, rsi), 4, false},
	    {"2@%si", offsetof(struct pt_regs, rsi), 2, false},
	    {"1@%sil", offsetof(struct pt_regs, rsi), 1, false},
	    {"8@%rdi", offsetof(struct pt_regs, rdi), 8, false},
	    {"-1@%dil", offsetof(struct pt_regs, rdi), 1, true},
	    {"8@%rbp", offsetof(struct pt_regs, rbp), 8, false},
	    {"1@%bpl", offsetof(struct pt_regs, rbp), 1, false},
	    {"8@%rsp", offsetof(struct pt_regs, rsp), 8, false},
	    {"4@%esp", offsetof(struct pt_regs, rsp), 4, false},
	    {"8@%r8", offsetof(struct pt_regs, r8), 8, false},
	    {"-4@%r9d", offsetof(struct pt_regs, r9), 4, true},
	    {"2@%r10w", offsetof(struct pt_regs, r10), 2, false},
	    {"1@%r11b", offsetof(struct pt_regs, r11), 1, false},
	    {"8@%r12", offsetof(struct pt_regs, r12), 8, false},
	    {"8@%r13", offsetof(struct pt_regs, r13), 8, false},
	    {"-8@%r14", offsetof(struct pt_regs, r14), 8, true},
	    {"1@%r15b", offsetof(struct pt_regs, r15), 1, false},
	    {"8@%rip", offsetof(struct pt_regs, rip), 8, false},
	    /* A register narrower than the argument: its value, widened. */
	    {"8@%eax", offsetof(struct pt_regs, rax), 4, false},
	    {"-8@%r8w", offsetof(struct pt_regs, r8), 2, true},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret;
		struct usdt_arg arg = parse_single(cases[i].text, &ret);

		if (ret != 0 || arg.spec.kind != USDT_ARG_REG ||
		    arg.spec.reg_offset != (__s32)cases[i].offset ||
		    arg.spec.size != cases[i].size || arg.spec.is_signed != cases[i].is_signed ||
		    arg.symbol[0] != '\0' || arg.vaddr != 0) {
			fprintf(stderr,
				"  '%s': ret %d kind %u offset %d size %u signed %u; expected "
				"offset %zu size %u signed %d\n",
				cases[i].text, ret, arg.spec.kind, arg.spec.reg_offset,
				arg.spec.size, arg.spec.is_signed, cases[i].offset, cases[i].size,
				cases[i].is_signed);
			unit_case_failures++;
		}
	}
}

static void test_parse_constants(void)
{
	int ret;
	struct usdt_arg arg = parse_single("8@$16", &ret);

	CHECK_EQ_U64(ret, 0);
	CHECK_EQ_U64(arg.spec.kind, USDT_ARG_CONST);
	CHECK_EQ_U64(arg.spec.value_or_offset, 16);
	CHECK_EQ_U64(arg.spec.size, 8);
	CHECK_EQ_U64(arg.spec.is_signed, 0);

	arg = parse_single("-4@$-5", &ret);
	CHECK_EQ_U64(ret, 0);
	CHECK_EQ_U64(arg.spec.kind, USDT_ARG_CONST);
	CHECK_EQ_U64(arg.spec.value_or_offset, (uint64_t)-5);
	CHECK_EQ_U64(arg.spec.size, 4);
	CHECK_EQ_U64(arg.spec.is_signed, 1);

	arg = parse_single("2@$0x1f", &ret);
	CHECK_EQ_U64(ret, 0);
	CHECK_EQ_U64(arg.spec.value_or_offset, 0x1f);
	CHECK_EQ_U64(arg.spec.size, 2);

	arg = parse_single("8@$18446744073709551615", &ret);
	CHECK_EQ_U64(ret, 0);
	CHECK_EQ_U64(arg.spec.value_or_offset, UINT64_MAX);
}

static void test_parse_memory(void)
{
	static const struct {
		const char *text;
		size_t reg;
		uint64_t offset;
		const char *symbol;
		unsigned size;
		bool is_signed;
	} cases[] = {
	    {"-8@-8(%rbp)", offsetof(struct pt_regs, rbp), (uint64_t)-8, "", 8, true},
	    {"8@(%rax)", offsetof(struct pt_regs, rax), 0, "", 8, false},
	    {"4@16(%rsp)", offsetof(struct pt_regs, rsp), 16, "", 4, false},
	    {"8@-80(%rbx)", offsetof(struct pt_regs, rbx), (uint64_t)-80, "", 8, false},
	    {"1@0x10(%r12)", offsetof(struct pt_regs, r12), 16, "", 1, false},
	    {"8@fixture_counter(%rip)", offsetof(struct pt_regs, rip), 0, "fixture_counter", 8,
	     false},
	    {"-4@8+fixture_array(%rip)", offsetof(struct pt_regs, rip), 8, "fixture_array", 4,
	     true},
	    {"-4@fixture_array+8(%rip)", offsetof(struct pt_regs, rip), 8, "fixture_array", 4,
	     true},
	    {"2@counter.0-4(%rip)", offsetof(struct pt_regs, rip), (uint64_t)-4, "counter.0", 2,
	     false},
	    {"8@24(%rip)", offsetof(struct pt_regs, rip), 24, "", 8, false},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret;
		struct usdt_arg arg = parse_single(cases[i].text, &ret);

		if (ret != 0 || arg.spec.kind != USDT_ARG_REG_DEREF ||
		    arg.spec.reg_offset != (__s32)cases[i].reg ||
		    arg.spec.value_or_offset != cases[i].offset ||
		    strcmp(arg.symbol, cases[i].symbol) != 0 || arg.spec.size != cases[i].size ||
		    arg.spec.is_signed != cases[i].is_signed) {
			fprintf(stderr,
				"  '%s': ret %d kind %u reg %d offset %#llx symbol '%s' size %u "
				"signed %u\n",
				cases[i].text, ret, arg.spec.kind, arg.spec.reg_offset,
				(unsigned long long)arg.spec.value_or_offset, arg.symbol,
				arg.spec.size, arg.spec.is_signed);
			unit_case_failures++;
		}
	}
}

static void test_parse_argument_lists(void)
{
	struct usdt_arg args[4];
	size_t count = 99;

	CHECK_EQ_U64(usdt_arg_parse("8@%rdi 8@%rsi -8@%rdx", args, 4, &count), 0);
	CHECK_EQ_U64(count, 3);
	CHECK_EQ_U64(args[0].spec.reg_offset, offsetof(struct pt_regs, rdi));
	CHECK_EQ_U64(args[1].spec.reg_offset, offsetof(struct pt_regs, rsi));
	CHECK_EQ_U64(args[2].spec.reg_offset, offsetof(struct pt_regs, rdx));
	CHECK_EQ_U64(args[2].spec.is_signed, 1);

	/* Any run of spaces or tabs separates arguments. */
	CHECK_EQ_U64(usdt_arg_parse("  8@%r14\t -4@%edx  ", args, 4, &count), 0);
	CHECK_EQ_U64(count, 2);
	CHECK_EQ_U64(args[1].spec.size, 4);

	count = 99;
	CHECK_EQ_U64(usdt_arg_parse("", args, 4, &count), 0);
	CHECK_EQ_U64(count, 0);

	CHECK_EQ_U64(usdt_arg_parse("1@%al 1@%bl 1@%cl 1@%dl 1@%sil", args, 4, &count), -E2BIG);
	CHECK_EQ_U64(count, 0);
}

static void test_parse_errors(void)
{
	static const struct {
		const char *text;
		int error;
	} cases[] = {
	    {"8@%xyz", -EINVAL},	  /* unknown register */
	    {"8@%eip", -EINVAL},	  /* not a general-purpose register */
	    {"8%rax", -EINVAL},		  /* missing @ */
	    {"%rax", -EINVAL},		  /* SDT v1 style, no size */
	    {"3@%rax", -EINVAL},	  /* size 3 */
	    {"16@%rax", -EINVAL},	  /* size 16 */
	    {"0@%rax", -EINVAL},	  /* size 0 */
	    {"@%rax", -EINVAL},		  /* no size */
	    {"x8@%rax", -EINVAL},	  /* not a number */
	    {"8@", -EINVAL},		  /* no operand */
	    {"8@$", -EINVAL},		  /* no constant */
	    {"8@$abc", -EINVAL},	  /* symbolic constant */
	    {"8@12", -EINVAL},		  /* absolute memory */
	    {"8@(%rax,%rbx,8)", -EINVAL}, /* index register */
	    {"8@8(,%rbx,8)", -EINVAL},	  /* index register */
	    {"8@(%eax)", -EINVAL},	  /* 32-bit address */
	    {"8@(%rax", -EINVAL},	  /* unclosed */
	    {"8@counter(%rbx)", -EINVAL}, /* symbol relative to a register */
	    {"8@counter@GOTPCREL(%rip)", -EINVAL},
	    {"8@1+2+x(%rip)", -EINVAL},
	    {"8@%xmm0", -EINVAL},
	};
	char long_symbol[USDT_SYMBOL_MAX + 32];
	struct usdt_arg args[4];
	size_t i, count;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret;

		parse_single(cases[i].text, &ret);
		if (ret != cases[i].error) {
			fprintf(stderr, "  '%s' gave %d, expected %d\n", cases[i].text, ret,
				cases[i].error);
			unit_case_failures++;
		}
	}
	snprintf(long_symbol, sizeof(long_symbol), "8@%0*d(%%rip)", USDT_SYMBOL_MAX + 4, 0);
	long_symbol[2] = 'x';
	count = 99;
	CHECK_EQ_U64(usdt_arg_parse(long_symbol, args, 4, &count), -ENAMETOOLONG);
	CHECK_EQ_U64(count, 0);

	/* One bad argument fails the whole string. */
	count = 99;
	CHECK_EQ_U64(usdt_arg_parse("8@%rdi 3@%rsi", args, 4, &count), -EINVAL);
	CHECK_EQ_U64(count, 0);
}

static struct usdt_notes *read_variant(enum variant v)
{
	struct usdt_notes *notes = NULL;
	int ret;

	if (!fixtures_built) {
		fprintf(stderr, "  no fixtures (cc failed)\n");
		unit_case_failures++;
		return NULL;
	}
	ret = usdt_notes__read(variant_path(v), &notes);
	if (ret) {
		fprintf(stderr, "  cannot read %s: %s\n", variant_path(v), strerror(-ret));
		unit_case_failures++;
	}
	return notes;
}

/* Everything the fixture's probes should say, in one variant. */
static void check_fixture_variant(enum variant v)
{
	const char *path = variant_path(v);
	struct usdt_notes *notes = read_variant(v);
	const struct usdt_probe *alloc, *alloc2, *globals, *moved, *indexed, *nosymbol;
	struct readelf_notes *expected = malloc(sizeof(*expected));
	uint64_t counter, array;
	size_t i;

	if (!notes || !expected) {
		CHECK(expected != NULL);
		usdt_notes__free(notes);
		free(expected);
		return;
	}
	fprintf(stderr, "  %s\n", variants[v].file);
	CHECK_EQ_U64(usdt_notes__count(notes), FIXTURE_PROBES);
	CHECK(usdt_notes__at(notes, FIXTURE_PROBES) == NULL);

	/* Provider, name, arguments and semaphores as readelf prints them; probe sites too,
	 * except where the note pretends the file was moved. */
	CHECK(readelf_notes(path, expected));
	CHECK_EQ_U64(expected->count, FIXTURE_PROBES);
	for (i = 0; i < usdt_notes__count(notes) && i < (size_t)expected->count; i++) {
		const struct usdt_probe *p = usdt_notes__at(notes, i);
		const struct readelf_probe *e = &expected->probes[i];
		uint64_t moved_by = expected->base_section - e->base;

		CHECK_STR(p->provider, e->provider);
		CHECK_STR(p->name, e->name);
		CHECK_STR(p->arg_text, e->args);
		CHECK_EQ_U64(p->vaddr, e->location + moved_by);
		CHECK_EQ_U64(p->semaphore_vaddr, e->semaphore ? e->semaphore + moved_by : 0);
		CHECK_EQ_U64(p->file_offset, readelf_offset(expected, p->vaddr));
	}

	alloc = usdt_notes__find(notes, "otel_memory", "alloc", NULL);
	alloc2 = usdt_notes__find(notes, "otel_memory", "alloc", alloc);
	globals = usdt_notes__find(notes, "fixture", "globals", NULL);
	moved = usdt_notes__find(notes, "fixture", "moved", NULL);
	indexed = usdt_notes__find(notes, "fixture", "indexed", NULL);
	nosymbol = usdt_notes__find(notes, "fixture", "nosymbol", NULL);
	CHECK(alloc && alloc2 && globals && moved && indexed && nosymbol);
	CHECK(usdt_notes__find(notes, "otel_memory", "alloc", alloc2) == NULL);
	CHECK(usdt_notes__find(notes, "otel_memory", "free", NULL) == NULL);
	CHECK(usdt_notes__find(notes, "fixture", "alloc", NULL) == NULL);
	if (!alloc || !alloc2 || !globals || !moved || !indexed || !nosymbol)
		goto out;

	/* The probe sites are where the program put its markers. */
	CHECK(file_has_marker(path, alloc->file_offset, 0x44332211));
	CHECK(file_has_marker(path, alloc2->file_offset, 0x10fedcba));
	CHECK(file_has_marker(path, globals->file_offset, 0x88776655));
	CHECK(file_has_marker(path, moved->file_offset, 0xccbbaa99));
	CHECK(file_has_marker(path, indexed->file_offset, 0x5e5e5e5e));

	/* Semaphores: their initial values in the file. */
	CHECK(alloc->semaphore_offset != 0);
	CHECK_EQ_U64(file_u16(path, alloc->semaphore_offset), 0x5a17);
	CHECK_EQ_U64(alloc2->semaphore_offset, alloc->semaphore_offset);
	CHECK_EQ_U64(alloc->semaphore_vaddr, nm_value(path, "otel_memory_alloc_semaphore"));
	CHECK(moved->semaphore_offset != 0);
	CHECK_EQ_U64(file_u16(path, moved->semaphore_offset), 0x3c4b);
	CHECK_EQ_U64(moved->semaphore_vaddr, nm_value(path, "fixture_moved_semaphore"));
	CHECK_EQ_U64(globals->semaphore_vaddr, 0);
	CHECK_EQ_U64(globals->semaphore_offset, 0);

	/* Arguments. */
	CHECK_EQ_U64(alloc->error, 0);
	CHECK_EQ_U64(alloc->arg_count, 3);
	CHECK_EQ_U64(alloc->args[0].spec.kind, USDT_ARG_REG);
	CHECK_EQ_U64(alloc->args[0].spec.reg_offset, offsetof(struct pt_regs, rdi));
	CHECK_EQ_U64(alloc->args[2].spec.reg_offset, offsetof(struct pt_regs, rdx));
	CHECK_EQ_U64(alloc->args[2].spec.is_signed, 1);
	CHECK_EQ_U64(alloc2->error, 0);
	CHECK_EQ_U64(alloc2->arg_count, 3);
	CHECK_EQ_U64(alloc2->args[1].spec.reg_offset, offsetof(struct pt_regs, r12));
	CHECK_EQ_U64(alloc2->args[2].spec.kind, USDT_ARG_CONST);
	CHECK_EQ_U64(alloc2->args[2].spec.value_or_offset, 4096);
	CHECK_EQ_U64(moved->error, 0);
	CHECK_EQ_U64(moved->arg_count, 2);
	CHECK_EQ_U64(moved->args[1].spec.reg_offset, offsetof(struct pt_regs, rax) + 1);

	/* Rip-relative memory: the variables' vaddrs, and the distance from the probe site. */
	counter = nm_value(path, "fixture_counter");
	array = nm_value(path, "fixture_array");
	CHECK(counter != UINT64_MAX && array != UINT64_MAX);
	CHECK_EQ_U64(globals->error, 0);
	CHECK_EQ_U64(globals->arg_count, 3);
	CHECK_STR(globals->args[0].symbol, "fixture_counter");
	CHECK_EQ_U64(globals->args[0].vaddr, counter);
	CHECK_EQ_U64(globals->args[0].spec.kind, USDT_ARG_REG_DEREF);
	CHECK_EQ_U64(globals->args[0].spec.reg_offset, offsetof(struct pt_regs, rip));
	CHECK_EQ_U64(globals->args[0].spec.value_or_offset, counter - globals->vaddr);
	CHECK_EQ_U64(globals->args[0].spec.size, 8);
	CHECK_STR(globals->args[1].symbol, "fixture_array");
	CHECK_EQ_U64(globals->args[1].vaddr, array + 8);
	CHECK_EQ_U64(globals->args[1].spec.value_or_offset, array + 8 - globals->vaddr);
	CHECK_EQ_U64(globals->args[1].spec.size, 4);
	CHECK_EQ_U64(globals->args[1].spec.is_signed, 1);
	CHECK_EQ_U64(globals->args[2].spec.kind, USDT_ARG_CONST);
	CHECK_EQ_U64(globals->args[2].spec.value_or_offset, (uint64_t)-5);

	/* Unusable probes are listed, with the reason. */
	CHECK_EQ_U64(indexed->error, -EINVAL);
	CHECK(strstr(indexed->error_text, "unsupported USDT argument '8@(%rax,%rbx,8)' in "
					  "fixture:indexed") != NULL);
	CHECK_EQ_U64(nosymbol->error, -ENOENT);
	CHECK(strstr(nosymbol->error_text, "fixture_nowhere") != NULL);
out:
	usdt_notes__free(notes);
	free(expected);
}

static void test_fixture_pie(void)
{
	check_fixture_variant(VARIANT_PIE);
}

static void test_fixture_shared_library(void)
{
	check_fixture_variant(VARIANT_SHARED);
}

static void test_fixture_no_pie(void)
{
	check_fixture_variant(VARIANT_NOPIE);
}

static void test_fixture_allocated_notes(void)
{
	check_fixture_variant(VARIANT_ALLOCATED);
}

/* What the BPF side does at the probe, done by hand on a loaded copy of the library: the
 * probe site is where its markers are, and ip + value_or_offset is the variable. */
static void test_specs_apply_to_loaded_library(void)
{
	struct usdt_notes *notes = read_variant(VARIANT_SHARED);
	const struct usdt_probe *globals;
	void *(*counter_address)(void);
	void *handle = NULL;
	const uint8_t *site;
	uint8_t marker[7];
	Dl_info info;

	if (!notes)
		return;
	globals = usdt_notes__find(notes, "fixture", "globals", NULL);
	CHECK(globals != NULL);
	handle = dlopen(variant_path(VARIANT_SHARED), RTLD_NOW | RTLD_LOCAL);
	CHECK(handle != NULL);
	if (!globals || !handle)
		goto out;
	*(void **)&counter_address = dlsym(handle, "fixture_counter_address");
	CHECK(counter_address != NULL);
	if (!counter_address || !dladdr((void *)counter_address, &info)) {
		CHECK(!"dladdr");
		goto out;
	}
	/* The library's first segment is at vaddr 0: its base is its load bias. */
	site = (const uint8_t *)info.dli_fbase + globals->vaddr;
	site_marker(0x88776655, marker);
	CHECK(memcmp(site, marker, sizeof(marker)) == 0);
	CHECK(site + globals->args[0].spec.value_or_offset == (const uint8_t *)counter_address());
	CHECK_EQ_U64(*(const long *)(site + globals->args[0].spec.value_or_offset), 7);
	CHECK_EQ_U64(*(const int *)(site + globals->args[1].spec.value_or_offset), 3);
out:
	if (handle)
		dlclose(handle);
	usdt_notes__free(notes);
}

static void test_probe_spec(void)
{
	struct usdt_notes *notes = read_variant(VARIANT_PIE);
	const struct usdt_probe *alloc, *moved, *indexed;
	struct usdt_probe_spec spec;
	char message[256];

	if (!notes)
		return;
	alloc = usdt_notes__find(notes, "otel_memory", "alloc", NULL);
	moved = usdt_notes__find(notes, "fixture", "moved", NULL);
	indexed = usdt_notes__find(notes, "fixture", "indexed", NULL);
	CHECK(alloc && moved && indexed);
	if (!alloc || !moved || !indexed)
		goto out;

	CHECK_EQ_U64(usdt_probe__spec(alloc, 3, &spec, message, sizeof(message)), 0);
	CHECK_EQ_U64(spec.n_args, 3);
	CHECK_EQ_U64(spec.args[0].kind, USDT_ARG_REG);
	CHECK_EQ_U64(spec.args[0].reg_offset, offsetof(struct pt_regs, rdi));
	CHECK_EQ_U64(spec.args[1].reg_offset, offsetof(struct pt_regs, rsi));
	CHECK_EQ_U64(spec.args[2].reg_offset, offsetof(struct pt_regs, rdx));
	CHECK_EQ_U64(spec.args[2].is_signed, 1);

	CHECK_EQ_U64(usdt_probe__spec(moved, 3, &spec, message, sizeof(message)), -ERANGE);
	CHECK(strstr(message, "fixture:moved has 2 arguments where 3 are expected") != NULL);
	CHECK_EQ_U64(usdt_probe__spec(alloc, 4, &spec, NULL, 0), -ERANGE);

	CHECK_EQ_U64(usdt_probe__spec(indexed, 1, &spec, message, sizeof(message)), -EINVAL);
	CHECK(strstr(message, "unsupported USDT argument '8@(%rax,%rbx,8)' in fixture:indexed") !=
	      NULL);
out:
	usdt_notes__free(notes);
}

static void test_file_without_notes(void)
{
	struct usdt_notes *notes = NULL;

	CHECK_EQ_U64(usdt_notes__read("/usr/bin/true", &notes), 0);
	CHECK(notes != NULL);
	CHECK_EQ_U64(usdt_notes__count(notes), 0);
	CHECK(usdt_notes__at(notes, 0) == NULL);
	CHECK(usdt_notes__find(notes, "otel_memory", "alloc", NULL) == NULL);
	usdt_notes__free(notes);
}

static void test_bad_paths(void)
{
	struct usdt_notes *notes = (struct usdt_notes *)&notes;
	char path[PATH_MAX];

	CHECK_EQ_U64(usdt_notes__read("/nonexistent/allocscope/libnothing.so", &notes), -ENOENT);
	CHECK(notes == NULL);
	CHECK_EQ_U64(usdt_notes__read("/tmp", &notes), -EISDIR);
	CHECK(notes == NULL);
	snprintf(path, sizeof(path), "%s/usdt_fixture.c", work_dir);
	CHECK_EQ_U64(usdt_notes__read(path, &notes), -ENOEXEC);
	CHECK(notes == NULL);
	usdt_notes__free(NULL);
}

static void fifo_hung(int sig)
{
	static const char message[] = "FAIL test_fifo: usdt_notes__read hung on a FIFO\n";

	(void)sig;
	(void)!write(STDERR_FILENO, message, sizeof(message) - 1);
	_exit(1);
}

/* A target can put a FIFO where its library was (the path in its maps): refused at once,
 * never waited on. alarm() turns a hang into a failure. */
static void test_fifo(void)
{
	struct usdt_notes *notes = (struct usdt_notes *)&notes;
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/fifo.so", work_dir);
	CHECK(mkfifo(path, 0600) == 0);
	signal(SIGALRM, fifo_hung);
	alarm(30);
	CHECK_EQ_U64(usdt_notes__read(path, &notes), -ENOEXEC);
	CHECK(notes == NULL);
	alarm(0);
	unlink(path);
}

/* Every probe of a system file as readelf -n prints it; false when the file is absent or
 * carries no notes. */
static bool check_against_readelf(const char *path)
{
	struct readelf_notes *expected;
	struct usdt_notes *notes = NULL;
	size_t i;
	int ret;

	if (access(path, R_OK) != 0)
		return false;
	expected = malloc(sizeof(*expected));
	CHECK(expected != NULL);
	if (!expected)
		return false;
	CHECK(readelf_notes(path, expected));
	if (expected->count == 0) {
		free(expected);
		return false;
	}
	ret = usdt_notes__read(path, &notes);
	CHECK_EQ_U64(ret, 0);
	fprintf(stderr, "  %s: %zu probes\n", path, usdt_notes__count(notes));
	CHECK_EQ_U64(usdt_notes__count(notes), expected->count);
	for (i = 0; i < usdt_notes__count(notes) && i < (size_t)expected->count; i++) {
		const struct usdt_probe *p = usdt_notes__at(notes, i);
		const struct readelf_probe *e = &expected->probes[i];
		uint64_t moved_by = expected->base_section ? expected->base_section - e->base : 0;

		CHECK_STR(p->provider, e->provider);
		CHECK_STR(p->name, e->name);
		CHECK_STR(p->arg_text, e->args);
		CHECK_EQ_U64(p->vaddr, e->location + moved_by);
		CHECK_EQ_U64(p->file_offset, readelf_offset(expected, p->vaddr));
		CHECK_EQ_U64(p->semaphore_vaddr, e->semaphore ? e->semaphore + moved_by : 0);
		if (p->semaphore_vaddr)
			CHECK_EQ_U64(p->semaphore_offset,
				     readelf_offset(expected, p->semaphore_vaddr));
		if (p->error)
			fprintf(stderr, "  %s\n", p->error_text);
		CHECK_EQ_U64(p->error, 0);
		CHECK(p->arg_count > 0 || p->arg_text[0] == '\0');
	}
	usdt_notes__free(notes);
	free(expected);
	return true;
}

static void test_system_libraries(void)
{
	static const char *const others[] = {
	    "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
	    "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
	};
	const char *libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
	int checked = 0;
	size_t i;

	if (check_against_readelf(libc)) {
		struct usdt_notes *notes = NULL;
		const struct usdt_probe *p;

		checked++;
		CHECK_EQ_U64(usdt_notes__read(libc, &notes), 0);
		p = usdt_notes__find(notes, "libc", "memory_malloc_retry", NULL);
		CHECK(p != NULL);
		if (p) {
			CHECK_EQ_U64(p->error, 0);
			CHECK_EQ_U64(p->arg_count, 1);
		}
		usdt_notes__free(notes);
	} else {
		fprintf(stderr, "  %s has no stapsdt notes: libc probes not checked\n", libc);
	}
	for (i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		checked += check_against_readelf(others[i]);
	if (checked == 0)
		fprintf(stderr, "  no system library with stapsdt notes: skipped\n");
}

int main(void)
{
	char cmd[PATH_MAX + 16];

	if (!mkdtemp(work_dir)) {
		perror("mkdtemp");
		return 1;
	}
	fixtures_built = build_fixtures();

	RUN(test_parse_registers);
	RUN(test_parse_constants);
	RUN(test_parse_memory);
	RUN(test_parse_argument_lists);
	RUN(test_parse_errors);
	RUN(test_fixture_pie);
	RUN(test_fixture_shared_library);
	RUN(test_fixture_no_pie);
	RUN(test_fixture_allocated_notes);
	RUN(test_specs_apply_to_loaded_library);
	RUN(test_probe_spec);
	RUN(test_file_without_notes);
	RUN(test_bad_paths);
	RUN(test_fifo);
	RUN(test_system_libraries);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", work_dir);
	return unit_summary("usdt_notes");
}
