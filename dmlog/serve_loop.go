package dmlog

import (
	"context"
	"errors"

	"github.com/cnlink/connector"
)

// ServeConnector answers one dm-log-userspace request: register the Server
// on a connector.Mux for connector.IDDM to serve it next to other agents
// (Serve does that for a Conn of its own). It ignores messages that are not
// from the kernel or not for IDDM, and replies through req.Reply. Register
// it without a Queue: dm waits for each reply, and ordering matters. Run
// Check on the Conn first: a Mux does not, and without CAP_SYS_ADMIN or the
// kernel's agent nothing served this way would reach the kernel.
func (s *Server) ServeConnector(req connector.Request) {
	s.handle(req.Msg, req.From, req.Reply)
}

// serve0 serves c through a connector.Mux.
func (s *Server) serve0(ctx context.Context, c *connector.Conn) error {
	mx := connector.NewMux()
	mx.Handle(connector.IDDM, s)
	return mx.Serve(ctx, c, &connector.ServeOptions{OnError: func(err error) {
		if errors.Is(err, connector.ErrOverrun) {
			s.overrun(err)
			return
		}
		s.report(err)
	}})
}
