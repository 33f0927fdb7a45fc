/* SystemTap SDT notes (the USDT probes of sys/sdt.h) read with libelf. Each note of type 3
 * owned by "stapsdt" holds three addresses (the probe site, the link-time address of the
 * .stapsdt.base section, the semaphore or 0) and three strings: provider, name, arguments.
 * When prelink moved a file, .stapsdt.base tells by how much, and both addresses move with
 * it. Addresses become file offsets through the PT_LOAD headers, because that is what uprobes
 * (and their reference counters) are attached by.
 *
 * Arguments are "[-]N@OPERAND" separated by spaces: N the size in bytes, negative for signed
 * values, the operand in AT&T syntax. Registers are named by their struct pt_regs offset;
 * rip-relative memory is expressed relative to the probe site, where ip stands when a uprobe
 * handler runs, so one spec serves every process however the file was relocated. */
#include "attach/usdt_notes.h"

#include <asm/ptrace.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

_Static_assert(offsetof(struct pt_regs, r15) == USDT_REG_R15, "usdt_reg_offset");
_Static_assert(offsetof(struct pt_regs, rbp) == USDT_REG_BP, "usdt_reg_offset");
_Static_assert(offsetof(struct pt_regs, rbx) == USDT_REG_BX, "usdt_reg_offset");
_Static_assert(offsetof(struct pt_regs, r8) == USDT_REG_R8, "usdt_reg_offset");
_Static_assert(offsetof(struct pt_regs, rax) == USDT_REG_AX, "usdt_reg_offset");
_Static_assert(offsetof(struct pt_regs, rdi) == USDT_REG_DI, "usdt_reg_offset");
_Static_assert(offsetof(struct pt_regs, rip) == USDT_REG_IP, "usdt_reg_offset");
_Static_assert(offsetof(struct pt_regs, rsp) == USDT_REG_SP, "usdt_reg_offset");
_Static_assert(sizeof(struct pt_regs) == USDT_PT_REGS_SIZE, "usdt_reg_offset");

#define NT_STAPSDT    3
#define STAPSDT_OWNER "stapsdt"

/* Longest argument ("-8@-2147483648(%r15)" is 20 bytes; symbols make it longer). */
#define ARG_TEXT_MAX (USDT_SYMBOL_MAX + 64)

struct usdt_notes {
	struct usdt_probe *probes;
	char **strings; /* per probe: provider, name and arguments, each NUL-terminated */
	size_t count, capacity;
};

/* A general-purpose register by width: names[0] is the 8-byte name, names[3] the 1-byte. */
static const struct {
	const char *names[4];
	int offset;
} registers[] = {
    {{"rax", "eax", "ax", "al"}, USDT_REG_AX},
    {{"rbx", "ebx", "bx", "bl"}, USDT_REG_BX},
    {{"rcx", "ecx", "cx", "cl"}, USDT_REG_CX},
    {{"rdx", "edx", "dx", "dl"}, USDT_REG_DX},
    {{"rsi", "esi", "si", "sil"}, USDT_REG_SI},
    {{"rdi", "edi", "di", "dil"}, USDT_REG_DI},
    {{"rbp", "ebp", "bp", "bpl"}, USDT_REG_BP},
    {{"rsp", "esp", "sp", "spl"}, USDT_REG_SP},
    {{"r8", "r8d", "r8w", "r8b"}, USDT_REG_R8},
    {{"r9", "r9d", "r9w", "r9b"}, USDT_REG_R9},
    {{"r10", "r10d", "r10w", "r10b"}, USDT_REG_R10},
    {{"r11", "r11d", "r11w", "r11b"}, USDT_REG_R11},
    {{"r12", "r12d", "r12w", "r12b"}, USDT_REG_R12},
    {{"r13", "r13d", "r13w", "r13b"}, USDT_REG_R13},
    {{"r14", "r14d", "r14w", "r14b"}, USDT_REG_R14},
    {{"r15", "r15d", "r15w", "r15b"}, USDT_REG_R15},
    {{"rip", NULL, NULL, NULL}, USDT_REG_IP},
};

