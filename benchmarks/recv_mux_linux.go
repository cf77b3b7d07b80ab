//go:build linux

package main

import (
	"context"
	"errors"

	"github.com/cnlink/connector"
)

// muxRecv is the connector contestant read through connector.Mux: Serve
// reads with the same Reader and calls a handler registered for the proc
// connector's id, so the difference to "connector" is the dispatch.
type muxRecv struct {
	connRecv
	err error // the first receive error other than an overrun
}

func init() {
	receivers["connector-mux"] = func() receiver { return &muxRecv{} }
}

func (r *muxRecv) start(o *recvOpts, t *tally) error {
	if err := r.connRecv.start(o, t); err != nil {
		return err
	}
	// Serve takes its own Reader.
	r.rd.Release()
	r.rd = nil
	return nil
}

func (r *muxRecv) run() error {
	mx := connector.NewMux()
	mx.HandleFunc(connector.IDProc, func(q connector.Request) { r.count(q.Msg, q.From) })
	mx.NotFound(connector.HandlerFunc(func(connector.Request) { r.t.other.Add(1) }))
	err := mx.Serve(context.Background(), r.c, &connector.ServeOptions{OnError: func(err error) {
		switch {
		case errors.Is(err, connector.ErrOverrun):
			r.t.enobufs.Add(1)
		case r.err == nil:
			r.err = err
		}
	}})
	if errors.Is(err, connector.ErrClosed) {
		return r.err
	}
	return err
}
