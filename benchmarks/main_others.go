//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "benchmarks: the netlink connector exists only on Linux, not on %s\n", runtime.GOOS)
	os.Exit(1)
}
