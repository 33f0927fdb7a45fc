/* Which processes become targets and under which service name: the facts process_info reads
 * from /proc (a fake tree under /tmp with deleted executables, v1, v2 and hybrid cgroups,
 * containers, kernel threads and vanished pids, then this process's real /proc entry), the
 * cgroup and unit parsing those facts rest on, and the include/exclude matching and service
 * naming users configure, pod matchers and pods' service names included. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "unit.h"
#include "collect/kube_pods.h"
#include "collect/process_info.h"
#include "collect/target_rules.h"

/* PF_KTHREAD set: kthreadd's flags on a 6.1 kernel (0x00208040). */
#define KTHREAD_FLAGS "2129984"
/* A user process: PF_SUPERPRIV | PF_RANDOMIZE (0x00400100), no PF_KTHREAD. */
#define USER_FLAGS "4194560"

/* ---- a fake /proc ---- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

static void remove_tree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_proc_root(char *root, size_t len)
{
	snprintf(root, len, "/tmp/allocscope-proc-XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		exit(2);
	}
}

static void make_pid_dir(const char *root, int pid)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%d", root, pid);
	CHECK(mkdir(path, 0755) == 0);
}

static void write_proc_file(const char *root, int pid, const char *name, const char *content)
{
	char path[PATH_MAX];
	size_t len = strlen(content);
	int fd;

	snprintf(path, sizeof(path), "%s/%d/%s", root, pid, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK(write(fd, content, len) == (ssize_t)len);
	close(fd);
}

static void link_exe(const char *root, int pid, const char *target)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%d/exe", root, pid);
	CHECK(symlink(target, path) == 0);
}

/* A user process with an executable, a name and a cgroup file. */
static void make_user_process(const char *root, int pid, const char *exe, const char *comm,
			      const char *cgroup_content)
{
	make_pid_dir(root, pid);
	link_exe(root, pid, exe);
	write_proc_file(root, pid, "comm", comm);
	write_proc_file(root, pid, "cgroup", cgroup_content);
}

/* ---- process_info__read ---- */

static void test_read_deleted_executable(void)
{
	struct process_info info;
	char root[64];

	make_proc_root(root, sizeof(root));
	/* Upgraded under a running server: the kernel appends " (deleted)". */
	make_user_process(root, 1234, "/usr/bin/redis-server (deleted)", "redis-server\n",
			  "0::/system.slice/redis-server.service\n");

	CHECK_EQ_U64(process_info__read(root, 1234, &info), 0);
	CHECK_EQ_U64(info.pid, 1234);
	CHECK_STR(info.exe, "/usr/bin/redis-server");
	CHECK_STR(info.comm, "redis-server");
	CHECK_STR(info.cgroup, "/system.slice/redis-server.service");
	CHECK_STR(info.unit, "redis-server.service");
	CHECK(!info.kernel_thread);
	remove_tree(root);
}

#define CONTAINER_ID "25c99c29f65de016a745b6a003ef22cf15bc305440fdc37df0b691e63276d8bf"

static void test_read_container(void)
{
	struct process_info info;
	char root[64];

	make_proc_root(root, sizeof(root));
	make_user_process(root, 500, "/app/server", "server\n",
			  "0::/kubepods.slice/kubepods-besteffort.slice/"
			  "kubepods-besteffort-pod0b1f7b7e_5b4c_4c1a_9d57_0d7a0e3c1f2a.slice/"
			  "cri-containerd-" CONTAINER_ID ".scope\n");
	/* cgroup v1, cgroupfs driver: the container is in every hierarchy's path. */
	make_user_process(root, 501, "/app/server", "server\n",
			  "12:pids:/kubepods/burstable/pod0b1f7b7e-5b4c-4c1a-9d57-0d7a0e3c1f2a/"
			  CONTAINER_ID "\n"
			  "1:name=systemd:/kubepods/burstable/pod0b1f7b7e-5b4c-4c1a-9d57-0d7a0e3c1f2a/"
			  CONTAINER_ID "\n");
	make_user_process(root, 502, "/usr/sbin/sshd", "sshd\n",
			  "0::/system.slice/ssh.service\n");

	CHECK_EQ_U64(process_info__read(root, 500, &info), 0);
	CHECK_STR(info.container.id, CONTAINER_ID);
	CHECK_EQ_U64(info.container.runtime, CONTAINER_RUNTIME_CONTAINERD);
	CHECK_STR(info.container.pod_uid, "0b1f7b7e-5b4c-4c1a-9d57-0d7a0e3c1f2a");
	/* The unit is the runtime's scope; the agent learns the pod only from the API. */
	CHECK_STR(info.unit, "cri-containerd-" CONTAINER_ID ".scope");
	CHECK(info.pod == NULL);

	CHECK_EQ_U64(process_info__read(root, 501, &info), 0);
	CHECK_STR(info.container.id, CONTAINER_ID);
	CHECK_EQ_U64(info.container.qos, POD_QOS_BURSTABLE);

	CHECK_EQ_U64(process_info__read(root, 502, &info), 0);
	CHECK_STR(info.container.id, "");
	CHECK(info.pod == NULL);
	remove_tree(root);
}