static const unsigned register_widths[4] = {8, 4, 2, 1};

/* The legacy high bytes: the second byte of their register's slot. */
static const struct {
	const char *name;
	int offset;
} high_byte_registers[] = {
    {"ah", USDT_REG_AX + 1},
    {"bh", USDT_REG_BX + 1},
    {"ch", USDT_REG_CX + 1},
    {"dh", USDT_REG_DX + 1},
};

static bool find_register(const char *name, int *offset, unsigned *width)
{
	size_t i, w;

	for (i = 0; i < sizeof(registers) / sizeof(registers[0]); i++) {
		for (w = 0; w < 4; w++) {
			if (registers[i].names[w] && strcmp(registers[i].names[w], name) == 0) {
				*offset = registers[i].offset;
				*width = register_widths[w];
				return true;
			}
		}
	}
	for (i = 0; i < sizeof(high_byte_registers) / sizeof(high_byte_registers[0]); i++) {
		if (strcmp(high_byte_registers[i].name, name) == 0) {
			*offset = high_byte_registers[i].offset;
			*width = 1;
			return true;
		}
	}
	return false;
}

/* A whole string as a signed decimal or 0x-hex integer; values above INT64_MAX wrap as the
 * assembler would store them. */
static bool parse_integer(const char *text, __u64 *value)
{
	bool negative = false;
	unsigned long long magnitude;
	char *end;

	if (*text == '-' || *text == '+') {
		negative = *text == '-';
		text++;
	}
	if (!isdigit((unsigned char)*text))
		return false;
	errno = 0;
	magnitude = strtoull(text, &end, 0);
	if (errno != 0 || *end != '\0')
		return false;
	*value = negative ? 0 - (__u64)magnitude : (__u64)magnitude;
	return true;
}

static bool is_symbol_start(char c)
{
	return isalpha((unsigned char)c) || c == '_' || c == '.' || c == '$';
}

static bool is_symbol(const char *text, size_t len)
{
	size_t i;

	if (len == 0 || !is_symbol_start(text[0]))
		return false;
	for (i = 1; i < len; i++) {
		if (!is_symbol_start(text[i]) && !isdigit((unsigned char)text[i]))
			return false;
	}
	return true;
}

/* A displacement: "", "N", "sym", "sym+N", "sym-N" or "N+sym" (GCC writes the last for PIC
 * code). symbol gets "" when there is none. */
static int parse_displacement(const char *text, __u64 *offset, char *symbol, char *why,
			      size_t why_size)
{
	const char *whole = text, *plus, *sign;
	size_t symbol_len;

	*offset = 0;
	symbol[0] = '\0';
	if (*text == '\0' || parse_integer(text, offset))
		return 0;
	if (strchr(text, '@')) {
		snprintf(why, why_size, "relocation operators such as @GOTPCREL are not supported");
		return -EINVAL;
	}
	plus = strchr(text, '+');
	if (plus && !is_symbol_start(text[0])) {
		/* "N+sym" */
		char number[32];
		size_t number_len = (size_t)(plus - text);

		if (number_len >= sizeof(number))
			goto bad;
		memcpy(number, text, number_len);
		number[number_len] = '\0';
		if (!parse_integer(number, offset))
			goto bad;
		text = plus + 1;
		symbol_len = strlen(text);
	} else {
		/* "sym", "sym+N", "sym-N" */
		sign = strpbrk(text, "+-");
		symbol_len = sign ? (size_t)(sign - text) : strlen(text);
		if (sign && !parse_integer(sign, offset))
			goto bad;
	}
	if (!is_symbol(text, symbol_len))
		goto bad;
	if (symbol_len >= USDT_SYMBOL_MAX) {
		snprintf(why, why_size, "the symbol is longer than %d bytes", USDT_SYMBOL_MAX - 1);
		return -ENAMETOOLONG;
	}
	memcpy(symbol, text, symbol_len);
	symbol[symbol_len] = '\0';
	return 0;
bad:
	snprintf(why, why_size, "cannot read the displacement '%s'", whole);
	return -EINVAL;
}

