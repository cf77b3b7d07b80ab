package dmlog

import (
	"testing"

	"github.com/cnlink/connector/internal/testutil"
)

// TestServeNilContext: Serve with a nil ctx returns an error that names it,
// before it touches c, instead of panicking.
func TestServeNilContext(t *testing.T) {
	testutil.CheckServeNilContext(t, "dmlog", (&Server{SkipPrivilegeCheck: true}).Serve)
}
