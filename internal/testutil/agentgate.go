package testutil

import (
	"context"
	"errors"
	"fmt"
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

// CheckServeErrors checks the error texts of an agent package's Check and
// Serve (pkg is the package name, "dmlog" or "v86d"): on a fake without the
// agent, Check's start "pkg: check: " and Serve's "pkg: serve: "; on closed,
// an already closed Conn, Serve's starts "pkg: serve: joining group N"
// (group, the agent's multicast group). Each has the one "pkg: op: detail"
// shape, with no connector: prefix.
func CheckServeErrors(t testing.TB, pkg string, group connector.Group, closed *connector.Conn, check func(*connector.Conn) error, serve func(context.Context, *connector.Conn) error) {
	t.Helper()
	noAgent, err := cntest.New(nil).Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer noAgent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		what, prefix string
		err          error
	}{
		{"Check without the agent", pkg + ": check: ", check(noAgent)},
		{"Serve without the agent", pkg + ": serve: ", serve(ctx, noAgent)},
		{"Serve on a closed Conn", fmt.Sprintf("%s: serve: joining group %d", pkg, group), serve(ctx, closed)},
	} {
		CheckErrorShape(t, tc.what, tc.err, pkg)
		if err := tc.err; err == nil || !strings.HasPrefix(err.Error(), tc.prefix) {
			t.Errorf("%s: %v, want it to start with %q", tc.what, err, tc.prefix)
		}
	}
}

// CheckServeNilContext checks that serve with a nil ctx returns an error in
// pkg's "pkg: op: detail" shape that says the ctx is nil, instead of
// panicking, and joins no group on the Conn it was given.
func CheckServeNilContext(t testing.TB, pkg string, serve func(context.Context, *connector.Conn) error) {
	t.Helper()
	c, err := cntest.New(nil).Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var nilCtx context.Context
	err = serve(nilCtx, c)
	CheckErrorShape(t, "Serve(nil, c)", err, pkg)
	if err == nil || !strings.Contains(err.Error(), "ctx is nil") {
		t.Errorf("Serve(nil, c): %v; want an error saying ctx is nil", err)
	}
	if gs, _ := c.Groups(); len(gs) != 0 {
		t.Errorf("Serve(nil, c) joined %v; want c left alone", gs)
	}
}
