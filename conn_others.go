//go:build !linux

package connector

import (
	"fmt"
	"runtime"

	"github.com/cnlink/connector/internal/transport"
)

func dial(*Config, uint32) (transport.Transport, error) {
	return nil, fmt.Errorf("%w: the netlink connector exists only on Linux, not on %s/%s", ErrNotSupported, runtime.GOOS, runtime.GOARCH)
}

// notSupported is the error of an operation this system does not support.
func notSupported(op string) error {
	return &OpError{Op: op, Err: fmt.Errorf("%w by this connection", ErrNotSupported)}
}

// fdConn stands in for the Linux KernelWait socket, which no Conn has here.
type fdConn struct{}

func (*fdConn) sendto([]byte, uint32, uint32) error { return ErrNotSupported }

func kernelWaitSocket(transport.Transport) *fdConn { return nil }