static void test_read_plain_executable_and_names(void)
{
	struct process_info info;
	char root[64];

	make_proc_root(root, sizeof(root));
	/* Only a trailing " (deleted)" is the kernel's; inside a name it is the file's. */
	make_user_process(root, 41, "/opt/a (deleted)/bin/app", "app\n",
			  "0::/user.slice/user-1000.slice/session-3.scope");
	/* 15 characters, the longest comm the kernel keeps. */
	make_user_process(root, 42, "/usr/sbin/nginx", "nginx: worker p\n",
			  "0::/system.slice/nginx.service\n");

	CHECK_EQ_U64(process_info__read(root, 41, &info), 0);
	CHECK_STR(info.exe, "/opt/a (deleted)/bin/app");
	CHECK_STR(info.comm, "app");
	/* No trailing newline in the file. */
	CHECK_STR(info.cgroup, "/user.slice/user-1000.slice/session-3.scope");
	CHECK_STR(info.unit, "session-3.scope");

	CHECK_EQ_U64(process_info__read(root, 42, &info), 0);
	CHECK_EQ_U64(info.pid, 42);
	CHECK_STR(info.exe, "/usr/sbin/nginx");
	CHECK_STR(info.comm, "nginx: worker p");
	CHECK_STR(info.unit, "nginx.service");
	CHECK(!info.kernel_thread);
	remove_tree(root);
}

static void test_read_cgroup_versions(void)
{
	struct process_info info;
	char root[64];

	make_proc_root(root, sizeof(root));
	/* cgroup v1 only: the name=systemd hierarchy, not the first controller's. */
	make_user_process(root, 100, "/usr/sbin/cron", "cron\n",
			  "12:pids:/system.slice/cron.service\n"
			  "5:cpu,cpuacct:/\n"
			  "1:name=systemd:/system.slice/cron.service\n");
	/* Hybrid: the unified line wins even when it comes last. */
	make_user_process(root, 101, "/usr/bin/dockerd", "dockerd\n",
			  "1:name=systemd:/system.slice/docker.service\n"
			  "0::/system.slice/docker-abc.scope\n");
	/* v1 without systemd: no cgroup to report. */
	make_user_process(root, 102, "/bin/sh", "sh\n", "3:memory:/lxc/box\n");

	CHECK_EQ_U64(process_info__read(root, 100, &info), 0);
	CHECK_STR(info.cgroup, "/system.slice/cron.service");
	CHECK_STR(info.unit, "cron.service");

	CHECK_EQ_U64(process_info__read(root, 101, &info), 0);
	CHECK_STR(info.cgroup, "/system.slice/docker-abc.scope");
	CHECK_STR(info.unit, "docker-abc.scope");

	CHECK_EQ_U64(process_info__read(root, 102, &info), 0);
	CHECK_STR(info.cgroup, "");
	CHECK_STR(info.unit, "");
	CHECK_STR(info.exe, "/bin/sh");
	remove_tree(root);
}

/* n bytes of a v1 line for a hierarchy that does not matter: "9:cpu:/xxx...\n". */
static size_t filler_line(char *at, size_t n)
{
	memcpy(at, "9:cpu:/", 7);
	memset(at + 7, 'x', n - 8);
	at[n - 1] = '\n';
	return n;
}

static void test_read_huge_cgroup_file(void)
{
	/* Bigger than process_info reads (16 KiB - 1 bytes): the v2 line is cut 10 bytes in,
	 * to "0::/system", which must be ignored rather than taken for a shorter path. */
	const size_t v2_offset = 16383 - 10;
	static char content[20000];
	struct process_info info;
	char root[64];
	size_t n;

	n = (size_t)snprintf(content, sizeof(content), "1:name=systemd:/system.slice/a.service\n");
	while (v2_offset - n >= 200)
		n += filler_line(content + n, 100);
	n += filler_line(content + n, v2_offset - n);
	snprintf(content + n, sizeof(content) - n, "0::/system.slice/b.service\n");

	make_proc_root(root, sizeof(root));
	make_user_process(root, 55, "/usr/bin/a", "a\n", content);
	CHECK_EQ_U64(process_info__read(root, 55, &info), 0);
	CHECK_STR(info.cgroup, "/system.slice/a.service");
	CHECK_STR(info.unit, "a.service");
	remove_tree(root);
}

