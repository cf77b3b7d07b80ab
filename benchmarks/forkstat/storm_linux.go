//go:build linux && cgo

package main

// The storms, in C so that the storm process does nothing but create the
// tasks: fork+exit (a child that calls _exit at once), threads (created and
// joined) and fork+exec of a program. Each runs in a re-executed copy of this
// binary (see runStormChild), so its events come from one pid tree.

/*
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static long storm_fork(long n) {
	long done = 0;
	for (long i = 0; i < n; i++) {
		pid_t p = fork();
		if (p == 0) _exit(0);
		if (p < 0) continue;
		int st;
		if (waitpid(p, &st, 0) == p) done++;
	}
	return done;
}

static void *storm_thread_fn(void *arg) { return arg; }

static long storm_threads(long n) {
	long done = 0;
	for (long i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, storm_thread_fn, NULL) != 0) continue;
		if (pthread_join(t, NULL) == 0) done++;
	}
	return done;
}

static long storm_exec(long n, const char *path) {
	long done = 0;
	char *const argv[] = {(char *)path, NULL};
	char *const envp[] = {NULL};
	for (long i = 0; i < n; i++) {
		pid_t p = fork();
		if (p == 0) {
			execve(path, argv, envp);
			_exit(127);
		}
		if (p < 0) continue;
		int st;
		if (waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0) done++;
	}
	return done;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// runStorm runs a storm in this process and returns how many tasks it made.
func runStorm(kind string, n int, program string) (int, error) {
	switch kind {
	case "fork":
		return int(C.storm_fork(C.long(n))), nil
	case "threads":
		return int(C.storm_threads(C.long(n))), nil
	case "exec":
		p := C.CString(program)
		defer C.free(unsafe.Pointer(p))
		return int(C.storm_exec(C.long(n), p)), nil
	}
	return 0, fmt.Errorf("unknown storm %q", kind)
}
