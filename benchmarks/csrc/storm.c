// The storm generator of the connector benchmarks: a C program of its own,
// which the suite compiles with the machine's C compiler and starts, so that
// every task of this process is a storm task and receivers can count the
// storm's events exactly by its pid (no Go runtime threads come and go here).
//
// Each iteration is one clone(2) of a thread (CLONE_VM|CLONE_THREAD and
// friends) whose function returns at once, so the kernel sends one FORK and
// one EXIT proc event per iteration, the cheapest pair of events there is.
// Up to STORM_SLOTS children are alive at a time, each on its own small stack;
// CLONE_PARENT_SETTID and CLONE_CHILD_CLEARTID mark a slot busy until its
// child has exited (the kernel clears the word and wakes the futex).
//
// Protocol on stdin/stdout: the storm prints "armed", waits for a line on
// stdin, runs, prints "clones=N fails=F ns=T" and exits. Parameters come from
// the environment: CNBENCH_STORM_NS bounds the run in nanoseconds,
// CNBENCH_STORM_COUNT bounds it in clones, CNBENCH_STORM_RATE, if set, paces
// it to at most that many events per second, and CNBENCH_ROLE names the
// process (PR_SET_NAME).
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define STORM_SLOTS 512
#define STORM_STACK 8192

static char storm_stacks[STORM_SLOTS][STORM_STACK] __attribute__((aligned(64)));
static volatile pid_t storm_tids[STORM_SLOTS];

static int storm_child(void *arg) { (void)arg; return 0; }

static long long storm_now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long storm_env(const char *name) {
	const char *v = getenv(name);
	return v ? atoll(v) : 0;
}

// storm_wait_slot waits until the child that last used slot has exited.
static void storm_wait_slot(int slot) {
	pid_t t;
	while ((t = storm_tids[slot]) != 0) {
		struct timespec to = {0, 10 * 1000 * 1000};
		syscall(SYS_futex, &storm_tids[slot], FUTEX_WAIT, t, &to, NULL, 0);
	}
}

static void storm_write(const char *s) {
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(1, s, n);
		if (w < 0) {
			if (errno == EINTR) continue;
			_exit(3);
		}
		s += w;
		n -= (size_t)w;
	}
}

int main(void) {
	// Die with the suite, even if it is killed outright.
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	const char *role = getenv("CNBENCH_ROLE");
	if (role != NULL) prctl(PR_SET_NAME, role, 0, 0, 0);

	long long limit_ns = storm_env("CNBENCH_STORM_NS");
	long long limit_n = storm_env("CNBENCH_STORM_COUNT");
	long long rate = storm_env("CNBENCH_STORM_RATE"); // events per second
	if (limit_ns <= 0 && limit_n <= 0) limit_ns = 1000000000LL;

	storm_write("armed\n");
	char c;
	for (;;) {
		ssize_t r = read(0, &c, 1);
		if (r == 1 && c == '\n') break;
		if (r == 0) _exit(2); // the suite went away
		if (r < 0 && errno != EINTR) _exit(2);
	}

	const int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
		CLONE_SYSVSEM | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
	long long clones = 0, fails = 0, i = 0;
	long long start = storm_now(), now = start;
	for (;;) {
		if ((i & 31) == 0) {
			now = storm_now();
			if (limit_ns > 0 && now - start >= limit_ns) break;
			if (rate > 0) {
				// Two events per clone: stay at or below the rate.
				long long due = start + clones * 2 * 1000000000LL / rate;
				if (due > now) {
					struct timespec ts = {(due - now) / 1000000000LL, (due - now) % 1000000000LL};
					nanosleep(&ts, NULL);
				}
			}
		}
		if (limit_n > 0 && clones >= limit_n) break;
		int slot = (int)(i % STORM_SLOTS);
		i++;
		storm_wait_slot(slot);
		int r = clone(storm_child, storm_stacks[slot] + STORM_STACK, flags, NULL,
			(pid_t *)&storm_tids[slot], NULL, (pid_t *)&storm_tids[slot]);
		if (r < 0) {
			storm_tids[slot] = 0;
			fails++;
			if (fails > 1000000) break;
			continue;
		}
		clones++;
	}
	long long elapsed = storm_now() - start;
	for (int s = 0; s < STORM_SLOTS; s++) storm_wait_slot(s);

	char line[128];
	snprintf(line, sizeof line, "clones=%lld fails=%lld ns=%lld\n", clones, fails, elapsed);
	storm_write(line);
	_exit(0);
}
