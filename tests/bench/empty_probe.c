/* Attaches an empty uprobe to FILE at OFFSET (a file offset) for PID, prints "attached", and
 * holds it until stdin closes or SIGTERM: the floor that allocscope's probes are compared to.
 *
 *   empty_probe PID FILE OFFSET */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "empty_probe.skel.h"

static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

int main(int argc, char **argv)
{
	struct empty_probe_bpf *skel;
	struct bpf_link *link;
	char buf[16];

	if (argc != 4) {
		fprintf(stderr, "usage: %s PID FILE OFFSET\n", argv[0]);
		return 2;
	}
	libbpf_set_print(quiet);
	skel = empty_probe_bpf__open_and_load();
	if (!skel) {
		fprintf(stderr, "empty_probe: cannot load: %s\n", strerror(errno));
		return 1;
	}
	link = bpf_program__attach_uprobe(skel->progs.empty_probe, false, atoi(argv[1]), argv[2],
					  strtoull(argv[3], NULL, 0));
	if (!link) {
		fprintf(stderr, "empty_probe: cannot attach: %s\n", strerror(errno));
		empty_probe_bpf__destroy(skel);
		return 1;
	}
	printf("attached\n");
	fflush(stdout);
	while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
		;
	bpf_link__destroy(link);
	empty_probe_bpf__destroy(skel);
	return 0;
}
