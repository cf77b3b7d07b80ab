//go:build !linux

// Command forkstat compares procmon's CPU cost per event with forkstat's; it
// needs Linux.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "forkstat comparison: Linux only")
	os.Exit(1)
}
