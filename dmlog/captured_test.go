package dmlog

import (
	"bufio"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// capturedRequests reads testdata/kernel-requests.txt: request payloads that
// the matrix integration test captured from real kernels, one per line as
// "<kernel> <type> <hex>" ('#' starts a comment).
func capturedRequests(tb testing.TB) [][]byte {
	f, err := os.Open("testdata/kernel-requests.txt")
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
			tb.Fatalf("testdata/kernel-requests.txt: %v", err)
		}
		out = append(out, b)
	}
	return out
}
