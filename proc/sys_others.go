//go:build !linux

package proc

import (
	"fmt"
	"runtime"

	"github.com/cnlink/connector"
)

func checkProcEvents() error { return nil }

func checkNamespaces() error { return nil }

func namespaceUnknown() string { return "" }

func socketDrops(*connector.Conn) (uint64, error) {
	return 0, fmt.Errorf("%w: the socket drop counter exists only on Linux, not on %s", connector.ErrNotSupported, runtime.GOOS)
}

type dropReader struct{}

func newDropReader(*connector.Conn) (*dropReader, error) {
	_, err := socketDrops(nil)
	return nil, err
}

func (*dropReader) read() (uint64, error) { return socketDrops(nil) }
