//go:build !linux

// Command procmon needs the Linux netlink connector; on other systems it only
// says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "procmon: linux only: the netlink connector exists only on Linux")
	os.Exit(1)
}
