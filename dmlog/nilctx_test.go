package dmlog

import (
	"context"
	"strings"
	"testing"

	"github.com/cnlink/connector/cntest"
	"github.com/cnlink/connector/internal/testutil"
)

// TestServeNilContext: Serve with a nil ctx returns an error that names it,
// before it touches c, instead of panicking.
func TestServeNilContext(t *testing.T) {
	c, err := cntest.New(nil).Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var nilCtx context.Context
	err = (&Server{SkipPrivilegeCheck: true}).Serve(nilCtx, c)
	testutil.CheckErrorShape(t, "Serve(nil, c)", err, "dmlog")
	if err == nil || !strings.Contains(err.Error(), "ctx is nil") {
		t.Errorf("Serve(nil, c): %v; want an error saying ctx is nil", err)
	}
	if gs, _ := c.Groups(); len(gs) != 0 {
		t.Errorf("Serve(nil, c) joined %v; want c left alone", gs)
	}
}
