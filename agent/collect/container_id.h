/* Which container a process runs in, read from its /proc/PID/cgroup: the container id (64 hex
 * digits) and the runtime that made it, and for Kubernetes pods the pod uid and QoS class.
 * Kubernetes pod metadata (collect/kube_pods.h) is looked up by that id.
 *
 * Path forms understood, on cgroup v2 ("0::PATH") and v1 ("N:CONTROLLERS:PATH", every line):
 *   kubelet, systemd driver   /kubepods.slice/kubepods-burstable.slice/
 *                             kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
 *                             (also crio-<id>.scope, docker-<id>.scope; no QoS slice for
 *                             Guaranteed pods: /kubepods.slice/kubepods-pod<uid>.slice/...)
 *   kubelet, cgroupfs driver  /kubepods/burstable/pod<uid>/<id> (also crio-<id>)
 *   Docker                    /docker/<id>, /system.slice/docker-<id>.scope
 *   Podman                    /machine.slice/libpod-<id>.scope
 *   inside a cgroup namespace the same paths relative to the reader's cgroup, such as
 *                             /../../kubepods-besteffort-pod<uid>.slice/crio-<id>.scope
 *                             (what an agent in a pod sees: the kubelet gives every container
 *                             its own cgroup namespace on cgroup v2)
 * The outermost container component wins: a sub-cgroup a container makes for itself, or a
 * container nested in it (Docker in Docker), belongs to the container the node's runtime
 * made, which is the one Kubernetes knows. Runtime monitor processes (CRI-O's and Podman's
 * conmon, in crio-conmon-<id>.scope and libpod-conmon-<id>.scope) are not in a container.
 * Pure parsing and one small read: never allocates. */
#ifndef ALLOCSCOPE_CONTAINER_ID_H
#define ALLOCSCOPE_CONTAINER_ID_H

#include <sys/types.h>

#define CONTAINER_ID_LEN 64 /* hex digits */
#define POD_UID_MAX_LEN	 36 /* a UUID; static pods' uids are 32 hex digits (a config hash) */

enum container_runtime {
	CONTAINER_RUNTIME_UNKNOWN,    /* a bare id (cgroupfs driver): the path does not say */
	CONTAINER_RUNTIME_CONTAINERD, /* cri-containerd-<id>.scope */
	CONTAINER_RUNTIME_CRIO,	      /* crio-<id>.scope, crio-<id> */
	CONTAINER_RUNTIME_DOCKER,     /* docker-<id>.scope, /docker/<id> */
	CONTAINER_RUNTIME_PODMAN,     /* libpod-<id>.scope */
};

enum pod_qos_class {
	POD_QOS_UNKNOWN,    /* not a pod, or the path does not show it (cgroup namespace) */
	POD_QOS_GUARANTEED, /* pod cgroup directly under kubepods */
	POD_QOS_BURSTABLE,
	POD_QOS_BESTEFFORT,
};

struct container_identity {
	char id[CONTAINER_ID_LEN + 1]; /* lowercase hex, as in the runtime's and the API's ids */
	enum container_runtime runtime;
	char pod_uid[POD_UID_MAX_LEN + 1]; /* with '-' (systemd slice names carry '_'); "" when
					      the container is not in a pod cgroup */
	enum pod_qos_class qos;
};

/* Finds the container in the text of /proc/PID/cgroup (NUL-terminated). Returns 0 with *out
 * filled; -ENOENT when the process is not in a container (host services, user sessions,
 * runtime monitors, kernel threads) or content is NULL; out is zeroed in every case. */
int container_id__parse(const char *content, struct container_identity *out);

/* Reads PROC_ROOT/PID/cgroup (proc_root is "/proc" except in tests) and parses it. Returns 0,
 * -ENOENT as above, -ESRCH when the process is gone, or another -errno. */
int container_id__read(const char *proc_root, pid_t pid, struct container_identity *out);

/* "containerd", "cri-o", "docker", "podman", "unknown": the names Kubernetes uses in
 * containerID ("containerd://<id>"), for labels. */
const char *container_runtime__name(enum container_runtime runtime);

/* "Guaranteed", "Burstable", "BestEffort" (as in the pod's status.qosClass), "" for unknown. */
const char *pod_qos_class__name(enum pod_qos_class qos);

#endif
