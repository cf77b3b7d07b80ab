package testutil

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
	"github.com/cnlink/connector/cntest"
)

// CheckAgentGateFake is CheckAgentGate on a cntest fake kernel: without a
// fake agent for id, serve must fail at once with an error matching
// connector.ErrNoAgent whose text names module ("modprobe <module>"), and
// check must fail the same way; once a handler is registered for id, check
// must pass.
func CheckAgentGateFake(t testing.TB, id connector.CBID, module string, check func(*connector.Conn) error, serve func(context.Context, *connector.Conn) error) {
	t.Helper()
	k := cntest.New(nil)
	c, err := k.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	what := "modprobe " + module
	expectNoAgent(t, "serve on a fake without the agent", module, func(ctx context.Context) error { return serve(ctx, c) })
	if err := check(c); !errors.Is(err, connector.ErrNoAgent) || !strings.Contains(err.Error(), what) {
		t.Errorf("check on a fake without the agent: %v, want ErrNoAgent naming %q", err, what)
	}
	k.Handle(id, func(connector.Message, connector.Sender) []cntest.Reply { return nil })
	if err := check(c); err != nil {
		t.Errorf("check on a fake with the agent: %v", err)
	}
}

// expectNoAgent runs serve with a 10 s context and fails t unless it
// returns, within 5 s, an error matching connector.ErrNoAgent that names
// module.
func expectNoAgent(t testing.TB, what, module string, serve func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := serve(ctx)
	took := time.Since(start)
	switch {
	case !errors.Is(err, connector.ErrNoAgent):
		t.Errorf("%s: %v after %v, want an error matching ErrNoAgent", what, err, took)
	case !strings.Contains(err.Error(), module):
		t.Errorf("%s: %q does not name the module to load, %s", what, err, module)
	case took > 5*time.Second:
		t.Errorf("%s: waited %v before failing", what, took)
	}
}
