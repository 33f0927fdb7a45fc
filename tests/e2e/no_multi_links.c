/* Preloaded into allocscope by the e2e tests to play a kernel without uprobe_multi links (Linux
 * before 6.6), on a machine whose kernel has them: bpf() calls that create a uprobe_multi link
 * fail with EINVAL, as such a kernel answers. With NO_MULTI_LINKS=load, loading a program with
 * the uprobe_multi attach type fails too (a kernel or verifier that refuses the program). With
 * NO_MULTI_LINKS=session, only session uprobes are missing (Linux 6.6 to 6.12): loading a
 * program as one and making its link fail with EINVAL, multi links work. Every other call goes
 * to the C library's syscall(), which libbpf uses for bpf(). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/bpf.h>

/* enum bpf_attach_type's BPF_TRACE_UPROBE_MULTI; Debian 12's UAPI headers predate it. */
#define UPROBE_MULTI_ATTACH_TYPE 48
#define UPROBE_SESSION_ATTACH_TYPE 57

long syscall(long number, ...)
{
	static long (*real_syscall)(long, ...);
	const char *mode = getenv("NO_MULTI_LINKS");
	long args[6];
	va_list ap;

	va_start(ap, number);
	for (int i = 0; i < 6; i++)
		args[i] = va_arg(ap, long);
	va_end(ap);
	if (!real_syscall)
		real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
	if (number == SYS_bpf && mode && strcmp(mode, "session") == 0) {
		const union bpf_attr *attr = (const union bpf_attr *)args[1];

		if ((args[0] == BPF_LINK_CREATE &&
		     attr->link_create.attach_type == UPROBE_SESSION_ATTACH_TYPE) ||
		    (args[0] == BPF_PROG_LOAD &&
		     attr->expected_attach_type == UPROBE_SESSION_ATTACH_TYPE)) {
			errno = EINVAL;
			return -1;
		}
	} else if (number == SYS_bpf && mode) {
		const union bpf_attr *attr = (const union bpf_attr *)args[1];

		if (args[0] == BPF_LINK_CREATE &&
		    attr->link_create.attach_type == UPROBE_MULTI_ATTACH_TYPE) {
			errno = EINVAL;
			return -1;
		}
		if (args[0] == BPF_PROG_LOAD && strcmp(mode, "load") == 0 &&
		    attr->expected_attach_type == UPROBE_MULTI_ATTACH_TYPE) {
			errno = EINVAL;
			return -1;
		}
	}
	return real_syscall(number, args[0], args[1], args[2], args[3], args[4], args[5]);
}
