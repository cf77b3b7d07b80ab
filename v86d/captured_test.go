package v86d

import (
	"testing"

	"github.com/cnlink/connector/internal/testutil"
)

// capturedTasks reads testdata/kernel-tasks.txt: task payloads captured from
// the kernels of the matrix by TestIntegrationListener, one per line as
// "<kernel> <function> <hex>".
func capturedTasks(tb testing.TB) [][]byte {
	return testutil.CapturedHex(tb, "testdata/kernel-tasks.txt")
}
