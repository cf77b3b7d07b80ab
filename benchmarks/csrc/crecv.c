// The C contestants of the connector benchmarks: the floor that a Go receive
// path is compared with. One program, two receive loops (-name):
//
//   c-recv      a blocking recv(2) of one datagram at a time into one static
//               buffer: the plainest reader there is. recv returns no
//               address, so it cannot check that the sender is the kernel.
//   c-recvmmsg  a blocking recvmmsg(2) of up to 64 datagrams with
//               MSG_WAITFORONE into static buffers, checking that every
//               sender is the kernel (port 0).
//
// Both check what any correct reader must (no truncation, netlink and cn_msg
// lengths before reading, the cn_proc id) and count the same way as the Go
// contestants (contestant_linux.go): every proc event, and among them the
// FORK and EXIT events of the storm's threads. The protocol is the Go
// contestants' own: "ready <rcvbuf>" once subscribed, then "expect N" or
// "stop" lines on stdin, then one "result {json}" line. CPU time is the
// process's (getrusage RUSAGE_SELF), its control thread included, as for
// the Go contestants.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

// Kernel facts, as in procwire_linux.go: include/uapi/linux/cn_proc.h.
#define PROC_CN_MCAST_LISTEN 1
#define PROC_CN_MCAST_IGNORE 2
#define PROC_EVENT_FORK 0x00000001u
#define PROC_EVENT_EXIT 0x80000000u
#define EV_MIN 32 // bytes of struct proc_event read below

#define BATCH 64
#define BUFSZ 8192 // one page-sized datagram buffer each (proc events are < 100 bytes)

static int fd = -1;
static uint32_t storm_pid;
static int use_mmsg;

// Counters. The receive loop is the only writer; storm, expect and the end
// marks are read by the control thread.
static uint64_t events, other, enobufs;
static uint64_t storm;    // atomic
static uint64_t expect;   // atomic
static int64_t end_ns;    // atomic
static uint64_t end_events;
static int64_t end_cpu_ns;
static int64_t first_ns;
static uint64_t first_events;
static int stopped;       // atomic

static unsigned char rbuf[BUFSZ] __attribute__((aligned(64)));
static unsigned char mbuf[BATCH][BUFSZ] __attribute__((aligned(64)));
static struct mmsghdr hdrs[BATCH];
static struct iovec iovs[BATCH];
static struct sockaddr_nl names[BATCH];

static int64_t mono_now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t tv_ns(struct timeval tv) { return (int64_t)tv.tv_sec * 1000000000LL + (int64_t)tv.tv_usec * 1000; }

static int64_t cpu_now(void) {
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime);
}

static void storm_event(void) {
	uint64_t n = __atomic_add_fetch(&storm, 1, __ATOMIC_RELAXED);
	if (n == 1) {
		first_ns = mono_now();
		first_events = events;
	}
	if (n == __atomic_load_n(&expect, __ATOMIC_RELAXED)) {
		end_events = events;
		end_cpu_ns = cpu_now();
		__atomic_store_n(&end_ns, mono_now(), __ATOMIC_RELEASE);
	}
}

static uint32_t rd32(const unsigned char *p) {
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

// datagram counts one netlink datagram of n bytes.
static void datagram(const unsigned char *b, size_t n) {
	if (n < NLMSG_HDRLEN) { other++; return; }
	uint32_t l = rd32(b);
	if (l < NLMSG_HDRLEN || l > n) { other++; return; }
	const unsigned char *p = b + NLMSG_HDRLEN;
	size_t pl = l - NLMSG_HDRLEN;
	if (pl < sizeof(struct cn_msg)) { other++; return; }
	const struct cn_msg *m = (const struct cn_msg *)p;
	if (m->id.idx != CN_IDX_PROC || m->id.val != CN_VAL_PROC || sizeof(struct cn_msg) + m->len > pl) {
		other++;
		return;
	}
	if (m->len < EV_MIN) { other++; return; }
	const unsigned char *d = p + sizeof(struct cn_msg);
	events++;
	uint32_t what = rd32(d), pid, tgid;
	if (what == PROC_EVENT_FORK) {
		pid = rd32(d + 24); // fork.child_pid
		tgid = rd32(d + 28);
	} else if (what == PROC_EVENT_EXIT) {
		pid = rd32(d + 16); // exit.process_pid
		tgid = rd32(d + 20);
	} else {
		return;
	}
	if (tgid == storm_pid && pid != storm_pid) storm_event();
}

static int mcast(uint32_t op) {
	struct {
		struct nlmsghdr nl;
		struct cn_msg cn;
		uint32_t op;
	} __attribute__((packed)) msg;
	memset(&msg, 0, sizeof msg);
	msg.nl.nlmsg_len = sizeof msg;
	msg.nl.nlmsg_type = NLMSG_DONE;
	msg.cn.id.idx = CN_IDX_PROC;
	msg.cn.id.val = CN_VAL_PROC;
	msg.cn.len = sizeof(uint32_t);
	msg.op = op;
	struct sockaddr_nl to = {.nl_family = AF_NETLINK};
	return sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&to, sizeof to) < 0 ? -1 : 0;
}

