//go:build linux

package testutil

import (
	"context"
	"fmt"
	"slices"
	"testing"

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
	expectNoAgent(t, fmt.Sprintf("serve with no agent %d:%d registered (%v)", id.Idx, id.Val, agents), module, func(ctx context.Context) error { return serve(ctx, c) })
}
