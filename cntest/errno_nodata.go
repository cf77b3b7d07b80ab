//go:build !freebsd && !openbsd

package cntest

import "syscall"

// errNoData is what the fake returns for an empty send: Linux's ENODATA.
const errNoData = syscall.ENODATA
