//go:build linux

// Command benchmarks is the side-by-side performance suite of package
// connector: it measures this library's receive paths against a raw
// recvmmsg loop, github.com/vishvananda/netlink's ProcEventMonitor and a plain
// github.com/mdlayher/netlink Receive loop on the same kernel proc events
// (a storm of thread clones), and userspace unicast throughput over
// NETLINK_CONNECTOR. See README.md.
//
// Every contestant runs in its own process (this binary, re-executed), so CPU
// time, allocations and peak RSS are its own. It needs root (CAP_NET_ADMIN for
// SO_RCVBUFFORCE and unicast, and the initial namespaces for the proc
// connector) and cgo for the storm generator.
package main

import (
	"fmt"
	"os"
)

func main() {
	if !runChild() {
		exit(suiteMain(os.Args[1:]))
	}
}

// runChild runs this process as one of the suite's children if the
// environment says so, and exits; it returns false otherwise. (The storm
// child never gets here: it runs from an ELF constructor, see storm_linux.go.)
func runChild() bool {
	var err error
	mode := os.Getenv(modeEnv)
	if mode != "" {
		nameSelf()
	}
	switch mode {
	case "contestant":
		err = contestantMain(os.Args[1:])
	case "urecv":
		err = urecvMain(os.Args[1:])
	case "usend":
		err = usendMain(os.Args[1:])
	default:
		return false
	}
	exit(err)
	return true
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchmarks:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
