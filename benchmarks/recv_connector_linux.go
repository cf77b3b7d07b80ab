//go:build linux

package main

import (
	"encoding/binary"
	"errors"

	"github.com/cnlink/connector"
)

// connRecv is this library: the Reader fast path (recvmmsg batches, zero
// copy) or, with simple set, Conn.Receive (owned copies).
type connRecv struct {
	simple bool
	// kernelWait sets Config.KernelWait, rawWait Config.RawWait too.
	kernelWait, rawWait bool
	c                   *connector.Conn
	rd                  *connector.Reader
	t                   *tally
}

func init() {
	receivers["connector"] = func() receiver { return &connRecv{} }
	receivers["connector-kw"] = func() receiver { return &connRecv{kernelWait: true} }
	receivers["connector-raw"] = func() receiver { return &connRecv{kernelWait: true, rawWait: true} }
	receivers["connector-receive"] = func() receiver { return &connRecv{simple: true} }
}

func procOp(op uint32) connector.Message {
	return connector.Message{ID: connector.IDProc, Data: binary.NativeEndian.AppendUint32(nil, op)}
}

func (r *connRecv) start(o *recvOpts, t *tally) error {
	c, err := connector.Dial(&connector.Config{
		Groups:            []connector.Group{connector.IDProc.Group()},
		ReadBufferSize:    o.rcvbuf,
		NoENOBUFS:         o.noENOBUFS,
		BatchSize:         o.batch,
		MessageBufferSize: o.msgbuf,
		KernelWait:        r.kernelWait,
		RawWait:           r.rawWait,
	})
	if err != nil {
		return err
	}
	if err := c.Send(procOp(procCnMcastListen)); err != nil {
		c.Close()
		return err
	}
	r.c, r.t = c, t
	if !r.simple {
		// Take the Reader's buffers now, as the raw loop allocates its
		// buffer before the measurement window opens.
		r.rd = c.NewReader()
	}
	return nil
}

func (r *connRecv) run() error {
	if r.simple {
		return r.runReceive()
	}
	rd := r.rd
	defer rd.Release()
	for {
		m, from, err := rd.Next()
		if err != nil {
			if done, err := r.recvErr(err); done {
				return err
			}
			continue
		}
		r.count(m, from)
	}
}

func (r *connRecv) runReceive() error {
	for {
		msgs, from, err := r.c.Receive()
		if err != nil {
			if done, err := r.recvErr(err); done {
				return err
			}
			continue
		}
		for _, m := range msgs {
			r.count(m, from)
		}
	}
}

// recvErr sorts a receive error: an overrun is counted and reading goes on;
// Close ends the run without error; anything else ends it with err.
func (r *connRecv) recvErr(err error) (done bool, _ error) {
	switch {
	case errors.Is(err, connector.ErrOverrun):
		r.t.enobufs.Add(1)
		return false, nil
	case errors.Is(err, connector.ErrClosed):
		return true, nil
	}
	return true, err
}

// count tallies one received message.
func (r *connRecv) count(m connector.Message, from connector.Sender) {
	if m.ID != connector.IDProc || !from.Kernel() {
		r.t.other.Add(1)
		return
	}
	r.t.procEvent(m.Data)
}

func (r *connRecv) stop() {
	_ = r.c.Send(procOp(procCnMcastIgnore))
	_ = r.c.Close()
}

func (r *connRecv) rcvbuf() int {
	n, _ := r.c.ReadBuffer()
	return n
}