static void *receive(void *arg) {
	(void)arg;
	if (use_mmsg) {
		for (int i = 0; i < BATCH; i++) {
			iovs[i].iov_base = mbuf[i];
			iovs[i].iov_len = BUFSZ;
			hdrs[i].msg_hdr.msg_iov = &iovs[i];
			hdrs[i].msg_hdr.msg_iovlen = 1;
			hdrs[i].msg_hdr.msg_name = &names[i];
		}
	}
	while (!__atomic_load_n(&stopped, __ATOMIC_RELAXED)) {
		if (!use_mmsg) {
			ssize_t n = recv(fd, rbuf, sizeof rbuf, 0);
			if (n < 0) {
				if (errno == ENOBUFS) enobufs++;
				else if (errno != EAGAIN && errno != EINTR) return (void *)(intptr_t)errno;
				continue;
			}
			datagram(rbuf, (size_t)n);
			continue;
		}
		for (int i = 0; i < BATCH; i++) hdrs[i].msg_hdr.msg_namelen = sizeof names[i];
		int n = recvmmsg(fd, hdrs, BATCH, MSG_WAITFORONE, NULL);
		if (n < 0) {
			if (errno == ENOBUFS) enobufs++;
			else if (errno != EAGAIN && errno != EINTR) return (void *)(intptr_t)errno;
			continue;
		}
		for (int i = 0; i < n; i++) {
			if ((hdrs[i].msg_hdr.msg_flags & MSG_TRUNC) || names[i].nl_pid != 0) {
				other++;
				continue;
			}
			datagram(mbuf[i], hdrs[i].msg_len);
		}
	}
	return NULL;
}

// parse_duration reads a Go duration ("2m5s", "300ms") into nanoseconds.
static int64_t parse_duration(const char *s) {
	int64_t total = 0;
	while (*s) {
		char *end;
		double v = strtod(s, &end);
		if (end == s) return total;
		s = end;
		double unit = 1e9;
		if (!strncmp(s, "ns", 2)) unit = 1, s += 2;
		else if (!strncmp(s, "us", 2) || !strncmp(s, "\xc2\xb5s", 3)) unit = 1e3, s += (*s == 'u' ? 2 : 3);
		else if (!strncmp(s, "ms", 2)) unit = 1e6, s += 2;
		else if (*s == 's') unit = 1e9, s++;
		else if (*s == 'm') unit = 60e9, s++;
		else if (*s == 'h') unit = 3600e9, s++;
		total += (int64_t)(v * unit);
	}
	return total;
}

static int64_t vm_hwm_kb(void) {
	FILE *f = fopen("/proc/self/status", "r");
	if (!f) return 0;
	char line[256];
	long long v = 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %lld", &v) == 1) break;
	fclose(f);
	return v;
}

