//go:build linux && !cgo

package main

import "errors"

func runStorm(string, int, string) (int, error) {
	return 0, errors.New("the storms need cgo: build with CGO_ENABLED=1 and a C compiler")
}
