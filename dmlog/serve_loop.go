package dmlog

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/cnlink/connector"
)

// serve0 is the receive loop of Serve.
func (s *Server) serve0(ctx context.Context, c *connector.Conn) error {
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	r := c.NewReader()
	defer r.Release()
	send := c.Send
	for {
		m, from, err := r.Next()
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, connector.ErrOverrun):
				s.overrun(err)
				continue
			case errors.Is(err, connector.ErrTruncated), errors.Is(err, connector.ErrMalformed):
				s.report(err)
				continue
			case errors.Is(err, os.ErrDeadlineExceeded):
				continue
			}
			return err
		}
		s.handle(m, from, send)
	}
}
