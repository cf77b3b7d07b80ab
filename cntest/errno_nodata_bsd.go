//go:build freebsd || openbsd

package cntest

import "syscall"

// errNoData is what the fake returns for an empty send. FreeBSD and OpenBSD
// have no ENODATA (Linux's answer); ENOATTR is their nearest errno.
const errNoData = syscall.ENOATTR
