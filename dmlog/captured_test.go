package dmlog

import (
	"testing"

	"github.com/cnlink/connector/internal/testutil"
)

// capturedRequests reads testdata/kernel-requests.txt: request payloads that
// the matrix integration test captured from real kernels, one per line as
// "<kernel> <type> <hex>".
func capturedRequests(tb testing.TB) [][]byte {
	return testutil.CapturedHex(tb, "testdata/kernel-requests.txt")
}