int main(int argc, char **argv) {
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	const char *role = getenv("CNBENCH_ROLE");
	if (role != NULL) prctl(PR_SET_NAME, role, 0, 0, 0);

	const char *name = "";
	long long rcvbuf = 0;
	int no_enobufs = 0;
	int64_t quiet_ns = 300000000LL, limit_ns = 120000000000LL;
	uint64_t exp0 = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
		if (!strcmp(a, "-no-enobufs")) { no_enobufs = 1; continue; }
		if (!strcmp(a, "-name")) name = v;
		else if (!strcmp(a, "-storm-pid")) storm_pid = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "-rcvbuf")) rcvbuf = atoll(v);
		else if (!strcmp(a, "-expect")) exp0 = strtoull(v, NULL, 10);
		else if (!strcmp(a, "-quiet")) quiet_ns = parse_duration(v);
		else if (!strcmp(a, "-limit")) limit_ns = parse_duration(v);
		// -batch, -msgbuf and the rest are the Go contestants' settings:
		// these loops are fixed (recv: one datagram; recvmmsg: 64).
		i++;
	}
	if (!strcmp(name, "c-recv")) use_mmsg = 0;
	else if (!strcmp(name, "c-recvmmsg")) use_mmsg = 1;
	else { fprintf(stderr, "crecv: unknown -name %s\n", name); return 1; }
	__atomic_store_n(&expect, exp0, __ATOMIC_RELAXED);

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
	if (fd < 0) { perror("socket"); return 1; }
	if (rcvbuf > 0) {
		int b = rcvbuf > 0x7fffffff ? 0x7fffffff : (int)rcvbuf;
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &b, sizeof b) < 0) { perror("SO_RCVBUFFORCE"); return 1; }
	}
	if (no_enobufs) {
		int one = 1;
		if (setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one) < 0) { perror("NETLINK_NO_ENOBUFS"); return 1; }
	}
	// Wake up now and then to notice stop, as the Go raw loop does.
	struct timeval tmo = {0, 50000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof tmo);
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1u << (CN_IDX_PROC - 1)};
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("bind"); return 1; }
	if (mcast(PROC_CN_MCAST_LISTEN) < 0) { perror("listen"); return 1; }
	int got = 0;
	socklen_t gl = sizeof got;
	getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &gl);

	printf("ready %d\n", got);
	fflush(stdout);
	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	int64_t cpu0 = tv_ns(ru0.ru_utime) + tv_ns(ru0.ru_stime);
	pthread_t th;
	if (pthread_create(&th, NULL, receive, NULL) != 0) { perror("pthread_create"); return 1; }

	// Control, as in contestantMain: wait for the expected count, then for
	// the storm events to arrive or stop arriving. Quiet is counted in
	// 10 ms ticks, not wall time, so that time stopped does not count.
	const int64_t tick = 10000000LL;
	int64_t idle = 0, deadline = mono_now() + limit_ns;
	uint64_t last = 0;
	int armed = 0, eof = 0;
	char line[256];
	size_t ll = 0;
	const char *err = NULL;
	for (;;) {
		struct pollfd p = {.fd = 0, .events = POLLIN};
		int r = eof ? poll(NULL, 0, 10) : poll(&p, 1, 10);
		if (r > 0 && (p.revents & (POLLIN | POLLHUP))) {
			ssize_t n = read(0, line + ll, sizeof line - 1 - ll);
			if (n <= 0) {
				eof = 1;
				if (__atomic_load_n(&expect, __ATOMIC_RELAXED) == 0) break;
				continue;
			}
			ll += (size_t)n;
			line[ll] = 0;
			char *nl;
			int stop = 0;
			while ((nl = strchr(line, '\n')) != NULL) {
				*nl = 0;
				if (!strncmp(line, "expect ", 7)) {
					uint64_t v = strtoull(line + 7, NULL, 10);
					__atomic_store_n(&expect, v, __ATOMIC_RELAXED);
					armed = 1;
					if (__atomic_load_n(&storm, __ATOMIC_RELAXED) >= v && __atomic_load_n(&end_ns, __ATOMIC_ACQUIRE) == 0)
						__atomic_store_n(&end_ns, mono_now(), __ATOMIC_RELEASE);
				}
				if (!strcmp(line, "stop")) stop = 1;
				size_t rest = ll - (size_t)(nl + 1 - line);
				memmove(line, nl + 1, rest);
				ll = rest;
				line[ll] = 0;
			}
			if (ll == sizeof line - 1) ll = 0;
			if (stop) break;
			continue;
		}
		uint64_t n = __atomic_load_n(&storm, __ATOMIC_RELAXED);
		if (n != last) {
			last = n, idle = 0, armed = 1;
		} else if (armed) {
			idle += tick;
		}
		uint64_t e = __atomic_load_n(&expect, __ATOMIC_RELAXED);
		if (e != 0 && (n >= e || idle > quiet_ns)) break;
		if (mono_now() > deadline) { err = "hard time limit reached"; break; }
	}
	mcast(PROC_CN_MCAST_IGNORE);
	__atomic_store_n(&stopped, 1, __ATOMIC_RELAXED);
	void *rerr = NULL;
	pthread_join(th, &rerr);
	getrusage(RUSAGE_SELF, &ru1);
	char ebuf[128] = "";
	if (rerr != NULL) snprintf(ebuf, sizeof ebuf, "receive: %s", strerror((int)(intptr_t)rerr));
	else if (err != NULL) snprintf(ebuf, sizeof ebuf, "%s", err);
	int64_t endcpu = end_cpu_ns > 0 ? end_cpu_ns - cpu0 : 0;
	printf("result {\"name\":\"%s\",\"events\":%llu,\"storm\":%llu,\"expect\":%llu,\"enobufs\":%llu,"
	       "\"restarts\":0,\"other\":%llu,\"end_events\":%llu,\"end_ns\":%lld,\"end_cpu_ns\":%lld,"
	       "\"first_ns\":%lld,\"first_events\":%llu,\"user_ns\":%lld,\"sys_ns\":%lld,\"mallocs\":0,\"bytes\":0,"
	       "\"maxrss_kb\":%ld,\"vmhwm_kb\":%lld,\"rcvbuf\":%d%s%s%s}\n",
	       name, (unsigned long long)events, (unsigned long long)storm, (unsigned long long)expect,
	       (unsigned long long)enobufs, (unsigned long long)other, (unsigned long long)end_events,
	       (long long)end_ns, (long long)(endcpu > 0 ? endcpu : 0), (long long)first_ns,
	       (unsigned long long)first_events,
	       (long long)(tv_ns(ru1.ru_utime) - tv_ns(ru0.ru_utime)), (long long)(tv_ns(ru1.ru_stime) - tv_ns(ru0.ru_stime)),
	       ru1.ru_maxrss, (long long)vm_hwm_kb(), got,
	       ebuf[0] ? ",\"err\":\"" : "", ebuf, ebuf[0] ? "\"" : "");
	fflush(stdout);
	return 0;
}
