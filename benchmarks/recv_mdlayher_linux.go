//go:build linux

package main

import (
	"errors"
	"net"
	"os"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// mdRecv is a plain github.com/mdlayher/netlink Conn.Receive loop, the way
// garlic and most Go code read the connector.
type mdRecv struct {
	c *netlink.Conn
	t *tally
}

func init() { receivers["mdlayher"] = func() receiver { return &mdRecv{} } }

func (r *mdRecv) start(o *recvOpts, t *tally) error {
	c, err := netlink.Dial(unix.NETLINK_CONNECTOR, &netlink.Config{Groups: 1 << (cnIdxProc - 1)})
	if err != nil {
		return err
	}
	if o.rcvbuf > 0 {
		if err := c.SetReadBuffer(o.rcvbuf); err != nil {
			c.Close()
			return err
		}
	}
	if o.noENOBUFS {
		if err := c.SetOption(netlink.NoENOBUFS, true); err != nil {
			c.Close()
			return err
		}
	}
	if _, err := c.Send(netlink.Message{Header: netlink.Header{Type: netlink.Done}, Data: procMcastMsg(procCnMcastListen, 0)}); err != nil {
		c.Close()
		return err
	}
	r.c, r.t = c, t
	return nil
}

func (r *mdRecv) run() error {
	for {
		msgs, err := r.c.Receive()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				r.t.enobufs.Add(1)
				continue
			}
			if isClosedErr(err) {
				return nil
			}
			return err
		}
		for _, m := range msgs {
			idx, val, data, ok := cnMsg(m.Data)
			if !ok || idx != cnIdxProc || val != cnValProc {
				r.t.other.Add(1)
				continue
			}
			r.t.procEvent(data)
		}
	}
}

// isClosedErr matches the errors a read on a closed socket returns; netlink's
// own is not matchable with errors.Is, hence the text match as a last resort.
func isClosedErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.EBADF) ||
		strings.Contains(err.Error(), "use of closed")
}

func (r *mdRecv) stop() {
	_, _ = r.c.Send(netlink.Message{Header: netlink.Header{Type: netlink.Done}, Data: procMcastMsg(procCnMcastIgnore, 0)})
	_ = r.c.Close()
}

func (r *mdRecv) rcvbuf() int {
	n, _ := r.c.ReadBuffer()
	return n
}
