//go:build !linux

// Command dmlogd needs Linux device-mapper; on other systems it only says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "dmlogd: linux only: dm-log-userspace exists only on Linux")
	os.Exit(1)
}