static void test_read_kernel_thread(void)
{
	struct process_info info;
	char root[64];

	make_proc_root(root, sizeof(root));
	make_pid_dir(root, 2);
	write_proc_file(root, 2, "comm", "kthreadd\n");
	write_proc_file(root, 2, "cgroup", "0::/\n");
	write_proc_file(root, 2, "stat",
			"2 (kthreadd) S 0 0 0 0 -1 " KTHREAD_FLAGS " 0 0 0 0 0 0 0 0 20 0 1 0\n");
	/* A name with spaces and ')' must not shift the fields. */
	make_pid_dir(root, 77);
	write_proc_file(root, 77, "comm", "kw 0) I 1 2 3\n");
	write_proc_file(root, 77, "cgroup", "0::/\n");
	write_proc_file(root, 77, "stat",
			"77 (kw 0) I 1 2 3) I 2 0 0 0 -1 " KTHREAD_FLAGS " 0 0 0 0 0 0\n");
	/* No executable but no PF_KTHREAD either: a zombie, or an exe we may not read. */
	make_pid_dir(root, 300);
	write_proc_file(root, 300, "comm", "defunct\n");
	write_proc_file(root, 300, "cgroup", "0::/system.slice/x.service\n");
	write_proc_file(root, 300, "stat",
			"300 (defunct) Z 1 300 300 0 -1 " USER_FLAGS " 0 0 0 0 0 0\n");

	CHECK_EQ_U64(process_info__read(root, 2, &info), 0);
	CHECK_STR(info.exe, "");
	CHECK_STR(info.comm, "kthreadd");
	CHECK_STR(info.cgroup, "/");
	CHECK_STR(info.unit, "");
	CHECK(info.kernel_thread);

	CHECK_EQ_U64(process_info__read(root, 77, &info), 0);
	CHECK_STR(info.comm, "kw 0) I 1 2 3");
	CHECK(info.kernel_thread);

	CHECK_EQ_U64(process_info__read(root, 300, &info), 0);
	CHECK_STR(info.exe, "");
	CHECK_STR(info.comm, "defunct");
	CHECK_STR(info.unit, "x.service");
	CHECK(!info.kernel_thread);
	remove_tree(root);
}

static void test_read_vanished_process(void)
{
	struct process_info info;
	char root[64];

	make_proc_root(root, sizeof(root));
	CHECK_EQ_U64(process_info__read(root, 999, &info), -ESRCH);
	/* Gone between opening its directory and reading it: only the directory is left. */
	make_pid_dir(root, 998);
	CHECK_EQ_U64(process_info__read(root, 998, &info), -ESRCH);
	/* Gone before its cgroup was read. */
	make_pid_dir(root, 997);
	link_exe(root, 997, "/usr/bin/true");
	write_proc_file(root, 997, "comm", "true\n");
	CHECK_EQ_U64(process_info__read(root, 997, &info), -ESRCH);
	CHECK_EQ_U64(process_info__read(root, 0, &info), -EINVAL);
	remove_tree(root);
}

/* Valgrind answers readlink("/proc/self/exe") with the program it runs, while the kernel,
 * asked through a directory descriptor as process_info does, names valgrind's own tool. */
static bool under_valgrind(void)
{
	const char *preload = getenv("LD_PRELOAD");

	return preload && strstr(preload, "vgpreload");
}

static void test_read_self(void)
{
	struct process_info info;
	char exe[PATH_MAX], comm[17] = "", unit[256];
	ssize_t n;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	CHECK(n > 0);
	exe[n > 0 ? n : 0] = '\0';
	CHECK(prctl(PR_GET_NAME, comm) == 0);

	CHECK_EQ_U64(process_info__read("/proc", getpid(), &info), 0);
	CHECK_EQ_U64(info.pid, getpid());
	if (under_valgrind())
		CHECK(info.exe[0] == '/');
	else
		CHECK_STR(info.exe, exe);
	CHECK(info.comm[0] != '\0');
	CHECK_STR(info.comm, comm);
	CHECK(info.cgroup[0] == '/');
	process_info__unit_of_cgroup(info.cgroup, unit, sizeof(unit));
	CHECK_STR(info.unit, unit);
	CHECK(!info.kernel_thread);
}

/* ---- parsing ---- */

