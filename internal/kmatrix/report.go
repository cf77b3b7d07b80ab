package main

import (
	"slices"
	"strings"
)

// testCase is one test or subtest of a binary's -test.v output.
type testCase struct {
	Name   string
	Result string   // PASS, FAIL or SKIP
	Output []string // lines attributed to the test, including its --- line
	// Unfinished is set for a test that started but never reported a
	// result (the binary crashed or was killed); it counts as FAIL.
	Unfinished bool
}

// testReport is what the -test.v output of one binary says.
type testReport struct {
	Cases []*testCase
	// Other holds lines attributed to no test (panics outside tests,
	// package-level messages); the final PASS/FAIL/ok lines are left out.
	Other []string
}

func (r *testReport) count(result string) int {
	n := 0
	for _, c := range r.Cases {
		if c.Result == result {
			n++
		}
	}
	return n
}

// skipReason returns the last line of the test's own output before its
// --- line: for a skipped test, the message given to t.Skip.
func (c *testCase) skipReason() string {
	reason := ""
	for _, l := range c.Output {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "--- ") {
			break
		}
		if t != "" {
			reason = t
		}
	}
	return reason
}

// parseTestOutput attributes the lines of a test binary's -test.v output to
// tests, as test2json does: "=== RUN/CONT/NAME/PAUSE name" switch the current
// test, "--- PASS/FAIL/SKIP: name (time)" record a result and make that test
// current for the indented lines that may follow it.
func parseTestOutput(lines []string) *testReport {
	r := &testReport{}
	out := map[string][]string{}
	cur := ""
	var order, started []string
	for _, line := range lines {
		t := strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(t, "=== "); ok {
			f := strings.Fields(rest)
			switch {
			case len(f) >= 2 && (f[0] == "RUN" || f[0] == "CONT" || f[0] == "NAME" || f[0] == "PAUSE"):
				cur = f[1]
				if f[0] == "RUN" && !slices.Contains(started, cur) {
					started = append(started, cur)
				}
			case len(f) >= 1 && f[0] == "NAME":
				cur = ""
			}
			continue
		}
		if rest, ok := strings.CutPrefix(t, "--- "); ok {
			verdict, after, found := strings.Cut(rest, ": ")
			if found && (verdict == "PASS" || verdict == "FAIL" || verdict == "SKIP") {
				name, _, _ := strings.Cut(after, " ")
				c := &testCase{Name: name, Result: verdict}
				r.Cases = append(r.Cases, c)
				cur = name
				out[name] = append(out[name], line)
				if !slices.Contains(order, name) {
					order = append(order, name)
				}
				continue
			}
		}
		if t == "PASS" || t == "FAIL" {
			cur = "" // the binary's closing line
			continue
		}
		if cur == "" {
			if t != "" {
				r.Other = append(r.Other, line)
			}
			continue
		}
		out[cur] = append(out[cur], line)
		if !slices.Contains(order, cur) {
			order = append(order, cur)
		}
	}
	for _, c := range r.Cases {
		c.Output = out[c.Name]
	}
	reported := func(name string) bool {
		return slices.ContainsFunc(r.Cases, func(c *testCase) bool { return c.Name == name })
	}
	// Output of tests that never reported a result (the binary died in
	// them) stays with them; output attributed to anything else that
	// never reported counts as unattributed.
	for _, name := range started {
		if !reported(name) {
			r.Cases = append(r.Cases, &testCase{Name: name, Result: "FAIL", Output: out[name], Unfinished: true})
		}
	}
	for _, name := range order {
		if !reported(name) {
			r.Other = append(r.Other, out[name]...)
		}
	}
	return r
}
