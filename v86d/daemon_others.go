//go:build !unix

package v86d

import "syscall"

func newSession() *syscall.SysProcAttr { return nil }