static void test_parse_cgroup(void)
{
	static const struct {
		const char *content, *expected;
	} cases[] = {
		{ "0::/system.slice/redis-server.service\n", "/system.slice/redis-server.service" },
		{ "0::/user.slice/user-1000.slice/session-2.scope",
		  "/user.slice/user-1000.slice/session-2.scope" },
		{ "0::/\n", "/" },
		{ "12:pids:/system.slice/a.service\n1:name=systemd:/system.slice/cron.service\n",
		  "/system.slice/cron.service" },
		{ "1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n",
		  "/system.slice/b.service" },
		{ "0::/system.slice/b.service\n1:name=systemd:/system.slice/a.service\n",
		  "/system.slice/b.service" },
		{ "1:name=systemd:/system.slice/a.service", "/system.slice/a.service" },
		/* Paths may hold ':'; only the first two separate fields. */
		{ "0::/machine.slice/vm:1/x.scope\n", "/machine.slice/vm:1/x.scope" },
		{ "1:name=systemd:/a:b:c\n", "/a:b:c" },
		/* Not the unified hierarchy, not systemd's. */
		{ "3:cpu,cpuacct:/foo\n4:memory:/foo\n", "" },
		{ "1:name=systemd2:/x\n", "" },
		{ "10::/not-unified\n", "" },
		{ "00::/not-unified\n", "" },
		{ "0:cpu:/not-unified\n", "" },
		/* Malformed lines are skipped, not fatal. */
		{ "garbage\n\n0::/ok\n", "/ok" },
		{ "1:name=systemd\n0:\n", "" },
		{ "", "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[1024] = "stale";

		process_info__parse_cgroup(cases[i].content, path, sizeof(path));
		if (strcmp(path, cases[i].expected) != 0)
			fprintf(stderr, "  case %zu: got \"%s\"\n", i, path);
		CHECK_STR(path, cases[i].expected);
	}
}

static void test_parse_cgroup_too_long(void)
{
	char path[16] = "stale";

	/* A cut path could match a cgroup rule it is not under: none is better. */
	process_info__parse_cgroup("0::/system.slice/redis.service\n", path, sizeof(path));
	CHECK_STR(path, "");
	process_info__parse_cgroup("0::/fifteen-chars\n", path, sizeof(path));
	CHECK_STR(path, "/fifteen-chars");
	process_info__parse_cgroup(NULL, path, sizeof(path));
	CHECK_STR(path, "");
}

static void test_unit_of_cgroup(void)
{
	static const struct {
		const char *cgroup, *expected;
	} cases[] = {
		{ "/system.slice/redis-server.service", "redis-server.service" },
		{ "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
		  "foo.service" },
		{ "/user.slice/user-1000.slice/user@1000.service/init.scope", "init.scope" },
		{ "/system.slice/docker-abc.scope", "docker-abc.scope" },
		{ "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/"
		  "cri-containerd-abc.scope",
		  "cri-containerd-abc.scope" },
		{ "/init.scope", "init.scope" },
		/* A sub-cgroup a service made for itself still belongs to the service. */
		{ "/system.slice/foo.service/worker", "foo.service" },
		{ "/", "" },
		{ "", "" },
		{ "/system.slice", "" },
		{ "/user.slice/user-1000.slice", "" },
		{ "/kubepods/besteffort/pod12/abc", "" },
		{ "/system.slice/foo.service.d", "" },
		{ "/system.slice/foo.services", "" },
		{ "/system.slice/.service", "" },
		{ "/system.slice/foo.service/", "foo.service" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char unit[256] = "stale";

		process_info__unit_of_cgroup(cases[i].cgroup, unit, sizeof(unit));
		if (strcmp(unit, cases[i].expected) != 0)
			fprintf(stderr, "  \"%s\": got \"%s\"\n", cases[i].cgroup, unit);
		CHECK_STR(unit, cases[i].expected);
	}
}

static void test_unit_of_cgroup_too_long(void)
{
	char unit[8] = "stale";

	process_info__unit_of_cgroup("/system.slice/redis.service", unit, sizeof(unit));
	CHECK_STR(unit, "");
	process_info__unit_of_cgroup("/system.slice/a.scope", unit, sizeof(unit));
	CHECK_STR(unit, "a.scope");
}

/* ---- matching ---- */

static void fake_process(struct process_info *p, const char *exe, const char *comm,
			 const char *cgroup)
{
	memset(p, 0, sizeof(*p));
	p->pid = 4242;
	snprintf(p->exe, sizeof(p->exe), "%s", exe);
	snprintf(p->comm, sizeof(p->comm), "%s", comm);
	snprintf(p->cgroup, sizeof(p->cgroup), "%s", cgroup);
	process_info__unit_of_cgroup(p->cgroup, p->unit, sizeof(p->unit));
}

static struct process_info redis, nginx, shell, backup;

static void make_processes(void)
{
	fake_process(&redis, "/usr/bin/redis-server", "redis-server",
		     "/system.slice/redis-server.service");
	fake_process(&nginx, "/usr/sbin/nginx", "nginx", "/system.slice/nginx.service");
	fake_process(&shell, "/usr/bin/bash", "bash",
		     "/user.slice/user-1000.slice/session-3.scope");
	fake_process(&backup, "/usr/bin/restic", "restic", "/system.slice/backup.service");
}

static bool matches(const struct target_rules *rules, const struct process_info *p,
		    const char *expected_service)
{
	char service[128] = "stale";
	bool matched = target_rules__match(rules, p, service, sizeof(service));

	if (matched && expected_service)
		CHECK_STR(service, expected_service);
	if (!matched)
		CHECK_STR(service, "");
	return matched;
}

static void test_no_include_rules_match_all(void)
{
	struct target_rules rules = { 0 };

	make_processes();
	CHECK(matches(&rules, &redis, "redis-server"));
	CHECK(matches(&rules, &nginx, "nginx"));
	CHECK(matches(&rules, &shell, "bash"));
	CHECK(matches(&rules, &backup, "backup"));
}

static void test_include_by_each_matcher(void)
{
	struct target_rule by_exe = { .executable = "/usr/bin/redis-*" };
	struct target_rule by_name = { .process_name = "ngin?" };
	struct target_rule by_cgroup = { .cgroup = "/user.slice" };
	struct target_rule by_unit = { .systemd_unit = "backup*.service" };
	struct target_rules rules = { .n_include = 1 };

	make_processes();
	rules.include = &by_exe;
	CHECK(matches(&rules, &redis, "redis-server"));
	CHECK(!matches(&rules, &nginx, NULL));
	CHECK(!matches(&rules, &shell, NULL));

	rules.include = &by_name;
	CHECK(matches(&rules, &nginx, "nginx"));
	CHECK(!matches(&rules, &redis, NULL));

	rules.include = &by_cgroup;
	CHECK(matches(&rules, &shell, "bash"));
	CHECK(!matches(&rules, &redis, NULL));
	CHECK(!matches(&rules, &backup, NULL));

	rules.include = &by_unit;
	CHECK(matches(&rules, &backup, "backup"));
	CHECK(!matches(&rules, &redis, NULL));
	CHECK(!matches(&rules, &shell, NULL));
}

/* In-use follows the first matching include rule alone, as the service name does. */
static void test_inuse_from_the_first_matching_rule(void)
{
	struct target_rule include[] = {
		{ .executable = "/usr/bin/redis-*", .inuse = true },
		{ .systemd_unit = "*.service" },
		{ .process_name = "restic", .inuse = true },
	};
	struct target_rules rules = { .include = include, .n_include = 3 };
	struct target_rules none = { 0 };

	make_processes();
	CHECK(target_rules__any_inuse(&rules));
	CHECK(!target_rules__any_inuse(&none));
	CHECK(target_rules__inuse(&rules, &redis));
	CHECK(!target_rules__inuse(&rules, &nginx));
	/* backup.service matches the unit rule first: that rule says no. */
	CHECK(!target_rules__inuse(&rules, &backup));
	CHECK(!target_rules__inuse(&rules, &shell));
	CHECK(!target_rules__inuse(&none, &redis));
}

static void test_unknown_facts_match_no_glob(void)
{
	struct target_rule any_exe = { .executable = "*" };
	struct target_rule any_unit = { .systemd_unit = "*" };
	struct target_rule any_name = { .process_name = "*" };
	struct target_rules rules = { .n_include = 1 };
	struct process_info hidden;

	/* Executable unreadable (another user's process) and outside any unit. */
	fake_process(&hidden, "", "secret", "/user.slice");
	rules.include = &any_exe;
	CHECK(!matches(&rules, &hidden, NULL));
	rules.include = &any_unit;
	CHECK(!matches(&rules, &hidden, NULL));
	rules.include = &any_name;
	CHECK(matches(&rules, &hidden, "secret"));
}

static void test_all_matchers_of_a_rule_must_match(void)
{
	struct target_rule both = { .executable = "/usr/bin/redis-*", .cgroup = "/system.slice" };
	struct target_rules rules = { .include = &both, .n_include = 1 };
	struct process_info user_redis;

	make_processes();
	fake_process(&user_redis, "/usr/bin/redis-server", "redis-server",
		     "/user.slice/user-1000.slice/session-3.scope");
	CHECK(matches(&rules, &redis, "redis-server"));
	CHECK(!matches(&rules, &user_redis, NULL));
	CHECK(!matches(&rules, &nginx, NULL));
}

static void test_exclusion_wins(void)
{
	struct target_rule include = { .cgroup = "/system.slice" };
	struct target_rule exclude[] = {
		{ .systemd_unit = "backup.service" },
		{ .process_name = "bash" },
	};
	struct target_rules rules = { .include = &include, .n_include = 1,
				      .exclude = exclude, .n_exclude = 2 };

	make_processes();
	CHECK(matches(&rules, &redis, "redis-server"));
	CHECK(matches(&rules, &nginx, "nginx"));
	CHECK(!matches(&rules, &backup, NULL));
	CHECK(!matches(&rules, &shell, NULL));

	/* Without include rules, exclusion still removes. */
	rules.n_include = 0;
	rules.include = NULL;
	CHECK(!matches(&rules, &backup, NULL));
	CHECK(!matches(&rules, &shell, NULL));
	CHECK(matches(&rules, &redis, "redis-server"));
}

static void test_first_matching_rule_names_the_service(void)
{
	struct target_rule include[] = {
		{ .service = "web", .executable = "/usr/sbin/nginx" },
		{ .service = "cache", .executable = "/usr/bin/redis-*" },
		{ .service = "anything-redis", .process_name = "redis*" },
		{ .cgroup = "/system.slice" },
	};
	struct target_rules rules = { .include = include, .n_include = 4 };

	make_processes();
	CHECK(matches(&rules, &nginx, "web"));
	CHECK(matches(&rules, &redis, "cache"));
	/* Taken by the last rule, which names nothing: derived from the unit. */
	CHECK(matches(&rules, &backup, "backup"));
	CHECK(!matches(&rules, &shell, NULL));
}

static void test_unnamed_first_rule_is_not_overridden(void)
{
	/* The first matching rule decides alone: a later rule's name does not reach back. */
	struct target_rule include[] = {
		{ .cgroup = "/system.slice" },
		{ .service = "cache", .executable = "/usr/bin/redis-*" },
	};
	struct target_rules rules = { .include = include, .n_include = 2 };

	make_processes();
	CHECK(matches(&rules, &redis, "redis-server"));
}

static void test_service_is_truncated(void)
{
	struct target_rule named = { .service = "checkout", .process_name = "*" };
	struct target_rules rules = { .include = &named, .n_include = 1 };
	char service[5] = "xxxx";

	make_processes();
	CHECK(target_rules__match(&rules, &redis, service, sizeof(service)));
	CHECK_STR(service, "chec");
	/* No room at all is allowed and writes nothing. */
	CHECK(target_rules__match(&rules, &redis, NULL, 0));
}

static void test_default_service(void)
{
	static const struct {
		const char *exe, *comm, *cgroup, *expected;
	} cases[] = {
		{ "/usr/bin/redis-server", "redis-server", "/system.slice/redis-server.service",
		  "redis-server" },
		{ "/usr/lib/systemd/systemd", "systemd",
		  "/user.slice/user-1000.slice/user@1000.service/init.scope", "systemd" },
		{ "/usr/bin/python3.11", "gunicorn",
		  "/user.slice/user-1000.slice/user@1000.service/app.slice/shop.service", "shop" },
		/* A scope is transient: the executable names the service. */
		{ "/usr/bin/containerd-shim-runc-v2", "containerd-shim",
		  "/system.slice/docker-abc.scope", "containerd-shim-runc-v2" },
		{ "/usr/local/bin/app", "app-main", "", "app" },
		{ "", "postgres", "/user.slice", "postgres" },
		{ "", "", "", "unknown" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct process_info p;
		char service[64] = "stale";

		fake_process(&p, cases[i].exe, cases[i].comm, cases[i].cgroup);
		target_rules__default_service(&p, service, sizeof(service));
		if (strcmp(service, cases[i].expected) != 0)
			fprintf(stderr, "  case %zu: got \"%s\"\n", i, service);
		CHECK_STR(service, cases[i].expected);
	}
}

static void test_default_service_truncated(void)
{
	struct process_info p;
	char service[6];

	fake_process(&p, "/usr/bin/redis-server", "redis-server",
		     "/system.slice/redis-server.service");
	target_rules__default_service(&p, service, sizeof(service));
	CHECK_STR(service, "redis");
	fake_process(&p, "", "", "");
	target_rules__default_service(&p, service, 3);
	CHECK_STR(service, "un");
	target_rules__default_service(&p, service, 1);
	CHECK_STR(service, "");
}

static void test_cgroup_component_boundary(void)
{
	static const struct {
		const char *rule, *cgroup;
		bool expected;
	} cases[] = {
		{ "/system.slice", "/system.slice", true },
		{ "/system.slice", "/system.slice/x.service", true },
		{ "/system.slice", "/system.slice2", false },
		{ "/system.slice", "/system.slice2/x.service", false },
		{ "/system.slice/", "/system.slice", true },
		{ "/system.slice/", "/system.slice/x.service", true },
		{ "/system.slice/", "/system.slice2", false },
		{ "/system.slice/x.service", "/system.slice", false },
		{ "/system.slice", "/", false },
		{ "/system.slice", "", false },
		{ "/", "/", true },
		{ "/", "/user.slice/user-1000.slice/session-3.scope", true },
		{ "/", "", false },
		{ "/kubepods.slice/kubepods-besteffort.slice",
		  "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/"
		  "cri-containerd-abc.scope",
		  true },
		{ "/kubepods.slice/kubepods-besteffort.slice",
		  "/kubepods.slice/kubepods-besteffort.slice-other", false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct target_rule rule = { .cgroup = (char *)cases[i].rule };
		struct target_rules rules = { .include = &rule, .n_include = 1 };
		struct process_info p;
		char service[64];
		bool matched;

		fake_process(&p, "/usr/bin/app", "app", cases[i].cgroup);
		matched = target_rules__match(&rules, &p, service, sizeof(service));
		if (matched != cases[i].expected)
			fprintf(stderr, "  rule \"%s\" on \"%s\": got %s\n", cases[i].rule,
				cases[i].cgroup, matched ? "match" : "no match");
		CHECK(matched == cases[i].expected);
	}
}

static void test_executable_globs(void)
{
	/* fnmatch with flags 0: '*' crosses '/', a leading '.' is ordinary, '\' escapes. */
	static const struct {
		const char *pattern, *exe;
		bool expected;
	} cases[] = {
		{ "/usr/bin/*", "/usr/bin/redis-server", true },
		{ "/usr/bin/*", "/usr/bin/x/y", true },
		{ "/usr/bin/*", "/usr/sbin/nginx", false },
		{ "/usr/bin/redis", "/usr/bin/redis-server", false },
		{ "/usr/bin/redis-server", "/usr/bin/redis-server", true },
		{ "*/redis-server", "/opt/redis/bin/redis-server", true },
		{ "/usr/lib/jvm/*/bin/java", "/usr/lib/jvm/java-17/bin/java", true },
		{ "/usr/bin/python3.?", "/usr/bin/python3.11", false },
		{ "/usr/bin/python3.1?", "/usr/bin/python3.11", true },
		{ "/usr/bin/[jn]ava", "/usr/bin/java", true },
		{ "/usr/bin/[jn]ava", "/usr/bin/kava", false },
		{ "/home/u/*", "/home/u/.local/bin/tool", true },
		{ "/opt/\\*app", "/opt/*app", true },
		{ "/opt/\\*app", "/opt/xapp", false },
		{ "/usr/bin/*", "", false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct target_rule rule = { .executable = (char *)cases[i].pattern };
		struct target_rules rules = { .include = &rule, .n_include = 1 };
		struct process_info p;
		char service[64];
		bool matched;

		fake_process(&p, cases[i].exe, "app", "/system.slice/app.service");
		matched = target_rules__match(&rules, &p, service, sizeof(service));
		if (matched != cases[i].expected)
			fprintf(stderr, "  \"%s\" on \"%s\": got %s\n", cases[i].pattern,
				cases[i].exe, matched ? "match" : "no match");
		CHECK(matched == cases[i].expected);
	}
}

static void test_kernel_threads_never_match(void)
{
	struct target_rule by_name = { .service = "kernel", .process_name = "kworker*" };
	struct target_rule by_cgroup = { .cgroup = "/" };
	struct target_rules none = { 0 };
	struct target_rules rules = { .include = &by_name, .n_include = 1 };
	struct process_info kworker;

	fake_process(&kworker, "", "kworker/0:1", "/");
	kworker.kernel_thread = true;
	CHECK(!matches(&none, &kworker, NULL));
	CHECK(!matches(&rules, &kworker, NULL));
	rules.include = &by_cgroup;
	CHECK(!matches(&rules, &kworker, NULL));

	/* The same facts without the flag do match: the flag is what refuses. */
	kworker.kernel_thread = false;
	CHECK(matches(&none, &kworker, "kworker/0:1"));
}

/* ---- pods ---- */

static const struct kube_label checkout_labels[] = {
	{ "app.kubernetes.io/name", "checkout" },
	{ "empty", "" },
	{ "tier", "frontend" },
};

static const struct kube_container checkout_app = {
	.namespace_name = "shop",
	.pod = "checkout-7d9f8b6c5-x2x4v",
	.pod_uid = "0b1f7b7e-5b4c-4c1a-9d57-0d7a0e3c1f2a",
	.container = "app",
	.node = "node-1",
	.service_name = "shop/app",
	.labels = checkout_labels,
	.n_labels = 3,
};

/* The same pod's sidecar, and a pod annotated with its service name. */
static const struct kube_container checkout_envoy = {
	.namespace_name = "shop",
	.pod = "checkout-7d9f8b6c5-x2x4v",
	.pod_uid = "0b1f7b7e-5b4c-4c1a-9d57-0d7a0e3c1f2a",
	.container = "envoy",
	.node = "node-1",
	.service_name = "shop/envoy",
	.labels = checkout_labels,
	.n_labels = 3,
};

static const struct kube_container annotated = {
	.namespace_name = "kube-system",
	.pod = "coredns-5d78c9869d-abcde",
	.pod_uid = "1",
	.container = "coredns",
	.node = "node-1",
	.service_name = "dns",
	.labels = NULL,
	.n_labels = 0,
};

static void pod_process(struct process_info *p, const struct kube_container *pod)
{
	fake_process(p, "/app/server", "server",
		     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/"
		     "cri-containerd-" CONTAINER_ID ".scope");
	snprintf(p->container.id, sizeof(p->container.id), "%s", CONTAINER_ID);
	p->pod = pod;
}

static void test_pod_matchers(void)
{
	static const struct {
		struct target_rule rule;
		bool app, envoy, dns;
	} cases[] = {
		{ { .namespace_name = "shop" }, true, true, false },
		{ { .namespace_name = "kube-*" }, false, false, true },
		{ { .namespace_name = "sho" }, false, false, false },
		{ { .container = "app" }, true, false, false },
		{ { .container = "[ae]*" }, true, true, false },
		/* Exact key, glob value. */
		{ { .pod_label = "app.kubernetes.io/name=checkout" }, true, true, false },
		{ { .pod_label = "app.kubernetes.io/name=check*" }, true, true, false },
		{ { .pod_label = "app.kubernetes.io/name=check" }, false, false, false },
		{ { .pod_label = "app.kubernetes.io/nam=checkout" }, false, false, false },
		{ { .pod_label = "name=checkout" }, false, false, false },
		{ { .pod_label = "tier=*" }, true, true, false },
		/* A label set to "" is there; "*" matches it, a missing label matches nothing. */
		{ { .pod_label = "empty=" }, true, true, false },
		{ { .pod_label = "empty=*" }, true, true, false },
		{ { .pod_label = "absent=*" }, false, false, false },
		/* All matchers of a rule, pod or not. */
		{ { .namespace_name = "shop", .container = "envoy" }, false, true, false },
		{ { .namespace_name = "shop", .pod_label = "tier=backend" }, false, false, false },
		{ { .executable = "/app/*", .container = "coredns" }, false, false, true },
		{ { .executable = "/usr/*", .namespace_name = "*" }, false, false, false },
	};
	const struct kube_container *pods[] = { &checkout_app, &checkout_envoy, &annotated };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const bool expected[] = { cases[i].app, cases[i].envoy, cases[i].dns };
		struct target_rules rules = { .include = (struct target_rule *)&cases[i].rule,
					      .n_include = 1 };

		for (size_t j = 0; j < 3; j++) {
			struct process_info p;
			char service[64];
			bool matched;

			pod_process(&p, pods[j]);
			matched = target_rules__match(&rules, &p, service, sizeof(service));
			if (matched != expected[j])
				fprintf(stderr, "  case %zu on %s/%s: got %s\n", i,
					pods[j]->namespace_name, pods[j]->container,
					matched ? "match" : "no match");
			CHECK(matched == expected[j]);
		}
	}
}

static void test_unknown_pod_matches_no_pod_rule(void)
{
	struct target_rule by_namespace = { .namespace_name = "*" };
	struct target_rule by_label = { .pod_label = "app=*" };
	struct target_rule by_container = { .container = "*" };
	struct target_rule include[] = { { .namespace_name = "shop" }, { .process_name = "server" } };
	struct target_rules rules = { .n_include = 1 };
	struct process_info in_unknown_pod, on_host;

	/* In a container the API never listed (or Kubernetes off): pod facts unknown. */
	pod_process(&in_unknown_pod, NULL);
	fake_process(&on_host, "/usr/sbin/nginx", "nginx", "/system.slice/nginx.service");
	rules.include = &by_namespace;
	CHECK(!matches(&rules, &in_unknown_pod, NULL));
	CHECK(!matches(&rules, &on_host, NULL));
	rules.include = &by_label;
	CHECK(!matches(&rules, &in_unknown_pod, NULL));
	rules.include = &by_container;
	CHECK(!matches(&rules, &in_unknown_pod, NULL));

	/* Nor does an exclude rule about pods keep it out: it is decided on what is known. */
	rules.include = include;
	rules.n_include = 2;
	rules.exclude = &by_namespace;
	rules.n_exclude = 1;
	CHECK(matches(&rules, &in_unknown_pod, "server"));
	pod_process(&in_unknown_pod, &checkout_app);
	CHECK(!matches(&rules, &in_unknown_pod, NULL));
}

static void test_pod_service_names(void)
{
	struct target_rule include[] = {
		{ .service = "payments", .pod_label = "tier=frontend", .container = "app" },
		{ .namespace_name = "*" },
		{ .executable = "/usr/*" },
	};
	struct target_rules rules = { .include = include, .n_include = 3 };
	struct target_rules none = { 0 };
	struct process_info p;
	char service[64];

	/* A rule's service wins; else the pod's (annotation, else NAMESPACE/CONTAINER). */
	pod_process(&p, &checkout_app);
	CHECK(matches(&rules, &p, "payments"));
	CHECK(matches(&none, &p, "shop/app"));
	pod_process(&p, &checkout_envoy);
	CHECK(matches(&rules, &p, "shop/envoy"));
	pod_process(&p, &annotated);
	CHECK(matches(&rules, &p, "dns"));
	target_rules__default_service(&p, service, sizeof(service));
	CHECK_STR(service, "dns");
	target_rules__default_service(&p, service, 3);
	CHECK_STR(service, "dn");

	/* Pod unknown: named as on a host (the runtime's scope does not count). */
	pod_process(&p, NULL);
	CHECK(matches(&none, &p, "server"));
	fake_process(&p, "/usr/sbin/nginx", "nginx", "/system.slice/nginx.service");
	CHECK(matches(&rules, &p, "nginx"));
}

static void test_clear(void)
{
	struct target_rules rules = { 0 };

	rules.include = calloc(2, sizeof(*rules.include));
	rules.exclude = calloc(1, sizeof(*rules.exclude));
	CHECK(rules.include && rules.exclude);
	if (!rules.include || !rules.exclude) {
		free(rules.include);
		free(rules.exclude);
		return;
	}
	rules.n_include = 2;
	rules.n_exclude = 1;
	rules.include[0].service = strdup("cache");
	rules.include[0].executable = strdup("/usr/bin/redis-*");
	rules.include[0].process_name = strdup("redis*");
	rules.include[0].cgroup = strdup("/system.slice");
	rules.include[0].systemd_unit = strdup("redis*.service");
	rules.include[1].cgroup = strdup("/kubepods.slice");
	rules.include[1].namespace_name = strdup("shop");
	rules.include[1].pod_label = strdup("app=web");
	rules.include[1].container = strdup("app");
	rules.exclude[0].process_name = strdup("bash");

	target_rules__clear(&rules);
	CHECK(rules.include == NULL);
	CHECK(rules.exclude == NULL);
	CHECK_EQ_U64(rules.n_include, 0);
	CHECK_EQ_U64(rules.n_exclude, 0);
	/* Clearing again, or nothing, is harmless. */
	target_rules__clear(&rules);
	target_rules__clear(NULL);
}

int main(void)
{
	RUN(test_read_deleted_executable);
	RUN(test_read_container);
	RUN(test_read_plain_executable_and_names);
	RUN(test_read_cgroup_versions);
	RUN(test_read_huge_cgroup_file);
	RUN(test_read_kernel_thread);
	RUN(test_read_vanished_process);
	RUN(test_read_self);
	RUN(test_parse_cgroup);
	RUN(test_parse_cgroup_too_long);
	RUN(test_unit_of_cgroup);
	RUN(test_unit_of_cgroup_too_long);
	RUN(test_no_include_rules_match_all);
	RUN(test_include_by_each_matcher);
	RUN(test_inuse_from_the_first_matching_rule);
	RUN(test_unknown_facts_match_no_glob);
	RUN(test_all_matchers_of_a_rule_must_match);
	RUN(test_exclusion_wins);
	RUN(test_first_matching_rule_names_the_service);
	RUN(test_unnamed_first_rule_is_not_overridden);
	RUN(test_service_is_truncated);
	RUN(test_default_service);
	RUN(test_default_service_truncated);
	RUN(test_cgroup_component_boundary);
	RUN(test_executable_globs);
	RUN(test_kernel_threads_never_match);
	RUN(test_pod_matchers);
	RUN(test_unknown_pod_matches_no_pod_rule);
	RUN(test_pod_service_names);
	RUN(test_clear);
	return unit_summary("target_rules");
}