/* "off(%reg)", "(%reg)" or "sym(%rip)" (operand is modified) into out->spec. */
static int parse_memory_operand(char *operand, struct usdt_arg *out, char *why, size_t why_size)
{
	char *open = strchr(operand, '(');
	size_t len = strlen(operand);
	unsigned width;
	int offset, ret;

	if (!open || operand[len - 1] != ')') {
		snprintf(why, why_size, "the operand is neither %%reg, $constant nor memory (...)");
		return -EINVAL;
	}
	operand[len - 1] = '\0';
	*open = '\0';
	if (strchr(open + 1, ',')) {
		snprintf(why, why_size, "index registers are not supported");
		return -EINVAL;
	}
	if (open[1] != '%' || !find_register(open + 2, &offset, &width)) {
		snprintf(why, why_size, "unknown register '%.32s'", open + 1);
		return -EINVAL;
	}
	if (width != 8) {
		snprintf(why, why_size, "addresses in %.32s are not supported", open + 1);
		return -EINVAL;
	}
	ret = parse_displacement(operand, &out->spec.value_or_offset, out->symbol, why, why_size);
	if (ret)
		return ret;
	if (out->symbol[0] && offset != USDT_REG_IP) {
		snprintf(why, why_size, "a symbol relative to %.32s is not supported", open + 1);
		return -EINVAL;
	}
	out->spec.kind = USDT_ARG_REG_DEREF;
	out->spec.reg_offset = offset;
	return 0;
}

/* One "[-]N@OPERAND" (NUL-terminated) into out. why gets the reason on error. */
static int parse_one_arg(const char *text, struct usdt_arg *out, char *why, size_t why_size)
{
	char operand[ARG_TEXT_MAX];
	const char *at = strchr(text, '@');
	const char *p = text;
	unsigned width;
	long size;
	char *end;
	int offset;

	memset(out, 0, sizeof(*out));
	if (!at) {
		snprintf(why, why_size, "no '@' between the size and the operand");
		return -EINVAL;
	}
	if (*p == '-') {
		out->spec.is_signed = 1;
		p++;
	}
	if (!isdigit((unsigned char)*p)) {
		snprintf(why, why_size, "no size before '@'");
		return -EINVAL;
	}
	size = strtol(p, &end, 10);
	if (end != at || (size != 1 && size != 2 && size != 4 && size != 8)) {
		snprintf(why, why_size, "the size is not 1, 2, 4 or 8 bytes");
		return -EINVAL;
	}
	out->spec.size = (__u8)size;
	if (strlen(at + 1) >= sizeof(operand)) {
		snprintf(why, why_size, "the operand is too long");
		return -ENAMETOOLONG;
	}
	strcpy(operand, at + 1);

	if (operand[0] == '$') {
		if (!parse_integer(operand + 1, &out->spec.value_or_offset)) {
			snprintf(why, why_size, "cannot read the constant");
			return -EINVAL;
		}
		out->spec.kind = USDT_ARG_CONST;
		return 0;
	}
	if (operand[0] == '%') {
		if (!find_register(operand + 1, &offset, &width)) {
			snprintf(why, why_size, "unknown register '%.32s'", operand);
			return -EINVAL;
		}
		out->spec.kind = USDT_ARG_REG;
		out->spec.reg_offset = offset;
		/* "8@%eax" means eax's value widened, not whatever the upper half holds. */
		if (width < out->spec.size)
			out->spec.size = (__u8)width;
		return 0;
	}
	return parse_memory_operand(operand, out, why, why_size);
}

