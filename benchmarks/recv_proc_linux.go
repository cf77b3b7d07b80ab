//go:build linux

package main

import (
	"errors"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/proc"
)

// procAvailable reports whether the proc package contestant is built in.
const procAvailable = true

// procRecv is this library's process-events API: proc.Listener.Next decoding
// into one caller-owned Event, with loss reported in band.
type procRecv struct {
	l *proc.Listener
	// kernelWait opens the Conn with Config.KernelWait (proc.NewListener),
	// rawWait with Config.RawWait too.
	kernelWait, rawWait bool
	t                   *tally
	ev                  proc.Event
}

func init() {
	receivers["proc"] = func() receiver { return &procRecv{} }
	receivers["proc-kw"] = func() receiver { return &procRecv{kernelWait: true} }
	receivers["proc-raw"] = func() receiver { return &procRecv{kernelWait: true, rawWait: true} }
}

func (r *procRecv) start(o *recvOpts, t *tally) error {
	var l *proc.Listener
	var err error
	if r.kernelWait {
		// The socket proc.Listen would open, with Config.KernelWait.
		var c *connector.Conn
		c, err = connector.Dial(&connector.Config{
			Groups:            []connector.Group{connector.IDProc.Group()},
			MessageBufferSize: proc.MessageBufferSize,
			BatchSize:         o.batch,
			Senders:           connector.SendersKernelOnly,
			KernelWait:        true,
			RawWait:           r.rawWait,
		})
		if err != nil {
			return err
		}
		if l, err = proc.NewListener(c, &proc.Config{ReadBufferSize: o.rcvbuf, NoENOBUFS: o.noENOBUFS}); err != nil {
			c.Close()
		}
	} else {
		l, err = proc.Listen(&proc.Config{ReadBufferSize: o.rcvbuf, NoENOBUFS: o.noENOBUFS, BatchSize: o.batch})
	}
	if err != nil {
		return err
	}
	r.l, r.t = l, t
	return nil
}

func (r *procRecv) run() error {
	ev := &r.ev
	for {
		if err := r.l.Next(ev); err != nil {
			if errors.Is(err, connector.ErrClosed) {
				return nil
			}
			if errors.Is(err, connector.ErrMalformed) || errors.Is(err, connector.ErrTruncated) {
				r.t.other.Add(1)
				continue
			}
			return err
		}
		switch ev.Kind {
		case proc.KindLost:
			if ev.CPU == proc.CPUUnknown {
				r.t.enobufs.Add(1)
			}
		case proc.KindFork, proc.KindExit:
			r.t.forkExit(uint32(ev.Kind), uint32(ev.PID), uint32(ev.TGID))
		default:
			r.t.forkExit(uint32(ev.Kind), 0, 0)
		}
	}
}

func (r *procRecv) stop() { _ = r.l.Close() }

func (r *procRecv) rcvbuf() int {
	n, _ := r.l.ReadBuffer()
	return n
}
