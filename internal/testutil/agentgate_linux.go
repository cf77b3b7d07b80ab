//go:build linux

package testutil

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector"
)

// CheckAgentGate tests a server's start-up check of its kernel agent on the
// running kernel: where connector.Agents lists no agent for id, serve on a
// Conn of this kernel must fail at once (well within its 10 s context) with
// an error matching connector.ErrNoAgent whose text names module, the
// module to load; where the agent is registered, check must pass. The
// expectation comes from the kernel's own list. serve and check must not
// need privileges beyond what the caller arranged (skip the privilege
// check).
func CheckAgentGate(t testing.TB, id connector.CBID, module string, check func(*connector.Conn) error, serve func(context.Context, *connector.Conn) error) {
	t.Helper()
	RequireInitialNetNS(t)
	agents, err := connector.Agents()
	if err != nil {
		t.Fatalf("listing the connector's agents: %v", err)
	}
	c, err := connector.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if slices.ContainsFunc(agents, func(a connector.Agent) bool { return a.ID == id }) {
		if err := check(c); err != nil {
			t.Errorf("agent %d:%d registered (%v), yet the check failed: %v", id.Idx, id.Val, agents, err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = serve(ctx, c)
	took := time.Since(start)
	switch {
	case !errors.Is(err, connector.ErrNoAgent):
		t.Errorf("no agent %d:%d registered (%v): serve returned %v after %v, want an error matching ErrNoAgent", id.Idx, id.Val, agents, err, took)
	case !strings.Contains(err.Error(), module):
		t.Errorf("no agent registered: %q does not name the module to load, %s", err, module)
	case took > 5*time.Second:
		t.Errorf("no agent registered: serve waited %v before failing", took)
	}
}