/* usdt_arg_parse with the failing argument and the reason in why. */
static int parse_args(const char *text, struct usdt_arg *out, size_t max, size_t *count,
		      char *bad_arg, size_t bad_arg_size, char *why, size_t why_size)
{
	char arg[ARG_TEXT_MAX];
	const char *p = text;
	size_t n = 0;
	int ret;

	*count = 0;
	for (;;) {
		size_t len;

		while (isspace((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		len = 0;
		while (p[len] && !isspace((unsigned char)p[len]))
			len++;
		snprintf(bad_arg, bad_arg_size, "%.*s", (int)len, p);
		if (n == max) {
			snprintf(why, why_size, "more than %zu arguments", max);
			return -E2BIG;
		}
		if (len >= sizeof(arg)) {
			snprintf(why, why_size, "the argument is too long");
			return -ENAMETOOLONG;
		}
		memcpy(arg, p, len);
		arg[len] = '\0';
		ret = parse_one_arg(arg, &out[n], why, why_size);
		if (ret)
			return ret;
		n++;
		p += len;
	}
	*count = n;
	return 0;
}

int usdt_arg_parse(const char *text, struct usdt_arg *out, size_t max, size_t *count)
{
	char bad_arg[ARG_TEXT_MAX], why[256];

	return parse_args(text, out, max, count, bad_arg, sizeof(bad_arg), why, sizeof(why));
}

/* What reading one file needs besides the notes. */
struct elf_view {
	Elf *elf;
	GElf_Ehdr ehdr;
	size_t shstrndx; /* SHN_UNDEF without section names */
	bool has_base;
	uint64_t base_vaddr; /* of .stapsdt.base */
};

static const char *section_name(const struct elf_view *view, const GElf_Shdr *shdr)
{
	if (view->shstrndx == SHN_UNDEF)
		return NULL;
	return elf_strptr(view->elf, view->shstrndx, shdr->sh_name);
}

static void find_base(struct elf_view *view)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr shdr;

	view->has_base = false;
	while ((scn = elf_nextscn(view->elf, scn)) != NULL) {
		const char *name;

		if (!gelf_getshdr(scn, &shdr))
			continue;
		name = section_name(view, &shdr);
		if (name && strcmp(name, ".stapsdt.base") == 0) {
			view->has_base = true;
			view->base_vaddr = shdr.sh_addr;
			break;
		}
	}
}

/* The file offset of vaddr through the PT_LOAD segments that hold file bytes for it
 * (executable ones only when exec). -ENOEXEC when there is none. */
static int vaddr_to_offset(const struct elf_view *view, uint64_t vaddr, bool exec, uint64_t *offset)
{
	size_t phnum, i;
	GElf_Phdr phdr;

	if (elf_getphdrnum(view->elf, &phnum) != 0)
		return -ENOEXEC;
	for (i = 0; i < phnum; i++) {
		if (!gelf_getphdr(view->elf, (int)i, &phdr) || phdr.p_type != PT_LOAD)
			continue;
		if (exec && !(phdr.p_flags & PF_X))
			continue;
		if (vaddr >= phdr.p_vaddr && vaddr - phdr.p_vaddr < phdr.p_filesz) {
			*offset = phdr.p_offset + (vaddr - phdr.p_vaddr);
			return 0;
		}
	}
	return -ENOEXEC;
}

/* The value of the defined symbol name from .symtab or .dynsym. -ENOENT when absent,
 * -ENOTUNIQ when two symbols of that name (statics of two files) have different values. */
static int find_symbol(const struct elf_view *view, const char *name, uint64_t *value)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr shdr;
	bool found = false;

	while ((scn = elf_nextscn(view->elf, scn)) != NULL) {
		Elf_Data *data;
		size_t count, i;

		if (!gelf_getshdr(scn, &shdr) ||
		    (shdr.sh_type != SHT_SYMTAB && shdr.sh_type != SHT_DYNSYM) ||
		    shdr.sh_entsize == 0)
			continue;
		data = elf_getdata(scn, NULL);
		if (!data)
			continue;
		count = shdr.sh_size / shdr.sh_entsize;
		for (i = 0; i < count; i++) {
			GElf_Sym sym;
			const char *sym_name;
			int type;

			if (!gelf_getsym(data, (int)i, &sym) || sym.st_shndx == SHN_UNDEF)
				continue;
			type = GELF_ST_TYPE(sym.st_info);
			if (type == STT_SECTION || type == STT_FILE)
				continue;
			sym_name = elf_strptr(view->elf, shdr.sh_link, sym.st_name);
			if (!sym_name || strcmp(sym_name, name) != 0)
				continue;
			if (found && *value != sym.st_value)
				return -ENOTUNIQ;
			*value = sym.st_value;
			found = true;
		}
	}
	return found ? 0 : -ENOENT;
}

static uint64_t read_address(const unsigned char *bytes, size_t size, bool big_endian)
{
	uint64_t value = 0;
	size_t i;

	for (i = 0; i < size; i++) {
		size_t at = big_endian ? i : size - 1 - i;

		value = (value << 8) | bytes[at];
	}
	return value;
}

static int append_probe(struct usdt_notes *notes, struct usdt_probe **probe, char *strings)
{
	if (notes->count == notes->capacity) {
		size_t capacity = notes->capacity ? notes->capacity * 2 : 8;
		struct usdt_probe *probes;
		char **all_strings;

		probes = realloc(notes->probes, capacity * sizeof(*probes));
		if (!probes)
			return -ENOMEM;
		notes->probes = probes;
		all_strings = realloc(notes->strings, capacity * sizeof(*all_strings));
		if (!all_strings)
			return -ENOMEM;
		notes->strings = all_strings;
		notes->capacity = capacity;
	}
	notes->strings[notes->count] = strings;
	*probe = &notes->probes[notes->count++];
	memset(*probe, 0, sizeof(**probe));
	return 0;
}

static void set_error(struct usdt_probe *p, int error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(struct usdt_probe *p, int error, const char *fmt, ...)
{
	va_list ap;

	p->error = error;
	va_start(ap, fmt);
	vsnprintf(p->error_text, sizeof(p->error_text), fmt, ap);
	va_end(ap);
}

/* Arguments, with rip-relative memory resolved against the file. */
static void resolve_args(const struct elf_view *view, struct usdt_probe *p)
{
	char bad_arg[ARG_TEXT_MAX], why[256];
	size_t i;
	int ret;

	if (view->ehdr.e_machine != EM_X86_64) {
		set_error(p, -ENOTSUP, "%s:%s: arguments are read for x86-64 only (e_machine %u)",
			  p->provider, p->name, (unsigned)view->ehdr.e_machine);
		return;
	}
	ret = parse_args(p->arg_text, p->args, USDT_MAX_ARGS, &p->arg_count, bad_arg,
			 sizeof(bad_arg), why, sizeof(why));
	if (ret) {
		set_error(p, ret, "unsupported USDT argument '%s' in %s:%s: %s", bad_arg,
			  p->provider, p->name, why);
		return;
	}
	for (i = 0; i < p->arg_count; i++) {
		struct usdt_arg *arg = &p->args[i];
		uint64_t target;

		if (arg->spec.kind != USDT_ARG_REG_DEREF || arg->spec.reg_offset != USDT_REG_IP)
			continue;
		if (arg->symbol[0]) {
			ret = find_symbol(view, arg->symbol, &target);
			if (ret) {
				set_error(p, ret, "argument %zu of %s:%s reads '%s', %s", i + 1,
					  p->provider, p->name, arg->symbol,
					  ret == -ENOTUNIQ
					      ? "a name several symbols of the file carry"
					      : "which is in no symbol table of the file");
				return;
			}
			target += arg->spec.value_or_offset;
		} else {
			target = p->vaddr + arg->spec.value_or_offset;
		}
		arg->vaddr = target;
		arg->spec.value_or_offset = target - p->vaddr;
	}
}

/* One note's descriptor into a new probe. Malformed notes are skipped. */
static int add_note(struct usdt_notes *notes, const struct elf_view *view,
		    const unsigned char *desc, size_t desc_size)
{
	bool big_endian = view->ehdr.e_ident[EI_DATA] == ELFDATA2MSB;
	size_t address_size = view->ehdr.e_ident[EI_CLASS] == ELFCLASS32 ? 4 : 8;
	uint64_t pc, note_base, semaphore;
	const char *text, *name_end, *provider_end;
	struct usdt_probe *p;
	size_t text_size;
	char *strings;
	int ret;

	if (desc_size < 3 * address_size + 2)
		return 0;
	text = (const char *)desc + 3 * address_size;
	text_size = desc_size - 3 * address_size;
	provider_end = memchr(text, '\0', text_size);
	if (!provider_end)
		return 0;
	name_end = memchr(provider_end + 1, '\0', text_size - (size_t)(provider_end + 1 - text));
	if (!name_end)
		return 0;
	pc = read_address(desc, address_size, big_endian);
	note_base = read_address(desc + address_size, address_size, big_endian);
	semaphore = read_address(desc + 2 * address_size, address_size, big_endian);

	/* Two more NULs: the arguments always end, and are "" when the note has none. */
	strings = calloc(1, text_size + 2);
	if (!strings)
		return -ENOMEM;
	memcpy(strings, text, text_size);
	ret = append_probe(notes, &p, strings);
	if (ret) {
		free(strings);
		return ret;
	}
	p->provider = strings;
	p->name = strings + (provider_end + 1 - text);
	p->arg_text = strings + (name_end + 1 - text);

	/* Prelink moved the file by the distance between where .stapsdt.base is and where
	 * the note says it was. */
	if (view->has_base && note_base != 0) {
		pc += view->base_vaddr - note_base;
		if (semaphore)
			semaphore += view->base_vaddr - note_base;
	}
	p->vaddr = pc;
	ret = vaddr_to_offset(view, pc, true, &p->file_offset);
	if (ret) {
		set_error(p, ret, "%s:%s is at 0x%llx, in no executable segment of the file",
			  p->provider, p->name, (unsigned long long)pc);
		return 0;
	}
	if (semaphore) {
		p->semaphore_vaddr = semaphore;
		ret = vaddr_to_offset(view, semaphore, false, &p->semaphore_offset);
		if (ret) {
			set_error(
			    p, ret,
			    "the semaphore of %s:%s is at 0x%llx, in no loaded part of the file",
			    p->provider, p->name, (unsigned long long)semaphore);
			return 0;
		}
	}
	resolve_args(view, p);
	return 0;
}

static int read_note_section(struct usdt_notes *notes, const struct elf_view *view, Elf_Scn *scn)
{
	Elf_Data *data = elf_getdata(scn, NULL);
	size_t offset = 0, name_offset, desc_offset;
	GElf_Nhdr nhdr;
	int ret;

	if (!data || !data->d_buf)
		return 0;
	while ((offset = gelf_getnote(data, offset, &nhdr, &name_offset, &desc_offset)) > 0) {
		const char *owner = (const char *)data->d_buf + name_offset;

		if (nhdr.n_type != NT_STAPSDT || nhdr.n_namesz != sizeof(STAPSDT_OWNER) ||
		    memcmp(owner, STAPSDT_OWNER, sizeof(STAPSDT_OWNER)) != 0)
			continue;
		ret = add_note(notes, view, (const unsigned char *)data->d_buf + desc_offset,
			       nhdr.n_descsz);
		if (ret)
			return ret;
	}
	return 0;
}

int usdt_notes__read(const char *path, struct usdt_notes **out)
{
	struct usdt_notes *notes = NULL;
	struct elf_view view = {0};
	Elf_Scn *scn = NULL;
	GElf_Shdr shdr;
	struct stat st;
	int fd, ret;

	*out = NULL;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return -ENOTSUP;
	/* O_NONBLOCK: a FIFO put where a library was must not block the open. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = S_ISDIR(st.st_mode) ? -EISDIR : -ENOEXEC;
		goto out;
	}
	view.elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!view.elf || elf_kind(view.elf) != ELF_K_ELF || !gelf_getehdr(view.elf, &view.ehdr)) {
		ret = -ENOEXEC;
		goto out;
	}
	if (elf_getshdrstrndx(view.elf, &view.shstrndx) != 0)
		view.shstrndx = SHN_UNDEF;
	find_base(&view);

	notes = calloc(1, sizeof(*notes));
	if (!notes) {
		ret = -ENOMEM;
		goto out;
	}
	/* Every note section: the notes live in .note.stapsdt, but a linker script may name
	 * it otherwise, and the owner and type say what a note is. */
	while ((scn = elf_nextscn(view.elf, scn)) != NULL) {
		if (!gelf_getshdr(scn, &shdr) || shdr.sh_type != SHT_NOTE)
			continue;
		ret = read_note_section(notes, &view, scn);
		if (ret)
			goto out;
	}
	if (notes->count)
		log_debug("%s: %zu USDT probes", path, notes->count);
	*out = notes;
	notes = NULL;
	ret = 0;
out:
	usdt_notes__free(notes);
	if (view.elf)
		elf_end(view.elf);
	close(fd);
	return ret;
}

void usdt_notes__free(struct usdt_notes *notes)
{
	size_t i;

	if (!notes)
		return;
	for (i = 0; i < notes->count; i++)
		free(notes->strings[i]);
	free(notes->strings);
	free(notes->probes);
	free(notes);
}

size_t usdt_notes__count(const struct usdt_notes *notes)
{
	return notes ? notes->count : 0;
}

const struct usdt_probe *usdt_notes__at(const struct usdt_notes *notes, size_t i)
{
	if (!notes || i >= notes->count)
		return NULL;
	return &notes->probes[i];
}

const struct usdt_probe *usdt_notes__find(const struct usdt_notes *notes, const char *provider,
					  const char *name, const struct usdt_probe *prev)
{
	size_t i;

	if (!notes)
		return NULL;
	i = prev ? (size_t)(prev - notes->probes) + 1 : 0;
	for (; i < notes->count; i++) {
		const struct usdt_probe *p = &notes->probes[i];

		if (strcmp(p->provider, provider) == 0 && strcmp(p->name, name) == 0)
			return p;
	}
	return NULL;
}

int usdt_probe__spec(const struct usdt_probe *p, size_t n_args, struct usdt_probe_spec *out,
		     char *message, size_t message_size)
{
	char unused[8];
	size_t i;

	if (!message) {
		message = unused;
		message_size = sizeof(unused);
	}
	memset(out, 0, sizeof(*out));
	if (p->error) {
		snprintf(message, message_size, "%s", p->error_text);
		return p->error;
	}
	if (n_args > USDT_PROBE_MAX_ARGS) {
		snprintf(message, message_size, "%zu arguments of %s:%s asked for; at most %d fit",
			 n_args, p->provider, p->name, USDT_PROBE_MAX_ARGS);
		return -ERANGE;
	}
	if (p->arg_count < n_args) {
		snprintf(message, message_size,
			 "%s:%s has %zu arguments where %zu are expected ('%s')", p->provider,
			 p->name, p->arg_count, n_args, p->arg_text);
		return -ERANGE;
	}
	for (i = 0; i < n_args; i++)
		out->args[i] = p->args[i].spec;
	out->n_args = (__u32)n_args;
	return 0;
}
