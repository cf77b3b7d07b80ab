//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vnRecv is github.com/vishvananda/netlink's ProcEventMonitor. The monitor
// hides its socket and gives up on the first receive error (ENOBUFS
// included), so this contestant does what a user has to: count the error and
// start a new monitor. To give it the same receive buffer as the others, the
// buffer option is set on the monitor's socket, found through /proc/self/fd.
type vnRecv struct {
	o       *recvOpts
	t       *tally
	ch      chan vnl.ProcEvent
	errc    chan error
	done    chan struct{}
	stopped atomic.Bool
	fds     []int
}

// vnChanLen is the event channel's capacity: generous, so that the channel is
// not what limits the monitor.
const vnChanLen = 1024

func init() { receivers["vishvananda"] = func() receiver { return &vnRecv{} } }

func (r *vnRecv) start(o *recvOpts, t *tally) error {
	r.o, r.t = o, t
	return r.monitor()
}

func (r *vnRecv) monitor() error {
	r.ch = make(chan vnl.ProcEvent, vnChanLen)
	r.errc = make(chan error, 4)
	r.done = make(chan struct{})
	if err := vnl.ProcEventMonitor(r.ch, r.done, r.errc); err != nil {
		return err
	}
	fds, err := connectorSockets()
	if err != nil {
		return err
	}
	// An old monitor's socket may still be closing: set what can be set.
	var firstErr error
	r.fds = r.fds[:0]
	for _, fd := range fds {
		var err error
		if r.o.rcvbuf > 0 {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, r.o.rcvbuf)
		}
		if err == nil && r.o.noENOBUFS {
			err = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
		}
		if err != nil {
			firstErr = err
			continue
		}
		r.fds = append(r.fds, fd)
	}
	if len(r.fds) == 0 {
		return fmt.Errorf("set options on the monitor's socket: %w", firstErr)
	}
	return nil
}

func (r *vnRecv) run() error {
	for {
		ev, ok := <-r.ch
		if !ok {
			// The monitor gave up: find out why.
			var err error
			select {
			case err = <-r.errc:
			default:
			}
			if r.stopped.Load() {
				return nil
			}
			switch {
			case errors.Is(err, unix.ENOBUFS):
				r.t.enobufs.Add(1)
			case err != nil && strings.Contains(err.Error(), "Wrong sender portid"):
				// A message on group 1 from a userspace socket (another
				// process with CAP_NET_ADMIN): the monitor gives up on
				// it as on ENOBUFS, and its users must start a new one.
				r.t.other.Add(1)
			default:
				return fmt.Errorf("monitor stopped: %v", err)
			}
			r.t.restarts++
			close(r.done)
			if err := r.monitor(); err != nil {
				return err
			}
			continue
		}
		switch m := ev.Msg.(type) {
		case *vnl.ForkProcEvent:
			r.t.forkExit(ev.What, m.ChildPid, m.ChildTgid)
		case *vnl.ExitProcEvent:
			r.t.forkExit(ev.What, m.ProcessPid, m.ProcessTgid)
		default:
			r.t.forkExit(ev.What, 0, 0)
		}
	}
}

func (r *vnRecv) stop() {
	r.stopped.Store(true)
	close(r.done)
}

func (r *vnRecv) rcvbuf() int {
	if len(r.fds) == 0 {
		return 0
	}
	n, _ := unix.GetsockoptInt(r.fds[0], unix.SOL_SOCKET, unix.SO_RCVBUF)
	return n
}

// connectorSockets returns this process's open NETLINK_CONNECTOR sockets,
// matching the inodes of /proc/self/fd against /proc/self/net/netlink.
func connectorSockets() ([]int, error) {
	f, err := os.Open("/proc/self/net/netlink")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	inodes := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
		fs := strings.Fields(sc.Text())
		if len(fs) >= 10 && fs[1] == strconv.Itoa(unix.NETLINK_CONNECTOR) {
			inodes[fs[9]] = true
		}
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		ino, ok := strings.CutPrefix(l, "socket:[")
		if !ok || !inodes[strings.TrimSuffix(ino, "]")] {
			continue
		}
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, fd)
		}
	}
	if len(fds) == 0 {
		return nil, errors.New("the monitor's NETLINK_CONNECTOR socket was not found in /proc/self/fd")
	}
	return fds, nil
}
