package v86d

import (
	"bufio"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// capturedTasks reads testdata/kernel-tasks.txt: task payloads captured from
// the kernels of the matrix by TestIntegrationListener, one per line as
// "<kernel> <function> <hex>" ('#' starts a comment).
func capturedTasks(tb testing.TB) [][]byte {
	f, err := os.Open("testdata/kernel-tasks.txt")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fs := strings.Fields(line)
		b, err := hex.DecodeString(fs[len(fs)-1])
		if err != nil {
			tb.Fatalf("testdata/kernel-tasks.txt: %v", err)
		}
		out = append(out, b)
	}
	return out
}
